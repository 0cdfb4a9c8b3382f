package fleet_test

import (
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/cache"
	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

// TestCacheTTLFollowing: while an instance follows the key events, a
// cached key outlives the short TTL and a deletion elsewhere still
// refuses it as soon as the event is applied; once the listener is down
// (its role may no longer log in, so it stays down), every cached key is
// judged by the short TTL and the staleness bound again, whenever it was
// checked.
func TestCacheTTLFollowing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dsn := pgtest.DSN(t)
	// The listener logs in as a role of its own, which the test can bar.
	role := "kg_listen_" + strconv.FormatInt(time.Now().UnixNano(), 36)
	pgtest.Exec(t, "create role "+role+" login")
	t.Cleanup(func() {
		pgtest.Exec(t, "select pg_terminate_backend(pid) from pg_stat_activity where usename = '"+role+"'")
		pgtest.Exec(t, "drop role "+role)
	})
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	listen := u.String()

	const ttl, bound = 400 * time.Millisecond, 300 * time.Millisecond
	cfg := cache.Config{Size: 100, TTL: ttl, NegativeTTL: time.Minute, FetchTimeout: 5 * time.Second,
		StaleBound: bound, TTLFollowing: time.Hour}
	kr, _ := keys.NewKeyring([]byte("following test secret 0123456789ab"))
	a, other := newInstance(t, dsn, dsn), newInstance(t, dsn, dsn)
	if err := a.st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	a.start(t, 0, listen, kr, cfg)
	waitUntil(t, "the listener", a.follower.Up)
	acct, err := a.st.CreateAccount(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	other.start(t, 1, dsn, kr, defaultCache) // keys are made and deleted there
	var made []store.Key
	var plain []keys.Key
	for i := range 3 {
		k, key, err := other.manager.CreateKey(ctx, auth.NewKey{AccountID: acct.ID, Name: "key-" + strconv.Itoa(i), Type: store.Standard}, auth.Actor{UserID: "u"})
		if err != nil {
			t.Fatal(err)
		}
		made, plain = append(made, k), append(plain, key)
	}
	waitUntil(t, "the creations to be applied", func() bool { return a.follower.Applied() >= made[2].Seq })
	verify := func(i int) auth.Decision { return a.verifier.Verify(ctx, basic(plain[i])) }
	filled := time.Now()
	for i := range plain {
		if d := verify(i); d.Result != auth.Allowed || d.Cache != cache.Miss {
			t.Fatalf("key %d, first use: %v from %v (%v)", i, d.Result, d.Cache, d.Err)
		}
	}
	pastTTL := func() bool { return time.Since(filled) > ttl+bound }
	waitUntil(t, "the short TTL and the staleness bound to pass", pastTTL)
	for i := range plain {
		if d := verify(i); d.Result != auth.Allowed || d.Cache != cache.Hit {
			t.Fatalf("key %d past the short TTL while following: %v from %v, want a hit", i, d.Result, d.Cache)
		}
	}

	// Deleted elsewhere while following: refused once the event is applied.
	del, err := other.manager.DeleteKey(ctx, acct.ID, made[0].ID, auth.Actor{UserID: "u"})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the deletion to be applied", func() bool { return a.follower.Applied() >= del.Seq })
	if d := verify(0); d.Result != auth.Unauthorized {
		t.Fatalf("a key deleted elsewhere, its event applied: %v from %v", d.Result, d.Cache)
	}

	// The listener goes down and stays down.
	pgtest.Exec(t, "alter role "+role+" nologin")
	pgtest.Exec(t, "select pg_terminate_backend(pid) from pg_stat_activity where usename = '"+role+"'")
	waitUntil(t, "the listener to be down", func() bool { return !a.follower.Up() && a.follower.LastError() != nil })
	// Deleted while no event can arrive: the cached key, checked an hour's
	// TTL ago as far as following goes, is asked about again.
	if _, err := other.manager.DeleteKey(ctx, acct.ID, made[1].ID, auth.Actor{UserID: "u"}); err != nil {
		t.Fatal(err)
	}
	if d := verify(1); d.Result != auth.Unauthorized || d.Cache != cache.Miss {
		t.Fatalf("a key deleted while the listener is down, cached past the short TTL: %v from %v; want refused by the store", d.Result, d.Cache)
	}
	if d := verify(2); d.Result != auth.Allowed || d.Cache != cache.Miss {
		t.Fatalf("a live key cached past the short TTL, listener down: %v from %v; want asked again", d.Result, d.Cache)
	}
	refilled := time.Now()
	if d := verify(2); d.Result != auth.Allowed || d.Cache != cache.Hit {
		t.Fatalf("a live key just checked, listener down: %v from %v; want a hit within the bound", d.Result, d.Cache)
	}
	waitUntil(t, "the staleness bound to pass", func() bool { return time.Since(refilled) > bound })
	if d := verify(2); d.Cache != cache.Miss {
		t.Fatalf("past the staleness bound with the listener down: %v, want asked again", d.Cache)
	}

	// Back: following again, the long TTL applies again.
	pgtest.Exec(t, "alter role "+role+" login")
	waitUntil(t, "the listener to be back", a.follower.Up)
	refilled = time.Now()
	if d := verify(2); d.Result != auth.Allowed {
		t.Fatalf("a live key once the listener is back: %v", d.Result)
	}
	waitUntil(t, "the short TTL to pass", func() bool { return time.Since(refilled) > ttl+bound })
	if d := verify(2); d.Result != auth.Allowed || d.Cache != cache.Hit {
		t.Fatalf("following again, past the short TTL: %v from %v, want a hit", d.Result, d.Cache)
	}
}
