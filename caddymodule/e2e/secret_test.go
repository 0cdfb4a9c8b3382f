package e2e

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql for Postgres, as for SQLite
	"golang.org/x/crypto/bcrypt"
	_ "modernc.org/sqlite"

	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

// The secrets the tests rotate between. A is the harness's KEYGATE_SECRET,
// which newFleet's nodes and keys use.
const (
	secretA = e2eSecret
	secretB = "e2e-secret-B-rotated-in-ZYXWVUTSRQPONMLKJIHGFEDCBA"
	secretC = "e2e-secret-C-never-made-a-key-0123456789ABCDEFGHIJ"
)

// secretFingerprint is what the store records of a secret.
func secretFingerprint(t testing.TB, secret string) string {
	t.Helper()
	s, err := keys.NewSecret([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s.Fingerprint()
}

// secretsOption renders the keygate options for a current secret and the
// previous ones.
func secretsOption(current string, previous ...string) string {
	s := "\t\tsecret " + current
	if len(previous) > 0 {
		s += "\n\t\tprevious_secrets " + strings.Join(previous, " ")
	}
	return s
}

// secretNode is a node with a dashboard, on either store, whose secrets
// the test changes.
type secretNode struct {
	*node
	kind     string // "sqlite" or "postgres"
	dsn      string // the Postgres store's
	options  string // the keygate options but the secrets
	cfg      nodeConfig
	dash     string // the dashboard's URL
	password string // every user's
	db       *sql.DB
}

// newSecretNode prepares a node with secret A whose dashboard lets each
// of users in.
func newSecretNode(t testing.TB, kind string, up *upstream, users ...string) *secretNode {
	t.Helper()
	// A store that is slow only because the machine is busy must not read
	// as a refused request.
	s := &secretNode{kind: kind, password: rand.Text(), options: "\t\tstore_timeout 10s\n"}
	if kind == "postgres" {
		s.dsn = pgtest.DSN(t)
		s.options += "\t\tstore postgres " + strconv.Quote(s.dsn) + "\n"
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(s.password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	var basic strings.Builder
	for _, u := range users {
		fmt.Fprintf(&basic, "\t\t%s %s\n", u, hash)
	}
	dash := freeAddr(t)
	s.dash = "http://" + dash
	s.cfg = nodeConfig{
		global:   s.options + secretsOption(secretA),
		upstream: up.addr(),
		extra:    fmt.Sprintf("\nhttp://%s {\n\tbind 127.0.0.1\n\tbasic_auth {\n%s\t}\n\tkeygate_admin\n}\n", dash, basic.String()),
	}
	s.node = newNode(t, s.cfg)
	return s
}

// setSecrets writes the config with these secrets, for the command line
// and the next start; reload gives it to the running process.
func (s *secretNode) setSecrets(current string, previous ...string) {
	s.cfg.global = s.options + secretsOption(current, previous...)
	s.writeConfig(s.cfg)
}

func (s *secretNode) reload() { s.load(s.cfg) }

// sqlDB opens the node's store for the test's own queries.
func (s *secretNode) sqlDB() *sql.DB {
	if s.db == nil {
		if s.kind == "postgres" {
			s.db = openStoreSQL(s.t, "pgx", s.dsn)
		} else {
			s.db = openStoreSQL(s.t, "sqlite", "file:"+s.sqlitePath()+"?_pragma=busy_timeout(10000)")
		}
	}
	return s.db
}

// sqlitePath is where the default SQLite store lives.
func (s *secretNode) sqlitePath() string {
	return filepath.Join(s.dir, "data", "caddy", "keygate", "keygate.db")
}

func openStoreSQL(t testing.TB, driver, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// madeKey is a key the test made, with its plaintext.
type madeKey struct {
	id, account, key string
}

var createdKeyLine = regexp.MustCompile(`created standard key (\S+) \(`)

// createKeys makes perAccount keys in each account with the command line,
// a few at once.
func (s *secretNode) createKeys(accounts []string, prefix string, perAccount int) []madeKey {
	s.t.Helper()
	out := make([]madeKey, len(accounts)*perAccount)
	errs := make([]error, len(out))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i := range out {
		acct := accounts[i%len(accounts)]
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			stdout, stderr, err := s.runConfig("key", "create", acct, fmt.Sprintf("%s %d", prefix, i))
			m := createdKeyLine.FindStringSubmatch(stderr)
			if err != nil || m == nil || !keys.Valid([]byte(stdout)) {
				errs[i] = fmt.Errorf("keygate key create: %v\n%s", err, stderr)
				return
			}
			rememberKey(stdout)
			out[i] = madeKey{id: m[1], account: acct, key: stdout}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		s.t.Fatal(err)
	}
	return out
}

func plaintexts(ks []madeKey) []string {
	var out []string
	for _, k := range ks {
		out = append(out, k.key)
	}
	return out
}

// csrfToken returns user's CSRF token for the account.
func (s *secretNode) csrfToken(user, acct string) string {
	s.t.Helper()
	r := s.dashboard(user, "GET", "/api/accounts", "", "")
	var accounts struct {
		Items []struct {
			ID        string `json:"id"`
			CSRFToken string `json:"csrf_token"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.body), &accounts); err != nil {
		s.t.Fatalf("the dashboard's accounts: %d %s", r.status, r.body)
	}
	for _, a := range accounts.Items {
		if a.ID == acct && a.CSRFToken != "" {
			return a.CSRFToken
		}
	}
	s.t.Fatalf("%s has no token for %s", user, acct)
	return ""
}

// reveal asks the dashboard, as user, for a key's value.
func (s *secretNode) reveal(user string, k madeKey) string {
	s.t.Helper()
	r := s.dashboard(user, "POST", "/api/accounts/"+k.account+"/keys/"+k.id+"/reveal", "", s.csrfToken(user, k.account))
	var revealed struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal([]byte(r.body), &revealed); r.status != http.StatusOK || err != nil {
		s.t.Fatalf("revealing key %s: %d %s", k.id, r.status, r.body)
	}
	return revealed.Key
}

func (s *secretNode) dashboard(user, method, path, body, token string) response {
	s.t.Helper()
	return dashboardRequest(s.t, s.dash, user, s.password, method, path, body, token)
}

// keyRow is what the store holds of a key.
type keyRow struct {
	account string
	digest  []byte
	secret  string // the fingerprint of the secret that made it
}

// storedKeys reads every key row, by id.
func storedKeys(t testing.TB, db *sql.DB) map[string]keyRow {
	t.Helper()
	rows, err := db.Query(`select id, account_id, digest, secret from api_keys`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]keyRow{}
	for rows.Next() {
		var id string
		var r keyRow
		var secret sql.NullString
		if err := rows.Scan(&id, &r.account, &r.digest, &secret); err != nil {
			t.Fatal(err)
		}
		r.secret = secret.String
		out[id] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// currentSecret is the fingerprint of the secret the store makes keys with.
func currentSecret(t testing.TB, db *sql.DB) string {
	t.Helper()
	var fp string
	if err := db.QueryRow(`select fingerprint from keygate_secrets where current`).Scan(&fp); err != nil {
		t.Fatal(err)
	}
	return fp
}

// rotateEvents counts the secret.rotate audit events of each account.
func rotateEvents(t testing.TB, db *sql.DB) map[string]int {
	t.Helper()
	rows, err := db.Query(`select account_id, count(*) from audit_events where action = '` + store.ActionRotate + `' group by account_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]int{}
	for rows.Next() {
		var acct string
		var n int
		if err := rows.Scan(&acct, &n); err != nil {
			t.Fatal(err)
		}
		out[acct] = n
	}
	return out
}

// checkRekeyed fails unless every key is stored under secret B alone: its
// row names B, its digest is B's, and no row holds any key's digest under
// A.
func checkRekeyed(t testing.TB, rows map[string]keyRow, ks []madeKey) {
	t.Helper()
	fpB := secretFingerprint(t, secretB)
	krA, err := keys.NewKeyring([]byte(secretA))
	if err != nil {
		t.Fatal(err)
	}
	krB, err := keys.NewKeyring([]byte(secretB))
	if err != nil {
		t.Fatal(err)
	}
	digests := map[string]bool{}
	for _, r := range rows {
		digests[string(r.digest)] = true
		if r.secret != fpB {
			t.Errorf("a key row names secret %q, want B's %s", r.secret, fpB)
		}
	}
	for _, k := range ks {
		dA, dB := krA.Digest([]byte(k.key)), krB.Digest([]byte(k.key))
		if digests[string(dA[:])] {
			t.Errorf("the store still holds key %s's digest under the old secret", k.id)
		}
		if r, ok := rows[k.id]; !ok || string(r.digest) != string(dB[:]) {
			t.Errorf("key %s: the store does not hold its digest under secret B", k.id)
		}
	}
}

// runFailed checks that a command failed with exit status 1 and said
// each of want on standard error.
func runFailed(t testing.TB, what, stderr string, err error, want ...string) {
	t.Helper()
	var exit *osexec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("%s: %v, want exit status 1\n%s", what, err, stderr)
	}
	for _, w := range want {
		if !strings.Contains(stderr, w) {
			t.Fatalf("%s: no %q in:\n%s", what, w, stderr)
		}
	}
}

// startFails runs keygate with the node's config and returns its output,
// failing the test unless it exits with an error.
func startFails(n *node) string {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := osexec.CommandContext(ctx, keygateBin, "run", "--config", n.config, "--adapter", "caddyfile")
	cmd.Env = n.env()
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		n.t.Fatalf("keygate started (still running after 30s), want a refusal:\n%s", out)
	}
	if err == nil {
		n.t.Fatalf("keygate exited without error, want a refusal:\n%s", out)
	}
	return string(out)
}

// keyClient sends requests to every node without stopping, cycling through
// the keys, half on connections it keeps and half on new ones: a live key
// must be accepted by every node, and a deleted one, once its deletion has
// returned, refused. A node being restarted is left alone; while one
// reloads, a new connection may be dropped (Caddy's old listener closes
// with connections in its queue), but every answer must be right.
type keyClient struct {
	t         testing.TB
	nodes     []*node
	keep      *http.Client // keeps its connections
	fresh     *http.Client // a new connection each time
	mu        sync.Mutex
	live      map[string]bool
	revoked   map[string]bool // deleted, and the deletion returned
	fails     []string
	failed    atomic.Int64
	sent      atomic.Int64
	dropped   atomic.Int64   // new connections dropped during a reload
	paused    []atomic.Int64 // a generation per node: odd while restarting
	reloading []atomic.Int64 // odd while reloading
	rounds    []atomic.Int64
	stop      chan struct{}
	done      sync.WaitGroup
	finished  bool
}

func startKeyClient(t testing.TB, nodes []*node, ks []string) *keyClient {
	c := &keyClient{t: t, nodes: nodes, live: map[string]bool{}, revoked: map[string]bool{}, stop: make(chan struct{}),
		keep:      &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}},
		fresh:     &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}},
		paused:    make([]atomic.Int64, len(nodes)),
		reloading: make([]atomic.Int64, len(nodes)),
		rounds:    make([]atomic.Int64, len(nodes))}
	for _, k := range ks {
		c.live[k] = true
	}
	for i := range nodes {
		c.done.Add(1)
		go c.run(i)
	}
	t.Cleanup(c.finish)
	return c
}

