package e2e

import (
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/cache"
	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store/postgres"
)

// BenchmarkScaleKeys measures keygate against a Postgres store of
// 10 000 000 keys in 1 000 accounts, COPYed in as BenchmarkRekey stores
// its keys:
//
//   - miss latency: 100 000 of the keys, spread over the store, checked one
//     at a time by a verifier with a cold cache (the app's verifier and
//     cache, in this process), so each is a store lookup;
//   - cache memory per key: the heap that verifier holds once it caches
//     those 100 000 keys, per key;
//   - start time: a keygate process started against the store, from its
//     start to its first 200 for one of the keys;
//   - joining a fleet under load: two instances serve a client sending
//     1 000 of the keys at 200 requests/s to each, while a third starts
//     and then serves the same client's requests too: the time from its
//     start to its first 200, and the two running instances' p50 and p99
//     before, during (from the third's start to 10 s after its first 200)
//     and after.
//
// Run it once; the store is a schema of the shared Postgres, dropped at
// the end (10 000 000 keys take about 6 GB while it runs):
//
//	go test -run '^$' -bench ScaleKeys -benchtime 1x -timeout 120m ./caddymodule/e2e
//
// KEYGATE_SCALE_KEYS sets how many keys the store holds (200000 for a
// quick run).
func BenchmarkScaleKeys(b *testing.B) {
	const (
		accounts   = 1000
		sample     = 100_000 // keys whose plaintexts are kept, spread over the store
		clientKeys = 1000
		rate       = 200 // requests per second to each running instance
		phaseLen   = 10 * time.Second
	)
	total := envInt(b, "KEYGATE_SCALE_KEYS", 10_000_000)
	if total < sample {
		b.Fatalf("KEYGATE_SCALE_KEYS must be at least %d", sample)
	}
	began := time.Now()
	dsn := pgtest.DSN(b)
	plain := seedRekeyKeys(b, dsn, total, accounts, sample)
	seeded := time.Since(began)
	size := tableSize(b, dsn)
	b.Logf("stored %d keys in %d accounts in %v (%.0f keys/s); api_keys %s",
		total, accounts, seeded.Round(time.Second), float64(total)/seeded.Seconds(), size)
	b.ReportMetric(float64(total)/seeded.Seconds(), "seed-keys/s")
	b.ReportMetric(float64(size.total)/(1<<20), "table-MB")

	runs := 0
	for b.Loop() {
		if runs++; runs > 1 {
			b.Fatal("BenchmarkScaleKeys measures its store once: run it with -benchtime 1x")
		}
		lat, perKey := scaleMisses(b, dsn, plain)
		b.Logf("miss latency over %d lookups from a cold cache: p50 %.3f ms, p99 %.3f ms, max %.3f ms; cache memory %.0f bytes per cached key",
			len(lat), ms(lat.p(0.5)), ms(lat.p(0.99)), ms(lat.p(1)), perKey)
		b.ReportMetric(ms(lat.p(0.5)), "miss-p50-ms")
		b.ReportMetric(ms(lat.p(0.99)), "miss-p99-ms")
		b.ReportMetric(perKey, "cache-B/key")
		scaleJoin(b, dsn, plain[:clientKeys], rate, phaseLen)
	}
	b.Logf("whole run %v", time.Since(began).Round(time.Second))
}

