package e2e

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/internal/pgtest"
)

func basicUser(k string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(k+":")) }
func basicPass(k string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte("api:"+k))
}
func bearer(k string) string { return "Bearer " + k }

// TestValidKeyPasses runs with no keygate option at all: the embedded
// SQLite store and a generated secret, as a newcomer gets them.
func TestValidKeyPasses(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	n := newNode(t, nodeConfig{upstream: up.addr()})
	acct := n.account("acme")
	standard := n.key(acct, "ci pipeline", "")
	restricted := n.key(acct, "one inbox", "abcd1234")
	n.start()

	for _, auth := range []string{basicUser(standard), basicPass(standard), bearer(standard)} {
		r := n.do("GET", "/api/servers", "Authorization", auth)
		if r.status != http.StatusOK {
			t.Fatalf("%s…: status %d, body %s", auth[:10], r.status, r.body)
		}
		got := up.last(t)
		if got.Header.Get("Authorization") != "" {
			t.Fatal("the Authorization header reached the upstream")
		}
		if got.Header.Get("X-Keygate-Account") != acct || got.Header.Get("X-Keygate-Key-Type") != "standard" ||
			!strings.HasPrefix(got.Header.Get("X-Keygate-Key-Id"), "key_") || got.Header.Get("X-Keygate-Server") != "" {
			t.Fatalf("identity headers upstream: %v", got.Header)
		}
	}

	r := n.do("GET", "/api/messages?server=abcd1234", "Authorization", basicUser(restricted))
	if r.status != http.StatusOK {
		t.Fatalf("restricted key: status %d", r.status)
	}
	if got := up.last(t); got.Header.Get("X-Keygate-Server") != "abcd1234" || got.Header.Get("X-Keygate-Key-Type") != "restricted" {
		t.Fatalf("restricted key identity upstream: %v", got.Header)
	}

	// The secret was generated once, 0600, beside the database.
	if out := n.cli("account", "list"); !strings.Contains(out, "acme") {
		t.Fatalf("account list: %q", out)
	}
}

func TestForgedIdentityHeadersNeverReachUpstream(t *testing.T) {
	t.Parallel()
	up := newUpstream(t)
	n := newNode(t, nodeConfig{upstream: up.addr()})
	acct := n.account("acme")
	other := n.account("other")
	standard := n.key(acct, "ci", "")
	n.start()

	forged := []string{
		"X-Keygate-Account", other,
		"x-keygate-key-id", "key_forged",
		"X-KEYGATE-KEY-TYPE", "standard",
		"X-Keygate-Server", "zzzz9999",
		"X-Keygate-Server", "yyyy8888",
		"X_Keygate_Account", other, // CGI-style upstreams read '_' as '-'
		"X_keygate_server", "zzzz9999",
	}
	r := n.do("GET", "/api/servers", append([]string{"Authorization", bearer(standard)}, forged...)...)
	if r.status != http.StatusOK {
		t.Fatalf("status %d", r.status)
	}
	got := up.last(t)
	if got.Header.Get("X-Keygate-Account") != acct || got.Header.Get("X-Keygate-Key-Id") == "key_forged" ||
		len(got.Header.Values("X-Keygate-Account")) != 1 || len(got.Header.Values("X-Keygate-Server")) != 0 {
		t.Fatalf("forged headers reached the upstream: %v", got.Header)
	}
	for name := range got.Header {
		if strings.Contains(strings.ToLower(name), "keygate_") {
			t.Fatalf("a forged underscore spelling %q reached the upstream", name)
		}
	}

	before := up.count()
	r = n.do("GET", "/api/servers", append([]string{"Authorization", bearer("kg_nope")}, forged...)...)
	if r.status != http.StatusUnauthorized || up.count() != before {
		t.Fatalf("a refused request with forged headers: status %d, upstream calls %d → %d", r.status, before, up.count())
	}
}

