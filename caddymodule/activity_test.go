package caddymodule

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/keygate/keygate/caddymodule/store"
)

// serveFrom serves a request as a client at addr with a User-Agent would
// send it, and returns the status.
func serveFrom(t *testing.T, h *Handler, target, key, addr, agent string) int {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, target, nil)
	req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), nil, nil)
	caddyhttp.SetVar(req.Context(), caddyhttp.ClientIPVarKey, addr)
	req.Header.Set("Authorization", "Bearer "+key)
	if agent != "" {
		req.Header.Set("User-Agent", agent)
	}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.WriteHeader(http.StatusOK)
		return nil
	})
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, req, next); err != nil {
		t.Fatal(err)
	}
	return w.Code
}

// TestActivityIsRecorded: requests let through and refused by the scope
// are counted per key, with their addresses, agents and (standard keys)
// servers, exactly, once the app flushes; refused keys are not.
func TestActivityIsRecorded(t *testing.T) {
	app := testApp(t)
	h := testHandler(t, app, &Handler{})
	sk, std := newKey(t, app, store.Standard, "")
	rk, res := newKey(t, app, store.Restricted, "abcd1234")
	ctx := context.Background()

	for _, c := range []struct {
		n                        int
		target, key, addr, agent string
		status                   int
	}{
		{7, "/api/messages?server=abcd1234", std, "203.0.113.9", "mailosaur-node/11.1.1", 200},
		{3, "/api/servers/efgh5678", std, "2001:db8::1", "mailosaur-python/7.2.0", 200},
		{2, "/api/servers", std, "203.0.113.9", "", 200},
		{1, "/api/messages?server=a&server=b", std, "203.0.113.9", "mailosaur-node/11.1.1", 400},
		{5, "/api/messages?server=abcd1234", res, "198.51.100.7", "mailosaur-java/8.0.0", 200},
		{4, "/api/servers", res, "198.51.100.7", "mailosaur-java/8.0.0", 403},
		{2, "/api/files/attachments/unknown", res, "198.51.100.7", "curl/8.0", 404},
		{3, "/api/servers", "kg_nope", "192.0.2.66", "scanner", 401},
	} {
		for range c.n {
			if got := serveFrom(t, h, c.target, c.key, c.addr, c.agent); got != c.status {
				t.Fatalf("%s: %d, want %d", c.target, got, c.status)
			}
		}
	}
	if a, err := app.Store().KeyActivity(ctx, sk.AccountID, sk.ID, time.Now()); err != nil || len(a.Hours) != 0 {
		t.Fatalf("activity before the flush = %+v, %v; want nothing written yet", a, err)
	}
	app.flushActivity(ctx, app.rt.Load())

	got := activityOf(t, app, sk)
	if allowed, refused := got.Totals(); allowed != 12 || refused != 1 {
		t.Errorf("standard key: %d allowed, %d refused; want 12 and 1", allowed, refused)
	}
	wantValues(t, got, map[string]int64{
		"address 203.0.113.9":          10,
		"address 2001:db8::1":          3,
		"agent mailosaur-node/11.1.1":  8,
		"agent mailosaur-python/7.2.0": 3,
		"agent ":                       2,
		"server abcd1234":              7,
		"server efgh5678":              3,
	})
	got = activityOf(t, app, rk)
	if allowed, refused := got.Totals(); allowed != 5 || refused != 6 {
		t.Errorf("restricted key: %d allowed, %d refused; want 5 and 6", allowed, refused)
	}
	wantValues(t, got, map[string]int64{
		"address 198.51.100.7":       11,
		"agent mailosaur-java/8.0.0": 9,
		"agent curl/8.0":             2,
	})
}

func activityOf(t *testing.T, app *App, k store.Key) store.KeyActivity {
	t.Helper()
	a, err := app.Store().KeyActivity(context.Background(), k.AccountID, k.ID, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func wantValues(t *testing.T, a store.KeyActivity, want map[string]int64) {
	t.Helper()
	got := map[string]int64{}
	for _, v := range a.Values {
		got[v.Kind.String()+" "+v.Value] += v.Requests
	}
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) || a.Others != [store.NumActivityKinds]int64{} {
		t.Errorf("values %s, others %v\nwant %s", g, a.Others, w)
	}
}

// TestActivityFlushRetries: a flush the store does not take is kept and
// written with the next one.
func TestActivityFlushRetries(t *testing.T) {
	app := testApp(t)
	h := testHandler(t, app, &Handler{})
	k, plain := newKey(t, app, store.Standard, "")
	for range 3 {
		serveFrom(t, h, "/api/servers", plain, "203.0.113.9", "a/1")
	}
	down, cancel := context.WithCancel(context.Background())
	cancel() // the store cannot be reached
	app.flushActivity(down, app.rt.Load())
	for range 2 {
		serveFrom(t, h, "/api/servers", plain, "203.0.113.9", "a/1")
	}
	app.flushActivity(context.Background(), app.rt.Load())
	if allowed, _ := activityOf(t, app, k).Totals(); allowed != 5 {
		t.Fatalf("after a failed flush and a good one: %d requests, want 5", allowed)
	}
}

// TestActivityRetention: the option's default, and the hourly purge
// forgets hours older than it.
func TestActivityRetention(t *testing.T) {
	app := testApp(t)
	if time.Duration(app.ActivityRetention) != 90*24*time.Hour {
		t.Fatalf("activity_retention defaults to %v", time.Duration(app.ActivityRetention))
	}
	k, _ := newKey(t, app, store.Standard, "")
	now := time.Now()
	ctx := context.Background()
	old, recent := store.ActivityHourOf(now.Add(-91*24*time.Hour)), store.ActivityHourOf(now.Add(-89*24*time.Hour))
	err := app.Store().RecordActivity(ctx, []store.ActivityHour{{KeyID: k.ID, Hour: old, Allowed: 1}, {KeyID: k.ID, Hour: recent, Allowed: 2}})
	if err != nil {
		t.Fatal(err)
	}
	app.purgeOnce(ctx, app.Store(), now)
	a, err := app.Store().KeyActivity(ctx, k.AccountID, k.ID, old)
	if err != nil || len(a.Hours) != 1 || !a.Hours[0].Hour.Equal(recent) {
		t.Fatalf("after the purge: %+v, %v; want only the hour within 90 days", a.Hours, err)
	}

	cctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	negative := &App{Secret: testSecret, ActivityRetention: -1}
	if err := negative.Provision(cctx); err != nil {
		t.Fatal(err)
	}
	if err := negative.Validate(); err == nil || !strings.Contains(err.Error(), "activity_retention and usage_interval must be positive") {
		t.Fatalf("a negative activity_retention: %v", err)
	}
}
