package fleet

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/cache"
	"github.com/keygate/keygate/caddymodule/internal/keytest"
	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
	"github.com/keygate/keygate/caddymodule/store/postgres"
)

// listenerRole is the role the scale tests' listeners log in as, so that
// they can be kept out (NOLOGIN) while the stores' pools stay connected.
const listenerRole = "kg_listener"

// member is one instance of a fleet in this process: its own pool, its
// own listener connection, and the real verifier and cache the app uses.
type member struct {
	st   *postgres.Store
	q    *queries
	v    *auth.Verifier
	f    *Follower
	stop context.CancelFunc
	done chan struct{}
}

// scaleFleet is n members following one schema, and a store through
// which the test changes keys, as an instance's dashboard would.
type scaleFleet struct {
	tb      testing.TB
	admin   *postgres.Store
	kr      *keys.Keyring
	account string
	members []*member
}

// scaleOptions are what the test and the benchmark set differently.
type scaleOptions struct {
	pool      string // pgxpool options added to each member's DSN, e.g. "pool_max_conns=2"
	heartbeat time.Duration
	keepalive time.Duration
	cacheTTL  time.Duration // positive and negative; also the staleness bound
	// cache wraps a member's verifier as its follower sees it (nil: as is).
	cache func(i int, v *auth.Verifier) Cache
}

