package caddymodule

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/store"
)

const testSecret = "handler-test-secret-0123456789abcdefghij"

// testApp starts a keygate app on a real SQLite file.
func testApp(t testing.TB) *App {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	path, _ := json.Marshal(filepath.Join(t.TempDir(), "keys.db"))
	app := &App{StoreRaw: json.RawMessage(`{"module":"sqlite","path":` + string(path) + `}`), Secret: testSecret}
	if err := app.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := app.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := app.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		app.Stop()
		app.Cleanup()
		cancel()
	})
	return app
}

func testHandler(t testing.TB, app *App, h *Handler) *Handler {
	t.Helper()
	h.app = app
	h.logger = caddy.Log()
	if err := h.setup(); err != nil {
		t.Fatal(err)
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	return h
}

// newKey creates an account and a key in it through the app's manager.
func newKey(t testing.TB, app *App, typ store.KeyType, server string) (store.Key, string) {
	t.Helper()
	ctx := context.Background()
	acct, err := app.Store().CreateAccount(ctx, "acct "+t.Name()+" "+string(typ)+server)
	if err != nil {
		t.Fatal(err)
	}
	k, plain, err := app.Manager().CreateKey(ctx, auth.NewKey{AccountID: acct.ID, Name: "k", Type: typ, ServerID: server}, auth.Actor{UserID: "tester"})
	if err != nil {
		t.Fatal(err)
	}
	return k, plain.Secret()
}

type seen struct {
	header http.Header
	repl   *caddy.Replacer
	called bool
}

func serve(t testing.TB, h *Handler, header http.Header) (*httptest.ResponseRecorder, *seen) {
	return serveRequest(t, h, http.MethodGet, "/api/messages?server=abcd1234", header)
}

func serveRequest(t testing.TB, h *Handler, method, target string, header http.Header) (*httptest.ResponseRecorder, *seen) {
	req := httptest.NewRequest(method, target, nil)
	req.Header = header
	repl := caddy.NewReplacer()
	req = caddyhttp.PrepareRequest(req, repl, nil, nil)
	got := &seen{}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		got.header, got.repl, got.called = r.Header.Clone(), repl, true
		w.WriteHeader(http.StatusOK)
		return nil
	})
	w := httptest.NewRecorder()
	if err := h.ServeHTTP(w, req, next); err != nil {
		t.Fatal(err)
	}
	return w, got
}

func TestServeHTTPAllowed(t *testing.T) {
	app := testApp(t)
	h := testHandler(t, app, &Handler{Headers: map[string]string{"server": "x-inbox"}})
	k, plain := newKey(t, app, store.Restricted, "abcd1234")

	w, got := serve(t, h, http.Header{
		"Authorization":     {"Basic " + base64.StdEncoding.EncodeToString([]byte(plain+":"))},
		"X-Keygate-Account": {"forged"},
		"X-Inbox":           {"forged", "twice"},
		"Accept":            {"application/json"},
		// Underscore spellings, which CGI-style upstreams read as the
		// real headers (net/http keeps their names as sent).
		"X_keygate_account":  {"forged"},
		"X-keygate_key-id":   {"forged"},
		"X_Inbox":            {"forged"},
		"x_keygate_key_type": {"standard"},
		"X_other_header":     {"kept"},
	})
	if w.Code != http.StatusOK || !got.called {
		t.Fatalf("status %d, next called %v", w.Code, got.called)
	}
	want := map[string]string{
		"X-Keygate-Account":  k.AccountID,
		"X-Keygate-Key-Id":   k.ID,
		"X-Keygate-Key-Type": "restricted",
		"X-Inbox":            "abcd1234",
		"Accept":             "application/json",
	}
	for name, v := range want {
		if vals := got.header.Values(name); len(vals) != 1 || vals[0] != v {
			t.Errorf("%s = %q, want %q", name, vals, v)
		}
	}
	if got.header.Get("Authorization") != "" || got.header.Get("X-Keygate-Server") != "" {
		t.Fatalf("credentials or the unconfigured default header passed on: %v", got.header)
	}
	for name := range got.header {
		if strings.Contains(name, "_") && name != "X_other_header" {
			t.Errorf("a forged underscore spelling %q reached the next handler", name)
		}
	}
	if got.header["X_other_header"] == nil {
		t.Error("an unrelated underscore header was dropped")
	}
	placeholders := map[string]string{
		"http.auth.user.id":  k.ID,
		"keygate.key_id":     k.ID,
		"keygate.account_id": k.AccountID,
		"keygate.key_type":   "restricted",
		"keygate.server_id":  "abcd1234",
		"keygate.key_prefix": k.Display,
	}
	for name, v := range placeholders {
		if s, _ := got.repl.GetString(name); s != v {
			t.Errorf("{%s} = %q, want %q", name, s, v)
		}
	}
}