// TestRefusalsAreIdentical: a client cannot tell a malformed key from an
// unknown or a deleted one, and none of them reaches the upstream.
func TestRefusalsAreIdentical(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	up := newUpstream(t)
	n := newNode(t, nodeConfig{
		// A key deleted in SQL sends no event: only the TTL, the same
		// while following, ends its cache entry.
		global:   "\t\tstore postgres " + strconv.Quote(dsn) + "\n\t\tsecret {env.KEYGATE_SECRET}\n\t\tcache_ttl 300ms\n\t\tcache_ttl_following 300ms",
		upstream: up.addr(),
	})
	n.cli("migrate")
	acct := n.account("acme")
	live := n.key(acct, "live", "")
	// A client that puts a key in the URL is refused; Caddy's access log
	// records the URI before any handler runs, and the log filter the
	// README recommends (used by every node here) removes it.
	inURL := n.key(acct, "sent in the URL", "")
	deletedUnused := n.key(acct, "deleted before use", "")
	deletedCached := n.key(acct, "deleted after use", "")
	n.start()

	if r := n.do("GET", "/api/servers", "Authorization", bearer(deletedCached)); r.status != http.StatusOK {
		t.Fatalf("key before deletion: %d", r.status)
	}
	deleteKeys(t, dsn, "deleted before use", "deleted after use")
	// Deleted behind keygate's back (no key event): refused once its cache
	// entry is past cache_ttl.
	waitFor(t, "the deleted key's cache entry to expire", 10*time.Second, func() bool {
		return n.do("GET", "/api/servers", "Authorization", bearer(deletedCached)).status == http.StatusUnauthorized
	}, nil)

	unknown := strings.Replace(live, live[3:13], "0123456789", 1)
	typo := live[:20] + "x" + live[21:]
	if typo == live { // one key in 62 has an x there
		typo = live[:20] + "y" + live[21:]
	}
	cases := map[string][]string{
		"no header":           nil,
		"empty bearer":        {"Authorization", "Bearer "},
		"other scheme":        {"Authorization", "Token " + live},
		"malformed":           {"Authorization", bearer("kg_notakey")},
		"typo":                {"Authorization", bearer(typo)},
		"binary":              {"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte{0, 1, 2, 0xff, ':'})},
		"huge":                {"Authorization", "Bearer " + strings.Repeat("k", 8<<10)},
		"sql":                 {"Authorization", basicUser("' OR 1=1; --")},
		"two headers":         {"Authorization", bearer(live), "Authorization", bearer(live)},
		"checksum ok unknown": {"Authorization", bearer(unknown)},
		"deleted before use":  {"Authorization", basicUser(deletedUnused)},
		"deleted after use":   {"Authorization", bearer(deletedCached)},
		"key in query only":   nil,
	}
	before := up.count()
	var first *response
	for name, h := range cases {
		path := "/api/servers"
		if name == "key in query only" {
			path += "?api_key=" + inURL
		}
		r := n.do("GET", path, h...)
		if r.status != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", name, r.status)
			continue
		}
		if r.header.Get("Www-Authenticate") == "" || !strings.Contains(r.body, `"status":401`) {
			t.Errorf("%s: missing challenge or JSON error body: %v %s", name, r.header, r.body)
		}
		if first == nil {
			first = &r
			continue
		}
		if r.body != first.body || strings.Join(r.header.Values("Www-Authenticate"), "|") != strings.Join(first.header.Values("Www-Authenticate"), "|") ||
			r.header.Get("Content-Type") != first.header.Get("Content-Type") || r.header.Get("Content-Length") != first.header.Get("Content-Length") {
			t.Errorf("%s: the refusal differs from the others:\n%v %s\n%v %s", name, r.header, r.body, first.header, first.body)
		}
	}
	if up.count() != before {
		t.Fatalf("refused requests reached the upstream (%d calls)", up.count()-before)
	}
	if r := n.do("GET", "/api/servers", "Authorization", bearer(live)); r.status != http.StatusOK {
		t.Fatalf("live key after the refusals: %d", r.status)
	}
}

