package fleet_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/cache"
	"github.com/keygate/keygate/caddymodule/fleet"
	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
	"github.com/keygate/keygate/caddymodule/store/postgres"
)

// pooledDSN is the pool's DSN through a transaction pooler, as the README
// recommends for PgBouncer before 1.21: statement descriptions cached, no
// named prepared statements.
func pooledDSN(via string) string {
	return via + "&default_query_exec_mode=cache_describe&pool_max_conns=4"
}

// instance is one keygate instance as the app builds it: a store whose
// pool goes through the pooler and whose session connections do not, a
// verifier with its cache, a manager, and a follower listening directly.
type instance struct {
	st       *postgres.Store
	verifier *auth.Verifier
	manager  *auth.Manager
	follower *fleet.Follower
}

func newInstance(t *testing.T, poolDSN, direct string) *instance {
	t.Helper()
	st, err := postgres.Open(t.Context(), poolDSN, postgres.WithSessionDSN(direct))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &instance{st: st}
}

// defaultCache is the app's cache with its default settings.
var defaultCache = cache.Config{Size: 1000, TTL: time.Minute, NegativeTTL: time.Minute, FetchTimeout: 5 * time.Second,
	StaleBound: 5 * time.Second, TTLFollowing: time.Hour}

// start checks the secrets and starts following the key events, listening
// on listen.
func (in *instance) start(t *testing.T, n int, listen string, kr *keys.Keyring, cfg cache.Config) {
	t.Helper()
	if _, err := auth.CheckSecrets(t.Context(), in.st, kr, false); err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(auth.VerifierConfig{Keyring: kr, Lookup: in.st.LookupKey, Cache: cfg})
	if err != nil {
		t.Fatal(err)
	}
	in.verifier = v
	in.manager = &auth.Manager{Store: in.st, Keyring: kr, Verifier: v}
	in.follower, err = fleet.New(fleet.Config{Store: in.st, ListenDSN: listen, Cache: v,
		InstanceID: fmt.Sprintf("inst-%d", n), Address: "pooler test", Heartbeat: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { in.follower.Run(ctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
}

func basic(k keys.Key) []string { return []string{"Bearer " + string(k)} }

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPgBouncerTwoInstances runs two instances through a real PgBouncer in
// transaction mode (two server connections for both), each with a direct
// session connection for its listener and its rotation lock: they migrate
// together, keys made on one are looked up on the other cold and warm, and
// a key deleted on either is refused on the other as soon as its event
// is applied.
func TestPgBouncerTwoInstances(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	direct := pgtest.DSN(t)
	poolDSN := pooledDSN(pgtest.Bouncer(t, direct, pgtest.BouncerConfig{PoolSize: 2}))
	t.Logf("PgBouncer %s, transaction mode", pgtest.BouncerVersion(t))
	kr, _ := keys.NewKeyring([]byte("pooler test secret 0123456789abcdef"))

	ins := []*instance{newInstance(t, poolDSN, direct), newInstance(t, poolDSN, direct)}
	var wg sync.WaitGroup
	errs := make([]error, len(ins))
	for i, in := range ins {
		wg.Go(func() { errs[i] = in.st.Migrate(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("migrating two instances together through PgBouncer: %v", err)
	}
	for i, in := range ins {
		in.start(t, i, direct, kr, defaultCache)
	}
	for _, in := range ins {
		waitUntil(t, "the listeners to follow", in.follower.Up)
	}
	a, b := ins[0], ins[1]
	acct, err := a.st.CreateAccount(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	by := auth.Actor{UserID: "u"}

	// Keys made on both; each looked up on the other, cold (a store query)
	// then warm (the cache), many at once so that the pooler hands each
	// query whichever server connection is free.
	var made []store.Key
	var plain []keys.Key
	for i := range 20 {
		m := ins[i%2].manager
		k, key, err := m.CreateKey(ctx, auth.NewKey{AccountID: acct.ID, Name: fmt.Sprintf("key-%d", i), Type: store.Standard}, by)
		if err != nil {
			t.Fatalf("creating a key through PgBouncer: %v", err)
		}
		made, plain = append(made, k), append(plain, key)
	}
	// A creation's event empties what fills are in flight: let them pass.
	for _, in := range ins {
		waitUntil(t, "the creations to be applied", func() bool { return in.follower.Applied() >= made[len(made)-1].Seq })
	}
	for round, want := range []cache.Outcome{cache.Miss, cache.Hit} {
		var wg sync.WaitGroup
		for i := range plain {
			for _, in := range ins {
				wg.Go(func() {
					d := in.verifier.Verify(ctx, basic(plain[i]))
					if d.Result != auth.Allowed || d.Cache != want || d.Identity.KeyID != made[i].ID {
						t.Errorf("round %d, key %d: %v (%v, %v), want allowed from %v", round, i, d.Result, d.Cache, d.Err, want)
					}
				})
			}
		}
		wg.Wait()
	}
	unknown, _ := keys.New()
	if d := b.verifier.Verify(ctx, basic(unknown)); d.Result != auth.Unauthorized {
		t.Fatalf("an unknown key through PgBouncer: %v (%v)", d.Result, d.Err)
	}

	// Deleted on one, refused on the other once it applied the event, from
	// its cache's point of view at once.
	for i, on := range []*instance{a, b} {
		other := ins[1-i]
		del, err := on.manager.DeleteKey(ctx, acct.ID, made[i].ID, by)
		if err != nil {
			t.Fatalf("deleting a key through PgBouncer: %v", err)
		}
		waitUntil(t, "the other instance to apply the deletion", func() bool { return other.follower.Applied() >= del.Seq })
		if d := other.verifier.Verify(ctx, basic(plain[i])); d.Result != auth.Unauthorized {
			t.Fatalf("a key deleted on instance %d answers %v on the other after it applied the deletion", i, d.Result)
		}
		if d := other.verifier.Verify(ctx, basic(plain[i+2])); d.Result != auth.Allowed || d.Cache != cache.Hit {
			t.Fatalf("a live key after another's deletion: %v from %v", d.Result, d.Cache)
		}
	}

	// The rotation lock is held on the direct session: one instance holds
	// it, the other is refused, and the lock is really taken in Postgres.
	release, err := a.st.LockRotation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.st.LockRotation(ctx); !errors.Is(err, store.ErrBusy) {
		t.Fatalf("a second rotation lock through PgBouncer: %v, want ErrBusy", err)
	}
	if free := tryLock(t, direct, "keygate.rotate."); free {
		t.Fatal("the rotation lock is not held in Postgres while LockRotation holds it")
	}
	release()
	again, err := b.st.LockRotation(ctx)
	if err != nil {
		t.Fatalf("the rotation lock after release: %v", err)
	}
	again()
	if !tryLock(t, direct, "keygate.rotate.") {
		t.Fatal("the rotation lock is still held after release")
	}
}

// TestPgBouncerMigrationsTakeTurns: instances migrating a new schema
// together through PgBouncer sharing one server connection, where a
// session lock taken by one would be taken again by the next, take turns
// and leave no lock behind.
func TestPgBouncerMigrationsTakeTurns(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	direct := pgtest.DSN(t)
	poolDSN := pooledDSN(pgtest.Bouncer(t, direct, pgtest.BouncerConfig{PoolSize: 1}))
	const n = 4
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		st, err := postgres.Open(ctx, poolDSN)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		wg.Go(func() { errs[i] = st.Migrate(ctx) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("migrating %d instances together through PgBouncer: %v", n, err)
	}
	st, err := postgres.Open(ctx, direct)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.Ready(ctx); err != nil {
		t.Fatalf("after migrating through PgBouncer: %v", err)
	}
	if !tryLock(t, direct, "keygate.migrate.") {
		t.Fatal("a migration lock is left held after migrating through PgBouncer")
	}
}

// TestPgBouncerPreparedStatements: through PgBouncer 1.18 in transaction
// mode, pgx's default mode (named prepared statements, cached per
// connection) breaks as soon as two clients share a server connection,
// and keygate's diagnosis says what to set.
func TestPgBouncerPreparedStatements(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	direct := pgtest.DSN(t)
	migrated, err := postgres.Open(ctx, direct)
	if err != nil {
		t.Fatal(err)
	}
	defer migrated.Close()
	if err := migrated.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	via := pgtest.Bouncer(t, direct, pgtest.BouncerConfig{PoolSize: 1})
	var d keys.Digest
	var failed error
	for i := range 2 {
		st, err := postgres.Open(ctx, via) // pgx's default: cache_statement
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		if _, err := st.LookupKey(ctx, d); !errors.Is(err, store.ErrNotFound) {
			if i == 0 {
				t.Fatalf("the first client's lookup: %v", err)
			}
			failed = err
			diag := st.Diagnose(err)
			if diag.Kind != store.KindPooler || !diag.Permanent || !strings.Contains(diag.Fix, "default_query_exec_mode=cache_describe") || !strings.Contains(diag.Fix, "max_prepared_statements") {
				t.Fatalf("diagnosis of %v: %+v; want kind %s naming default_query_exec_mode=cache_describe and max_prepared_statements", err, diag, store.KindPooler)
			}
		}
	}
	if failed == nil {
		t.Fatalf("the second client's lookup through PgBouncer %s with named prepared statements succeeded: does this PgBouncer keep prepared statements (1.21+)? Then the README's advice for older ones needs another proof", pgtest.BouncerVersion(t))
	}
	t.Logf("without default_query_exec_mode: %v", failed)
}

// TestPgBouncerSearchPath: PgBouncer refuses a search_path in the DSN,
// and keygate's diagnosis says where to set it instead.
func TestPgBouncerSearchPath(t *testing.T) {
	t.Parallel()
	direct := pgtest.DSN(t)
	st, err := postgres.Open(t.Context(), pooledDSN(pgtest.Bouncer(t, direct, pgtest.BouncerConfig{}))+"&search_path=keygate")
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	err = st.Ready(t.Context())
	if d := st.Diagnose(err); d.Kind != store.KindPooler || !strings.Contains(d.Fix, "ALTER ROLE") {
		t.Fatalf("a search_path in a DSN through PgBouncer: %v, diagnosed %+v; want kind %s naming ALTER ROLE", err, d, store.KindPooler)
	}
}

// tryLock reports whether the schema's advisory lock named prefix is free,
// taking and releasing it on a direct connection of its own.
func tryLock(t *testing.T, direct, prefix string) bool {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), direct)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var free bool
	if err := conn.QueryRow(t.Context(), `select pg_try_advisory_lock(hashtext($1 || current_schema()))`, prefix).Scan(&free); err != nil {
		t.Fatal(err)
	}
	if free {
		conn.Exec(t.Context(), `select pg_advisory_unlock(hashtext($1 || current_schema()))`, prefix)
	}
	return free
}