func TestServeHTTPStandardKeyHasNoServer(t *testing.T) {
	app := testApp(t)
	h := testHandler(t, app, &Handler{})
	_, plain := newKey(t, app, store.Standard, "")
	_, got := serve(t, h, http.Header{"Authorization": {"Bearer " + plain}, "X-Keygate-Server": {"abcd1234"}})
	if !got.called || got.header.Get("X-Keygate-Server") != "" {
		t.Fatalf("a forged server header passed with a standard key: %v", got.header)
	}
	if _, ok := got.repl.Get("keygate.server_id"); ok {
		t.Fatal("{keygate.server_id} set for a standard key")
	}
}

// TestDeleteIsImmediate: on one instance, the request after DeleteKey
// returns is refused, though the key was cached.
func TestDeleteIsImmediate(t *testing.T) {
	app := testApp(t)
	h := testHandler(t, app, &Handler{})
	k, plain := newKey(t, app, store.Standard, "")
	hdr := http.Header{"Authorization": {"Bearer " + plain}}
	if w, _ := serve(t, h, hdr.Clone()); w.Code != http.StatusOK {
		t.Fatalf("before delete: %d", w.Code)
	}
	if _, err := app.Manager().DeleteKey(context.Background(), k.AccountID, k.ID, auth.Actor{UserID: "tester"}); err != nil {
		t.Fatal(err)
	}
	w, got := serve(t, h, hdr.Clone())
	if w.Code != http.StatusUnauthorized || got.called {
		t.Fatalf("after delete: %d, next called %v", w.Code, got.called)
	}
}

func TestServeHTTPRefusals(t *testing.T) {
	app := testApp(t)
	h := testHandler(t, app, &Handler{Realm: "inbox-api"})
	before := testutil.ToFloat64(decisionCounters[auth.Unauthorized])
	w, got := serve(t, h, http.Header{"Authorization": {"Bearer kg_nope"}})
	if w.Code != http.StatusUnauthorized || got.called {
		t.Fatalf("status %d, next called %v", w.Code, got.called)
	}
	if ch := w.Header().Values("Www-Authenticate"); len(ch) != 2 || ch[0] != `Basic realm="inbox-api"` || ch[1] != `Bearer realm="inbox-api"` {
		t.Fatalf("challenge = %q", ch)
	}
	var body struct {
		Type   string `json:"type"`
		Status int    `json:"status"`
		Errors []struct {
			Field  string                         `json:"field"`
			Detail []struct{ Description string } `json:"detail"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Status != 401 || body.Errors[0].Detail[0].Description != "Authentication failed, check your API key." {
		t.Fatalf("body %s: %v", w.Body, err)
	}
	if !strings.HasPrefix(w.Body.String(), `{"type":`) {
		t.Fatal("the error body must start with type, as the inbox API's does")
	}
	if d := testutil.ToFloat64(decisionCounters[auth.Unauthorized]) - before; d != 1 {
		t.Fatalf("unauthorized decisions grew by %v", d)
	}
}

func TestServeHTTPBeforeStart(t *testing.T) {
	h := testHandler(t, &App{}, &Handler{})
	w, got := serve(t, h, http.Header{"Authorization": {"Bearer kg_x"}})
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") != "2" || got.called {
		t.Fatalf("before the app started: %d %v", w.Code, w.Header())
	}
}

func TestHandlerValidate(t *testing.T) {
	cases := map[string]*Handler{
		"unknown field":   {Headers: map[string]string{"acount": "X-A"}},
		"bad name":        {Headers: map[string]string{"account": "X A"}},
		"authorization":   {Headers: map[string]string{"account": "authorization"}},
		"duplicate":       {Headers: map[string]string{"account": "X-A", "server": "x-a"}},
		"quote in realm":  {Realm: `a"b`},
		"negative retry":  {RetryAfter: -1},
		"empty name":      {Headers: map[string]string{"key_id": ""}},
		"default clashes": {Headers: map[string]string{"server": "X-Keygate-Account"}},
	}
	for name, h := range cases {
		h.app = &App{}
		h.setup()
		if err := h.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, h)
		}
	}
}

func TestRegisterMetricsTwice(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	for range 2 {
		if err := registerMetrics(reg); err != nil {
			t.Fatal(err)
		}
	}
	if err := registerMetrics(prometheus.NewPedanticRegistry()); err != nil {
		t.Fatal(err)
	}
}

