package e2e

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/crypto/bcrypt"

	"github.com/keygate/keygate/caddymodule/internal/keytest"
	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
	"github.com/keygate/keygate/caddymodule/store/postgres"
)

// e2eSecret is the KEYGATE_SECRET every node gets (harness_test.go).
const e2eSecret = "e2e-secret-0123456789abcdefghijklmnopqrstuvwxyz"

// staleBound is the nodes' stale_bound: short, so that the fault tests
// see it run out.
const staleBound = time.Second

// fleet is several keygate nodes sharing one Postgres, and the test's own
// handle on the store, through which it creates and deletes keys exactly
// as a node's dashboard does (the same transaction and notification).
type fleet struct {
	t          testing.TB
	dsn        string
	st         *postgres.Store
	kr         *keys.Keyring
	account    string
	nodes      []*node
	dashboards []string // each node's dashboard, where alice is an Account Administrator and olga an operator
	password   string   // alice's and olga's
}

// newFleet starts n nodes. dsnFor gives node i's store DSN (through a
// proxy, or to another cluster) and listen DSN.
func newFleet(t testing.TB, n int, dsn string, dsnFor func(i int) (storeDSN, listenDSN string)) *fleet {
	t.Helper()
	return newFleetWith(t, n, dsn, dsnFor, "")
}