func (c *keyClient) run(i int) {
	defer c.done.Done()
	n := c.nodes[i]
	var sent int
	for deadline := time.Now().Add(3 * time.Minute); time.Now().Before(deadline); {
		c.mu.Lock()
		ks := make([]string, 0, len(c.live)+len(c.revoked))
		for k := range c.live {
			ks = append(ks, k)
		}
		for k := range c.revoked {
			ks = append(ks, k)
		}
		c.mu.Unlock()
		for _, k := range ks {
			select {
			case <-c.stop:
				return
			case <-time.After(time.Millisecond): // a steady client, not a flood
			}
			gen, reloadGen := c.paused[i].Load(), c.reloading[i].Load()
			if gen%2 == 1 { // restarting
				continue
			}
			c.mu.Lock()
			revoked := c.revoked[k]
			c.mu.Unlock()
			sent++
			onNew := sent%2 == 0
			status, err := c.get(n, k, onNew)
			c.sent.Add(1)
			if c.paused[i].Load() != gen {
				continue
			}
			if err != nil && onNew && (reloadGen%2 == 1 || c.reloading[i].Load() != reloadGen) {
				c.dropped.Add(1)
				continue
			}
			c.mu.Lock()
			live := c.live[k]
			c.mu.Unlock()
			switch {
			case revoked && status != http.StatusUnauthorized:
				c.fail(fmt.Sprintf("node %d answered %d %v for a deleted key (%s…)", i, status, err, k[:8]))
			case !revoked && live && status != http.StatusOK:
				c.fail(fmt.Sprintf("node %d answered %d %v for a valid key (%s…)", i, status, err, k[:8]))
			}
		}
		c.rounds[i].Add(1)
	}
}