func TestAppValidate(t *testing.T) {
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancel()
	app := &App{StoreRaw: json.RawMessage(`{"module":"postgres","dsn":"postgres://127.0.0.1:1/x"}`)}
	if err := app.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := app.Validate(); err == nil || !strings.Contains(err.Error(), "needs a secret") {
		t.Fatalf("postgres without a secret: %v", err)
	}
	app = &App{Secret: "{env.KEYGATE_TEST_UNSET_VARIABLE}"}
	if err := app.Provision(ctx); err == nil || !strings.Contains(err.Error(), "set that variable") {
		t.Fatalf("unset secret variable: %v", err)
	}
	app = &App{Secret: "too short"}
	if err := app.Provision(ctx); err == nil || strings.Contains(err.Error(), "too short") {
		t.Fatalf("short secret: %v (the secret must not be repeated)", err)
	}

	current, other := strings.Repeat("c", 32), strings.Repeat("o", 32)
	for _, c := range []struct {
		previous []string
		want     string
	}{
		{[]string{current}, "previous secret 1 is the current secret"},
		{[]string{other, "short previous"}, "previous secret 2: secret is 14 bytes"},
		{[]string{other, other}, "previous secrets 1 and 2 are the same secret"},
		{[]string{"{env.KEYGATE_TEST_UNSET_VARIABLE}"}, "previous secret 1 is empty"},
		{[]string{other, strings.Repeat("p", 32), strings.Repeat("q", 32), strings.Repeat("r", 32)}, "at most 3 are kept"},
	} {
		app = &App{Secret: current, PreviousSecrets: c.previous}
		err := app.Provision(ctx)
		if err == nil || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), current) || strings.Contains(err.Error(), "short previous") {
			t.Errorf("previous_secrets %q: %v, want %q and no secret in it", c.previous, err, c.want)
		}
	}
	app = &App{PreviousSecrets: []string{other}}
	if err := app.Provision(ctx); err != nil {
		t.Fatal(err)
	}
	if err := app.Validate(); err == nil || !strings.Contains(err.Error(), "previous_secrets needs a `secret`") {
		t.Fatalf("previous_secrets without a secret: %v", err)
	}
}

func TestReloadSharesRuntime(t *testing.T) {
	dir := t.TempDir()
	start := func() (*App, context.CancelFunc) {
		ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
		path, _ := json.Marshal(filepath.Join(dir, "keys.db"))
		app := &App{StoreRaw: json.RawMessage(`{"module":"sqlite","path":` + string(path) + `}`), Secret: testSecret}
		if err := app.Provision(ctx); err != nil {
			t.Fatal(err)
		}
		if err := app.Start(); err != nil {
			t.Fatal(err)
		}
		return app, cancel
	}
	old, cancelOld := start()
	next, cancelNext := start() // a reload provisions and starts the new config first
	if old.rt.Load() != next.rt.Load() {
		t.Fatal("a reload with the same settings built a second runtime (and cache)")
	}
	old.Stop()
	old.Cleanup()
	cancelOld()
	if _, err := next.Store().ListAccounts(context.Background()); err != nil {
		t.Fatalf("store after the old config's cleanup: %v", err)
	}
	next.Stop()
	next.Cleanup()
	cancelNext()
	if _, ok := runtimes.References(next.rtKey); ok {
		t.Fatal("runtime still referenced after the last cleanup")
	}
}

// BenchmarkServeHTTPHit is the whole handler on a cache hit: key check,
// header rewrite and placeholders, and the key's activity, with the
// official clients' Basic form and User-Agent.
func BenchmarkServeHTTPHit(b *testing.B) {
	app := testApp(b)
	h := testHandler(b, app, &Handler{})
	_, plain := newKey(b, app, store.Restricted, "abcd1234")
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte(plain+":"))
	req := httptest.NewRequest(http.MethodGet, "/api/messages?server=abcd1234", nil)
	req.Header.Set("User-Agent", "mailosaur-node/11.1.1")
	repl := caddy.NewReplacer()
	req = caddyhttp.PrepareRequest(req, repl, nil, nil)
	caddyhttp.SetVar(req.Context(), caddyhttp.ClientIPVarKey, "203.0.113.9")
	next := caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
	w := httptest.NewRecorder()
	authValue := []string{auth}
	b.ReportAllocs()
	for b.Loop() {
		req.Header["Authorization"] = authValue // the handler removes it
		if err := h.ServeHTTP(w, req, next); err != nil {
			b.Fatal(err)
		}
	}
}