// scaleMisses checks every key once with a verifier of a cold cache, as
// the app builds it, and returns the latencies and the heap its cache
// holds per key afterwards.
func scaleMisses(b *testing.B, dsn string, plain []string) (latencies, float64) {
	b.Helper()
	ctx := b.Context()
	st, err := postgres.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if err := st.Ping(ctx); err != nil {
		b.Fatal(err)
	}
	kr, err := keys.NewKeyring([]byte(rekeySecretA))
	if err != nil {
		b.Fatal(err)
	}
	auths := make([][]string, len(plain))
	for i, k := range plain {
		auths[i] = []string{bearer(k)}
	}
	lat := make(latencies, 0, len(plain))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	v, err := auth.NewVerifier(auth.VerifierConfig{Keyring: kr, Lookup: st.LookupKey,
		Cache: cache.Config{Size: len(plain), TTL: time.Hour, NegativeTTL: time.Hour, FetchTimeout: 10 * time.Second}})
	if err != nil {
		b.Fatal(err)
	}
	for _, a := range auths {
		start := time.Now()
		d := v.Verify(ctx, a)
		lat = append(lat, time.Since(start))
		if d.Result != auth.Allowed || d.Cache != cache.Miss {
			b.Fatalf("a stored key answered %s (cache %s): %v", d.Result, d.Cache, d.Err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if v.CacheLen() != len(plain) {
		b.Fatalf("the cache holds %d keys, not %d", v.CacheLen(), len(plain))
	}
	perKey := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(len(plain))
	runtime.KeepAlive(v)
	return lat.sorted(), perKey
}

// scaleJoin starts two instances on the store, loads them, starts a third
// and measures what its start costs them.
func scaleJoin(b *testing.B, dsn string, plain []string, rate int, phaseLen time.Duration) {
	b.Helper()
	up := newUpstream(b)
	cfg := nodeConfig{global: "\t\tstore postgres " + strconv.Quote(dsn) + "\n\t\tsecret {env.KEYGATE_SECRET}", upstream: up.addr()}
	var nodes [3]*node
	var starts [3]time.Duration
	for i := range nodes {
		nodes[i] = newNode(b, cfg)
		nodes[i].extraEnv = []string{"KEYGATE_SECRET=" + rekeySecretA}
	}
	for i := range 2 {
		starts[i] = startToServe(b, nodes[i], plain[i])
		nodes[i].waitFollowing()
	}
	auths := make([]string, len(plain))
	for i, k := range plain {
		auths[i] = bearer(k)
	}
	// The running pair, and (later) the newcomer, each sent the same keys
	// at rate requests/s (the load's two sites are the newcomer twice, at
	// half the rate each).
	fleet := newRekeyLoad([2]string{nodes[0].addr, nodes[1].addr}, auths)
	newcomer := newRekeyLoad([2]string{nodes[2].addr, nodes[2].addr}, auths)
	fleet.start(rate)
	time.Sleep(3 * time.Second) // warm-up: the running pair caches the client's keys
	lookups := func() string {
		return fmt.Sprintf("%d/%d", storeLookups(b, nodes[0]), storeLookups(b, nodes[1]))
	}
	var lookupsAt [numRekeyPhases + 1]string
	lookupsAt[phaseBefore] = lookups()
	fleet.enter(phaseBefore)
	time.Sleep(phaseLen)
	lookupsAt[phaseDuring] = lookups()
	fleet.enter(phaseDuring)
	starts[2] = startToServe(b, nodes[2], plain[2])
	newcomer.start(rate / 2)
	newcomer.enter(phaseBefore) // the newcomer's first seconds of load
	time.Sleep(phaseLen)
	lookupsAt[phaseAfter] = lookups()
	fleet.enter(phaseAfter)
	newcomer.enter(phaseDuring)
	time.Sleep(phaseLen)
	fleet.stop()
	newcomer.stop()
	lookupsAt[numRekeyPhases] = lookups()

	var tab strings.Builder
	w := tabwriter.NewWriter(&tab, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "phase\tseconds\trequests\tp50 ms\tp99 ms\tmax ms\terrors\tstore lookups at the end (each node)\t")
	names := [numRekeyPhases]string{"", "before", "joining", "after"}
	for p := phaseBefore; p < numRekeyPhases; p++ {
		l := latencies(slices.Concat(fleet.latencies(p, 0), fleet.latencies(p, 1))).sorted()
		fmt.Fprintf(w, "%s\t%.1f\t%d\t%.2f\t%.2f\t%.2f\t%d\t%s\t\n", names[p], fleet.seconds(p), len(l),
			ms(l.p(0.5)), ms(l.p(0.99)), ms(l.p(1)), fleet.errs[p][0]+fleet.errs[p][1], lookupsAt[p+1])
		b.ReportMetric(ms(l.p(0.99)), "fleet-"+names[p]+"-p99-ms")
	}
	w.Flush()
	first := latencies(slices.Concat(newcomer.latencies(phaseBefore, 0), newcomer.latencies(phaseBefore, 1))).sorted()
	then := latencies(slices.Concat(newcomer.latencies(phaseDuring, 0), newcomer.latencies(phaseDuring, 1))).sorted()
	b.Logf("start to first 200: %v and %v for the first two instances, %v for the one joining under load\n"+
		"the running pair, %d requests/s each:\n%s"+
		"the newcomer: first %v p50 %.2f ms, p99 %.2f ms; the next %v p50 %.2f ms, p99 %.2f ms; errors %d",
		starts[0].Round(time.Millisecond), starts[1].Round(time.Millisecond), starts[2].Round(time.Millisecond), rate, tab.String(),
		phaseLen, ms(first.p(0.5)), ms(first.p(0.99)), phaseLen, ms(then.p(0.5)), ms(then.p(0.99)), newcomer.errors())
	b.ReportMetric(starts[0].Seconds(), "start-s")
	b.ReportMetric(starts[2].Seconds(), "join-s")
	if errs := fleet.errors() + newcomer.errors(); errs > 0 {
		b.Errorf("%d requests were not answered 200; the first: %s %s", errs, fleet.firstErr, newcomer.firstErr)
	}
}

// startToServe starts the node and returns the time from its start to its
// first 200 for the key.
func startToServe(b *testing.B, n *node, key string) time.Duration {
	b.Helper()
	start := time.Now()
	n.start()
	waitFor(b, "the node's first 200", time.Minute, func() bool { return probe(n, key) == http.StatusOK }, nil)
	return time.Since(start)
}

// sorted returns the latencies in order.
func (ds latencies) sorted() latencies {
	slices.Sort(ds)
	return ds
}