// get sends one request with a key, on a new connection if onNew.
func (c *keyClient) get(n *node, k string, onNew bool) (int, error) {
	req, _ := http.NewRequest("GET", "http://"+n.addr+"/api/servers", nil)
	req.Header.Set("Authorization", bearer(k))
	client := c.keep
	if onNew {
		client = c.fresh
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

func (c *keyClient) fail(msg string) {
	if c.failed.Add(1) <= 10 {
		c.mu.Lock()
		c.fails = append(c.fails, msg)
		c.mu.Unlock()
	}
}

func (c *keyClient) add(ks ...string) {
	c.mu.Lock()
	for _, k := range ks {
		c.live[k] = true
	}
	c.mu.Unlock()
}

// deleting takes a key out of the live ones while del deletes it: until
// del returns, either answer is right; after, only 401.
func (c *keyClient) deleting(k string, del func()) {
	c.mu.Lock()
	delete(c.live, k)
	c.mu.Unlock()
	del()
	c.mu.Lock()
	c.revoked[k] = true
	c.mu.Unlock()
}

// restart stops and starts node i, which the client leaves alone
// meanwhile, until its keygate is ready.
func (c *keyClient) restart(i int) {
	c.t.Helper()
	n := c.nodes[i]
	c.paused[i].Add(1)
	n.stop()
	n.start()
	waitFor(c.t, "the restarted node to be ready", 30*time.Second, func() bool {
		return strings.Contains(n.adminGet("/metrics"), "\ncaddy_keygate_ready 1\n")
	}, nil)
	c.paused[i].Add(1)
}

// reload runs load, a reload of node i, gracefully.
func (c *keyClient) reload(i int, load func()) {
	c.reloading[i].Add(1)
	defer c.reloading[i].Add(1)
	load()
}

// waitRound waits until every node was sent every key at least once from
// now on.
func (c *keyClient) waitRound() {
	c.t.Helper()
	from := make([]int64, len(c.rounds))
	for i := range c.rounds {
		from[i] = c.rounds[i].Load()
	}
	waitFor(c.t, "a full round of requests on every node", 60*time.Second, func() bool {
		for i := range c.rounds {
			if c.rounds[i].Load() < from[i]+2 {
				return false
			}
		}
		return true
	}, nil)
}

// finish stops the client and fails the test if any answer was wrong.
func (c *keyClient) finish() {
	if c.finished {
		return
	}
	c.finished = true
	close(c.stop)
	c.done.Wait()
	c.keep.CloseIdleConnections()
	if c.sent.Load() == 0 {
		c.t.Error("the client sent no request")
	}
	if c.failed.Load() > 0 {
		c.t.Errorf("%d of %d requests were answered wrong; the first:\n%s", c.failed.Load(), c.sent.Load(), strings.Join(c.fails, "\n"))
	}
	c.t.Logf("client: %d requests, %d answered wrong, %d new connections dropped by a reload", c.sent.Load(), c.failed.Load(), c.dropped.Load())
}

// TestSecretRotation rotates a node's secret while a client uses every
// key: a reload gives it secret B with A as the previous one, `keygate
// secret rotate` re-keys every key under B in small batches, and a reload
// drops A. No request is ever refused, keys made in between work, every
// key can still be revealed, and the store keeps no digest under A.
func TestSecretRotation(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{"sqlite", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			testSecretRotation(t, kind)
		})
	}
}

