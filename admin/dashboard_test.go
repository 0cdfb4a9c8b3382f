package admin_test

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/caddymodule"
	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/fleet"
	"github.com/keygate/keygate/caddymodule/inboxapi"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
	"github.com/keygate/keygate/caddymodule/store/postgres"
	"github.com/keygate/keygate/cmd/inboxsim/sim"
)

const testSecret = "admin-test-secret-0123456789abcdefghijklmn"

// Messages the tests look for.
const (
	msgNotAdmin = "You must be an Account Administrator to manage API keys."
	msgCSRF     = "CSRF token"
	msgCross    = "Cross-site requests are refused"
	msgNoAcct   = "Account not found"
	msgMismatch = "does not match the key's name"
)

var keyPattern = regexp.MustCompile(`kg_[0-9A-Za-z]{36}`)

// startApp starts a keygate app on a real SQLite file.
func startApp(t *testing.T) *caddymodule.App {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	path, _ := json.Marshal(filepath.Join(t.TempDir(), "keys.db"))
	app := &caddymodule.App{StoreRaw: json.RawMessage(`{"module":"sqlite","path":` + string(path) + `}`), Secret: testSecret}
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

// fixture: accounts Acme (alice admin, bob member, dave admin) and Other
// (carol admin, dave admin); the simulator has two inboxes for Acme and
// one for Other.
type fixture struct {
	t           *testing.T
	app         *caddymodule.App
	dash        *admin.Dashboard
	acme, other string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	app := startApp(t)
	ctx := context.Background()
	st := app.Store()
	acme, err := st.CreateAccount(ctx, "Acme")
	if err != nil {
		t.Fatal(err)
	}
	other, err := st.CreateAccount(ctx, "Other")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []struct {
		acct, user string
		role       store.Role
	}{
		{acme.ID, "alice", store.Admin}, {acme.ID, "bob", store.Member}, {acme.ID, "dave", store.Admin},
		{other.ID, "carol", store.Admin}, {other.ID, "dave", store.Admin},
	} {
		if _, err := st.SetMember(ctx, m.acct, m.user, m.role); err != nil {
			t.Fatal(err)
		}
	}
	s := sim.New(sim.Options{})
	seed := fmt.Sprintf(`{"accounts":{%q:{"servers":[{"id":"stag1234","name":"Staging"},{"id":"prod5678","name":"Production"}]},%q:{"servers":[{"id":"othr0001","name":"Other inbox"}]}}}`, acme.ID, other.ID)
	if err := s.LoadSeed(strings.NewReader(seed)); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	f := &fixture{t: t, app: app, acme: acme.ID, other: other.ID}
	f.dash = f.dashboard(&inboxapi.Client{BaseURL: srv.URL, Timeout: 2 * time.Second})
	return f
}

func (f *fixture) dashboard(inboxes inboxapi.Lister) *admin.Dashboard {
	cfg := admin.Config{Backend: f.app, Identify: testIdentify}
	if inboxes != nil {
		cfg.Inboxes = inboxes
	}
	return admin.New(cfg)
}

// testIdentify stands in for Caddy's authentication: X-Test-User is the
// user, X-Test-API-Key says keygate authenticated the request with a key.
func testIdentify(r *http.Request) (string, error) {
	if r.Header.Get("X-Test-API-Key") != "" {
		return "", admin.ErrAPIKey
	}
	return r.Header.Get("X-Test-User"), nil
}

type reply struct {
	status int
	header http.Header
	body   string
}

// do sends a request as user with headers given as name, value pairs.
func (f *fixture) do(d *admin.Dashboard, method, target, user string, body io.Reader, header ...string) reply {
	f.t.Helper()
	req := httptest.NewRequest(method, target, body)
	if user != "" {
		req.Header.Set("X-Test-User", user)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	d.ServeHTTP(rec, req)
	return reply{status: rec.Code, header: rec.Header(), body: rec.Body.String()}
}

func (f *fixture) get(target, user string) reply { return f.do(f.dash, "GET", target, user, nil) }

// post sends a form as a browser on the dashboard's own page would.
func (f *fixture) post(target, user string, form url.Values, header ...string) reply {
	f.t.Helper()
	h := append([]string{"Content-Type", "application/x-www-form-urlencoded", "Sec-Fetch-Site", "same-origin"}, header...)
	return f.do(f.dash, "POST", target, user, strings.NewReader(form.Encode()), h...)
}

// api sends a JSON request with the token.
func (f *fixture) api(method, target, user, token string, body any) reply {
	f.t.Helper()
	var rd io.Reader
	h := []string{"Accept", "application/json"}
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
		h = append(h, "Content-Type", "application/json")
	}
	if token != "" {
		h = append(h, "X-CSRF-Token", token)
	}
	return f.do(f.dash, method, target, user, rd, h...)
}

// token is the user's CSRF token for the account, as the JSON API gives it.
func (f *fixture) token(user, acct string) string {
	f.t.Helper()
	r := f.get("/api/accounts", user)
	var out struct {
		Items []struct {
			ID        string `json:"id"`
			CSRFToken string `json:"csrf_token"`
		}
	}
	if err := json.Unmarshal([]byte(r.body), &out); err != nil {
		f.t.Fatalf("GET /api/accounts: %d %s", r.status, r.body)
	}
	for _, a := range out.Items {
		if a.ID == acct && a.CSRFToken != "" {
			return a.CSRFToken
		}
	}
	f.t.Fatalf("%s has no token for %s: %s", user, acct, r.body)
	return ""
}

// key creates a key through the manager, as the command line does.
func (f *fixture) key(acct, name, server string) (store.Key, string) {
	f.t.Helper()
	typ := store.Standard
	if server != "" {
		typ = store.Restricted
	}
	k, plain, err := f.app.Manager().CreateKey(context.Background(), auth.NewKey{AccountID: acct, Name: name, Type: typ, ServerID: server}, auth.Actor{UserID: "operator:root"})
	if err != nil {
		f.t.Fatal(err)
	}
	return k, plain.Secret()
}

// live reports whether the sidecar would let the key through.
func (f *fixture) live(key string) bool {
	return f.app.Manager().Verifier.Verify(context.Background(), []string{"Bearer " + key}).Result == auth.Allowed
}

func (f *fixture) keyCount(acct string) int {
	ks, err := store.AllKeys(context.Background(), f.app.Store(), acct)
	if err != nil {
		f.t.Fatal(err)
	}
	return len(ks)
}

func (f *fixture) audit(acct string) []store.AuditEvent {
	p, err := f.app.Store().ListAudit(context.Background(), acct, store.AuditQuery{Limit: 1000})
	if err != nil {
		f.t.Fatal(err)
	}
	return p.Events
}

func expect(t *testing.T, what string, r reply, status int, contains ...string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d; body:\n%s", what, r.status, status, r.body)
	}
	for _, c := range contains {
		if !strings.Contains(r.body, c) && !strings.Contains(html.UnescapeString(r.body), c) {
			t.Fatalf("%s: body lacks %q:\n%s", what, c, r.body)
		}
	}
}

