package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/keygate/keygate/cmd/inboxsim/sim"
)

// dashboard is a keygate process with two sites: the guarded inbox API
// (the simulator behind keygate) and the dashboard behind basic_auth,
// mounted at the site root or under a path.
type dashboard struct {
	t     testing.TB
	n     *node
	sim   *sim.Server
	site  string // the dashboard site's URL, without a trailing "/"
	base  string // the dashboard's URL, ending in "/"
	api   string // the guarded API's URL, without a trailing "/"
	acct  string // account acme: alice administers it, bob is a member
	other string // account other: carol administers it
	pass  map[string]string
}

// Fixed inbox ids of the simulator's seed.
const (
	inboxStaging    = "stag1234"
	inboxProduction = "prod5678"
	inboxOther      = "othr0001"
)

// newDashboard prepares the store, seeds the simulator and starts
// keygate. mount is "/" for a site root, or a path such as "/keys/".
func newDashboard(t testing.TB, mount string) *dashboard {
	t.Helper()
	n := newNode(t, nodeConfig{upstream: "127.0.0.1:1"}) // replaced below
	d := &dashboard{t: t, n: n, pass: map[string]string{}}
	d.acct = n.cli("account", "create", "acme")
	d.other = n.cli("account", "create", "other")
	n.cli("member", "add", d.acct, "alice", "--role", "admin")
	n.cli("member", "add", d.acct, "bob", "--role", "member")
	n.cli("member", "add", d.other, "carol", "--role", "admin")

	d.sim = sim.New(sim.Options{})
	seed := fmt.Sprintf(`{"accounts":{%q:{"servers":[{"id":%q,"name":"Staging"},{"id":%q,"name":"Production"}]},%q:{"servers":[{"id":%q,"name":"Other inbox"}]}}}`,
		d.acct, inboxStaging, inboxProduction, d.other, inboxOther)
	if err := d.sim.LoadSeed(strings.NewReader(seed)); err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(d.sim)
	t.Cleanup(up.Close)

	var users strings.Builder
	for _, u := range []string{"alice", "bob", "carol"} {
		d.pass[u] = rand.Text()
		// The lowest bcrypt cost: the race-enabled keygate checks it
		// quickly (`keygate hash-password` uses cost 14).
		hash, err := bcrypt.GenerateFromPassword([]byte(d.pass[u]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&users, "\t\t\t%s %s\n", u, hash)
	}
	dashAddr := freeAddr(t)
	dash := fmt.Sprintf("\t\tbasic_auth {\n%s\t\t}\n\t\tkeygate_admin {\n\t\t\tinbox_api %s\n\t\t}\n", users.String(), up.URL)
	var site string
	if mount == "/" {
		site = dash
	} else {
		site = fmt.Sprintf("\tredir %s %s\n\thandle_path %s* {\n%s\t}\n\thandle {\n\t\trespond \"another app\" 200\n\t}\n",
			strings.TrimSuffix(mount, "/"), mount, mount, dash)
	}
	cfg := fmt.Sprintf(`{
	admin %s
	auto_https off
	grace_period 1s
	log {
		level DEBUG
	}
	keygate {
		usage_interval 250ms
	}
}

http://%s {
	bind 127.0.0.1
	log
	# A dashboard behind keygate itself: it must refuse API keys.
	handle_path /dashboard-with-api-key/* {
		keygate
		keygate_admin
	}
	handle {
		keygate
		reverse_proxy %s
	}
}

http://%s {
	bind 127.0.0.1
	log
%s}
`, n.adminAddr, n.addr, strings.TrimPrefix(up.URL, "http://"), dashAddr, site)
	if err := os.WriteFile(n.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	n.start()
	d.site = "http://" + dashAddr
	d.base = d.site + mount
	d.api = "http://" + n.addr
	return d
}

func (d *dashboard) basic(user string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+d.pass[user]))
}

// do sends a request to the dashboard, relative to its base URL unless
// path is absolute, as user ("" for nobody), with headers given as name,
// value pairs.
func (d *dashboard) do(method, path, user string, body io.Reader, header ...string) response {
	d.t.Helper()
	if !strings.HasPrefix(path, "http://") {
		path = d.base + path
	}
	req, err := http.NewRequest(method, path, body)
	if err != nil {
		d.t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("Authorization", d.basic(user))
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: html.UnescapeString(string(b))}
}