// newFleetWith is newFleet with more lines for the keygate global option,
// which override the fleet's.
func newFleetWith(t testing.TB, n int, dsn string, dsnFor func(i int) (storeDSN, listenDSN string), global string) *fleet {
	t.Helper()
	ctx := t.Context()
	f := &fleet{t: t, dsn: dsn}
	var err error
	if f.st, err = postgres.Open(ctx, dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.st.Close() })
	if err := f.st.Migrate(ctx); err != nil {
		t.Fatalf("migrating: %v", err)
	}
	if f.kr, err = keys.NewKeyring([]byte(e2eSecret)); err != nil {
		t.Fatal(err)
	}
	a, err := f.st.CreateAccount(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	f.account = a.ID
	if _, err := f.st.SetMember(ctx, f.account, "alice", store.Admin); err != nil {
		t.Fatal(err)
	}
	f.password = rand.Text()
	hash, err := bcrypt.GenerateFromPassword([]byte(f.password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	up := newUpstream(t)
	for i := range n {
		storeDSN, listenDSN := dsnFor(i)
		dash := freeAddr(t)
		f.dashboards = append(f.dashboards, "http://"+dash)
		nd := newNode(t, nodeConfig{
			extra: fmt.Sprintf("\nhttp://%s {\n\tbind 127.0.0.1\n\tbasic_auth {\n\t\talice %s\n\t\tolga %[2]s\n\t}\n\tkeygate_admin {\n\t\toperators olga\n\t}\n}\n", dash, hash),
			global: "\t\tstore postgres " + strconv.Quote(storeDSN) + " {\n\t\t\tlisten " + strconv.Quote(listenDSN) + "\n\t\t}\n" +
				// The watchers probe deleted keys from one address without
				// pause: the limits for keys that fail would throttle them.
				"\t\tsecret {env.KEYGATE_SECRET}\n\t\tcache_ttl 10m\n\t\tnegative_ttl 10m\n\t\tstore_timeout 500ms\n" +
				"\t\tclient_refusals off\n\t\tunknown_key_lookups off\n\t\tusage_interval 250ms\n" +
				"\t\tstale_bound " + staleBound.String() + global,
			upstream: up.addr(),
		})
		nd.start()
		f.nodes = append(f.nodes, nd)
	}
	// Every node is following before the test starts.
	f.waitFor("every node to report itself", 30*time.Second, func() bool {
		ins, err := f.st.ListInstances(ctx, time.Now().Add(-5*time.Second))
		up := 0
		for _, in := range ins {
			if in.ListenerUp {
				up++
			}
		}
		return err == nil && up == n
	})
	return f
}

// dashboardJSON calls node i's dashboard as alice, an Account
// Administrator, and decodes the answer.
func (f *fleet) dashboardJSON(i int, method, path, body string, out any) {
	f.t.Helper()
	token := ""
	if method != "GET" {
		token = f.csrfToken(i)
	}
	r := f.dashboard(i, "alice", method, path, body, token)
	if r.status != http.StatusOK {
		f.t.Fatalf("%s %s on dashboard %d: %d %s", method, path, i, r.status, r.body)
	}
	if err := json.Unmarshal([]byte(r.body), out); err != nil {
		f.t.Fatal(err)
	}
}

// csrfToken is alice's token for the fleet's account on node i's dashboard.
func (f *fleet) csrfToken(i int) string {
	f.t.Helper()
	var accounts struct {
		Items []struct {
			ID        string `json:"id"`
			CSRFToken string `json:"csrf_token"`
		} `json:"items"`
	}
	json.Unmarshal([]byte(f.dashboard(i, "alice", "GET", "/api/accounts", "", "").body), &accounts)
	for _, a := range accounts.Items {
		if a.ID == f.account {
			return a.CSRFToken
		}
	}
	return ""
}

// dashboard sends one request to node i's dashboard as user.
func (f *fleet) dashboard(i int, user, method, path, body, token string) response {
	f.t.Helper()
	return dashboardRequest(f.t, f.dashboards[i], user, f.password, method, path, body, token)
}

func sameDSN(dsn string) func(int) (string, string) {
	return func(i int) (string, string) { return dsn, dsn + "&application_name=kg-listener-" + strconv.Itoa(i) }
}

func (f *fleet) waitFor(what string, limit time.Duration, cond func() bool) {
	f.t.Helper()
	waitFor(f.t, what, limit, cond, nil)
}

// mint makes a key without storing it.
func (f *fleet) mint(name string) (store.Key, string) {
	k, secret := keytest.Mint(f.t, f.kr, f.account, name)
	rememberKey(string(secret))
	return k, string(secret)
}

func (f *fleet) create(k store.Key) store.Key {
	f.t.Helper()
	k, err := f.st.CreateKey(context.Background(), k, store.AuditEvent{Actor: "fleet-test"})
	if err != nil {
		f.t.Fatalf("creating key: %v", err)
	}
	return k
}

func (f *fleet) delete(k store.Key) time.Time {
	f.t.Helper()
	if _, err := f.st.DeleteKey(context.Background(), f.account, k.ID, store.AuditEvent{Actor: "fleet-test", Action: store.ActionDelete}); err != nil {
		f.t.Fatalf("deleting key: %v", err)
	}
	return time.Now()
}

var probeClient = &http.Client{Timeout: 5 * time.Second}

// probe returns the status a node answers for the key (0: no answer).
func probe(n *node, key string) int {
	req, _ := http.NewRequest("GET", "http://"+n.addr+"/api/servers", nil)
	req.Header.Set("Authorization", bearer(key))
	resp, err := probeClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// watch probes every node with the keys until stopped, and fails the test
// if a live key is ever told 401 or a deleted key is accepted later than
// staleBound after its deletion committed.
type watch struct {
	f       *fleet
	mu      sync.Mutex
	live    map[string]bool
	deleted map[string]time.Time
	stop    chan struct{}
	done    sync.WaitGroup
	probes  atomic.Int64
	rounds  []atomic.Int64 // per node: rounds of probes completed
}

func (f *fleet) watch(keys ...string) *watch {
	w := &watch{f: f, live: map[string]bool{}, deleted: map[string]time.Time{}, stop: make(chan struct{}),
		rounds: make([]atomic.Int64, len(f.nodes))}
	for _, k := range keys {
		w.live[k] = true
	}
	for i, n := range f.nodes {
		w.done.Add(1)
		go func() {
			defer w.done.Done()
			for deadline := time.Now().Add(2 * time.Minute); time.Now().Before(deadline); {
				select {
				case <-w.stop:
					return
				default:
				}
				w.mu.Lock()
				ks := make([]string, 0, len(w.live)+len(w.deleted))
				for k := range w.live {
					ks = append(ks, k)
				}
				for k := range w.deleted {
					ks = append(ks, k)
				}
				w.mu.Unlock()
				for _, k := range ks {
					// The deletion time is read before the request is sent:
					// only a request sent after the bound may not pass.
					w.mu.Lock()
					at, wasDeleted := w.deleted[k]
					w.mu.Unlock()
					sent := time.Now()
					status := probe(n, k)
					w.probes.Add(1)
					switch {
					case !wasDeleted && status == http.StatusUnauthorized:
						w.mu.Lock()
						_, deletedMeanwhile := w.deleted[k]
						w.mu.Unlock()
						if !deletedMeanwhile {
							f.t.Errorf("a valid key (%s…) was told 401 by %s", k[:8], n.addr)
						}
					case wasDeleted && status == http.StatusOK && sent.After(at.Add(staleBound)):
						f.t.Errorf("a key (%s…) deleted %v before was accepted by %s", k[:8], sent.Sub(at), n.addr)
					}
				}
				w.rounds[i].Add(1)
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	return w
}

// deleting moves a key from live to deleted and deletes it. Its deletion
// time is taken before the commit: the strictest reading of the bound.
func (w *watch) deleting(key string, k store.Key) {
	w.mu.Lock()
	delete(w.live, key)
	w.deleted[key] = time.Now()
	w.mu.Unlock()
	w.f.delete(k)
}

// waitRound waits until every node has been probed with every key at
// least once more from now on: then each node has cached them all.
func (w *watch) waitRound() {
	from := make([]int64, len(w.rounds))
	for i := range w.rounds {
		from[i] = w.rounds[i].Load()
	}
	w.f.waitFor("a full round of probes on every node", 30*time.Second, func() bool {
		for i := range w.rounds {
			if w.rounds[i].Load() < from[i]+2 { // the round under way may have started before
				return false
			}
		}
		return true
	})
}

func (w *watch) finish() {
	close(w.stop)
	w.done.Wait()
	if w.probes.Load() == 0 {
		w.f.t.Fatal("the watch sent no request")
	}
}

// TestFleetRevocation: three nodes on one Postgres. A key deleted (as one
// node's dashboard does) is refused by every node at once, and a key
// created is accepted by every node at once, though they had cached it as
// unknown.
func TestFleetRevocation(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	f := newFleet(t, 3, dsn, sameDSN(dsn))

	doomed, doomedKey := f.mint("doomed")
	doomed = f.create(doomed)
	for _, n := range f.nodes {
		if s := probe(n, doomedKey); s != 200 {
			t.Fatalf("before deletion %s answered %d", n.addr, s)
		}
	}
	// Deleted through node 0's dashboard, which waits for the receipts.
	committed := time.Now()
	var receipt struct {
		Deleted    bool    `json:"deleted"`
		RevokedOn  int     `json:"revoked_on"`
		Instances  int     `json:"instances"`
		LagMS      float64 `json:"lag_ms"`
		Revocation string  `json:"revocation"`
	}
	f.dashboardJSON(0, "POST", "/api/accounts/"+f.account+"/keys/"+doomed.ID+"/delete", `{"name":"doomed"}`, &receipt)
	if !receipt.Deleted || receipt.RevokedOn != 3 || receipt.Instances != 3 || !strings.HasPrefix(receipt.Revocation, "Revoked on 3 of 3 instances in ") {
		t.Fatalf("the dashboard's receipt: %+v", receipt)
	}
	t.Logf("dashboard: %s", receipt.Revocation)
	f.waitFor("every node to refuse the deleted key", 2*time.Second, func() bool {
		for _, n := range f.nodes {
			if probe(n, doomedKey) != http.StatusUnauthorized {
				return false
			}
		}
		return true
	})
	t.Logf("deleted key refused by all 3 nodes %v after its commit", time.Since(committed))

	// The fleet panel lists the three, following, to an operator who is
	// a member of no account. An Account Administrator is a customer: the
	// panel does not exist for her, and her pages have no link to it.
	var panel struct {
		Fleet bool `json:"fleet"`
		Items []struct {
			ListenerUp bool `json:"listener_up"`
		} `json:"items"`
	}
	r := f.dashboard(2, "olga", "GET", "/api/fleet", "", "")
	if err := json.Unmarshal([]byte(r.body), &panel); r.status != http.StatusOK || err != nil {
		t.Fatalf("the operator's fleet panel: %d %s", r.status, r.body)
	}
	if !panel.Fleet || len(panel.Items) != 3 || !panel.Items[0].ListenerUp {
		t.Fatalf("the fleet panel: %+v", panel)
	}
	r = f.dashboard(2, "olga", "GET", "/fleet", "", "")
	if r.status != http.StatusOK || strings.Count(r.body, ">following<") != 3 {
		t.Fatalf("the operator's fleet page: %d %s", r.status, r.body)
	}
	// For her the panel answers exactly as a page that does not exist.
	for path, missing := range map[string]string{"/fleet": "/no-such-page", "/api/fleet": "/api/no-such-page"} {
		r, want := f.dashboard(2, "alice", "GET", path, "", ""), f.dashboard(2, "alice", "GET", missing, "", "")
		if r.status != http.StatusNotFound || r.body != want.body {
			t.Fatalf("an Account Administrator asked for %s: %d %s\nwant, as for %s: %d %s", path, r.status, r.body, missing, want.status, want.body)
		}
	}
	if r := f.dashboard(2, "alice", "GET", "/", "", ""); r.status != http.StatusOK || strings.Contains(r.body, `href="fleet`) {
		t.Fatalf("alice's key list links to the fleet: %d %s", r.status, r.body)
	}

	// A key every node has cached as unknown works everywhere once created.
	fresh, freshKey := f.mint("fresh")
	for _, n := range f.nodes {
		if s := probe(n, freshKey); s != http.StatusUnauthorized {
			t.Fatalf("a key not yet created: %s answered %d", n.addr, s)
		}
	}
	f.create(fresh)
	f.waitFor("every node to accept the new key", 2*time.Second, func() bool {
		for _, n := range f.nodes {
			if probe(n, freshKey) != http.StatusOK {
				return false
			}
		}
		return true
	})
}

// terminateListeners kills the Postgres backends of the listeners whose
// application name starts with prefix, as an operator or a failover would.
func terminateListeners(t testing.TB, dsn, prefix string) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	err = conn.QueryRow(t.Context(), `select count(pg_terminate_backend(pid)) from pg_stat_activity where application_name like $1 || '%'`, prefix).Scan(&n)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestFleetListenerKilled kills a node's listener backend and deletes a
// key at once: the node must still refuse it within the bound, and no valid
// key is ever refused.
func TestFleetListenerKilled(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	prefix := "kg-lk-" + strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
	f := newFleet(t, 2, dsn, func(i int) (string, string) { return dsn, dsn + "&application_name=" + prefix + strconv.Itoa(i) })
	live, liveKey := f.mint("live")
	f.create(live)
	var doomed []store.Key
	var doomedKeys []string
	for i := range 3 {
		k, s := f.mint("doomed " + strconv.Itoa(i))
		doomed = append(doomed, f.create(k))
		doomedKeys = append(doomedKeys, s)
	}
	w := f.watch(append([]string{liveKey}, doomedKeys...)...)
	w.waitRound() // everything cached

	for i := range doomed {
		if n := terminateListeners(t, dsn, prefix+"0"); n != 1 {
			t.Fatalf("terminated %d listeners, want 1", n)
		}
		w.deleting(doomedKeys[i], doomed[i]) // while node 0 reconnects
		time.Sleep(staleBound + 300*time.Millisecond)
	}
	w.finish()
	for _, n := range f.nodes {
		for _, k := range doomedKeys {
			if s := probe(n, k); s != http.StatusUnauthorized {
				t.Errorf("%s answers %d for a deleted key", n.addr, s)
			}
		}
		if s := probe(n, liveKey); s != http.StatusOK {
			t.Errorf("%s answers %d for the live key", n.addr, s)
		}
	}
}

// TestFleetStoreUnreachable cuts one node off from Postgres (pool and
// listener, through a proxy the test controls), deletes a key meanwhile,
// and brings it back: while cut off, the node serves cached keys only
// within the bound and answers 503, never 401, for the rest; back, it
// applies the deletion it missed, by itself.
func TestFleetStoreUnreachable(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	proxy := newTCPProxy(t, "127.0.0.1:5432")
	proxied := proxy.route(dsn)
	f := newFleet(t, 2, dsn, func(i int) (string, string) {
		if i == 0 {
			return proxied, proxied
		}
		return dsn, dsn
	})
	cut := f.nodes[0]
	live, liveKey := f.mint("live")
	f.create(live)
	doomed, doomedKey := f.mint("doomed")
	doomed = f.create(doomed)
	w := f.watch(liveKey, doomedKey)
	w.waitRound()

	proxy.setDown(true)
	w.deleting(doomedKey, doomed)
	// Within the bound the cut-off node may still serve its cached keys;
	// past it, it must ask the store, which does not answer: 503.
	time.Sleep(staleBound + 500*time.Millisecond)
	for _, k := range []string{liveKey, doomedKey} {
		if s := probe(cut, k); s != http.StatusServiceUnavailable {
			t.Errorf("cut-off node past the bound answers %d, want 503", s)
		}
	}
	if s := probe(f.nodes[1], doomedKey); s != http.StatusUnauthorized {
		t.Errorf("connected node answers %d for the deleted key", s)
	}
	proxy.setDown(false)
	f.waitFor("the cut-off node to recover", 15*time.Second, func() bool {
		return probe(cut, liveKey) == http.StatusOK && probe(cut, doomedKey) == http.StatusUnauthorized
	})
	w.finish()
}

// TestFleetPostgresRestart runs the fleet on a throwaway Postgres cluster
// the test starts itself, restarts it, and deletes a key right after.
func TestFleetPostgresRestart(t *testing.T) {
	t.Parallel()
	pg := pgtest.StartCluster(t)
	f := newFleet(t, 2, pg.DSN, sameDSN(pg.DSN))
	live, liveKey := f.mint("live")
	f.create(live)
	doomed, doomedKey := f.mint("doomed")
	doomed = f.create(doomed)
	w := f.watch(liveKey, doomedKey)
	w.waitRound()

	pg.Ctl("restart", "-m", "fast")
	// The test's own pool reconnects on its next query.
	f.waitFor("the restarted cluster", 15*time.Second, func() bool { return f.st.Ping(t.Context()) == nil })
	w.deleting(doomedKey, doomed)
	f.waitFor("every node to refuse the deleted key and accept the live one", 15*time.Second, func() bool {
		for _, n := range f.nodes {
			if probe(n, doomedKey) != http.StatusUnauthorized || probe(n, liveKey) != http.StatusOK {
				return false
			}
		}
		return true
	})
	w.finish()
}

// TestFleetConcurrentChanges races creations and deletions against
// requests on every node (the nodes are built with the race detector).
func TestFleetConcurrentChanges(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	f := newFleet(t, 3, dsn, sameDSN(dsn))
	type entry struct {
		k      store.Key
		secret string
	}
	var entries []entry
	for i := range 12 {
		k, s := f.mint("key " + strconv.Itoa(i))
		entries = append(entries, entry{f.create(k), s})
	}
	var secrets []string
	for _, e := range entries {
		secrets = append(secrets, e.secret)
	}
	w := f.watch(secrets...)
	var wg sync.WaitGroup
	var created []entry
	var mu sync.Mutex
	wg.Go(func() {
		for i := 0; i < len(entries); i += 2 {
			w.deleting(entries[i].secret, entries[i].k)
			time.Sleep(20 * time.Millisecond)
		}
	})
	wg.Go(func() {
		for i := range 8 {
			k, s := f.mint("new " + strconv.Itoa(i))
			f.create(k)
			mu.Lock()
			created = append(created, entry{k, s})
			mu.Unlock()
			time.Sleep(15 * time.Millisecond)
		}
	})
	wg.Wait()
	// Each node applies the last events within milliseconds of their
	// commit: wait for the final state everywhere, then check it.
	state := func(n *node) string {
		var b strings.Builder
		for i, e := range entries {
			want := http.StatusOK
			if i%2 == 0 {
				want = http.StatusUnauthorized
			}
			if s := probe(n, e.secret); s != want {
				fmt.Fprintf(&b, "key %d answers %d, want %d; ", i, s, want)
			}
		}
		for i, e := range created {
			if s := probe(n, e.secret); s != http.StatusOK {
				fmt.Fprintf(&b, "created key %d answers %d; ", i, s)
			}
		}
		return b.String()
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, n := range f.nodes {
		for s := state(n); s != ""; s = state(n) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s", n.addr, s)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	w.finish()
}

// TestFleetListenerCutOff: the store answers but the listener cannot reach
// it (its own DSN goes through a proxy that is down), so deletions made
// elsewhere are not announced to this node. Its cached keys are trusted
// only within the staleness bound: then it asks the store, which refuses
// the deleted key and confirms the live one.
func TestFleetListenerCutOff(t *testing.T) {
	t.Parallel()
	testListenerOutage(t, true, func(p *tcpProxy, out bool) { p.setDown(out) })
}

// TestFleetListenerHalfOpen: the listener's connection stays open but
// nothing passes (a failover behind a virtual IP, a dropped NAT entry).
// The listener's keepalive must notice within the staleness bound, so a
// key deleted meanwhile is not trusted from the cache for longer.
func TestFleetListenerHalfOpen(t *testing.T) {
	t.Parallel()
	testListenerOutage(t, false, func(p *tcpProxy, out bool) { p.silent.Store(out) })
}

// testListenerOutage runs one node whose listener reaches Postgres through
// a proxy (the store does not), takes the listener out with cut, deletes a
// key, and checks that past the staleness bound the node refuses it and
// still accepts the live key. waitDown waits for the node to report its
// listener down before deleting.
func testListenerOutage(t *testing.T, waitDown bool, cut func(p *tcpProxy, out bool)) {
	dsn := pgtest.DSN(t)
	proxy := newTCPProxy(t, "127.0.0.1:5432")
	f := newFleet(t, 1, dsn, func(int) (string, string) {
		return dsn, proxy.route(dsn)
	})
	n := f.nodes[0]
	live, liveKey := f.mint("live")
	f.create(live)
	doomed, doomedKey := f.mint("doomed")
	doomed = f.create(doomed)
	w := f.watch(liveKey, doomedKey)
	w.waitRound()

	cut(proxy, true)
	if waitDown {
		f.waitFor("the listener to be reported down", 10*time.Second, func() bool {
			return strings.Contains(n.adminGet("/metrics"), "caddy_keygate_listener_up 0")
		})
	}
	w.deleting(doomedKey, doomed)
	time.Sleep(staleBound + 300*time.Millisecond)
	if s := probe(n, doomedKey); s != http.StatusUnauthorized {
		t.Fatalf("past the staleness bound with the listener out, a deleted key answers %d", s)
	}
	if s := probe(n, liveKey); s != http.StatusOK {
		t.Fatalf("with the listener out, the live key answers %d", s)
	}
	cut(proxy, false)
	f.waitFor("the listener to be back", 15*time.Second, func() bool {
		return strings.Contains(n.adminGet("/metrics"), "caddy_keygate_listener_up 1")
	})
	w.finish()
	if !strings.Contains(n.adminGet("/metrics"), "caddy_keygate_revocation_lag_seconds_count") {
		t.Fatal("no revocation lag histogram in the metrics")
	}
}