func testSecretRotation(t *testing.T, kind string) {
	start := time.Now()
	fpA, fpB := secretFingerprint(t, secretA), secretFingerprint(t, secretB)
	up := newUpstream(t)
	s := newSecretNode(t, kind, up, "acme-admin", "globex-admin")
	accounts := []string{s.account("acme"), s.account("globex")}
	admins := map[string]string{accounts[0]: "acme-admin", accounts[1]: "globex-admin"}
	// Keys made both ways: on the command line (a process of its own,
	// with the config's secrets) and in the dashboard (the running node).
	before := s.createKeys(accounts, "cli", 6)
	s.start()
	before = append(before, s.dashboardKeys(accounts, admins, "dashboard", 18)...)
	t.Cleanup(func() { logRefusals(t, s.node) })
	c := startKeyClient(t, []*node{s.node}, plaintexts(before))
	c.waitRound()
	t.Logf("%d keys made with secret A and in use after %v", len(before), time.Since(start))

	s.setSecrets(secretB, secretA)
	c.reload(0, s.reload)
	c.waitRound()
	fresh := append(s.createKeys(accounts, "cli after reload", 1), s.dashboardKeys(accounts, admins, "dashboard after reload", 1)...)
	for _, k := range fresh {
		if status := probe(s.node, k.key); status != http.StatusOK {
			t.Fatalf("a key made after the reload answers %d", status)
		}
	}
	c.add(plaintexts(fresh)...)
	// On SQLite (a single node) the new secret is the store's current one
	// at once. Postgres, which a fleet may share, makes keys with A until
	// `secret rotate` makes B current, so that instances not yet given B
	// can check them.
	maker := fpA
	if kind == "sqlite" {
		maker = fpB
	}
	rows := storedKeys(t, s.sqlDB())
	for _, k := range fresh {
		if rows[k.id].secret != maker {
			t.Fatalf("a key made after the reload names secret %q, want %s", rows[k.id].secret, maker)
		}
	}
	if got := currentSecret(t, s.sqlDB()); got != maker {
		t.Fatalf("the store's current secret after the reload: %s, want %s", got, maker)
	}
	toRekey := 0
	for _, r := range rows {
		if r.secret != fpB {
			toRekey++
		}
	}
	c.waitRound()

	rotateStart := time.Now()
	stdout, stderr, err := s.runConfig("secret", "rotate", "--batch", "7")
	if err != nil {
		t.Fatalf("secret rotate: %v\n%s\n%s", err, stdout, stderr)
	}
	t.Logf("secret rotate took %v:\n%s%s", time.Since(rotateStart), stderr, stdout)
	if want := fmt.Sprintf("every key is made with secret %s. The previous secrets (%s) are no longer needed", fpB, fpA); !strings.Contains(stdout, want) {
		t.Fatalf("secret rotate says:\n%s\nwant %q", stdout, want)
	}
	if want := fmt.Sprintf("re-keyed %d of %d keys (100.0%%)", toRekey, toRekey); !strings.Contains(stderr, want) {
		t.Fatalf("secret rotate's progress:\n%s\nwant %q", stderr, want)
	}
	c.waitRound()

	s.setSecrets(secretB)
	c.reload(0, s.reload)
	c.waitRound()

	all := append(slices.Clone(before), fresh...)
	for _, k := range all {
		if got := s.reveal(admins[k.account], k); got != k.key {
			t.Fatalf("key %s revealed as another value", k.id)
		}
	}
	rows = storedKeys(t, s.sqlDB())
	if len(rows) != len(all) {
		t.Fatalf("the store holds %d keys, want %d", len(rows), len(all))
	}
	checkRekeyed(t, rows, all)
	if got := currentSecret(t, s.sqlDB()); got != fpB {
		t.Fatalf("the store's current secret: %s, want %s", got, fpB)
	}
	events := rotateEvents(t, s.sqlDB())
	if len(events) != len(accounts) || events[accounts[0]] != 1 || events[accounts[1]] != 1 {
		t.Fatalf("secret.rotate audit events per account: %v, want one in each of %v", events, accounts)
	}
	status := s.cli("secret", "status")
	if want := fmt.Sprintf("store: current secret %s (configured here): %d keys", fpB, len(all)); !strings.Contains(status, want) || strings.Contains(status, fpA) {
		t.Fatalf("secret status:\n%s\nwant %q and no word of %s", status, want, fpA)
	}
	c.finish()
	t.Logf("done in %v", time.Since(start))
}

// logRefusals logs, for a test that failed, keygate's warnings and the
// requests it refused.
func logRefusals(t testing.TB, n *node) {
	if !t.Failed() || n.out == nil {
		return
	}
	for _, l := range strings.Split(n.out.String(), "\n") {
		if strings.Contains(l, `"level":"warn"`) || strings.Contains(l, `"status":503`) || strings.Contains(l, `"status":401`) {
			t.Log(l)
		}
	}
}

// dashboardKeys makes perAccount keys in each account through the
// dashboard, as each account's administrator.
func (s *secretNode) dashboardKeys(accounts []string, admins map[string]string, prefix string, perAccount int) []madeKey {
	s.t.Helper()
	var out []madeKey
	for _, acct := range accounts {
		token := s.csrfToken(admins[acct], acct)
		for i := range perAccount {
			body := fmt.Sprintf(`{"name":"%s %d","type":"standard"}`, prefix, i)
			r := s.dashboard(admins[acct], "POST", "/api/accounts/"+acct+"/keys", body, token)
			var created struct {
				ID  string `json:"id"`
				Key string `json:"key"`
			}
			if err := json.Unmarshal([]byte(r.body), &created); r.status != http.StatusCreated || err != nil || created.Key == "" {
				s.t.Fatalf("creating a key in the dashboard: %d %s", r.status, r.body)
			}
			rememberKey(created.Key)
			out = append(out, madeKey{id: created.ID, account: acct, key: created.Key})
		}
	}
	return out
}

var secretLines = regexp.MustCompile(`(?m)^\t\tsecret .*\n(\t\tprevious_secrets .*\n)?`)