func TestKeyListShowsEveryColumn(t *testing.T) {
	f := newFixture(t)
	f.key(f.acme, "ci pipeline", "")
	r2, _ := f.key(f.acme, "staging only", "stag1234")
	f.key(f.other, "not yours", "")
	f.key(f.acme, "gone inbox", "gone0000") // an inbox the inbox API no longer lists
	used := time.Now().Add(-3 * time.Minute)
	if err := f.app.Store().TouchKeys(context.Background(), map[string]time.Time{r2.ID: used}); err != nil {
		t.Fatal(err)
	}

	for _, target := range []string{"/", "/?account=" + f.acme} {
		r := f.get(target, "alice")
		expect(t, "GET "+target, r, http.StatusOK,
			"ci pipeline", "staging only", "Standard", "Server-restricted",
			"Staging", "stag1234", // the inbox by name
			"by operator:root", "never", "3 minutes ago",
			"gone0000</span> <span class=\"muted small\">(not in the account's inbox list)</span>",
			"Create standard key", "Create server-restricted key", "Reveal key", "Actions", "Delete")
		if strings.Contains(r.body, "not yours") {
			t.Fatal("the list shows another account's key")
		}
		if keyPattern.MatchString(r.body) {
			t.Fatal("the list shows a key")
		}
	}

	// Every response carries the security headers.
	for _, r := range []reply{f.get("/", "alice"), f.get("/static/app.css", ""), f.get("/nope", "alice"), f.get("/", "")} {
		for h, want := range map[string]string{
			"Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
			"X-Frame-Options":         "DENY",
			"X-Content-Type-Options":  "nosniff",
			"Referrer-Policy":         "no-referrer",
			"Cache-Control":           "no-store",
		} {
			if got := r.header.Get(h); got != want {
				t.Errorf("%s = %q, want %q", h, got, want)
			}
		}
	}
	// No inline script or style anywhere: the CSP would block them.
	body := f.get("/", "alice").body
	if regexp.MustCompile(`<script>|<script [^>]*>[^<]|<style|style=|onclick=|javascript:`).MatchString(body) {
		t.Fatal("the page has inline script or style")
	}
}

func TestAccountSwitcher(t *testing.T) {
	f := newFixture(t)
	f.key(f.acme, "acme key", "")
	f.key(f.other, "other key", "")
	r := f.get("/?account="+f.other, "dave")
	expect(t, "dave on Other", r, http.StatusOK, `id="account-switch"`, ">Acme<", ">Other<", "other key")
	if strings.Contains(r.body, "acme key") {
		t.Fatal("Other's page shows Acme's key")
	}
	expect(t, "dave on Acme", f.get("/?account="+f.acme, "dave"), http.StatusOK, "acme key")
	// alice has one account: no switcher.
	if strings.Contains(f.get("/", "alice").body, `id="account-switch"`) {
		t.Fatal("a user with one account sees the switcher")
	}
}

// selectedPattern finds the account switcher's selected options.
var selectedPattern = regexp.MustCompile(`<option value="([^"]*)" selected>`)

// TestErrorPageSwitcher: an error page's switcher shows the account the
// request was about, or the user's default when it names none of theirs,
// and never leaves the browser to pick the first account.
func TestErrorPageSwitcher(t *testing.T) {
	f := newFixture(t)
	acme, other := f.acme, f.other
	// erin is listed on Acme first, but administers only Other: her
	// default is Other.
	for _, m := range []struct {
		acct string
		role store.Role
	}{{acme, store.Member}, {other, store.Admin}} {
		if _, err := f.app.Store().SetMember(context.Background(), m.acct, "erin", m.role); err != nil {
			t.Fatal(err)
		}
	}
	daveAcme, daveOther := f.token("dave", acme), f.token("dave", other)
	form := func(pairs ...string) url.Values {
		v := url.Values{}
		for i := 0; i+1 < len(pairs); i += 2 {
			v.Set(pairs[i], pairs[i+1])
		}
		return v
	}
	cases := []struct {
		name     string
		r        reply
		status   int
		want     string
		selected string
		nav      bool // the page links the selected account's pages
	}{
		{"missing key (GET)", f.get("/delete?account="+other+"&key=nope", "dave"), 404, "API key not found", other, true},
		{"bad key type", f.get("/new?account="+other+"&type=bogus", "dave"), 404, "no such key type", other, true},
		{"missing key (POST)", f.post("/delete", "dave", form("account", other, "csrf_token", daveOther, "key", "nope", "confirm_name", "x")), 404, "API key not found", other, true},
		{"wrong token (POST)", f.post("/reveal", "dave", form("account", other, "csrf_token", daveAcme, "key", "nope")), 403, msgCSRF, other, true},
		{"unknown account", f.get("/audit?account=nope", "dave"), 404, msgNoAcct, acme, true},
		{"member only", f.get("/?account="+acme, "erin"), 403, msgNotAdmin, acme, false},
		{"unknown account, default not first", f.get("/audit?account=nope", "erin"), 404, msgNoAcct, other, true},
		{"no account named", f.get("/delete?key=nope", "erin"), 404, msgNoAcct, other, true},
		// The body of a cross-site request is not read, even for the switcher.
		{"cross-site", f.post("/delete", "erin", form("account", acme, "csrf_token", "x"), "Sec-Fetch-Site", "cross-site"), 403, msgCross, other, true},
	}
	for _, c := range cases {
		expect(t, c.name, c.r, c.status, c.want, `id="account-switch"`)
		got := selectedPattern.FindAllStringSubmatch(c.r.body, -1)
		if len(got) != 1 || got[0][1] != c.selected {
			t.Errorf("%s: the switcher selects %q, want %q", c.name, got, c.selected)
		}
		nav := strings.Contains(c.r.body, `href="audit?account=`+c.selected+`"`)
		if nav != c.nav {
			t.Errorf("%s: navigation for the selected account: %v, want %v", c.name, nav, c.nav)
		}
		if c.nav && c.status == 404 && !strings.Contains(c.r.body, `href="./?account=`+c.selected+`">Back to API Keys`) {
			t.Errorf("%s: Back to API Keys does not lead to the selected account", c.name)
		}
	}
}

func TestCreateStandardKey(t *testing.T) {
	f := newFixture(t)
	expect(t, "the form", f.get("/new?type=standard&account="+f.acme, "alice"), http.StatusOK, "Create standard key", `name="name"`, "Create</button>")
	tok := f.token("alice", f.acme)
	r := f.post("/create", "alice", url.Values{"account": {f.acme}, "csrf_token": {tok}, "type": {"standard"}, "name": {"ci pipeline"}})
	expect(t, "create", r, http.StatusOK, "API key created", "Reveal key", "Copy", "ci pipeline")
	key := keyPattern.FindString(r.body)
	if key == "" || !f.live(key) {
		t.Fatalf("the page shows no live key (%q)", key)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Fatal("the key's page may be cached")
	}

	// JSON.
	r = f.api("POST", "/api/accounts/"+f.acme+"/keys", "alice", tok, map[string]string{"name": "automation", "type": "standard"})
	expect(t, "JSON create", r, http.StatusCreated, `"name":"automation"`, `"type":"standard"`, `"created_by":"alice"`, `"last_used_at":null`)
	var out struct{ ID, Key string }
	json.Unmarshal([]byte(r.body), &out)
	if !f.live(out.Key) || !strings.HasPrefix(out.ID, "key_") {
		t.Fatalf("JSON create: %s", r.body)
	}
}