// TestStoreDown puts a TCP proxy the test controls between Caddy and
// Postgres: with it down, uncached keys get 503 and cached keys go on
// working; with it back, everything recovers by itself.
func TestStoreDown(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	proxy := newTCPProxy(t, "127.0.0.1:5432")
	proxied := proxy.route(dsn)
	up := newUpstream(t)
	n := newNode(t, nodeConfig{
		// A generous staleness bound: the cached key must outlive the
		// listener's loss however slowly a loaded machine runs the test.
		global:   "\t\tstore postgres " + strconv.Quote(proxied) + "\n\t\tsecret {env.KEYGATE_SECRET}\n\t\tstore_timeout 500ms\n\t\tstale_bound 1m",
		site:     "keygate {\n\t\tretry_after 3s\n\t}",
		upstream: up.addr(),
	})
	n.cli("migrate")
	acct := n.account("acme")
	cached := n.key(acct, "cached", "")
	uncached := n.key(acct, "uncached", "")
	n.start()
	// The listener's first catch-up empties the cache: fill it after.
	n.waitFollowing()

	if r := n.do("GET", "/api/servers", "Authorization", bearer(cached)); r.status != http.StatusOK {
		t.Fatalf("cached key, store up: %d", r.status)
	}
	proxy.setDown(true)
	r := n.do("GET", "/api/servers", "Authorization", bearer(uncached))
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") != "3" || !strings.Contains(r.body, `"status":503`) {
		t.Fatalf("uncached key, store down: %d %v %s; want 503 with Retry-After 3", r.status, r.header, r.body)
	}
	if r := n.do("GET", "/api/servers", "Authorization", bearer(cached)); r.status != http.StatusOK {
		t.Fatalf("cached key, store down: %d", r.status)
	}
	if r := n.do("GET", "/api/servers", "Authorization", bearer("kg_notakey")); r.status != http.StatusUnauthorized {
		t.Fatalf("malformed key, store down: %d; it needs no store", r.status)
	}
	proxy.setDown(false)
	deadline := time.Now().Add(10 * time.Second)
	for {
		r := n.do("GET", "/api/servers", "Authorization", bearer(uncached))
		if r.status == http.StatusOK {
			break
		}
		if r.status != http.StatusServiceUnavailable || time.Now().After(deadline) {
			t.Fatalf("uncached key after the store came back: %d", r.status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(n.adminGet("/metrics"), `caddy_keygate_decisions_total{result="unavailable"}`) {
		t.Fatal("no unavailable decisions in the metrics")
	}
}

// TestReloadLeaksNothing reloads the config repeatedly and checks that the
// Postgres pool is shared rather than leaked, goroutines do not pile up,
// and metrics are neither duplicated nor reset.
func TestReloadLeaksNothing(t *testing.T) {
	t.Parallel()
	appName := "keygate-e2e-reload-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	dsn := pgtest.DSN(t) + "&pool_max_conns=2&application_name=" + appName
	up := newUpstream(t)
	cfg := nodeConfig{
		global:   "\t\tstore postgres " + strconv.Quote(dsn) + "\n\t\tsecret {env.KEYGATE_SECRET}",
		upstream: up.addr(),
	}
	n := newNode(t, cfg)
	n.cli("migrate")
	acct := n.account("acme")
	var ks []string
	for i := range 8 {
		ks = append(ks, n.key(acct, "key "+strconv.Itoa(i), ""))
	}
	n.start()
	if r := n.do("GET", "/", "Authorization", bearer(ks[0])); r.status != http.StatusOK {
		t.Fatalf("first request: %d", r.status)
	}
	baseline := goroutines(t, n)

	for i := 1; i < len(ks); i++ {
		if i%2 == 0 {
			cfg.site = "keygate {\n\t\trealm reload-" + strconv.Itoa(i) + "\n\t}"
		}
		n.load(cfg)
		// An uncached key forces a store query through whatever pool the
		// new config has; an old key shows the cache survived the reload.
		for _, k := range []string{ks[i], ks[0]} {
			if r := n.do("GET", "/", "Authorization", bearer(k)); r.status != http.StatusOK {
				t.Fatalf("after reload %d: %d %s", i, r.status, r.body)
			}
		}
		// The pool's two and the key event listener's one, shared by every
		// config: a leaked pool or listener shows as more.
		if c := connections(t, appName); c > 3 {
			t.Fatalf("after reload %d: %d connections from keygate, pool_max_conns is 2 plus one listener: a pool or listener leaked", i, c)
		}
	}

	metrics := n.adminGet("/metrics")
	allowed := regexp.MustCompile(`(?m)^caddy_keygate_decisions_total\{result="allowed"\} (\d+)`).FindAllStringSubmatch(metrics, -1)
	if len(allowed) != 1 || allowed[0][1] != strconv.Itoa(1+2*(len(ks)-1)) {
		t.Fatalf("allowed decisions after reloads: %v; want one series counting %d", allowed, 1+2*(len(ks)-1))
	}
	for _, name := range []string{"caddy_keygate_cache_lookups_total", "caddy_keygate_store_lookup_duration_seconds", "caddy_keygate_cache_entries"} {
		if !strings.Contains(metrics, "# TYPE "+name+" ") {
			t.Errorf("metric %s missing after reloads", name)
		}
	}
	if strings.Contains(metrics, "kg_") {
		t.Fatal("a key prefix appears in the metrics")
	}
	// Old configs drain within grace_period (1s); allow for that and for
	// Caddy's own idle connection goroutines.
	after := 0
	waitFor(t, "the old configs' goroutines to end", 20*time.Second, func() bool {
		after = goroutines(t, n)
		return after <= baseline+20
	}, func() string {
		return fmt.Sprintf("goroutines grew from %d to %d over %d reloads", baseline, after, len(ks)-1)
	})
}

// TestValidateTouchesNothing: `caddy validate` provisions modules; with
// keygate's store unreachable it must still pass, and create no files.
func TestValidateTouchesNothing(t *testing.T) {
	t.Parallel()
	n := newNode(t, nodeConfig{
		global:   "\t\tstore postgres postgres://nobody:pw@127.0.0.1:1/none\n\t\tsecret {env.KEYGATE_SECRET}",
		upstream: "127.0.0.1:1",
	})
	if out, err := n.cliErr("validate"); err != nil {
		t.Fatalf("validate with the database down: %v\n%s", err, out)
	}
	sqliteNode := newNode(t, nodeConfig{upstream: "127.0.0.1:1"})
	if out, err := sqliteNode.cliErr("validate"); err != nil {
		t.Fatalf("validate with the default store: %v\n%s", err, out)
	}
	if out, _ := exec(t, "find", sqliteNode.dir+"/data"); strings.Contains(out, "keygate") {
		t.Fatalf("validate created files:\n%s", out)
	}
}

// TestConfigErrors: a typo is reported with its line and the fix, and a
// secret is never repeated in an error.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		global, site string
		at           string // the token whose line the error must name
		want         []string
	}{
		{global: "\t\tsecrte {env.KEYGATE_SECRET}", at: "secrte", want: []string{"did you mean secret?"}},
		{global: "\t\tstore postgre x", at: "postgre", want: []string{"unknown store"}},
		{global: "\t\tcache_ttl soon", at: "soon", want: []string{"positive duration"}},
		{global: "\t\tmigrate sometimes", at: "sometimes", want: []string{"auto or off"}},
		{global: "\t\tstore postgres postgres://127.0.0.1/x", want: []string{"needs a secret", "openssl rand"}},
		{global: "\t\tsecret tooshortsecret", want: []string{"at least 32"}},
		{global: "\t\tstore postgres postgress://u:pw-s3cret@127.0.0.1/x\n\t\tsecret {env.KEYGATE_SECRET}", want: []string{"scheme is", "postgress", "use postgres://"}},
		{global: "\t\tstore postgres \"this is not a dsn\"\n\t\tsecret {env.KEYGATE_SECRET}", want: []string{"neither a URL"}},
		{global: "\t\tstore postgres postgres://u:pw-s3cret@/x\n\t\tsecret {env.KEYGATE_SECRET}", want: []string{"names no host"}},
		{global: "\t\tstore postgres postgres://127.0.0.1/x {\n\t\t\tlisten postgres://u:pw-s3cret@127.0.0.1:x/y\n\t\t}\n\t\tsecret {env.KEYGATE_SECRET}", want: []string{"listen: the DSN is not a valid URL"}},
		{site: "keygate {\n\t\trelam x\n\t}", at: "relam", want: []string{"did you mean realm?"}},
		{site: "keygate {\n\t\theader acount X-A\n\t}", at: "acount", want: []string{"use account, key_id, key_type or server"}},
		{site: "keygate {\n\t\theader account Authorization\n\t}", want: []string{"may not be Authorization"}},
	}
	for _, c := range cases {
		n := newNode(t, nodeConfig{global: c.global, site: c.site, upstream: "127.0.0.1:1"})
		out, err := n.cliErr("validate")
		if err == nil {
			t.Errorf("validate accepted %q %q", c.global, c.site)
			continue
		}
		want := c.want
		if c.at != "" {
			want = append(want, "Caddyfile:"+strconv.Itoa(lineOf(t, n.config, c.at)))
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("config %q %q: error lacks %q:\n%s", c.global, c.site, w, out)
			}
		}
		if strings.Contains(out, "tooshortsecret") || strings.Contains(out, "pw-s3cret") {
			t.Errorf("the error repeats the secret or a password:\n%s", out)
		}
	}
}

