package e2e

import (
	"fmt"
	"io"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/keys"
)

// BenchmarkFlood measures what a flood of 100 000 distinct, well-formed
// keys that do not exist costs a client with a valid key, on the Postgres
// store with the default limits: that client's p99 with and without the
// flood and its errors, the store lookups the flood caused against the
// unknown_key_lookups budget, and keygate's RSS growth. The flood comes
// once from one address (throttled by client_refusals) and once spread
// over many addresses (bounded by unknown_key_lookups). Run it once:
//
//	go test -run '^$' -bench Flood -benchtime 1x ./caddymodule/e2e
func BenchmarkFlood(b *testing.B) {
	const floodKeys, floodWorkers = 100_000, 8
	dsn := pgtest.DSN(b)
	up := newUpstream(b)
	// The control: the same flood at a plain reverse_proxy site of the same
	// Caddy, which shows what the flood costs the valid client on this
	// machine (2 cores shared by both clients, Caddy and the upstream)
	// whatever keygate does.
	plain := freeAddr(b)
	n := newNode(b, nodeConfig{
		options:  "\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}\n",
		global:   "\t\tstore postgres " + strconv.Quote(dsn) + "\n\t\tsecret {env.KEYGATE_SECRET}",
		upstream: up.addr(),
		extra:    "\nhttp://" + plain + " {\n\tbind 127.0.0.1\n\treverse_proxy " + up.addr() + "\n}\n",
	})
	n.cli("migrate")
	valid := n.key(n.account("acme"), "valid", "")
	n.start()
	n.waitFollowing()
	unknown := make([]string, floodKeys)
	for i := range unknown {
		k, err := keys.New()
		if err != nil {
			b.Fatal(err)
		}
		unknown[i] = bearer(k.Secret())
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * floodWorkers}, Timeout: 10 * time.Second}
	send := func(addr, auth, from string) int {
		req, _ := http.NewRequest("GET", "http://"+addr+"/api/servers", nil)
		req.Header.Set("Authorization", auth)
		req.Header.Set("X-Forwarded-For", from)
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	// measure sends the valid key until stop closes, and returns its p99
	// and how many answers were not 200.
	measure := func(stop <-chan struct{}) (time.Duration, int) {
		var lat []time.Duration
		errs := 0
		for {
			select {
			case <-stop:
				sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
				return lat[len(lat)*99/100], errs
			default:
			}
			start := time.Now()
			if send(n.addr, bearer(valid), "198.51.100.7") != http.StatusOK {
				errs++
			}
			lat = append(lat, time.Since(start))
		}
	}
	baseline := func() time.Duration {
		stop := make(chan struct{})
		time.AfterFunc(5*time.Second, func() { close(stop) })
		p99, errs := measure(stop)
		if errs > 0 {
			b.Fatalf("the valid key failed %d times without a flood", errs)
		}
		return p99
	}
	flood := func(name, addr string, from func(i int) string) {
		base := baseline()
		pid := n.cmd.Process.Pid
		before, rss0 := storeLookups(b, n), procStatus(b, pid, "VmRSS")
		var next atomic.Int64
		var statuses sync.Map
		stop := make(chan struct{})
		var wg sync.WaitGroup
		start := time.Now()
		for range floodWorkers {
			wg.Go(func() {
				for i := int(next.Add(1)) - 1; i < floodKeys; i = int(next.Add(1)) - 1 {
					s := send(addr, unknown[i], from(i))
					c, _ := statuses.LoadOrStore(s, new(atomic.Int64))
					c.(*atomic.Int64).Add(1)
				}
			})
		}
		var p99 time.Duration
		var errs int
		done := make(chan struct{})
		go func() { p99, errs = measure(stop); close(done) }()
		wg.Wait()
		elapsed := time.Since(start)
		close(stop)
		<-done
		lookups, growth := storeLookups(b, n)-before, procStatus(b, pid, "VmRSS")-rss0
		got := map[int]int64{}
		statuses.Range(func(k, v any) bool { got[k.(int)] = v.(*atomic.Int64).Load(); return true })
		budget := DefaultUnknownKeyLookupsBurst + int(float64(DefaultUnknownKeyLookupsBurst)*elapsed.Seconds())
		b.Logf("%s: %d unknown keys in %v (%.0f/s), answers %v; valid client: p99 %v with the flood, %v without (%.2fx), %d errors; store lookups %d (budget %d); RSS %+.1f MB",
			name, floodKeys, elapsed.Round(time.Millisecond), floodKeys/elapsed.Seconds(), got, p99, base, float64(p99)/float64(base), errs, lookups, budget, float64(growth)/(1<<20))
		b.ReportMetric(float64(p99)/float64(base), name+"-p99-ratio")
		b.ReportMetric(float64(errs), name+"-valid-errors")
		b.ReportMetric(float64(lookups), name+"-store-lookups")
		b.ReportMetric(float64(growth)/(1<<20), name+"-rss-growth-MB")
	}
	for b.Loop() {
		flood("control", plain, func(int) string { return "203.0.113.9" })
		flood("one-client", n.addr, func(int) string { return "203.0.113.9" })
		flood("many-clients", n.addr, func(i int) string { return fmt.Sprintf("2001:db8::%x:%x", i>>16, i&0xffff) })
	}
}

// DefaultUnknownKeyLookupsBurst mirrors the app's default budget: the
// benchmark runs with the defaults.
const DefaultUnknownKeyLookupsBurst = 200