// newSchema creates a schema on the cluster and returns a DSN using it.
func newSchema(tb testing.TB, clusterDSN, name string) string {
	tb.Helper()
	conn, err := pgx.Connect(tb.Context(), clusterDSN)
	if err != nil {
		tb.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(tb.Context(), "create schema "+pgx.Identifier{name}.Sanitize()); err != nil {
		tb.Fatal(err)
	}
	u, err := url.Parse(clusterDSN)
	if err != nil {
		tb.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
}

// startScaleFleet migrates the schema of dsn and starts n members whose
// listeners log in as listenerRole, and waits until every one follows.
func startScaleFleet(tb testing.TB, dsn string, n int, o scaleOptions) *scaleFleet {
	tb.Helper()
	ctx := tb.Context()
	sf := &scaleFleet{tb: tb}
	var err error
	if sf.admin, err = postgres.Open(ctx, dsn); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { sf.admin.Close() })
	if err := sf.admin.Migrate(ctx); err != nil {
		tb.Fatal(err)
	}
	if sf.kr, err = keys.NewKeyring([]byte("fleet scale secret 0123456789abcdef")); err != nil {
		tb.Fatal(err)
	}
	a, err := sf.admin.CreateAccount(ctx, "acme")
	if err != nil {
		tb.Fatal(err)
	}
	sf.account = a.ID
	u, err := url.Parse(dsn)
	if err != nil {
		tb.Fatal(err)
	}
	u.User = url.User(listenerRole)
	for i := range n {
		m := &member{done: make(chan struct{})}
		pool := dsn + "&application_name=kg-pool-" + strconv.Itoa(i) + "&" + o.pool
		if m.st, err = postgres.Open(ctx, pool); err != nil {
			tb.Fatal(err)
		}
		m.q = &queries{FleetStore: m.st}
		m.v, err = auth.NewVerifier(auth.VerifierConfig{Keyring: sf.kr, Lookup: m.q.lookup,
			Cache: cache.Config{Size: 10_000, TTL: o.cacheTTL, NegativeTTL: o.cacheTTL, FetchTimeout: 10 * time.Second, StaleBound: o.cacheTTL}})
		if err != nil {
			tb.Fatal(err)
		}
		var c Cache = m.v
		if o.cache != nil {
			c = o.cache(i, m.v)
		}
		q := u.Query()
		q.Set("application_name", "kg-follower-"+strconv.Itoa(i))
		u.RawQuery = q.Encode()
		m.f, err = New(Config{Store: m.q, ListenDSN: u.String(), Cache: c, InstanceID: "member-" + strconv.Itoa(i),
			Address: "scale test", Heartbeat: o.heartbeat, Keepalive: o.keepalive})
		if err != nil {
			tb.Fatal(err)
		}
		var rctx context.Context
		rctx, m.stop = context.WithCancel(context.Background())
		go func() { defer close(m.done); m.f.Run(rctx) }()
		sf.members = append(sf.members, m)
	}
	tb.Cleanup(func() {
		for _, m := range sf.members {
			m.stop()
		}
		for _, m := range sf.members {
			<-m.done
			m.st.Close()
		}
	})
	sf.waitFor("every member to follow", 2*time.Minute, func() string {
		return sf.count("not following", func(m *member) bool { return !m.f.Up() })
	})
	return sf
}

// queries is a member's store as its follower and verifier use it,
// counting the statements they send, by kind.
type queries struct {
	store.FleetStore
	heartbeats, catchUps, lookups, pings atomic.Int64
}

func (q *queries) lookup(ctx context.Context, d keys.Digest) (store.Identity, error) {
	q.lookups.Add(1)
	return q.FleetStore.LookupKey(ctx, d)
}

func (q *queries) Heartbeat(ctx context.Context, in store.Instance) error {
	q.heartbeats.Add(1)
	return q.FleetStore.Heartbeat(ctx, in)
}

func (q *queries) LastKeyEvent(ctx context.Context) (int64, error) {
	q.catchUps.Add(1)
	return q.FleetStore.LastKeyEvent(ctx)
}

func (q *queries) KeyEventsSince(ctx context.Context, after int64, limit int) ([]store.KeyEvent, error) {
	q.catchUps.Add(1)
	return q.FleetStore.KeyEventsSince(ctx, after, limit)
}

// ListenKeyEvents counts the keepalive pings: the times the connection is
// known alive (before each event, and after each ping) less the events.
func (q *queries) ListenKeyEvents(ctx context.Context, dsn string, keepalive time.Duration, connected func() error, alive func(), event func(store.KeyEvent) error) error {
	return q.FleetStore.ListenKeyEvents(ctx, dsn, keepalive, connected,
		func() { q.pings.Add(1); alive() },
		func(ev store.KeyEvent) error { q.pings.Add(-1); return event(ev) })
}

// statements sums the fleet's counted statements: heartbeats (receipts
// included), catch-up queries, key lookups and keepalive pings.
func (sf *scaleFleet) statements() [4]int64 {
	var n [4]int64
	for _, m := range sf.members {
		n[0] += m.q.heartbeats.Load()
		n[1] += m.q.catchUps.Load()
		n[2] += m.q.lookups.Load()
		n[3] += m.q.pings.Load()
	}
	return n
}

// count says how many members are in a state, or "" for none.
func (sf *scaleFleet) count(what string, in func(m *member) bool) string {
	n := 0
	for _, m := range sf.members {
		if in(m) {
			n++
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("%d of %d members %s", n, len(sf.members), what)
}

// waitFor polls until problem returns "", failing after limit with the
// last problem seen.
func (sf *scaleFleet) waitFor(what string, limit time.Duration, problem func() string) {
	sf.tb.Helper()
	deadline := time.Now().Add(limit)
	for {
		p := problem()
		if p == "" {
			return
		}
		if time.Now().After(deadline) {
			sf.tb.Fatalf("timed out after %v waiting for %s: %s", limit, what, p)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mint makes a key without storing it and returns its row and the
// Authorization header that sends it.
func (sf *scaleFleet) mint(name string) (store.Key, []string) {
	sf.tb.Helper()
	k, secret := keytest.Mint(sf.tb, sf.kr, sf.account, name)
	return k, []string{"Bearer " + secret.Secret()}
}

func (sf *scaleFleet) create(k store.Key) store.Key {
	sf.tb.Helper()
	k, err := sf.admin.CreateKey(context.Background(), k, store.AuditEvent{Actor: "scale"})
	if err != nil {
		sf.tb.Fatalf("creating key: %v", err)
	}
	return k
}

func (sf *scaleFleet) delete(k store.Key) store.Key {
	sf.tb.Helper()
	d, err := sf.admin.DeleteKey(context.Background(), sf.account, k.ID, store.AuditEvent{Actor: "scale", Action: store.ActionDelete})
	if err != nil {
		sf.tb.Fatalf("deleting key: %v", err)
	}
	return d
}

// verifyAll has every member check every key concurrently and returns
// each member's results, in the order of auths.
func (sf *scaleFleet) verifyAll(auths [][]string) [][]auth.Result {
	out := make([][]auth.Result, len(sf.members))
	var wg sync.WaitGroup
	for i, m := range sf.members {
		wg.Go(func() {
			out[i] = make([]auth.Result, len(auths))
			for j, a := range auths {
				out[i][j] = m.v.Verify(context.Background(), a).Result
			}
		})
	}
	wg.Wait()
	return out
}

// keySet is keys the test expects an answer for, by name.
type keySet struct {
	names []string
	auths [][]string
	want  []auth.Result
}

func (ks *keySet) add(name string, authorization []string, want auth.Result) {
	ks.names, ks.auths, ks.want = append(ks.names, name), append(ks.auths, authorization), append(ks.want, want)
}

// check has every member check every key: a live key refused fails the
// test at once (a valid key is never told 401); a deleted key still
// accepted, or a new key still refused, is returned as the problem to wait
// for.
func (sf *scaleFleet) check(ks *keySet) string {
	sf.tb.Helper()
	var pending []string
	for i, rs := range sf.verifyAll(ks.auths) {
		for j, r := range rs {
			switch {
			case r == ks.want[j]:
			case r == auth.Unauthorized && ks.want[j] == auth.Allowed && strings.HasPrefix(ks.names[j], "live"):
				sf.tb.Fatalf("member %d refused %s, a key that was never deleted", i, ks.names[j])
			case r == auth.Unavailable:
				sf.tb.Fatalf("member %d could not check %s: the store did not answer", i, ks.names[j])
			default:
				pending = append(pending, fmt.Sprintf("member %d answers %s for %s", i, r, ks.names[j]))
			}
		}
	}
	if len(pending) == 0 {
		return ""
	}
	return fmt.Sprintf("%d answers not yet right, the first: %s", len(pending), pending[0])
}

// TestFleetOfFiftyFollowers runs 50 instances' followers, each with its
// own pool, listener connection and key cache, on one Postgres. Deleted
// keys must be refused and created keys accepted by every one, first as
// the notifications arrive, then after every listener was cut off while
// keys changed, by catching up from key_events. The caches trust their
// entries for an hour, the staleness bound included, so that nothing but
// the key events can make a member refuse a key it has cached.
func TestFleetOfFiftyFollowers(t *testing.T) {
	const (
		members = 50
		live    = 30 // keys created up front; 20 of them are deleted
		fresh   = 10 // keys cached as unknown, then created
	)
	// A cluster of its own: 50 listeners and 50 pools would take most of
	// the shared server's 100 connections from the tests running beside.
	c := pgtest.StartCluster(t, "max_connections=200")
	c.Exec(t, "create role "+listenerRole+" login")
	dsn := newSchema(t, c.DSN, "scale")
	sf := startScaleFleet(t, dsn, members, scaleOptions{pool: "pool_max_conns=2", heartbeat: 2 * time.Second, keepalive: time.Second, cacheTTL: time.Hour})

	var ks keySet
	var created []store.Key
	for i := range live {
		k, a := sf.mint("live " + strconv.Itoa(i))
		created = append(created, sf.create(k))
		ks.add("live "+strconv.Itoa(i), a, auth.Allowed)
	}
	var unborn []store.Key
	for i := range fresh {
		k, a := sf.mint("fresh " + strconv.Itoa(i))
		unborn = append(unborn, k)
		ks.add("fresh "+strconv.Itoa(i), a, auth.Unauthorized)
	}
	// Every member caches every live key, and every fresh key as unknown.
	if p := sf.check(&ks); p != "" {
		t.Fatal(p)
	}

	// Notified: delete 10 keys and create 5 of the fresh ones.
	change := func(deleted []int, born []int) {
		for _, i := range deleted {
			sf.delete(created[i])
			ks.names[i], ks.want[i] = "deleted "+strconv.Itoa(i), auth.Unauthorized
		}
		for _, i := range born {
			sf.create(unborn[i])
			ks.want[live+i] = auth.Allowed
		}
	}
	change([]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, []int{0, 1, 2, 3, 4})
	sf.waitFor("every member to apply the notified changes", time.Minute, func() string { return sf.check(&ks) })

	// Cut off: no listener may log in, and every one is dropped. The
	// pools, logged in as another role, keep working.
	c.Exec(t, "alter role "+listenerRole+" nologin")
	c.Exec(t, "select pg_terminate_backend(pid) from pg_stat_activity where usename = '"+listenerRole+"'")
	sf.waitFor("every member to lose its listener", time.Minute, func() string {
		return sf.count("still following", func(m *member) bool { return m.f.Up() })
	})
	change([]int{10, 11, 12, 13, 14, 15, 16, 17, 18, 19}, []int{5, 6, 7, 8, 9})
	last, err := sf.admin.LastKeyEvent(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	c.Exec(t, "alter role "+listenerRole+" login")
	sf.waitFor("every member to catch up", 2*time.Minute, func() string {
		return sf.count("not caught up", func(m *member) bool { return !m.f.Up() || m.f.Applied() != last })
	})
	if p := sf.check(&ks); p != "" {
		t.Fatalf("after catching up: %s", p)
	}

	// What the fleet costs the server: a listener each, and its pool.
	var listeners, pools int
	c.QueryRow(t, `select count(*) filter (where usename = $1), count(*) filter (where application_name like 'kg-pool-%')
		from pg_stat_activity where backend_type = 'client backend'`, []any{listenerRole}, &listeners, &pools)
	if listeners != members || pools > members*2 {
		t.Fatalf("%d listener connections and %d pool connections; want %d listeners and at most %d pool connections", listeners, pools, members, members*2)
	}
	t.Logf("%d members: %d listener connections, %d pool connections", members, listeners, pools)
}