func TestCreateRestrictedKey(t *testing.T) {
	f := newFixture(t)
	r := f.get("/new?type=restricted&account="+f.acme, "alice")
	expect(t, "the form", r, http.StatusOK, "Create server-restricted key", `<option value="stag1234">Staging (stag1234)</option>`, "Production (prod5678)")
	if strings.Contains(r.body, "othr0001") {
		t.Fatal("the form offers another account's inbox")
	}
	tok := f.token("alice", f.acme)
	form := func(name, server string) url.Values {
		return url.Values{"account": {f.acme}, "csrf_token": {tok}, "type": {"restricted"}, "name": {name}, "server": {server}}
	}
	r = f.post("/create", "alice", form("staging only", "stag1234"))
	expect(t, "create", r, http.StatusOK, "API key created", "Server-restricted", "Staging")
	if !f.live(keyPattern.FindString(r.body)) {
		t.Fatal("the restricted key is not live")
	}
	ks, _ := store.AllKeys(context.Background(), f.app.Store(), f.acme)
	if len(ks) != 1 || ks[0].ServerID != "stag1234" || ks[0].Type != store.Restricted {
		t.Fatalf("stored: %+v", ks)
	}

	// The inbox of another account, one that does not exist, none at all.
	expect(t, "other account's inbox", f.post("/create", "alice", form("sneaky", "othr0001")), http.StatusBadRequest, "That inbox is not in this account.")
	expect(t, "unknown inbox", f.post("/create", "alice", form("sneaky", "zzzz9999")), http.StatusBadRequest, "That inbox is not in this account.")
	expect(t, "no inbox", f.post("/create", "alice", form("sneaky", "")), http.StatusBadRequest, "Select the inbox")
	r = f.api("POST", "/api/accounts/"+f.acme+"/keys", "alice", tok, map[string]string{"name": "sneaky", "type": "restricted", "server": "othr0001"})
	expect(t, "JSON: other account's inbox", r, http.StatusBadRequest, `"error":"That inbox is not in this account."`)
	if n := f.keyCount(f.acme); n != 1 {
		t.Fatalf("%d keys after refusals, want 1", n)
	}

	// An account without inboxes.
	empty, err := f.app.Store().CreateAccount(context.Background(), "Empty")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.app.Store().SetMember(context.Background(), empty.ID, "erin", store.Admin); err != nil {
		t.Fatal(err)
	}
	expect(t, "no inboxes", f.get("/new?type=restricted&account="+empty.ID, "erin"), http.StatusOK, "This account has no inboxes yet", "disabled>Create")

	// The inbox list of the JSON API.
	r = f.api("GET", "/api/accounts/"+f.acme+"/inboxes", "alice", "", nil)
	expect(t, "inboxes", r, http.StatusOK, `{"id":"stag1234","name":"Staging"}`, `{"id":"prod5678","name":"Production"}`)
}

func TestCreateRefusesBadNames(t *testing.T) {
	f := newFixture(t)
	f.key(f.acme, "taken", "")
	tok := f.token("alice", f.acme)
	for name, want := range map[string]string{
		"taken":                   "A key with this name already exists",
		"":                        "Names are 1–100 printable characters",
		" padded":                 "Names are 1–100 printable characters",
		"tab\there":               "Names are 1–100 printable characters",
		strings.Repeat("x", 101):  "Names are 1–100 printable characters",
		strings.Repeat("é", 100):  "",
		"quotes \"<b>&'</b>\" ok": "",
	} {
		r := f.post("/create", "alice", url.Values{"account": {f.acme}, "csrf_token": {tok}, "type": {"standard"}, "name": {name}})
		switch {
		case want == "":
			expect(t, fmt.Sprintf("name %q", name), r, http.StatusOK, "API key created")
		case strings.HasPrefix(want, "A key"):
			expect(t, "duplicate", r, http.StatusConflict, want)
		default:
			expect(t, fmt.Sprintf("name %q", name), r, http.StatusBadRequest, want, `value="`) // the form again
		}
	}
	r := f.post("/create", "alice", url.Values{"account": {f.acme}, "csrf_token": {tok}, "type": {"admin"}, "name": {"x"}})
	expect(t, "unknown type", r, http.StatusBadRequest, "standard or restricted")
	// The name with markup is shown escaped.
	if body := f.get("/", "alice").body; !strings.Contains(body, "quotes &#34;&lt;b&gt;&amp;&#39;&lt;/b&gt;&#34; ok") {
		t.Fatal("the name is not escaped in the list")
	}
}

func TestReveal(t *testing.T) {
	f := newFixture(t)
	k, plain := f.key(f.acme, "ci", "")
	ok, _ := f.key(f.other, "theirs", "")
	tok := f.token("alice", f.acme)

	r := f.post("/reveal", "alice", url.Values{"account": {f.acme}, "csrf_token": {tok}, "key": {k.ID}})
	expect(t, "reveal page", r, http.StatusOK, plain, "Copy")
	r = f.api("POST", "/api/accounts/"+f.acme+"/keys/"+k.ID+"/reveal", "alice", tok, nil)
	expect(t, "JSON reveal", r, http.StatusOK, `"key":"`+plain+`"`)

	// By POST only.
	r = f.get("/reveal?account="+f.acme+"&key="+k.ID+"&csrf_token="+tok, "alice")
	expect(t, "GET /reveal", r, http.StatusMethodNotAllowed)
	if r.header.Get("Allow") != "POST" || strings.Contains(r.body, plain) {
		t.Fatalf("GET /reveal: Allow %q", r.header.Get("Allow"))
	}
	r = f.api("GET", "/api/accounts/"+f.acme+"/keys/"+k.ID+"/reveal", "alice", tok, nil)
	expect(t, "GET reveal (JSON)", r, http.StatusMethodNotAllowed, `"error"`)

	// Unknown ids, and a key of another account named under one's own.
	for _, id := range []string{"key_doesnotexist00000", ok.ID, ""} {
		r = f.post("/reveal", "alice", url.Values{"account": {f.acme}, "csrf_token": {tok}, "key": {id}})
		expect(t, "reveal "+id, r, http.StatusNotFound, "API key not found")
	}
	r = f.api("POST", "/api/accounts/"+f.acme+"/keys/"+ok.ID+"/reveal", "alice", tok, nil)
	expect(t, "JSON reveal of another account's key", r, http.StatusNotFound)
}

func TestDelete(t *testing.T) {
	f := newFixture(t)
	k, plain := f.key(f.acme, "ci pipeline", "")
	tok := f.token("alice", f.acme)
	form := func(id, name string) url.Values {
		return url.Values{"account": {f.acme}, "csrf_token": {tok}, "key": {id}, "confirm_name": {name}}
	}
	if !f.live(plain) {
		t.Fatal("the key is not live")
	}

	// The confirmation page (without JavaScript) changes nothing, even
	// with every parameter a delete needs.
	r := f.get("/delete?account="+f.acme+"&key="+k.ID+"&confirm_name=ci+pipeline&csrf_token="+tok, "alice")
	expect(t, "confirmation page", r, http.StatusOK, "Type <strong>ci pipeline</strong> to confirm", "This action cannot be undone.")

	// The server checks the typed name exactly.
	for _, typed := range []string{"", "ci", "CI PIPELINE", "ci pipeline ", " ci pipeline"} {
		expect(t, fmt.Sprintf("typed %q", typed), f.post("/delete", "alice", form(k.ID, typed)), http.StatusBadRequest, msgMismatch)
	}
	r = f.api("POST", "/api/accounts/"+f.acme+"/keys/"+k.ID+"/delete", "alice", tok, map[string]string{"name": "CI pipeline"})
	expect(t, "JSON wrong name", r, http.StatusBadRequest, msgMismatch)
	r = f.api("GET", "/api/accounts/"+f.acme+"/keys/"+k.ID+"/delete", "alice", tok, nil)
	expect(t, "GET delete (JSON)", r, http.StatusMethodNotAllowed)
	r = f.api("DELETE", "/api/accounts/"+f.acme+"/keys", "alice", tok, nil)
	expect(t, "DELETE (JSON)", r, http.StatusMethodNotAllowed)
	if !f.live(plain) || f.keyCount(f.acme) != 1 {
		t.Fatal("a refused delete deleted the key")
	}

	r = f.post("/delete", "alice", form(k.ID, "ci pipeline"))
	expect(t, "delete", r, http.StatusOK, "API key deleted", "ci pipeline", "This action cannot be undone.", "Revoked on this instance.")
	if f.live(plain) {
		t.Fatal("the deleted key still passes the sidecar's check")
	}
	expect(t, "delete again", f.post("/delete", "alice", form(k.ID, "ci pipeline")), http.StatusNotFound, "API key not found")

	// JSON.
	k2, plain2 := f.key(f.acme, "second", "")
	r = f.api("POST", "/api/accounts/"+f.acme+"/keys/"+k2.ID+"/delete", "alice", tok, map[string]string{"name": "second"})
	expect(t, "JSON delete", r, http.StatusOK, `"deleted":true`, `"revocation":"Revoked on this instance."`)
	if f.live(plain2) || f.keyCount(f.acme) != 0 {
		t.Fatal("the JSON delete did not revoke the key")
	}
	r = f.api("POST", "/api/accounts/"+f.acme+"/keys/key_unknown/delete", "alice", tok, map[string]string{"name": "x"})
	expect(t, "JSON delete of an unknown key", r, http.StatusNotFound)
}

