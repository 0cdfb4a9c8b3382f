package fleet

import (
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/store"
)

// forgetting is one member evicting a deleted key, and when.
type forgetting struct {
	member int
	keyID  string
	at     time.Time
}

// timedCache is a member's verifier as its follower sees it, telling when
// a deletion took effect: from the end of ForgetKey on, the key is
// refused.
type timedCache struct {
	*auth.Verifier
	member int
	forgot chan<- forgetting
}

func (c timedCache) ForgetKey(id string) {
	c.Verifier.ForgetKey(id)
	c.forgot <- forgetting{c.member, id, time.Now()}
}

// BenchmarkFleetRevocationLag measures, on fleets of 3 and of 50 members
// in one process (each with its own pool, listener connection, verifier
// and cache, configured as the app configures them), the time from a
// deletion's commit to each member evicting the key, over 200 deletions
// made one at a time; and what the fleet costs its Postgres, a throwaway
// cluster of its own so that its processes' CPU is the fleet's alone:
// client connections, and CPU and the members' statements while idle
// (heartbeats and keepalive pings), per deletion (the notification's
// delivery and every member's receipt) and per key lookup. Run it once:
//
//	go test -run '^$' -bench FleetRevocationLag -benchtime 1x ./caddymodule/fleet
func BenchmarkFleetRevocationLag(b *testing.B) {
	c := pgtest.StartCluster(b, "max_connections=300")
	c.Exec(b, "create role "+listenerRole+" login")
	for _, n := range []int{3, 50} {
		b.Run("members="+strconv.Itoa(n), func(b *testing.B) { benchmarkRevocationLag(b, c, n) })
	}
}

