package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/keygate/keygate/caddymodule/keys"
)

// TestServeHTTPWaitsForStart: a request that reaches a config's handler
// after the app was provisioned but before it has started (Caddy starts
// apps in no set order; on a reload the new server takes connections at
// once) waits for the start, and is answered as a started app answers it,
// not with 503.
func TestServeHTTPWaitsForStart(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	path, _ := json.Marshal(filepath.Join(t.TempDir(), "keys.db"))
	app := &App{StoreRaw: json.RawMessage(`{"module":"sqlite","path":` + string(path) + `}`), Secret: testSecret}
	if err := app.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := app.Validate(); err != nil {
		t.Fatal(err)
	}
	h := testHandler(t, app, &Handler{})
	unknown, err := keys.New() // well formed, never issued: only a started app can say 401
	if err != nil {
		t.Fatal(err)
	}

	answered := make(chan int, 1)
	go func() {
		req := caddyhttp.PrepareRequest(httptest.NewRequest(http.MethodGet, "/api/servers", nil), caddy.NewReplacer(), nil, nil)
		req.Header.Set("Authorization", "Bearer "+string(unknown))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req, caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil }))
		answered <- w.Code
	}()
	select {
	case code := <-answered:
		t.Fatalf("answered %d before the app started", code)
	case <-time.After(100 * time.Millisecond): // it waits: nothing to wait for but time
	}
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		app.Stop()
		app.Cleanup()
	}()
	select {
	case code := <-answered:
		if code != http.StatusUnauthorized {
			t.Fatalf("a request sent before the app started was answered %d, want 401", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer 10s after the app started")
	}
}