// TestRefusals: everyone who may not act is refused, and nothing changes.
func TestRefusals(t *testing.T) {
	f := newFixture(t)
	acmeKey, acmePlain := f.key(f.acme, "acme", "")
	otherKey, otherPlain := f.key(f.other, "other", "")
	aliceTok := f.token("alice", f.acme)
	daveAcme, daveOther := f.token("dave", f.acme), f.token("dave", f.other)
	auditBefore := len(f.audit(f.acme)) + len(f.audit(f.other))

	acme, other := f.acme, f.other
	formFor := func(acct, tok string, extra ...string) url.Values {
		v := url.Values{"account": {acct}, "csrf_token": {tok}}
		for i := 0; i+1 < len(extra); i += 2 {
			v.Set(extra[i], extra[i+1])
		}
		return v
	}
	create := func(acct, tok string) url.Values { return formFor(acct, tok, "type", "standard", "name", "new") }
	reveal := func(acct, tok, id string) url.Values { return formFor(acct, tok, "key", id) }
	del := func(acct, tok, id, name string) url.Values {
		return formFor(acct, tok, "key", id, "confirm_name", name)
	}

	type tc struct {
		name   string
		method string
		target string
		user   string
		form   url.Values
		json   any
		header []string
		status int
		want   string
	}
	jsonPost := func(name, target, user, tok string, body any, status int, want string) tc {
		return tc{name: name, method: "POST", target: target, user: user, json: body, header: []string{"X-CSRF-Token", tok}, status: status, want: want}
	}
	cases := []tc{
		// A member who is not an administrator sees the message and can do nothing else.
		{name: "member: list", method: "GET", target: "/?account=" + acme, user: "bob", status: 403, want: msgNotAdmin},
		{name: "member: default page", method: "GET", target: "/", user: "bob", status: 403, want: msgNotAdmin},
		{name: "member: form", method: "GET", target: "/new?account=" + acme, user: "bob", status: 403, want: msgNotAdmin},
		{name: "member: audit", method: "GET", target: "/audit?account=" + acme, user: "bob", status: 403, want: msgNotAdmin},
		{name: "member: confirm page", method: "GET", target: "/delete?account=" + acme + "&key=" + acmeKey.ID, user: "bob", status: 403, want: msgNotAdmin},
		{name: "member: create", method: "POST", target: "/create", user: "bob", form: create(acme, aliceTok), status: 403, want: msgNotAdmin},
		{name: "member: reveal", method: "POST", target: "/reveal", user: "bob", form: reveal(acme, aliceTok, acmeKey.ID), status: 403, want: msgNotAdmin},
		{name: "member: delete", method: "POST", target: "/delete", user: "bob", form: del(acme, aliceTok, acmeKey.ID, "acme"), status: 403, want: msgNotAdmin},
		{name: "member: JSON list", method: "GET", target: "/api/accounts/" + acme + "/keys", user: "bob", status: 403, want: msgNotAdmin},
		{name: "member: JSON audit", method: "GET", target: "/api/accounts/" + acme + "/audit", user: "bob", status: 403, want: msgNotAdmin},
		jsonPost("member: JSON reveal", "/api/accounts/"+acme+"/keys/"+acmeKey.ID+"/reveal", "bob", aliceTok, nil, 403, msgNotAdmin),
		jsonPost("member: JSON delete", "/api/accounts/"+acme+"/keys/"+acmeKey.ID+"/delete", "bob", aliceTok, map[string]string{"name": "acme"}, 403, msgNotAdmin),

		// An administrator of one account never sees or touches another's keys.
		{name: "other account: list", method: "GET", target: "/?account=" + other, user: "alice", status: 404, want: msgNoAcct},
		{name: "other account: audit", method: "GET", target: "/audit?account=" + other, user: "alice", status: 404, want: msgNoAcct},
		{name: "other account: create", method: "POST", target: "/create", user: "alice", form: create(other, aliceTok), status: 404, want: msgNoAcct},
		{name: "other account: reveal", method: "POST", target: "/reveal", user: "alice", form: reveal(other, aliceTok, otherKey.ID), status: 404, want: msgNoAcct},
		{name: "other account: delete", method: "POST", target: "/delete", user: "alice", form: del(other, aliceTok, otherKey.ID, "other"), status: 404, want: msgNoAcct},
		{name: "other account's key under own account: reveal", method: "POST", target: "/reveal", user: "alice", form: reveal(acme, aliceTok, otherKey.ID), status: 404, want: "API key not found"},
		{name: "other account's key under own account: delete", method: "POST", target: "/delete", user: "alice", form: del(acme, aliceTok, otherKey.ID, "other"), status: 404, want: "API key not found"},
		{name: "other account's key under own account: confirm page", method: "GET", target: "/delete?account=" + acme + "&key=" + otherKey.ID, user: "alice", status: 404, want: "API key not found"},
		{name: "admin of other: list", method: "GET", target: "/?account=" + acme, user: "carol", status: 404, want: msgNoAcct},
		{name: "stranger: list", method: "GET", target: "/", user: "mallory", status: 403, want: "not a member of any account"},
		{name: "other account: JSON list", method: "GET", target: "/api/accounts/" + other + "/keys", user: "alice", status: 404, want: msgNoAcct},
		{name: "other account: JSON inboxes", method: "GET", target: "/api/accounts/" + other + "/inboxes", user: "alice", status: 404, want: msgNoAcct},
		jsonPost("other account: JSON reveal", "/api/accounts/"+other+"/keys/"+otherKey.ID+"/reveal", "alice", aliceTok, nil, 404, msgNoAcct),
		jsonPost("other account: JSON create", "/api/accounts/"+other+"/keys", "alice", aliceTok, map[string]string{"name": "x", "type": "standard"}, 404, msgNoAcct),

		// CSRF: a missing token, another user's, another account's.
		{name: "no token: create", method: "POST", target: "/create", user: "alice", form: create(acme, ""), status: 403, want: msgCSRF},
		{name: "no token: reveal", method: "POST", target: "/reveal", user: "alice", form: reveal(acme, "", acmeKey.ID), status: 403, want: msgCSRF},
		{name: "no token: delete", method: "POST", target: "/delete", user: "alice", form: del(acme, "", acmeKey.ID, "acme"), status: 403, want: msgCSRF},
		{name: "another user's token", method: "POST", target: "/reveal", user: "alice", form: reveal(acme, daveAcme, acmeKey.ID), status: 403, want: msgCSRF},
		{name: "another account's token", method: "POST", target: "/reveal", user: "dave", form: reveal(acme, daveOther, acmeKey.ID), status: 403, want: msgCSRF},
		{name: "garbage token", method: "POST", target: "/delete", user: "alice", form: del(acme, "x"+aliceTok, acmeKey.ID, "acme"), status: 403, want: msgCSRF},
		jsonPost("no token: JSON reveal", "/api/accounts/"+acme+"/keys/"+acmeKey.ID+"/reveal", "alice", "", nil, 403, msgCSRF),
		jsonPost("foreign token: JSON delete", "/api/accounts/"+acme+"/keys/"+acmeKey.ID+"/delete", "alice", daveAcme, map[string]string{"name": "acme"}, 403, msgCSRF),
		jsonPost("form token in JSON body only", "/api/accounts/"+acme+"/keys", "alice", "", map[string]string{"name": "x", "type": "standard", "csrf_token": aliceTok}, 403, msgCSRF),

		// Cross-site requests, even with a valid token.
		{name: "cross-site (Sec-Fetch-Site)", method: "POST", target: "/delete", user: "alice", form: del(acme, aliceTok, acmeKey.ID, "acme"), header: []string{"Sec-Fetch-Site", "cross-site"}, status: 403, want: msgCross},
		{name: "same-site (Sec-Fetch-Site)", method: "POST", target: "/reveal", user: "alice", form: reveal(acme, aliceTok, acmeKey.ID), header: []string{"Sec-Fetch-Site", "same-site"}, status: 403, want: msgCross},
		{name: "cross-site (Origin)", method: "POST", target: "/reveal", user: "alice", form: reveal(acme, aliceTok, acmeKey.ID), header: []string{"Sec-Fetch-Site", "", "Origin", "https://evil.example"}, status: 403, want: msgCross},

		// GET where POST is required.
		{name: "GET create", method: "GET", target: "/create?account=" + acme + "&csrf_token=" + aliceTok + "&type=standard&name=new", user: "alice", status: 405},
		{name: "GET reveal", method: "GET", target: "/reveal?account=" + acme + "&csrf_token=" + aliceTok + "&key=" + acmeKey.ID, user: "alice", status: 405},
		{name: "PUT delete", method: "PUT", target: "/delete", user: "alice", form: del(acme, aliceTok, acmeKey.ID, "acme"), status: 405},
		{name: "GET JSON delete", method: "GET", target: "/api/accounts/" + acme + "/keys/" + acmeKey.ID + "/delete", user: "alice", status: 405},

		// Nobody signed in; an API key instead of a user.
		{name: "no user", method: "GET", target: "/", status: 401, want: "not signed in"},
		{name: "no user: JSON", method: "POST", target: "/api/accounts/" + acme + "/keys/" + acmeKey.ID + "/reveal", status: 401, want: "not signed in"},
		{name: "API key", method: "GET", target: "/", user: "key_abc", header: []string{"X-Test-API-Key", "1"}, status: 403, want: "does not accept API keys"},
		{name: "API key: reveal", method: "POST", target: "/reveal", user: "alice", form: reveal(acme, aliceTok, acmeKey.ID), header: []string{"X-Test-API-Key", "1"}, status: 403, want: "does not accept API keys"},
	}
	for _, c := range cases {
		var r reply
		switch {
		case c.form != nil && c.method == "POST":
			r = f.post(c.target, c.user, c.form, c.header...)
		case c.form != nil:
			h := append([]string{"Content-Type", "application/x-www-form-urlencoded", "Sec-Fetch-Site", "same-origin"}, c.header...)
			r = f.do(f.dash, c.method, c.target, c.user, strings.NewReader(c.form.Encode()), h...)
		case c.json != nil || c.method == "POST":
			var rd io.Reader
			h := append([]string{"Content-Type", "application/json"}, c.header...)
			if c.json != nil {
				b, _ := json.Marshal(c.json)
				rd = strings.NewReader(string(b))
			}
			r = f.do(f.dash, c.method, c.target, c.user, rd, h...)
		default:
			r = f.do(f.dash, c.method, c.target, c.user, nil, c.header...)
		}
		if r.status != c.status || !strings.Contains(html.UnescapeString(r.body), c.want) {
			t.Errorf("%s: %d, want %d with %q; body:\n%.600s", c.name, r.status, c.status, c.want, r.body)
		}
		if strings.Contains(r.body, acmePlain) || strings.Contains(r.body, otherPlain) {
			t.Errorf("%s: the refusal shows a key", c.name)
		}
		if strings.HasPrefix(c.target, "/api/") && !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
			t.Errorf("%s: a JSON route answered %s", c.name, r.header.Get("Content-Type"))
		}
	}
	if f.keyCount(acme) != 1 || f.keyCount(other) != 1 || !f.live(acmePlain) || !f.live(otherPlain) {
		t.Fatal("a refused request changed the keys")
	}
	if n := len(f.audit(acme)) + len(f.audit(other)); n != auditBefore {
		t.Fatalf("refused requests wrote %d audit events", n-auditBefore)
	}
}