// benchmarkMessageFetch is GET /api/messages/{id} answered by a canned
// upstream message of 2 KiB: the cost of checking (a restricted key's
// message whose server keygate does not know), of passing a known one, and
// of learning from it (any key). The attachment is recorded once; the
// store's write is not what is measured.
func benchmarkMessageFetch(b *testing.B, typ store.KeyType, unknown bool) {
	app := testApp(b)
	h := testHandler(b, app, &Handler{})
	server := ""
	if typ == store.Restricted {
		server = "abcd1234"
	}
	_, plain := newKey(b, app, typ, server)
	authValue := []string{"Basic " + base64.StdEncoding.EncodeToString([]byte(plain+":"))}
	const id = "6b3f0c2e-4b1a-4c55-9f6e-0d1c2b3a4f5e"
	body := []byte(`{"id":"` + id + `","type":"Email","server":"abcd1234","subject":"Your invoice","html":{"body":"` +
		strings.Repeat("x", 2048) + `"},"attachments":[{"id":"a1b2c3d4","fileName":"invoice.pdf","contentType":"application/pdf","length":1234}]}`)
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, err := w.Write(body)
		return err
	})
	// Unknown: a path id keygate never learns (it learns the body's id).
	reqs := make([]*http.Request, 1024)
	for i := range reqs {
		path := "/api/messages/" + id
		if unknown {
			path = fmt.Sprintf("/api/messages/%08d-0000-4000-8000-000000000000", i)
		}
		reqs[i] = caddyhttp.PrepareRequest(httptest.NewRequest(http.MethodGet, path, nil), caddy.NewReplacer(), nil, nil)
	}
	w := httptest.NewRecorder()
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		req := reqs[i%len(reqs)]
		i++
		req.Header["Authorization"] = authValue
		w.Body.Reset()
		if err := h.ServeHTTP(w, req, next); err != nil || w.Code != 200 {
			b.Fatalf("%v %d", err, w.Code)
		}
	}
}

func BenchmarkMessageFetchStandard(b *testing.B) { benchmarkMessageFetch(b, store.Standard, false) }
func BenchmarkMessageFetchRestrictedKnown(b *testing.B) {
	benchmarkMessageFetch(b, store.Restricted, false)
}
func BenchmarkMessageFetchRestrictedChecked(b *testing.B) {
	benchmarkMessageFetch(b, store.Restricted, true)
}

// TestLastUsedIsWrittenInBatches: requests mark keys in memory; the app
// writes them when it flushes, not per request.
func TestLastUsedIsWrittenInBatches(t *testing.T) {
	app := testApp(t)
	h := testHandler(t, app, &Handler{})
	k, plain := newKey(t, app, store.Standard, "")
	for range 5 {
		if w, _ := serve(t, h, http.Header{"Authorization": {"Bearer " + plain}}); w.Code != 200 {
			t.Fatal(w.Code)
		}
	}
	ctx := context.Background()
	got, err := app.Store().GetKey(ctx, k.AccountID, k.ID)
	if err != nil || got.LastUsed != nil {
		t.Fatalf("last used before the flush = %v, %v; want nothing written yet", got.LastUsed, err)
	}
	app.flushLastUsed(ctx, app.rt.Load())
	got, err = app.Store().GetKey(ctx, k.AccountID, k.ID)
	if err != nil || got.LastUsed == nil || time.Since(*got.LastUsed) > 5*time.Second {
		t.Fatalf("last used after the flush = %v, %v", got.LastUsed, err)
	}
}

// TestHeldMessageOnlyA200IsReleased: a restricted key's message of unknown
// server is checked on its answer; an answer that is not a whole message
// (a 206 to a Range, a 304) cannot be checked and is not passed on.
func TestHeldMessageOnlyA200IsReleased(t *testing.T) {
	app := testApp(t)
	h := testHandler(t, app, &Handler{})
	_, plain := newKey(t, app, store.Restricted, "abcd1234")
	for _, status := range []int{http.StatusPartialContent, http.StatusNotModified, http.StatusNonAuthoritativeInfo} {
		var sawRange bool
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			sawRange = r.Header.Get("Range") != "" || r.Header.Get("If-None-Match") != ""
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, err := w.Write([]byte(`{"id":"m1","server":"other99"`))
			return err
		})
		req := httptest.NewRequest(http.MethodGet, "/api/messages/m-unknown", nil)
		req = caddyhttp.PrepareRequest(req, caddy.NewReplacer(), nil, nil)
		req.Header.Set("Authorization", "Bearer "+plain)
		req.Header.Set("Range", "bytes=0-")
		req.Header.Set("If-None-Match", `"x"`)
		w := httptest.NewRecorder()
		if err := h.ServeHTTP(w, req, next); err != nil {
			t.Fatal(err)
		}
		if w.Code != http.StatusBadGateway || strings.Contains(w.Body.String(), "other99") || sawRange {
			t.Errorf("upstream %d: client got %d %q (upstream saw Range/If-: %v)", status, w.Code, w.Body, sawRange)
		}
	}
}
