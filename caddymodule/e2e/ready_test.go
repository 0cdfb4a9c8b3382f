package e2e

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/keys"
)

// readiness is the keygate_ready handler's answer.
type readiness struct {
	status int
	Ready  bool   `json:"ready"`
	Store  string `json:"store"`
	Listen string `json:"listener"`
	Cause  string `json:"cause"`
	Fix    string `json:"fix"`
	body   string
}

func (n *node) ready() readiness {
	n.t.Helper()
	r := n.do("GET", "/ready")
	rd := readiness{status: r.status, body: r.body}
	if err := json.Unmarshal([]byte(r.body), &rd); err != nil {
		n.t.Fatalf("readiness answer %d %q: %v", r.status, r.body, err)
	}
	if r.header.Get("Content-Type") != "application/json; charset=utf-8" || r.header.Get("Cache-Control") != "no-store" {
		n.t.Fatalf("readiness answer headers: %v", r.header)
	}
	if (r.status == http.StatusOK) != rd.Ready || (r.status != http.StatusOK && r.status != http.StatusServiceUnavailable) {
		n.t.Fatalf("readiness answer %d with body %s", r.status, r.body)
	}
	return rd
}

// waitReady polls the readiness endpoint until it answers as wanted.
func (n *node) waitReady(what string, want bool) readiness {
	n.t.Helper()
	var last readiness
	waitFor(n.t, what, 30*time.Second, func() bool {
		last = n.ready()
		return last.Ready == want
	}, func() string { return last.body })
	return last
}

// logLine is a line of Caddy's JSON log.
type logLine map[string]any

func (l logLine) str(field string) string { s, _ := l[field].(string); return s }