// TestAuditRecordsEachActionOnce: create, reveal and delete each write
// one event, with who, when, where and which key, and never the key.
func TestAuditRecordsEachActionOnce(t *testing.T) {
	f := newFixture(t)
	tok := f.token("alice", f.acme)
	r := f.post("/create", "alice", url.Values{"account": {f.acme}, "csrf_token": {tok}, "type": {"restricted"}, "name": {"audited"}, "server": {"stag1234"}})
	expect(t, "create", r, http.StatusOK)
	plain := keyPattern.FindString(r.body)
	ks, _ := store.AllKeys(context.Background(), f.app.Store(), f.acme)
	id := ks[0].ID
	expect(t, "list", f.get("/", "alice"), http.StatusOK) // reading is not audited
	expect(t, "reveal", f.api("POST", "/api/accounts/"+f.acme+"/keys/"+id+"/reveal", "alice", tok, nil), http.StatusOK, plain)
	expect(t, "delete", f.post("/delete", "alice", url.Values{"account": {f.acme}, "csrf_token": {tok}, "key": {id}, "confirm_name": {"audited"}}), http.StatusOK)

	evs := f.audit(f.acme)
	if len(evs) != 3 {
		t.Fatalf("%d audit events, want 3: %+v", len(evs), evs)
	}
	for i, want := range []string{store.ActionDelete, store.ActionReveal, store.ActionCreate} { // newest first
		ev := evs[i]
		if ev.Action != want || ev.Actor != "alice" || ev.KeyID != id || ev.KeyName != "audited" ||
			ev.RemoteAddr != "192.0.2.1" || ev.KeyDisplay != plain[:8] || time.Since(ev.At) > time.Minute {
			t.Errorf("event %d: %+v, want %s by alice from 192.0.2.1", i, ev, want)
		}
		if strings.Contains(fmt.Sprintf("%+v", ev), plain[8:]) {
			t.Errorf("event %d holds the key", i)
		}
	}

	page := f.get("/audit?account="+f.acme, "alice")
	expect(t, "audit page", page, http.StatusOK, "Created", "Revealed", "Deleted", "audited", "192.0.2.1", "alice", id)
	if strings.Contains(page.body, plain[8:]) {
		t.Fatal("the audit page shows the key")
	}
	js := f.api("GET", "/api/accounts/"+f.acme+"/audit", "alice", "", nil)
	expect(t, "JSON audit", js, http.StatusOK, `"action":"key.delete"`, `"action":"key.reveal"`, `"action":"key.create"`, `"remote_addr":"192.0.2.1"`)
	if strings.Contains(js.body, plain[8:]) {
		t.Fatal("the JSON audit shows the key")
	}
}