// setFileSecrets rewrites a node's config file with these secrets.
func setFileSecrets(n *node, current string, previous ...string) string {
	n.t.Helper()
	b, err := os.ReadFile(n.config)
	if err != nil {
		n.t.Fatal(err)
	}
	if !secretLines.Match(b) {
		n.t.Fatalf("no secret in the config:\n%s", b)
	}
	cfg := secretLines.ReplaceAllLiteralString(string(b), secretsOption(current, previous...)+"\n")
	// newFleet's store_timeout is short, for the fault tests: this test's
	// store is slow only when the machine is busy, which must not read as
	// a refused request.
	cfg = strings.Replace(cfg, "\t\tstore_timeout 500ms\n", "\t\tstore_timeout 10s\n", 1)
	if err := os.WriteFile(n.config, []byte(cfg), 0o600); err != nil {
		n.t.Fatal(err)
	}
	return cfg
}

// reloadWith rewrites a node's secrets and gives it the config through
// the admin API, gracefully.
func reloadWith(n *node, current string, previous ...string) {
	n.t.Helper()
	n.loadCaddyfile(setFileSecrets(n, current, previous...))
}

// TestFleetSecretRotation rolls a new secret out to a fleet of three
// while a client uses 600 keys on every node: B with A as the previous
// secret, one node at a time (a key deleted and a key made half way);
// `secret rotate` in batches of 20, with a node restarted while it is
// half way; then B alone, one node at a time. No valid key is ever
// refused, the deleted one never accepted.
func TestFleetSecretRotation(t *testing.T) {
	t.Parallel()
	start := time.Now()
	ctx := t.Context()
	fpA, fpB := secretFingerprint(t, secretA), secretFingerprint(t, secretB)
	dsn := pgtest.DSN(t)
	f := newFleet(t, 3, dsn, sameDSN(dsn))
	for _, n := range f.nodes {
		reloadWith(n, "{env.KEYGATE_SECRET}") // A, with a longer store_timeout
	}

	// 600 keys made with A, as a node makes them.
	const nkeys = 600
	minted := make([]store.Key, nkeys)
	entries := make([]madeKey, nkeys)
	for i := range nkeys {
		k, secret := f.mint("key " + strconv.Itoa(i))
		k.Secret = fpA
		minted[i], entries[i] = k, madeKey{id: k.ID, account: f.account, key: secret}
	}
	errs := make([]error, nkeys)
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < nkeys; i += 4 {
				_, errs[i] = f.st.CreateKey(ctx, minted[i], store.AuditEvent{Actor: "fleet-test"})
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	doomed, doomedKey := f.mint("doomed")
	doomed.Secret = fpA
	doomed = f.create(doomed)
	// The client uses every tenth key (a round of all 600 on three
	// race-enabled nodes would take long); every key is checked on every
	// node at the end.
	var sample []string
	inUse := map[string]bool{}
	for i := 0; i < nkeys; i += 10 {
		sample = append(sample, entries[i].key)
		inUse[entries[i].id] = true
	}
	c := startKeyClient(t, f.nodes, append(sample, doomedKey))
	t.Cleanup(func() {
		for _, n := range f.nodes {
			logRefusals(t, n)
		}
	})
	c.waitRound()
	t.Logf("%d keys made with A, %d in use on 3 nodes after %v", nkeys+1, len(sample)+1, time.Since(start))

	db := openStoreSQL(t, "pgx", dsn)
	var made madeKey
	for i, n := range f.nodes {
		c.reload(i, func() { reloadWith(n, secretB, "{env.KEYGATE_SECRET}") })
		c.waitRound()
		if i != 0 {
			continue
		}
		// Half way: a key made through the node that has B is made with
		// A, the store's current secret, which the others check.
		made = f.dashboardCreate(0, "made half way")
		c.add(made.key)
		if r := storedKeys(t, db)[made.id]; r.secret != fpA {
			t.Fatalf("a key made by a node with B, previous A, before the rotation names secret %q, want A's %s", r.secret, fpA)
		}
		// A key deleted through a node that has A alone is refused by the
		// one that has it cached under B's digest.
		c.deleting(doomedKey, func() {
			var receipt struct {
				Deleted   bool `json:"deleted"`
				RevokedOn int  `json:"revoked_on"`
			}
			f.dashboardJSON(1, "POST", "/api/accounts/"+f.account+"/keys/"+doomed.ID+"/delete", `{"name":"doomed"}`, &receipt)
			if !receipt.Deleted || receipt.RevokedOn != 3 {
				t.Errorf("the dashboard's receipt: %+v", receipt)
			}
		})
		for j, n := range f.nodes {
			if s := probe(n, doomedKey); s != http.StatusUnauthorized {
				t.Fatalf("node %d answers %d for the key just deleted", j, s)
			}
			if s := probe(n, made.key); s != http.StatusOK {
				t.Fatalf("node %d answers %d for the key made half way", j, s)
			}
		}
	}
	f.waitFor("every live instance to report secret B", 15*time.Second, func() bool {
		ins, err := f.st.ListInstances(ctx, time.Now().Add(-5*time.Second))
		if err != nil || len(ins) != 3 {
			return false
		}
		for _, in := range ins {
			if !slices.Contains(in.Secrets, fpB) {
				return false
			}
		}
		return true
	})

	// The rotation, held half way by a row lock the test takes on a key
	// in the middle: it re-keys the batches before it, then waits.
	var ids []string
	rows, err := db.Query(`select id from api_keys where secret = '` + fpA + `' order by id`)
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		rows.Scan(&id)
		ids = append(ids, id)
	}
	rows.Close()
	if len(ids) != nkeys+1 {
		t.Fatalf("%d keys made with A, want %d", len(ids), nkeys+1)
	}
	const batch = 20
	// The locked key is one no client uses: the nodes' last-used and
	// activity flushes lock the rows of the keys in use, in id order, and
	// one stuck behind the test's lock would hold the rows before it,
	// which the rotation needs.
	mid := len(ids) / 2
	for inUse[ids[mid]] || ids[mid] == made.id {
		mid++
	}
	firstPart := mid - mid%batch
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `select 1 from api_keys where id = $1 for update`, ids[mid]); err != nil {
		t.Fatal(err)
	}
	type result struct {
		stdout, stderr string
		err            error
	}
	rotated := make(chan result, 1)
	rotateStart := time.Now()
	go func() {
		o, e, err := f.nodes[0].runConfig("secret", "rotate", "--batch", strconv.Itoa(batch))
		rotated <- result{o, e, err}
	}()
	rekeyed := func() int {
		var n int
		if err := db.QueryRow(`select count(*) from api_keys where secret = '` + fpB + `'`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var early *result
	waitFor(t, "the rotation to re-key the keys before the locked one", 30*time.Second, func() bool {
		select {
		case r := <-rotated:
			early = &r
			return true
		default:
		}
		return rekeyed() == firstPart
	}, func() string { return fmt.Sprintf("%d of %d re-keyed", rekeyed(), firstPart) })
	if early != nil {
		t.Fatalf("the rotation ended before the locked key: %v\n%s%s", early.err, early.stderr, early.stdout)
	}

	c.restart(2)
	if n := rekeyed(); n != firstPart {
		t.Fatalf("the rotation went on past the locked key: %d re-keyed, want %d", n, firstPart)
	}
	t.Logf("node 2 restarted while the rotation had re-keyed %d of %d keys", firstPart, len(ids))
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	var res result
	select {
	case res = <-rotated:
	case <-time.After(60 * time.Second):
		t.Fatal("the rotation did not end within 60s of the lock's release")
	}
	if res.err != nil {
		t.Fatalf("secret rotate: %v\n%s\n%s", res.err, res.stdout, res.stderr)
	}
	t.Logf("secret rotate took %v:\n%s%s", time.Since(rotateStart), res.stderr, res.stdout)
	if want := fmt.Sprintf("every key is made with secret %s. The previous secrets (%s) are no longer needed", fpB, fpA); !strings.Contains(res.stdout, want) {
		t.Fatalf("secret rotate says:\n%s\nwant %q", res.stdout, want)
	}
	if want := fmt.Sprintf("re-keyed %d of %d keys (100.0%%)", len(ids), len(ids)); !strings.Contains(res.stderr, want) {
		t.Fatalf("secret rotate's progress:\n%s\nwant %q", res.stderr, want)
	}
	c.waitRound()

	for i, n := range f.nodes {
		c.reload(i, func() { reloadWith(n, secretB) })
		c.waitRound()
	}
	c.finish()
	all := append(slices.Clone(entries), made)
	var final sync.WaitGroup
	for i, n := range f.nodes {
		final.Go(func() {
			if s := probe(n, doomedKey); s != http.StatusUnauthorized {
				t.Errorf("node %d answers %d for the deleted key", i, s)
			}
			refused := map[int]int{}
			for _, k := range all {
				if s := probe(n, k.key); s != http.StatusOK {
					refused[s]++
				}
			}
			if len(refused) > 0 {
				t.Errorf("node %d, asked for each of the %d keys, answered other than 200 (status: count) %v", i, len(all), refused)
			}
		})
	}
	final.Wait()
	krows := storedKeys(t, db)
	if len(krows) != len(all) {
		t.Fatalf("the store holds %d keys, want %d", len(krows), len(all))
	}
	checkRekeyed(t, krows, all)
	if got := currentSecret(t, db); got != fpB {
		t.Fatalf("the store's current secret: %s, want %s", got, fpB)
	}
	t.Logf("done in %v", time.Since(start))
}

// dashboardCreate makes a standard key through node i's dashboard.
func (f *fleet) dashboardCreate(i int, name string) madeKey {
	f.t.Helper()
	var accounts struct {
		Items []struct {
			ID        string `json:"id"`
			CSRFToken string `json:"csrf_token"`
		} `json:"items"`
	}
	json.Unmarshal([]byte(f.dashboard(i, "alice", "GET", "/api/accounts", "", "").body), &accounts)
	token := ""
	for _, a := range accounts.Items {
		if a.ID == f.account {
			token = a.CSRFToken
		}
	}
	r := f.dashboard(i, "alice", "POST", "/api/accounts/"+f.account+"/keys", `{"name":`+strconv.Quote(name)+`,"type":"standard"}`, token)
	var created struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	if err := json.Unmarshal([]byte(r.body), &created); r.status != http.StatusCreated || err != nil || created.Key == "" {
		f.t.Fatalf("creating a key on dashboard %d: %d %s", i, r.status, r.body)
	}
	rememberKey(created.Key)
	return madeKey{id: created.ID, account: f.account, key: created.Key}
}

// TestSecretFingerprint: an instance whose secrets did not make the
// store's keys does not start, and says why.
func TestSecretFingerprint(t *testing.T) {
	t.Parallel()
	fpA, fpC := secretFingerprint(t, secretA), secretFingerprint(t, secretC)

	t.Run("wrong secret", func(t *testing.T) {
		t.Parallel()
		up := newUpstream(t)
		s := newSecretNode(t, "sqlite", up, "acme-admin")
		acct := s.account("acme")
		k := s.key(acct, "k", "")
		s.start()
		if st := probe(s.node, k); st != http.StatusOK {
			t.Fatalf("the key answers %d", st)
		}
		s.stop()

		s.setSecrets(secretC)
		out := startFails(s.node)
		want := fmt.Sprintf("this store's keys were made with another secret (fingerprint %s); the configured secrets are %s (current)", fpA, fpC)
		if !strings.Contains(out, want) || strings.Contains(out, secretC) || strings.Contains(out, secretA) {
			t.Fatalf("started with another secret:\n%s\nwant %q, and no secret", out, want)
		}
		if _, stderr, err := s.runConfig("key", "list", acct); err == nil || !strings.Contains(stderr, want) {
			t.Fatalf("key list with another secret: %v\n%s", err, stderr)
		}
		// Nothing was changed: with its secret back, it serves the key.
		s.setSecrets(secretA)
		s.start()
		if st := probe(s.node, k); st != http.StatusOK {
			t.Fatalf("with secret A again the key answers %d", st)
		}
	})

	t.Run("missing secret file", func(t *testing.T) {
		t.Parallel()
		up := newUpstream(t)
		n := newNode(t, nodeConfig{upstream: up.addr()}) // no secret: the generated one
		acct := n.account("acme")
		k := n.key(acct, "k", "")
		path := filepath.Join(n.dir, "data", "caddy", "keygate", "secret")
		saved, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("the generated secret: %v", err)
		}
		n.start()
		if st := probe(n, k); st != http.StatusOK {
			t.Fatalf("the key answers %d", st)
		}
		n.stop()

		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		out := startFails(n)
		want := fmt.Sprintf("the secret file %s is missing, but the store holds keys made with the secret of fingerprint %s", path, secretFingerprint(t, strings.TrimSpace(string(saved))))
		if !strings.Contains(out, want) {
			t.Fatalf("started without its secret file:\n%s\nwant %q", out, want)
		}
		if _, stderr, err := n.runConfig("key", "list", acct); err == nil || !strings.Contains(stderr, want) {
			t.Fatalf("key list without the secret file: %v\n%s", err, stderr)
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the secret file was made again: %v", err)
		}
		// Restored from the backup, it serves the key again.
		if err := os.WriteFile(path, saved, 0o600); err != nil {
			t.Fatal(err)
		}
		n.start()
		if st := probe(n, k); st != http.StatusOK {
			t.Fatalf("with the secret file restored the key answers %d", st)
		}
	})

	t.Run("fleet", func(t *testing.T) {
		t.Parallel()
		dsn := pgtest.DSN(t)
		up := newUpstream(t)
		storeOpt := "\t\tstore postgres " + strconv.Quote(dsn) + "\n"
		n1 := newNode(t, nodeConfig{global: storeOpt + secretsOption(secretA), upstream: up.addr()})
		n2 := newNode(t, nodeConfig{global: storeOpt + secretsOption(secretC), upstream: up.addr()})
		n1.cli("migrate")
		n1.start()
		// A fleet's current secret counts before it made any key: two
		// instances with different secrets would each refuse the other's.
		want := fmt.Sprintf("this store's keys were made with another secret (fingerprint %s); the configured secrets are %s (current)", fpA, fpC)
		if out := startFails(n2); !strings.Contains(out, want) {
			t.Fatalf("another secret on a store without keys:\n%s\nwant %q", out, want)
		}
		acct := n1.account("acme")
		k1 := n1.key(acct, "k1", "")
		if out := startFails(n2); !strings.Contains(out, want) {
			t.Fatalf("another secret on a store with keys:\n%s\nwant %q", out, want)
		}

		// C with A as the previous secret: it checks A's keys, and makes
		// keys with A, the store's current secret, which n1 checks.
		n2.writeConfig(nodeConfig{global: storeOpt + secretsOption(secretC, secretA), upstream: up.addr()})
		n2.start()
		k2 := n2.key(acct, "k2", "")
		for _, n := range []*node{n1, n2} {
			for _, k := range []string{k1, k2} {
				if st := probe(n, k); st != http.StatusOK {
					t.Fatalf("%s answers %d for a key", n.addr, st)
				}
			}
		}
		db := openStoreSQL(t, "pgx", dsn)
		for id, r := range storedKeys(t, db) {
			if r.secret != fpA {
				t.Fatalf("key %s names secret %q, want A's %s", id, r.secret, fpA)
			}
		}
		if got := currentSecret(t, db); got != fpA {
			t.Fatalf("the store's current secret: %s, want %s", got, fpA)
		}
	})
}

