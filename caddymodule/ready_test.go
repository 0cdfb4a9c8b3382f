package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keygate/keygate/caddymodule/health"
)

func probeReady(t *testing.T, app *App) (int, health.Status) {
	t.Helper()
	w := httptest.NewRecorder()
	if err := (&ReadyHandler{app: app}).ServeHTTP(w, httptest.NewRequest("GET", "/ready", nil), nil); err != nil {
		t.Fatal(err)
	}
	var st health.Status
	if err := json.Unmarshal(w.Body.Bytes(), &st); err != nil {
		t.Fatalf("body %q: %v", w.Body, err)
	}
	return w.Code, st
}

func TestReadyHandler(t *testing.T) {
	if code, st := probeReady(t, &App{}); code != http.StatusServiceUnavailable || st.Ready || st.Store != health.StoreStarting {
		t.Fatalf("before the app started: %d %+v", code, st)
	}

	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	path, _ := json.Marshal(filepath.Join(t.TempDir(), "keys.db"))
	app := &App{StoreRaw: json.RawMessage(`{"module":"sqlite","path":` + string(path) + `}`), Secret: testSecret}
	if err := app.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	gauge := func() float64 {
		n, err := testutil.GatherAndCount(ctx.GetMetricsRegistry(), "caddy_keygate_ready")
		if err != nil || n != 1 {
			t.Fatalf("caddy_keygate_ready: %d series, %v", n, err)
		}
		mfs, _ := ctx.GetMetricsRegistry().Gather()
		for _, mf := range mfs {
			if mf.GetName() == "caddy_keygate_ready" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		return -1
	}
	if g := gauge(); g != 0 {
		t.Fatalf("gauge before start: %v", g)
	}
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { app.Stop(); app.Cleanup() }()

	want := health.Status{Ready: true, Store: health.StoreOK, Listener: health.ListenerNone}
	if code, st := probeReady(t, app); code != http.StatusOK || st != want {
		t.Fatalf("SQLite app started: %d %+v; want 200 %+v", code, st, want)
	}
	if g := gauge(); g != 1 {
		t.Fatalf("gauge after start: %v", g)
	}
}