// token returns user's CSRF token for the account.
func (d *dashboard) token(user, acct string) string {
	d.t.Helper()
	r := d.do("GET", "api/accounts", user, nil)
	var out struct {
		Items []struct {
			ID        string `json:"id"`
			CSRFToken string `json:"csrf_token"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.body), &out); err != nil {
		d.t.Fatalf("api/accounts: %d %s", r.status, r.body)
	}
	for _, a := range out.Items {
		if a.ID == acct && a.CSRFToken != "" {
			return a.CSRFToken
		}
	}
	d.t.Fatalf("%s has no token for %s", user, acct)
	return ""
}

// call sends a request to the guarded inbox API with a key.
func (d *dashboard) call(key, path string) int {
	d.t.Helper()
	req, _ := http.NewRequest("GET", d.api+path, nil)
	req.SetBasicAuth(key, "")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		d.t.Fatalf("GET %s: %v", path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func wantReply(t testing.TB, what string, r response, status int, contains ...string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: status %d, want %d:\n%.2000s", what, r.status, status, r.body)
	}
	for _, c := range contains {
		if !strings.Contains(r.body, c) {
			t.Fatalf("%s: no %q in:\n%.2000s", what, c, r.body)
		}
	}
}

// TestAdminUnderPath mounts the dashboard with handle_path /keys/* beside
// another app and drives it through its JSON API and pages as a real
// Caddy serves them.
func TestAdminUnderPath(t *testing.T) {
	t.Parallel()
	d := newDashboard(t, "/keys/")

	wantReply(t, "no credentials", d.do("GET", "", "", nil), http.StatusUnauthorized)
	r := d.do("GET", "", "alice", nil)
	wantReply(t, "alice's list", r, http.StatusOK, "API Keys", "acme", `href="static/app.css"`, "Create standard key", "No API keys yet")
	for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy"} {
		if r.header.Get(h) == "" {
			t.Errorf("no %s header", h)
		}
	}
	// The page's relative links resolve under the mount point.
	wantReply(t, "stylesheet", d.do("GET", "static/app.css", "alice", nil), http.StatusOK, ".topbar")
	wantReply(t, "script", d.do("GET", "static/app.js", "alice", nil), http.StatusOK, "data-reveal")
	wantReply(t, "the other app", d.do("GET", d.site+"/elsewhere", "", nil), http.StatusOK, "another app")
	wantReply(t, "the mount path without its slash", d.do("GET", d.site+"/keys", "alice", nil), http.StatusOK, "API Keys")

	// A member who is not an administrator, an administrator of another account.
	wantReply(t, "bob", d.do("GET", "", "bob", nil), http.StatusForbidden, "You must be an Account Administrator to manage API keys.")
	wantReply(t, "carol on acme", d.do("GET", "?account="+d.acct, "carol", nil), http.StatusNotFound, "Account not found")

	// Create through the JSON API, use the key, delete it, see it refused.
	tok := d.token("alice", d.acct)
	r = d.do("POST", "api/accounts/"+d.acct+"/keys", "alice", strings.NewReader(`{"name":"automation","type":"restricted","server":"`+inboxStaging+`"}`),
		"Content-Type", "application/json", "X-CSRF-Token", tok)
	wantReply(t, "create", r, http.StatusCreated, `"server":"stag1234"`)
	var k struct{ ID, Key string }
	json.Unmarshal([]byte(r.body), &k)
	rememberKey(k.Key)
	if s := d.call(k.Key, "/api/messages?server="+inboxStaging); s != http.StatusOK {
		t.Fatalf("the new restricted key on its inbox: %d", s)
	}
	if s := d.call(k.Key, "/api/messages?server="+inboxProduction); s != http.StatusForbidden {
		t.Fatalf("the new restricted key on another inbox: %d", s)
	}
	wantReply(t, "list", d.do("GET", "", "alice", nil), http.StatusOK, "automation", "Staging")

	// A cross-site POST is refused even with the token.
	r = d.do("POST", "api/accounts/"+d.acct+"/keys/"+k.ID+"/reveal", "alice", nil, "X-CSRF-Token", tok, "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site")
	wantReply(t, "cross-site reveal", r, http.StatusForbidden, "Cross-site")

	// The dashboard behind keygate: an API key is refused.
	standard := d.n.key(d.acct, "operator's key", "")
	req, _ := http.NewRequest("GET", d.api+"/dashboard-with-api-key/", nil)
	req.SetBasicAuth(standard, "")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantReply(t, "API key on the dashboard", response{status: resp.StatusCode, body: string(b)}, http.StatusForbidden, "does not accept API keys")

	r = d.do("POST", "api/accounts/"+d.acct+"/keys/"+k.ID+"/delete", "alice", strings.NewReader(`{"name":"automation"}`),
		"Content-Type", "application/json", "X-CSRF-Token", tok)
	wantReply(t, "delete", r, http.StatusOK, `"deleted":true`)
	if s := d.call(k.Key, "/api/messages?server="+inboxStaging); s != http.StatusUnauthorized {
		t.Fatalf("the deleted key: %d, want 401", s)
	}

	r = d.do("GET", "api/accounts/"+d.acct+"/audit", "alice", nil)
	wantReply(t, "audit", r, http.StatusOK, `"action":"key.delete"`, `"action":"key.create"`, `"actor":"alice"`, `"remote_addr":"127.0.0.1"`)
	if strings.Count(r.body, `"action"`) != 3 || strings.Contains(r.body, k.Key[8:]) { // two by alice, one by the operator
		t.Fatalf("audit: %s", r.body)
	}
}

// TestAdminExampleConfig: the demo's Caddyfile.example is valid with the
// administrator's hash that `make run` passes in its environment.
func TestAdminExampleConfig(t *testing.T) {
	t.Parallel()
	hash, err := bcrypt.GenerateFromPassword([]byte("demo"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := osexec.Command(keygateBin, "validate", "--config", filepath.Join("..", "..", "Caddyfile.example"), "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_DATA_HOME="+filepath.Join(dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"KEYGATE_ADMIN_HASH="+string(hash))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("keygate validate Caddyfile.example: %v\n%s", err, out)
	}
}
