package e2e

import (
	"bufio"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkInspectMemory is issue 9's load: 128 clients fetch a 7 MiB
// message at once for 10 s (half with a key restricted to its inbox, half
// with a standard key), through the real binary. The upstream serves the
// message's bytes made once by the simulator, so that it keeps up and
// keygate reads as many responses at once as the clients ask for. It
// reports keygate's peak RSS (VmHWM) and how many answers were 200s and
// 503s; anything else fails it. Run it alone:
//
//	go test -run '^$' -bench InspectMemory -benchtime 1x ./caddymodule/e2e
//
// KEYGATE_BENCH_SITE replaces the site's keygate directive (to compare
// budgets, or with the code before the budget).
func BenchmarkInspectMemory(b *testing.B) {
	site := os.Getenv("KEYGATE_BENCH_SITE")
	w := newScopeWorldSite(b, site)
	w.reset()
	mine, _, bodies := largeMessages(b, w, 7<<20)
	body := []byte(bodies[mine])
	want := len(body)
	fast := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/messages/"+mine {
			http.NotFound(rw, r)
			return
		}
		rw.Header().Set("Content-Type", "application/json; charset=utf-8")
		rw.Header().Set("Content-Length", strconv.Itoa(len(body)))
		rw.Write(body)
	}))
	defer fast.Close()
	cfg := w.cfg
	cfg.upstream = strings.TrimPrefix(fast.URL, "http://")
	w.n.load(cfg) // the same store and keys, the fast upstream
	pid := w.n.cmd.Process.Pid
	before := procStatus(b, pid, "VmRSS")

	const clients = 128
	duration := 10 * time.Second
	tr := &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	var ok, busy, other atomic.Int64
	b.ResetTimer()
	for range b.N {
		stop := time.Now().Add(duration)
		var wg sync.WaitGroup
		for i := range clients {
			key := w.own
			if i%2 == 1 {
				key = w.standard
			}
			wg.Go(func() {
				for time.Now().Before(stop) {
					req, _ := http.NewRequest("GET", "http://"+w.n.addr+"/api/messages/"+mine, nil)
					req.Header.Set("Authorization", basicUser(key))
					resp, err := tr.RoundTrip(req)
					if err != nil {
						other.Add(1)
						continue
					}
					n, err := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					switch {
					case resp.StatusCode == 200 && err == nil && n == int64(want):
						ok.Add(1)
					case resp.StatusCode == 503 && resp.Header.Get("Retry-After") != "":
						busy.Add(1)
					default:
						other.Add(1)
					}
				}
			})
		}
		wg.Wait()
	}
	b.StopTimer()
	peak := procStatus(b, pid, "VmHWM")
	after := procStatus(b, pid, "VmRSS")
	b.ReportMetric(float64(peak)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(float64(ok.Load()), "200s")
	b.ReportMetric(float64(busy.Load()), "503s")
	b.Logf("keygate RSS: %d MiB before, peak %d MiB, %d MiB after; %d answers 200, %d answers 503, %d other",
		before>>20, peak>>20, after>>20, ok.Load(), busy.Load(), other.Load())
	if other.Load() > 0 {
		b.Errorf("%d answers were neither a whole 200 nor a clean 503", other.Load())
	}
}

// procStatus reads a size field of /proc/<pid>/status, in bytes.
func procStatus(t testing.TB, pid int, field string) int64 {
	t.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