func benchmarkRevocationLag(b *testing.B, c *pgtest.Cluster, n int) {
	const (
		rounds = 200
		idle   = 10 * time.Second
	)
	forgot := make(chan forgetting, n*rounds)
	dsn := newSchema(b, c.DSN, "lag"+strconv.Itoa(n))
	sf := startScaleFleet(b, dsn, n, scaleOptions{
		// The app's defaults: pgxpool's pool, a heartbeat every 2s, and a
		// keepalive of a third of the 5s staleness bound.
		heartbeat: 2 * time.Second, keepalive: 5 * time.Second / 3, cacheTTL: time.Minute,
		cache: func(i int, v *auth.Verifier) Cache { return timedCache{v, i, forgot} },
	})
	var doomed []store.Key
	var auths [][]string
	for i := range rounds {
		k, a := sf.mint("doomed " + strconv.Itoa(i))
		doomed, auths = append(doomed, sf.create(k)), append(auths, a)
	}
	last := doomed[rounds-1].Seq
	sf.waitFor("every member to apply the creations", time.Minute, func() string {
		return sf.count("behind", func(m *member) bool { return m.f.Applied() != last })
	})
	// Every key cached everywhere: a store lookup each, whose CPU on the
	// server is measured.
	cpuW, stW := clusterCPU(b, c), sf.statements()
	for i, rs := range sf.verifyAll(auths) {
		for j, r := range rs {
			if r != auth.Allowed {
				b.Fatalf("member %d answers %s for key %d", i, r, j)
			}
		}
	}
	// Idle: heartbeats and keepalives only.
	cpu0, st0 := clusterCPU(b, c), sf.statements()
	time.Sleep(idle)
	cpu1, st1 := clusterCPU(b, c), sf.statements()
	var listeners, pools int
	c.QueryRow(b, `select count(*) filter (where usename = $1), count(*) filter (where application_name like 'kg-pool-%')
		from pg_stat_activity where backend_type = 'client backend'`, []any{listenerRole}, &listeners, &pools)

	// Deletions, one at a time: the next once every member evicted this one.
	var evicted [][]time.Time // by deletion, when each member evicted the key
	var deleted []store.Key
	for b.Loop() {
		if deleted != nil {
			b.Fatal("BenchmarkFleetRevocationLag deletes its keys once: run it with -benchtime 1x")
		}
		start := time.Now()
		for _, k := range doomed {
			deleted = append(deleted, sf.delete(k))
			var at []time.Time
			timeout := time.After(30 * time.Second)
			for len(at) < n {
				select {
				case f := <-forgot:
					if f.keyID != k.ID {
						b.Fatalf("member %d evicted key %s while %s was awaited", f.member, f.keyID, k.ID)
					}
					at = append(at, f.at)
				case <-timeout:
					b.Fatalf("%d of %d members evicted deleted key %s within 30s", len(at), n, k.ID)
				}
			}
			evicted = append(evicted, at)
		}
		b.ReportMetric(float64(rounds)/time.Since(start).Seconds(), "deletions/s")
	}
	cpu2, st2 := clusterCPU(b, c), sf.statements()

	// Lags from each deletion's commit, as the store recorded it (just
	// before the commit, in its transaction).
	evs, err := sf.admin.KeyEventsSince(b.Context(), deleted[0].Seq-1, rounds)
	if err != nil || len(evs) != rounds {
		b.Fatalf("reading the deletions' events: %d, %v", len(evs), err)
	}
	var lastMember, everyMember []time.Duration
	for r, ev := range evs {
		worst := time.Duration(0)
		for _, at := range evicted[r] {
			everyMember = append(everyMember, at.Sub(ev.At))
			worst = max(worst, at.Sub(ev.At))
		}
		lastMember = append(lastMember, worst)
	}
	for i, rs := range sf.verifyAll(auths) {
		for j, r := range rs {
			if r != auth.Unauthorized {
				b.Fatalf("member %d answers %s for deleted key %d", i, r, j)
			}
		}
	}

	p := func(ds []time.Duration, q float64) float64 {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		return float64(ds[int(q*float64(len(ds)-1))].Microseconds()) / 1000
	}
	idleCPU := float64(cpu1-cpu0) / float64(idle) * 100
	perDelete := float64((cpu2 - cpu1).Microseconds()) / 1000 / rounds
	perLookup := float64((cpu0 - cpuW).Microseconds()) / float64(st0[2]-stW[2])
	sum := func(a, b [4]int64) (n int64) {
		for i := range a {
			n += b[i] - a[i]
		}
		return n
	}
	idleRate := float64(sum(st0, st1)) / idle.Seconds()
	deleteStatements := float64(sum(st1, st2)) / rounds
	b.ReportMetric(p(lastMember, 0.5), "last-p50-ms")
	b.ReportMetric(p(lastMember, 0.99), "last-p99-ms")
	b.ReportMetric(p(lastMember, 1), "last-max-ms")
	b.ReportMetric(p(everyMember, 0.5), "each-p50-ms")
	b.ReportMetric(p(everyMember, 0.99), "each-p99-ms")
	b.ReportMetric(float64(listeners+pools), "pg-conns")
	b.ReportMetric(idleCPU, "pg-idle-cpu-%")
	b.ReportMetric(idleRate, "idle-stmt/s")
	b.ReportMetric(perDelete, "pg-cpu-ms/delete")
	b.ReportMetric(deleteStatements, "stmt/delete")
	b.ReportMetric(perLookup, "pg-cpu-us/lookup")
	b.Logf("%d members: to the last member p50 %.2f ms, p99 %.2f ms, max %.2f ms; to each member p50 %.2f ms, p99 %.2f ms; "+
		"%d connections (%d listeners, %d in pools); idle: Postgres CPU %.2f%% of a core, %.1f statements/s "+
		"(heartbeats %d, catch-up queries %d, lookups %d, keepalive pings %d in %v); "+
		"per deletion: %.2f ms of Postgres CPU, %.1f statements of the members (receipts); per key lookup %.0f µs of Postgres CPU",
		n, p(lastMember, 0.5), p(lastMember, 0.99), p(lastMember, 1), p(everyMember, 0.5), p(everyMember, 0.99),
		listeners+pools, listeners, pools, idleCPU, idleRate, st1[0]-st0[0], st1[1]-st0[1], st1[2]-st0[2], st1[3]-st0[3], idle,
		perDelete, deleteStatements, perLookup)
}

func clusterCPU(b *testing.B, c *pgtest.Cluster) time.Duration {
	b.Helper()
	d, err := c.CPU()
	if err != nil {
		b.Fatal(err)
	}
	return d
}