// errorLines returns keygate's ERROR lines: every line at error level but
// the access log's, which Caddy writes at error level for each 5xx.
func (n *node) errorLines() []logLine {
	var lines []logLine
	for _, text := range strings.Split(n.out.String(), "\n") {
		var l logLine
		if json.Unmarshal([]byte(text), &l) != nil {
			continue
		}
		if l.str("level") == "error" && !strings.HasPrefix(l.str("logger"), "http.log.access") {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestReadyMissingDatabase: a DSN naming a database that does not exist
// gets 503 for every key, a readiness answer naming the database and the
// fix, and one ERROR line however many requests fail; once the database
// is created and migrated, keygate is ready and keys work, without a
// restart.
func TestReadyMissingDatabase(t *testing.T) {
	t.Parallel()
	const password = "ready-pw-s3cret" // trust authentication ignores it; nothing may show it
	db := "kg_ready_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	u, err := url.Parse(pgtest.BaseURL())
	if err != nil {
		t.Fatal(err)
	}
	u.Path = "/" + db
	u.User = url.UserPassword(u.User.Username(), password)
	ident := pgx.Identifier{db}.Sanitize()
	t.Cleanup(func() { pgtest.Exec(t, "drop database if exists "+ident+" with (force)") }) // after the node stops

	up := newUpstream(t)
	n := newNode(t, nodeConfig{
		global:   "\t\tstore postgres " + strconv.Quote(u.String()) + "\n\t\tsecret {env.KEYGATE_SECRET}",
		site:     "keygate_ready /ready\n\tkeygate",
		upstream: up.addr(),
	})
	n.start()

	// A well-formed key, never issued: only the store could tell.
	secret, err := keys.New()
	if err != nil {
		t.Fatal(err)
	}
	rememberKey(string(secret))
	for i := range 50 {
		r := n.do("GET", "/api/servers", "Authorization", bearer(string(secret)))
		if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
			t.Fatalf("request %d with the database missing: %d %v %s; want 503 with Retry-After", i, r.status, r.header, r.body)
		}
	}
	rd := n.ready()
	if rd.status != http.StatusServiceUnavailable || rd.Store != "database_missing" || rd.Listen != "not_following" ||
		!strings.Contains(rd.Cause, db) || !strings.Contains(rd.Fix, "create the database") {
		t.Fatalf("readiness with the database missing: %d %s; want 503 naming database %s and the fix", rd.status, rd.body, db)
	}

	var lines []logLine
	waitFor(t, "an ERROR line about the missing database", 30*time.Second, func() bool {
		lines = n.errorLines()
		return len(lines) > 0
	}, nil)
	for range 50 { // more failures, after the line was written
		if r := n.do("GET", "/api/servers", "Authorization", bearer(string(secret))); r.status != http.StatusServiceUnavailable {
			t.Fatalf("with the database missing: %d", r.status)
		}
	}
	n.ready()
	if lines = n.errorLines(); len(lines) != 1 {
		t.Fatalf("%d ERROR lines after 100 failed requests; want exactly 1:\n%v", len(lines), lines)
	}
	l := lines[0]
	if l.str("kind") != "database_missing" || !strings.Contains(l.str("cause"), db) || !strings.Contains(l.str("fix"), "create the database") {
		t.Fatalf("the ERROR line lacks the cause or the fix: %v", l)
	}
	if logs := n.out.String(); strings.Contains(logs, password) || strings.Contains(rd.body, password) {
		t.Fatal("the DSN's password appears in the log or the readiness answer")
	}

	pgtest.Exec(t, "create database "+ident)
	n.cli("migrate")
	rd = n.waitReady("readiness after creating and migrating the database", true)
	if rd.Store != "ok" || rd.Listen != "following" {
		t.Fatalf("ready: %s; want store ok, listener following", rd.body)
	}
	acct := n.account("acme")
	k := n.key(acct, "after the fix", "")
	if r := n.do("GET", "/api/servers", "Authorization", bearer(k)); r.status != http.StatusOK {
		t.Fatalf("a key after the fix: %d %s", r.status, r.body)
	}
	if r := n.do("GET", "/api/servers", "Authorization", bearer(string(secret))); r.status != http.StatusUnauthorized {
		t.Fatalf("the never-issued key after the fix: %d; want 401", r.status)
	}
	if strings.Contains(n.out.String(), password) {
		t.Fatal("the DSN's password appears in the log")
	}
}

// TestReadyFollowsStore: a healthy Postgres node is ready once it follows
// the key events; with the store out of reach it is not, and it is again
// when the store is back. The gauge says the same.
func TestReadyFollowsStore(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	proxy := newTCPProxy(t, "127.0.0.1:5432")
	proxied := proxy.route(dsn)
	up := newUpstream(t)
	n := newNode(t, nodeConfig{
		global:   "\t\tstore postgres " + strconv.Quote(proxied) + "\n\t\tsecret {env.KEYGATE_SECRET}\n\t\tstore_timeout 1s",
		site:     "keygate_ready /ready\n\tkeygate",
		upstream: up.addr(),
	})
	n.cli("migrate")
	n.start()

	rd := n.waitReady("readiness of a healthy node", true)
	if rd.Store != "ok" || rd.Listen != "following" || rd.Cause != "" {
		t.Fatalf("healthy: %s", rd.body)
	}
	if !strings.Contains(n.adminGet("/metrics"), "\ncaddy_keygate_ready 1\n") {
		t.Fatal("caddy_keygate_ready is not 1 while ready")
	}

	proxy.setDown(true)
	rd = n.waitReady("readiness with the store down", false)
	if rd.status != http.StatusServiceUnavailable || rd.Cause == "" || (rd.Store == "ok" && rd.Listen == "following") {
		t.Fatalf("store down: %d %s; want 503 naming what is not ready", rd.status, rd.body)
	}
	if !strings.Contains(n.adminGet("/metrics"), "\ncaddy_keygate_ready 0\n") {
		t.Fatal("caddy_keygate_ready is not 0 with the store down")
	}

	proxy.setDown(false)
	rd = n.waitReady("readiness with the store back", true)
	if rd.Store != "ok" || rd.Listen != "following" {
		t.Fatalf("store back: %s", rd.body)
	}
	// An outage is transient: warnings, never an ERROR line.
	if lines := n.errorLines(); len(lines) != 0 {
		t.Fatalf("ERROR lines for an outage: %v", lines)
	}
}

// TestReadySQLite: the embedded store is ready at once, with no listener;
// the probe needs no key though keygate guards the site, wherever the
// directive is written.
func TestReadySQLite(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	n := newNode(t, nodeConfig{site: "keygate\n\tkeygate_ready /ready", upstream: up.addr()})
	n.start()

	rd := n.ready()
	if rd.status != http.StatusOK || strings.TrimSpace(rd.body) != `{"ready":true,"store":"ok","listener":"none"}` {
		t.Fatalf("SQLite: %d %s", rd.status, rd.body)
	}
	if r := n.do("HEAD", "/ready"); r.status != http.StatusOK || r.body != "" {
		t.Fatalf("HEAD: %d %q", r.status, r.body)
	}
	if r := n.do("GET", "/api/servers"); r.status != http.StatusUnauthorized {
		t.Fatalf("another path without a key: %d; keygate must still guard it", r.status)
	}
	if up.count() != 0 {
		t.Fatal("a probe reached the upstream")
	}
}