func TestAuditPages(t *testing.T) {
	f := newFixture(t)
	for i := range 55 {
		f.key(f.acme, fmt.Sprintf("key %02d", i), "")
	}
	r := f.get("/audit?account="+f.acme, "alice")
	expect(t, "first page", r, http.StatusOK, "key 54", "Older entries")
	if strings.Contains(r.body, "key 04<") || strings.Contains(r.body, "Newer entries") {
		t.Fatal("the first page shows the oldest events, or a newer page")
	}
	older := link(t, r, "next")
	if !strings.Contains(older, "before=") {
		t.Fatalf("the link to older entries is %q", older)
	}
	r = f.get(older, "alice")
	expect(t, "second page", r, http.StatusOK, "key 00", "key 04", "Newest", "Newer entries")
	if r := f.get(link(t, r, "prev"), "alice"); !strings.Contains(r.body, "key 54") || !strings.Contains(r.body, "key 05<") {
		t.Fatal("Newer entries does not lead back to the first page")
	}
	js := f.api("GET", "/api/accounts/"+f.acme+"/audit?limit=10", "alice", "", nil)
	expect(t, "JSON page", js, http.StatusOK, `"next_before":`)
}

// link is the target of the page's link rel=next or rel=prev, as a path
// of the dashboard; "" when there is none.
func link(t *testing.T, r reply, rel string) string {
	t.Helper()
	m := regexp.MustCompile(`href="([^"]*)" rel="` + rel + `"`).FindStringSubmatch(r.body)
	if m == nil {
		return ""
	}
	return "/" + strings.TrimPrefix(html.UnescapeString(m[1]), "./")
}

// listed is the names of the keys the list page shows, in order.
func listed(r reply) []string {
	var names []string
	for _, m := range regexp.MustCompile(`data-key-name="([^"]*)"`).FindAllStringSubmatch(r.body, -1) {
		names = append(names, html.UnescapeString(m[1]))
	}
	return names
}

// TestKeyListPages: the list shows a page at a time, its links lead
// through every key exactly once both ways, and keep the search and
// the sort.
func TestKeyListPages(t *testing.T) {
	f := newFixture(t)
	var all []string
	for i := range 120 {
		name := fmt.Sprintf("key %03d", i)
		f.key(f.acme, name, "")
		all = append(all, name)
	}
	f.key(f.other, "key 999", "")

	r := f.get("/?account="+f.acme, "alice")
	expect(t, "first page", r, http.StatusOK, "120 keys", `aria-sort="ascending"`, "Next")
	if got := listed(r); !slices.Equal(got, all[:50]) {
		t.Fatalf("the first page shows %v", got)
	}
	if link(t, r, "prev") != "" || strings.Contains(r.body, "First page") {
		t.Fatal("the first page links to a previous page")
	}

	var got []string
	var pages []reply
	for target := "/?account=" + f.acme; target != ""; target = link(t, r, "next") {
		if len(pages) > 3 {
			t.Fatal("the pages go on")
		}
		r = f.get(target, "alice")
		expect(t, target, r, http.StatusOK, "120 keys")
		got = append(got, listed(r)...)
		pages = append(pages, r)
	}
	if !slices.Equal(got, all) || len(pages) != 3 {
		t.Fatalf("%d pages of %d keys, in this order: %v", len(pages), len(got), got)
	}
	for i := len(pages) - 1; i > 0; i-- {
		back := f.get(link(t, pages[i], "prev"), "alice")
		if !slices.Equal(listed(back), listed(pages[i-1])) {
			t.Fatalf("Previous from page %d shows %v", i+1, listed(back))
		}
	}
	expect(t, "the last page", pages[2], http.StatusOK, "First page")

	// The JSON API pages alike, by its cursors.
	got = nil
	for q, n := "limit=50", 0; ; n++ {
		js := f.api("GET", "/api/accounts/"+f.acme+"/keys?"+q, "alice", "", nil)
		var page struct {
			Items []struct {
				Name string `json:"name"`
			} `json:"items"`
			Total int    `json:"total"`
			Next  string `json:"next_cursor"`
			Prev  string `json:"prev_cursor"`
		}
		if err := json.Unmarshal([]byte(js.body), &page); err != nil || js.status != http.StatusOK || page.Total != 120 || n > 3 {
			t.Fatalf("JSON page %d: %d %s", n, js.status, js.body)
		}
		if (n == 0) != (page.Prev == "") {
			t.Errorf("JSON page %d: prev_cursor %q", n, page.Prev)
		}
		for _, it := range page.Items {
			got = append(got, it.Name)
		}
		if page.Next == "" {
			break
		}
		q = "limit=50&cursor=" + url.QueryEscape(page.Next)
	}
	if !slices.Equal(got, all) {
		t.Fatalf("the JSON pages hold %v", got)
	}
}

// TestKeyListSearchAndSort: the search box finds keys by name or prefix,
// the column headers sort, and each keeps the other.
func TestKeyListSearchAndSort(t *testing.T) {
	f := newFixture(t)
	for _, name := range []string{"prod api", "Prod EU", "staging", "100% done", "100_x", "<b>bold</b>", "ci"} {
		f.key(f.acme, name, "")
	}
	ci, _ := f.key(f.acme, "CI", "")
	f.key(f.other, "prod other", "")
	used := map[string]time.Time{}
	for _, k := range []string{"staging", "ci"} {
		ks, _ := f.app.Store().ListKeys(context.Background(), f.acme, store.KeyQuery{Search: k})
		used[ks.Keys[0].ID] = time.Now().Add(-time.Duration(len(used)+1) * time.Hour)
	}
	if err := f.app.Store().TouchKeys(context.Background(), used); err != nil {
		t.Fatal(err)
	}
	list := func(query string) (reply, []string) {
		t.Helper()
		r := f.get("/?account="+f.acme+"&"+query, "alice")
		expect(t, query, r, http.StatusOK)
		return r, listed(r)
	}

	// How a test compares the names listed with those it wants.
	const (
		anyOrder = iota // the same names
		inOrder         // the same names in order, ignoring case (ci and CI tie, and go by id)
		first           // these names first, in order
	)
	for _, tc := range []struct {
		query   string
		compare int
		want    []string
		count   string
	}{
		{"q=prod", anyOrder, []string{"prod api", "Prod EU"}, "2 keys match"},
		{"q=PROD&sort=name&order=desc", inOrder, []string{"prod eu", "prod api"}, "2 keys match"},
		{"q=%25", anyOrder, []string{"100% done"}, "1 key matches"},
		{"q=_", anyOrder, []string{"100_x"}, "1 key matches"},
		{"q=" + url.QueryEscape(ci.Display+"…"), anyOrder, []string{"CI"}, "1 key matches"},
		{"q=nothing", anyOrder, nil, "0 keys match"},
		{"sort=name", inOrder, []string{"100% done", "100_x", "<b>bold</b>", "ci", "ci", "prod api", "prod eu", "staging"}, "8 keys"},
		{"sort=last_used&order=desc", first, []string{"staging", "ci"}, "8 keys"},
	} {
		r, got := list(tc.query)
		switch tc.compare {
		case anyOrder:
			slices.Sort(got)
			slices.Sort(tc.want)
		case inOrder:
			for i := range got {
				got[i] = strings.ToLower(got[i])
			}
		case first:
			got = got[:min(len(got), len(tc.want))]
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.query, got, tc.want)
		}
		expect(t, tc.query, r, http.StatusOK, tc.count)
	}

	// The sort links keep the search; the search form keeps the sort.
	r, _ := list("q=prod&sort=name&order=desc")
	expect(t, "sorted search", r, http.StatusOK,
		`aria-sort="descending"`,
		`href="./?account=`+f.acme+`&q=prod&sort=name"`,                 // Name: the other way
		`href="./?account=`+f.acme+`&order=desc&q=prod&sort=last_used"`, // Last used: most recent first
		`<input type="hidden" name="order" value="desc">`, `<input type="hidden" name="sort" value="name">`,
		`value="prod"`, "Clear")

	// What the user typed is text, on the page and in its links.
	r, _ = list("q=" + url.QueryEscape(`"><script>alert(1)</script>`))
	if strings.Contains(r.body, "<script>alert") || !strings.Contains(r.body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Fatalf("the search is not escaped:\n%s", r.body)
	}
	r, got := list("q=" + url.QueryEscape("<b>"))
	if !slices.Equal(got, []string{"<b>bold</b>"}) || strings.Contains(r.body, "<b>bold") {
		t.Fatalf("search of markup: %q", got)
	}
	// A whole key is searched by its prefix, and never shown.
	_, plain := f.key(f.acme, "pasted", "")
	r, got = list("q=" + url.QueryEscape(plain))
	if !slices.Equal(got, []string{"pasted"}) || strings.Contains(r.body, plain) {
		t.Fatalf("search of a whole key: %q", got)
	}
	if regexp.MustCompile(`<style|style=|onclick=|javascript:|<script>`).MatchString(r.body) {
		t.Fatal("the searched page has inline script or style")
	}
}

