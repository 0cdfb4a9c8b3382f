package e2e

import (
	"net/http"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/internal/pgtest"
)

// BenchmarkRevocationLag measures, over 200 deletions on a fleet of three
// nodes sharing one Postgres, the time from a deletion's commit to the last
// node refusing the key, and over 200 creations the time from the commit to
// the last node accepting a key it had cached as unknown. Every node is
// probed in parallel, continuously, so the figures include one request's
// round trip. Run it with -benchtime 1x (it does its 200 rounds once):
//
//	go test -run '^$' -bench RevocationLag -benchtime 1x ./caddymodule/e2e
func BenchmarkRevocationLag(b *testing.B) {
	const rounds = 200
	dsn := pgtest.DSN(b)
	f := newFleet(b, 3, dsn, sameDSN(dsn))

	until := func(secret string, want int) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for _, n := range f.nodes {
			wg.Go(func() {
				for time.Since(start) < 10*time.Second && probe(n, secret) != want {
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}

	var deletes, creates []time.Duration
	for b.Loop() {
		deletes, creates = deletes[:0], creates[:0]
		for i := range rounds {
			k, secret := f.mint("lag " + strconv.Itoa(i))
			for _, n := range f.nodes { // cached as unknown everywhere
				if s := probe(n, secret); s != http.StatusUnauthorized {
					b.Fatalf("a key not yet created answers %d", s)
				}
			}
			k = f.create(k)
			creates = append(creates, until(secret, http.StatusOK))
			f.delete(k)
			deletes = append(deletes, until(secret, http.StatusUnauthorized))
		}
	}
	report := func(name string, ds []time.Duration) {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		p := func(q float64) time.Duration { return ds[int(q*float64(len(ds)-1))] }
		b.ReportMetric(float64(p(0.50).Microseconds())/1000, name+"-p50-ms")
		b.ReportMetric(float64(p(0.99).Microseconds())/1000, name+"-p99-ms")
		b.ReportMetric(float64(ds[len(ds)-1].Microseconds())/1000, name+"-max-ms")
		b.Logf("%s over %d rounds on 3 nodes: p50 %v, p99 %v, max %v", name, len(ds), p(0.5), p(0.99), ds[len(ds)-1])
	}
	report("revoke", deletes)
	report("create", creates)
}
