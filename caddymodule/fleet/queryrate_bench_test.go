package fleet_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/cache"
	"github.com/keygate/keygate/caddymodule/fleet"
	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store/postgres"
)

// simClock is a clock that the benchmark moves: hours of traffic are
// played in seconds, with every cache miss a real store query.
type simClock struct{ ns atomic.Int64 }

func (c *simClock) Now() time.Time            { return time.Unix(0, c.ns.Load()) }
func (c *simClock) advance(d time.Duration)   { c.ns.Add(int64(d)) }
func (c *simClock) since(t time.Time) float64 { return c.Now().Sub(t).Seconds() }

// BenchmarkStoreQueryRate measures the store queries per second that one
// instance's key checks cost in steady state, with 100 000 active keys
// (KEYGATE_ACTIVE_KEYS) in Postgres, each request naming one at random, at
// 1000 requests per second (KEYGATE_REQUEST_RATE), while the instance
// follows the key events: with cache_ttl_following equal to cache_ttl
// (1m; keygate before it had the option) and at its default, 1h. The
// requests and the cache's clock are simulated, so that an hour passes in
// seconds; every miss is a real lookup through the real verifier, and the
// follower is real and must stay up throughout. Reported per scenario:
// store lookups per simulated second, the hit ratio, and
// 1/(1 + rate/keys × TTL), the miss ratio of requests spread evenly at
// random over the keys, for comparison. The instance's follower adds a
// heartbeat and a look at the last key event every 2s of real time (1
// query/s), whatever the traffic.
//
//	go test -run '^$' -bench StoreQueryRate -benchtime 1x ./caddymodule/fleet
func BenchmarkStoreQueryRate(b *testing.B) {
	n := envInt(b, "KEYGATE_ACTIVE_KEYS", 100_000)
	rate := envInt(b, "KEYGATE_REQUEST_RATE", 1000)
	ctx := b.Context()
	dsn := pgtest.DSN(b)
	kr, _ := keys.NewKeyring([]byte("query rate bench secret 0123456789"))
	st, err := postgres.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	if _, err := auth.CheckSecrets(ctx, st, kr, false); err != nil {
		b.Fatal(err)
	}
	acct, err := st.CreateAccount(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	auths := seedKeys(b, dsn, kr, acct.ID, n)

	for _, sc := range []struct {
		name           string
		ttl, following time.Duration
		warm, measure  time.Duration // simulated
	}{
		{"ttl=1m", time.Minute, time.Minute, 2 * time.Minute, 5 * time.Minute},
		{"ttl=1m,following=1h", time.Minute, time.Hour, 2 * time.Hour, time.Hour},
	} {
		b.Run(sc.name, func(b *testing.B) {
			for range b.N {
				lookups, hits, reqs := playTraffic(b, st, dsn, kr, auths, rate, sc.ttl, sc.following, sc.warm, sc.measure)
				lambdaT := float64(rate) / float64(n) * sc.following.Seconds()
				b.ReportMetric(float64(lookups)/sc.measure.Seconds(), "lookups/s")
				b.ReportMetric(float64(hits)/float64(reqs), "hit_ratio")
				b.ReportMetric(float64(rate)/(1+lambdaT), "expected_lookups/s")
				b.ReportMetric(float64(rate), "requests/s")
				b.ReportMetric(float64(n), "active_keys")
			}
		})
	}
}

// playTraffic runs one instance (verifier and real follower) and sends it
// rate requests per simulated second, each with a key drawn at random,
// for warm then measure; it returns the lookups, hits and requests of
// the measured part.
func playTraffic(b *testing.B, st *postgres.Store, dsn string, kr *keys.Keyring, auths [][]string,
	rate int, ttl, following, warm, measure time.Duration) (lookups, hits, reqs int64) {
	clock := &simClock{}
	clock.ns.Store(time.Now().UnixNano())
	var counted atomic.Int64
	v, err := auth.NewVerifier(auth.VerifierConfig{Keyring: kr, Lookup: st.LookupKey,
		ObserveLookup: func(time.Duration, error) { counted.Add(1) },
		Cache: cache.Config{Size: 100_000, TTL: ttl, TTLFollowing: following, NegativeTTL: time.Minute,
			FetchTimeout: 5 * time.Second, StaleBound: 5 * time.Second, Clock: clock.Now}})
	if err != nil {
		b.Fatal(err)
	}
	f, err := fleet.New(fleet.Config{Store: st, ListenDSN: dsn, Cache: v, InstanceID: "bench", Address: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	fctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(fctx); close(done) }()
	defer func() { stop(); <-done }()
	deadline := time.Now().Add(15 * time.Second)
	for !f.Up() {
		if time.Now().After(deadline) {
			b.Fatal("the follower did not come up")
		}
		time.Sleep(10 * time.Millisecond)
	}

	rng := rand.New(rand.NewPCG(1, 2))
	step := time.Second / time.Duration(rate)
	ctx := b.Context()
	start := clock.Now()
	b.ResetTimer()
	for phase, length := range []time.Duration{warm, measure} {
		counted.Store(0)
		var h, r int64
		phaseStart := clock.Now()
		for clock.Now().Sub(phaseStart) < length {
			clock.advance(step)
			d := v.Verify(ctx, auths[rng.IntN(len(auths))])
			if d.Result != auth.Allowed {
				b.Fatalf("a live key at %.0fs: %v (%v)", clock.since(start), d.Result, d.Err)
			}
			r++
			if d.Cache == cache.Hit {
				h++
			}
		}
		if !f.Up() || f.LastError() != nil {
			b.Fatalf("the follower stopped following during phase %d: %v", phase, f.LastError())
		}
		lookups, hits, reqs = counted.Load(), h, r
	}
	b.StopTimer()
	return lookups, hits, reqs
}

// seedKeys stores n standard keys of the account and returns each one's
// Authorization header.
func seedKeys(b *testing.B, dsn string, kr *keys.Keyring, account string, n int) [][]string {
	b.Helper()
	ctx := b.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	secret := kr.Current()
	auths := make([][]string, n)
	i := 0
	now := time.Now().UTC()
	columns := []string{"id", "account_id", "name", "type", "display", "digest", "sealed", "created_at", "created_by", "secret"}
	rows := pgx.CopyFromFunc(func() ([]any, error) {
		if i == n {
			return nil, nil
		}
		k, err := keys.New()
		if err != nil {
			return nil, err
		}
		id, err := keys.NewID("key")
		if err != nil {
			return nil, err
		}
		auths[i] = []string{"Bearer " + string(k)}
		d := secret.Digest([]byte(k))
		i++
		return []any{id, account, "key " + strconv.Itoa(i), "standard", k.Display(), d[:], []byte{0}, now, "bench", secret.Fingerprint()}, nil
	})
	if _, err := conn.CopyFrom(ctx, pgx.Identifier{"api_keys"}, columns, rows); err != nil {
		b.Fatalf("storing %d keys: %v", n, err)
	}
	if _, err := conn.Exec(ctx, "analyze api_keys"); err != nil {
		b.Fatal(err)
	}
	return auths
}

func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatal(fmt.Errorf("%s=%q: want a positive number", name, v))
	}
	return n
}