// TestListBadParameters: parameters the lists cannot use are a 400 that
// says what is expected, on the pages and in the JSON API, never a 500.
func TestListBadParameters(t *testing.T) {
	f := newFixture(t)
	for i := range 3 {
		f.key(f.acme, fmt.Sprintf("k%d", i), "")
	}
	js := f.api("GET", "/api/accounts/"+f.acme+"/keys?sort=name&limit=1", "alice", "", nil)
	var page struct {
		Next string `json:"next_cursor"`
	}
	if err := json.Unmarshal([]byte(js.body), &page); err != nil || page.Next == "" {
		t.Fatalf("JSON list: %s", js.body)
	}
	nameCursor := url.QueryEscape(page.Next)

	const (
		badSort   = "Keys sort by name, created or last_used"
		badLimit  = "The limit is a whole number from 1 to 500"
		badCursor = "This page link is damaged"
		badSearch = "at most 100 characters"
		badAction = "The action is one of"
		badBound  = "before and after are event ids"
	)
	for _, tc := range []struct{ query, want string }{
		{"sort=digest", badSort},
		{"sort=name%3B+drop+table+api_keys", badSort},
		{"order=sideways", badSort},
		{"limit=0", badLimit},
		{"limit=-1", badLimit},
		{"limit=501", badLimit},
		{"limit=99999999999999999999999", badLimit},
		{"limit=ten", badLimit},
		{"cursor=garbage", badCursor},
		{"cursor=" + strings.Repeat("A", 5000), badCursor},
		{"cursor=" + nameCursor, badCursor},                      // a cursor of the name order, sorted by creation
		{"sort=name&order=desc&cursor=" + nameCursor, badCursor}, // the other way
		{"q=" + strings.Repeat("x", 101), badSearch},
		{"q=%00", badSearch},
		{"q=%FF", badSearch},
	} {
		r := f.get("/?account="+f.acme+"&"+tc.query, "alice")
		expect(t, "page "+tc.query, r, http.StatusBadRequest, tc.want)
		r = f.api("GET", "/api/accounts/"+f.acme+"/keys?"+tc.query, "alice", "", nil)
		expect(t, "JSON "+tc.query, r, http.StatusBadRequest, tc.want)
	}
	for _, tc := range []struct{ query, want string }{
		{"action=key.steal", badAction},
		{"action=%27+or+1%3D1", badAction},
		{"before=abc", badBound},
		{"before=-5", badBound},
		{"after=0", badBound},
		{"before=5&after=2", badBound},
		{"before=99999999999999999999999", badBound},
		{"limit=0", badLimit},
		{"limit=100000", badLimit},
		{"q=" + strings.Repeat("%25", 200), badSearch},
	} {
		r := f.get("/audit?account="+f.acme+"&"+tc.query, "alice")
		expect(t, "audit page "+tc.query, r, http.StatusBadRequest, tc.want)
		r = f.api("GET", "/api/accounts/"+f.acme+"/audit?"+tc.query, "alice", "", nil)
		expect(t, "JSON audit "+tc.query, r, http.StatusBadRequest, tc.want)
	}
	// The longest search and the largest page are fine.
	expect(t, "long search", f.get("/?account="+f.acme+"&limit=500&q="+strings.Repeat("x", 100), "alice"), http.StatusOK, "0 keys match")
	expect(t, "long audit search", f.get("/audit?account="+f.acme+"&limit=500&q="+strings.Repeat("x", 100), "alice"), http.StatusOK, "No events match")
}

// TestAuditSearch: the audit log is searched by key name or prefix and
// by action, and its pages keep both.
func TestAuditSearch(t *testing.T) {
	f := newFixture(t)
	tok := f.token("alice", f.acme)
	var staging store.Key
	for i := range 8 {
		k, _ := f.key(f.acme, fmt.Sprintf("staging %d", i), "")
		f.key(f.acme, fmt.Sprintf("prod %d", i), "")
		if i == 0 {
			staging = k
		}
	}
	for range 3 {
		expect(t, "reveal", f.api("POST", "/api/accounts/"+f.acme+"/keys/"+staging.ID+"/reveal", "alice", tok, nil), http.StatusOK)
	}

	r := f.get("/audit?account="+f.acme+"&action=key.reveal", "alice")
	expect(t, "reveals", r, http.StatusOK, "staging 0", `<option value="key.reveal" selected>`)
	if strings.Contains(r.body, "prod 0") || strings.Count(r.body, `badge-reveal">Revealed<`) != 3 {
		t.Fatalf("the reveals page shows other events:\n%s", r.body)
	}
	r = f.get("/audit?account="+f.acme+"&q=STAGING&action=key.create&limit=3", "alice")
	expect(t, "search", r, http.StatusOK, "staging 7", "staging 5", `value="STAGING"`, "Clear")
	if strings.Contains(r.body, "prod ") || strings.Contains(r.body, `badge-reveal">Revealed<`) {
		t.Fatal("the search shows other keys' events")
	}
	older := link(t, r, "next")
	for _, want := range []string{"q=STAGING", "action=key.create", "limit=3", "before="} {
		if !strings.Contains(older, want) {
			t.Fatalf("the link to older entries %q lacks %s", older, want)
		}
	}
	expect(t, "older", f.get(older, "alice"), http.StatusOK, "staging 4", "staging 2")
	r = f.get("/audit?account="+f.acme+"&q="+url.QueryEscape(staging.Display), "alice")
	expect(t, "by prefix", r, http.StatusOK, "staging 0", "Revealed", "Created")

	js := f.api("GET", "/api/accounts/"+f.acme+"/audit?q=prod&action=key.create&limit=5", "alice", "", nil)
	expect(t, "JSON search", js, http.StatusOK, `"next_before":`, `"key_name":"prod 7"`)
	if strings.Contains(js.body, "staging") {
		t.Fatal("the JSON search shows other keys' events")
	}
}