func lineOf(t testing.TB, path, token string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, token) {
			return i + 1
		}
	}
	t.Fatalf("%q not in the config", token)
	return 0
}

func deleteKeys(t testing.TB, dsn string, names ...string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tag, err := conn.Exec(ctx, `delete from api_keys where name = any($1)`, names)
	if err != nil || tag.RowsAffected() != int64(len(names)) {
		t.Fatalf("deleting keys: %v (%d rows)", err, tag.RowsAffected())
	}
}

// connections counts the Postgres sessions with the application name.
func connections(t testing.TB, appName string) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgtest.BaseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, `select count(*) from pg_stat_activity where application_name = $1`, appName).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func goroutines(t testing.TB, n *node) int {
	t.Helper()
	m := regexp.MustCompile(`goroutine profile: total (\d+)`).FindStringSubmatch(n.adminGet("/debug/pprof/goroutine?debug=1"))
	if m == nil {
		t.Fatal("no goroutine count from pprof")
	}
	c, _ := strconv.Atoi(m[1])
	return c
}

// tcpProxy forwards to a target until set down, when it closes every
// connection and refuses new ones, or silent, when it keeps every
// connection open but passes nothing (a half-open connection, as after a
// failover or a dropped NAT entry).
type tcpProxy struct {
	addr   string
	target string
	mu     sync.Mutex
	down   bool
	silent atomic.Bool
	conns  map[net.Conn]bool
}

// copyUnlessSilent copies like io.Copy, holding data back while silent.
func (p *tcpProxy) copyUnlessSilent(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for p.silent.Load() {
			time.Sleep(5 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func newTCPProxy(t testing.TB, target string) *tcpProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{addr: l.Addr().String(), target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { l.Close(); p.setDown(true) })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *tcpProxy) serve(c net.Conn) {
	p.mu.Lock()
	if p.down {
		p.mu.Unlock()
		c.Close()
		return
	}
	p.mu.Unlock()
	b, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	if p.down { // set down while dialling
		p.mu.Unlock()
		c.Close()
		b.Close()
		return
	}
	p.conns[c], p.conns[b] = true, true
	p.mu.Unlock()
	go func() { p.copyUnlessSilent(b, c); b.Close() }()
	p.copyUnlessSilent(c, b)
	c.Close()
}

// route returns dsn with the local Postgres replaced by the proxy.
func (p *tcpProxy) route(dsn string) string {
	return strings.Replace(dsn, "127.0.0.1:5432", p.addr, 1)
}

func (p *tcpProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}