// TestSecretBadInput: wrong secret settings are config errors, and `secret
// rotate` refuses what it cannot do safely, saying why.
func TestSecretBadInput(t *testing.T) {
	t.Parallel()
	fpA, fpB := secretFingerprint(t, secretA), secretFingerprint(t, secretB)

	t.Run("config", func(t *testing.T) {
		t.Parallel()
		const short = "too-short-previous-secret"
		secretD := strings.Replace(secretC, "C", "D", 1)
		secretE := strings.Replace(secretC, "C", "E", 1)
		cases := []struct {
			global string
			want   string
		}{
			{secretsOption(secretA, secretA), "previous secret 1 is the current secret"},
			{secretsOption(secretB, short), fmt.Sprintf("previous secret 1: secret is %d bytes; at least 32 are needed", len(short))},
			{secretsOption(secretA, secretB, secretC, secretD, secretE), "4 previous secrets given; at most 3 are kept"},
			{secretsOption(secretA, secretB, secretB), "previous secrets 1 and 2 are the same secret"},
			{"\t\tprevious_secrets " + secretA, "previous_secrets needs a `secret`"},
			{"\t\tsecret " + secretA + "\n\t\tprevious_secrets", "previous_secrets takes one or more secrets"},
		}
		for i, c := range cases {
			n := newNode(t, nodeConfig{global: c.global, upstream: "127.0.0.1:1"})
			out, err := n.cliErr("validate")
			if i == 0 {
				out += startFails(n)
			}
			if err == nil || !strings.Contains(out, c.want) {
				t.Errorf("validate %q: %v\n%s\nwant %q", c.global, err, out, c.want)
			}
			for _, secret := range []string{secretA, secretB, secretC, secretD, secretE, short} {
				if strings.Contains(out, secret) {
					t.Errorf("the error repeats a secret:\n%s", out)
				}
			}
		}
	})

	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		up := newUpstream(t)
		s := newSecretNode(t, "postgres", up, "acme-admin")
		acct := s.account("acme")
		ks := s.createKeys([]string{acct}, "key", 6)
		db := s.sqlDB()

		_, stderr, err := s.runConfig("secret", "rotate")
		runFailed(t, "secret rotate without a previous secret", stderr, err, "no previous secret is configured")

		// The running instance has A alone: the rotation must not make B
		// the store's current secret, which it could not check.
		s.start()
		s.setSecrets(secretB, secretA) // for the command line only
		_, stderr, err = s.runConfig("secret", "rotate")
		runFailed(t, "secret rotate while an instance lacks the new secret", stderr, err,
			"1 live instance(s) do not have secret "+fpB+" yet", fmt.Sprintf("pid %d (has %s)", s.cmd.Process.Pid, fpA))
		if got := currentSecret(t, db); got != fpA {
			t.Fatalf("after a refused rotation the store's current secret is %s, want %s", got, fpA)
		}

		// Given B, A previous; another rotation holds the lock.
		s.reload()
		waitFor(t, "the instance to report secret B", 15*time.Second, func() bool {
			var with, without int
			err := db.QueryRow(`select count(*) filter (where $1 = any(secrets)), count(*) filter (where not $1 = any(secrets)) from instances where heartbeat_at > now() - interval '6 seconds'`, fpB).Scan(&with, &without)
			return err == nil && with == 1 && without == 0
		}, nil)
		lock, err := pgx.Connect(t.Context(), s.dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer lock.Close(context.Background())
		if _, err := lock.Exec(t.Context(), `select pg_advisory_lock(hashtext('keygate.rotate.' || current_schema()))`); err != nil {
			t.Fatal(err)
		}
		_, stderr, err = s.runConfig("secret", "rotate")
		runFailed(t, "secret rotate while another holds the lock", stderr, err, "another `keygate secret rotate` is running")
		if got := currentSecret(t, db); got != fpA {
			t.Fatalf("after a refused rotation the store's current secret is %s, want %s", got, fpA)
		}
		if _, err := lock.Exec(t.Context(), `select pg_advisory_unlock(hashtext('keygate.rotate.' || current_schema()))`); err != nil {
			t.Fatal(err)
		}

		// A key whose sealed copy opens under no secret (another key's,
		// bound to that key's id) is reported and left; the others are
		// re-keyed.
		broken := ks[2]
		if _, err := db.Exec(`update api_keys set sealed = (select sealed from api_keys where id = $2) where id = $1`, broken.id, ks[3].id); err != nil {
			t.Fatal(err)
		}
		stdout, stderr, err := s.runConfig("secret", "rotate", "--batch", "2")
		runFailed(t, "secret rotate with a broken key", stderr, err,
			fmt.Sprintf("key %s of account %s: its sealed copy opens under no configured secret (the store says secret %s made it); left as it was", broken.id, acct, fpA),
			"re-keyed 5 of 6 keys (100.0%)",
			"1 keys could not be re-keyed")
		if strings.Contains(stdout, "no longer needed") {
			t.Fatalf("with a key left, secret rotate says the previous secret is no longer needed:\n%s", stdout)
		}
		rows := storedKeys(t, db)
		for _, k := range ks {
			want := fpB
			if k.id == broken.id {
				want = fpA
			}
			if rows[k.id].secret != want {
				t.Errorf("key %s names secret %q, want %s", k.id, rows[k.id].secret, want)
			}
		}
		if got := currentSecret(t, db); got != fpB {
			t.Fatalf("the store's current secret: %s, want %s", got, fpB)
		}
		// The instance still finds every key, the broken one under A.
		for _, k := range ks {
			if st := probe(s.node, k.key); st != http.StatusOK {
				t.Errorf("key %s answers %d after the rotation", k.id, st)
			}
		}
		status := s.cli("secret", "status")
		if want := fmt.Sprintf("store: previous secret %s (configured here): 1 keys", fpA); !strings.Contains(status, want) {
			t.Fatalf("secret status:\n%s\nwant %q", status, want)
		}
	})

	t.Run("sqlite lock", func(t *testing.T) {
		t.Parallel()
		up := newUpstream(t)
		s := newSecretNode(t, "sqlite", up, "acme-admin")
		acct := s.account("acme")
		s.key(acct, "k", "")
		s.setSecrets(secretB, secretA)
		f, err := os.OpenFile(s.sqlitePath()+".rotate.lock", os.O_RDWR|os.O_CREATE, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			t.Fatal(err)
		}
		_, stderr, err := s.runConfig("secret", "rotate")
		runFailed(t, "secret rotate while another holds the lock", stderr, err, "another `keygate secret rotate` is running")
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_UN); err != nil {
			t.Fatal(err)
		}
		if stdout := s.cli("secret", "rotate"); !strings.Contains(stdout, "every key is made with secret "+fpB) {
			t.Fatalf("secret rotate once the lock is free:\n%s", stdout)
		}
	})
}