func TestInboxAPIFailures(t *testing.T) {
	f := newFixture(t)
	f.key(f.acme, "restricted", "stag1234")
	tok := f.token("alice", f.acme)
	form := url.Values{"account": {f.acme}, "csrf_token": {tok}, "type": {"restricted"}, "name": {"x"}, "server": {"stag1234"}}

	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "boom", 500) }))
	defer broken.Close()

	for name, c := range map[string]struct {
		lister inboxapi.Lister
		want   string
	}{
		"down":   {&inboxapi.Client{BaseURL: down.URL}, "could not be reached"},
		"slow":   {&inboxapi.Client{BaseURL: slow.URL, Timeout: 200 * time.Millisecond}, "did not answer within 200ms"},
		"broken": {&inboxapi.Client{BaseURL: broken.URL}, "answered 500 Internal Server Error"},
	} {
		f.dash = f.dashboard(c.lister)
		expect(t, name+": form", f.get("/new?type=restricted&account="+f.acme, "alice"), http.StatusOK, "The account's inboxes could not be read: the inbox API", c.want, "disabled>Create")
		expect(t, name+": create", f.post("/create", "alice", form), http.StatusBadGateway, c.want)
		expect(t, name+": JSON inboxes", f.api("GET", "/api/accounts/"+f.acme+"/inboxes", "alice", "", nil), http.StatusBadGateway, c.want)
		// The list still shows, with inbox ids and a notice.
		expect(t, name+": list", f.get("/", "alice"), http.StatusOK, "Inbox names are not shown", "stag1234")
		// Standard keys do not need the inbox API.
		r := f.post("/create", "alice", url.Values{"account": {f.acme}, "csrf_token": {tok}, "type": {"standard"}, "name": {"standard " + name}})
		expect(t, name+": standard key", r, http.StatusOK, "API key created")
	}

	// No inbox_api configured at all.
	f.dash = admin.New(admin.Config{Backend: f.app, Identify: testIdentify})
	if strings.Contains(f.get("/", "alice").body, "Create server-restricted key") {
		t.Fatal("the list offers restricted keys without an inbox API")
	}
	expect(t, "no inbox API: create", f.post("/create", "alice", form), http.StatusServiceUnavailable, "no inbox_api configured")
}

type notStarted struct{}

func (notStarted) Store() store.Store     { return nil }
func (notStarted) Manager() *auth.Manager { return nil }
func (notStarted) Receipt(context.Context, store.Key) (fleet.Receipt, bool, error) {
	return fleet.Receipt{}, false, nil
}
func (notStarted) Instances(context.Context) ([]store.Instance, error) { return nil, nil }

func TestStaticAndUnknownPaths(t *testing.T) {
	f := newFixture(t)
	for path, typ := range map[string]string{"/static/app.css": "text/css", "/static/app.js": "text/javascript", "/static/favicon.svg": "image/svg+xml"} {
		r := f.get(path, "")
		if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), typ) || r.body == "" {
			t.Errorf("%s: %d %s", path, r.status, r.header.Get("Content-Type"))
		}
	}
	for _, path := range []string{"/static/nope.css", "/static/..%2fdashboard.go", "/static/", "/nope", "/keys/x"} {
		if r := f.get(path, "alice"); r.status != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", path, r.status)
		}
	}
	if r := f.api("GET", "/api/nope", "alice", "", nil); r.status != 404 || !strings.Contains(r.body, `"error"`) {
		t.Errorf("unknown API path: %d %s", r.status, r.body)
	}
	d := admin.New(admin.Config{Backend: notStarted{}, Identify: testIdentify})
	if r := f.do(d, "GET", "/", "alice", nil); r.status != http.StatusServiceUnavailable {
		t.Errorf("before the app started: %d, want 503", r.status)
	}
}

// TestFleetPageForOperatorsOnly: the fleet is for operators, whether or
// not they are members of an account. To anyone else, Account
// Administrators included, its routes answer exactly as pages that do
// not exist, for every method, and no page links to them.
func TestFleetPageForOperatorsOnly(t *testing.T) {
	f := newFixture(t)
	// olga runs keygate and is a member of no account; dave also
	// administers both accounts.
	f.dash = admin.New(admin.Config{Backend: f.app, Identify: testIdentify, Operators: []string{"olga", "dave"}})

	for _, c := range []struct{ who, method, path, missing string }{
		{"alice", "GET", "/fleet", "/no-such-page"},
		{"alice", "GET", "/api/fleet", "/api/no-such-page"},
		{"alice", "POST", "/fleet", "/no-such-page"},
		{"alice", "HEAD", "/api/fleet", "/api/no-such-page"},
		{"bob", "GET", "/fleet", "/no-such-page"},
		{"", "GET", "/api/fleet", "/api/no-such-page"},
	} {
		got, want := f.do(f.dash, c.method, c.path, c.who, nil), f.do(f.dash, c.method, c.missing, c.who, nil)
		if got.status != http.StatusNotFound || got.body != want.body {
			t.Errorf("%s %s as %q: %d %s\nwant, as for %s: %d %s", c.method, c.path, c.who, got.status, got.body, c.missing, want.status, want.body)
		}
	}
	withKey := f.do(f.dash, "GET", "/api/fleet", "alice", nil, "X-Test-API-Key", "1")
	expect(t, "fleet JSON with an API key", withKey, http.StatusNotFound, "There is no such page.")
	for _, page := range []string{"/", "/audit?account=" + f.acme, "/new?account=" + f.acme} {
		if r := f.get(page, "alice"); r.status != http.StatusOK || strings.Contains(r.body, `href="fleet`) {
			t.Errorf("%s links to the fleet for an Account Administrator: %d", page, r.status)
		}
	}

	r := f.get("/fleet", "olga")
	expect(t, "fleet page, operator", r, http.StatusOK, "the only instance", `<a href="fleet" aria-current="page">Fleet</a>`)
	if strings.Contains(r.body, "API Keys</a>") {
		t.Error("the fleet page offers API keys to an operator of no account")
	}
	expect(t, "fleet JSON, operator", f.get("/api/fleet", "olga"), http.StatusOK, `"fleet":false`)
	if r := f.get("/", "olga"); r.status != http.StatusSeeOther || r.header.Get("Location") != "fleet" {
		t.Errorf("an operator of no account at the dashboard's root: %d %q, want 303 to fleet", r.status, r.header.Get("Location"))
	}
	r = f.do(f.dash, "POST", "/fleet", "olga", nil)
	if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /fleet as an operator: %d, Allow %q", r.status, r.header.Get("Allow"))
	}

	// An operator who administers accounts keeps the one they were on.
	expect(t, "fleet page, operator and administrator", f.get("/fleet?account="+f.other, "dave"), http.StatusOK,
		`href="audit?account=`+f.other+`"`, `href="fleet?account=`+f.other+`" aria-current="page"`)
	expect(t, "key list, operator and administrator", f.get("/?account="+f.acme, "dave"), http.StatusOK, `href="fleet?account=`+f.acme+`"`)
}

// downBackend is a started keygate whose Postgres does not answer.
type downBackend struct {
	st  store.Store
	mgr *auth.Manager
}

func (b downBackend) Store() store.Store     { return b.st }
func (b downBackend) Manager() *auth.Manager { return b.mgr }
func (downBackend) Receipt(context.Context, store.Key) (fleet.Receipt, bool, error) {
	return fleet.Receipt{}, false, nil
}
func (downBackend) Instances(context.Context) ([]store.Instance, error) { return nil, nil }

// TestStoreDown: a store that does not answer is a 503 to retry, never a
// 500; a change is said to have an unknown outcome, since its commit may
// have happened before the answer was lost.
func TestStoreDown(t *testing.T) {
	st, err := postgres.Open(context.Background(), "postgres://postgres@127.0.0.1:1/keygate?sslmode=disable&connect_timeout=2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	kr, err := keys.NewKeyring([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t}
	f.dash = admin.New(admin.Config{Backend: downBackend{st: st, mgr: &auth.Manager{Store: st, Keyring: kr}}, Identify: testIdentify})
	for _, target := range []string{"/", "/audit?account=acct_x", "/api/accounts"} {
		r := f.get(target, "alice")
		expect(t, "GET "+target, r, http.StatusServiceUnavailable, "The key store is not answering. Try again in a moment.")
		if r.header.Get("Retry-After") == "" {
			t.Errorf("GET %s: no Retry-After", target)
		}
	}
	r := f.post("/delete", "alice", url.Values{"account": {"acct_x"}, "key": {"key_x"}, "confirm_name": {"x"}})
	expect(t, "a deletion", r, http.StatusServiceUnavailable, "whether this change was made is not known")
}
