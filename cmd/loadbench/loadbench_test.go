package main

// The parsers are pure functions: these tests start no process.

import (
	"strings"
	"testing"
	"time"
)

// A report of Debian's wrk 4.1.0 with --latency, against a server that
// answered 404 to everything.
const wrkNon2xx = `Running 1s test @ http://127.0.0.1:45973/
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   489.76us    1.03ms  12.19ms   90.74%
    Req/Sec    24.55k     4.63k   43.56k    95.24%
  Latency Distribution
     50%  121.00us
     75%  300.00us
     90%    1.40ms
     99%    5.04ms
  51292 requests in 1.10s, 6.95MB read
  Non-2xx or 3xx responses: 51292
Requests/sec:  46653.90
Transfer/sec:      6.32MB
`

// A clean run, with a socket error line and latencies in seconds.
const wrkSlow = `Running 1m test @ http://127.0.0.1:40000/api/messages?server=abcd1234
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.31ms    1.20ms   1.02s    88.00%
    Req/Sec     7.01k   400.00     8.00k    70.00%
  Latency Distribution
     50%    2.05ms
     75%    2.60ms
     90%    3.50ms
     99%    1.02s
  840123 requests in 1.00m, 120.00MB read
  Socket errors: connect 0, read 2, write 1, timeout 4
Requests/sec:  14001.23
Transfer/sec:      2.00MB
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkNon2xx)
	if err != nil {
		t.Fatal(err)
	}
	want := wrkResult{Requests: 51292, Elapsed: 1100 * time.Millisecond, RPS: 46653.90,
		P50: 121 * time.Microsecond, P99: 5040 * time.Microsecond, Non2xx: 51292}
	if r != want {
		t.Errorf("parseWrk =\n%+v, want\n%+v", r, want)
	}

	r, err = parseWrk(wrkSlow)
	if err != nil {
		t.Fatal(err)
	}
	want = wrkResult{Requests: 840123, Elapsed: time.Minute, RPS: 14001.23,
		P50: 2050 * time.Microsecond, P99: 1020 * time.Millisecond, SocketErrors: 7}
	if r != want {
		t.Errorf("parseWrk =\n%+v, want\n%+v", r, want)
	}
}

func TestParseWrkIncomplete(t *testing.T) {
	for name, out := range map[string]string{
		"empty":         "",
		"no --latency":  strings.Replace(wrkSlow, "  Latency Distribution\n     50%    2.05ms\n     75%    2.60ms\n     90%    3.50ms\n     99%    1.02s\n", "", 1),
		"no rate":       strings.Replace(wrkSlow, "Requests/sec:", "Requests:", 1),
		"bad time unit": strings.Replace(wrkSlow, "99%    1.02s", "99%    1.02x", 1),
		"connect error": "unable to connect to 127.0.0.1:1 Connection refused\n",
	} {
		if r, err := parseWrk(out); err == nil {
			t.Errorf("%s: parseWrk = %+v, want an error", name, r)
		}
	}
}

func TestParseWrkDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"812.00us": 812 * time.Microsecond,
		"1.23ms":   1230 * time.Microsecond,
		"10.00s":   10 * time.Second,
		"1.50m":    90 * time.Second,
		"2.00h":    2 * time.Hour,
		"0.00us":   0,
	} {
		got, err := parseWrkDuration(in)
		if err != nil || got != want {
			t.Errorf("parseWrkDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "12", "ms", "1.2.3ms", "-1s", "1.2ks"} {
		if got, err := parseWrkDuration(in); err == nil {
			t.Errorf("parseWrkDuration(%q) = %v, want an error", in, got)
		}
	}
}

func TestParsePidStat(t *testing.T) {
	// A real line of a Caddy process, utime 1234 and stime 567 ticks.
	line := "4242 (keygate) S 1 4242 4242 0 -1 4194560 10953 0 0 0 1234 567 0 0 20 0 9 0 31874 1357066240 14170 18446744073709551615 1 1 0 0 0 0 0 0 2143420159 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n"
	u, s, err := parsePidStat(line)
	if err != nil || u != 1234 || s != 567 {
		t.Errorf("parsePidStat = %d, %d, %v; want 1234, 567", u, s, err)
	}

	// The command name may contain spaces and parentheses.
	line = "99 (a) b (c)) R 1 99 99 0 -1 0 0 0 0 0 7 8 0 0 20 0 1 0 1 0 0\n"
	u, s, err = parsePidStat(line)
	if err != nil || u != 7 || s != 8 {
		t.Errorf("parsePidStat with a tricky name = %d, %d, %v; want 7, 8", u, s, err)
	}

	for _, bad := range []string{"", "42 keygate S 1 2 3", "42 (keygate) S 1 2 3", "42 (x) S 1 1 1 0 -1 0 0 0 0 0 x 8 0"} {
		if u, s, err := parsePidStat(bad); err == nil {
			t.Errorf("parsePidStat(%q) = %d, %d; want an error", bad, u, s)
		}
	}
}

func TestParseProcStat(t *testing.T) {
	data := `cpu  73962 10 20358 157414 685 3 235 32 5 0
cpu0 36981 5 10179 78707 342 1 117 16 0 0
cpu1 36981 5 10179 78707 343 2 118 16 5 0
intr 1234 0 0
ctxt 99
`
	got, err := parseProcStat(data)
	if err != nil {
		t.Fatal(err)
	}
	// busy: user+nice+system+irq+softirq (guest is inside user already).
	want := cpuTotals{busy: 73962 + 10 + 20358 + 3 + 235, steal: 32}
	want.total = want.busy + 157414 + 685 + 32
	if got != want {
		t.Errorf("parseProcStat = %+v, want %+v", got, want)
	}

	for _, bad := range []string{"", "cpu0 1 2 3 4 5 6 7 8\n", "cpu  1 2 3\n", "cpu  1 2 x 4 5 6 7 8\n"} {
		if got, err := parseProcStat(bad); err == nil {
			t.Errorf("parseProcStat(%q) = %+v, want an error", bad, got)
		}
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// fakeRun is a run of 10 000 requests with the given rate, Caddy CPU
// (µs/req) and upstream CPU (µs/req).
func fakeRun(round int, scenario string, rps, cpu, upstream float64) *runResult {
	w := wrkResult{Requests: 10000, RPS: rps, P50: time.Millisecond, P99: 5 * time.Millisecond}
	return &runResult{round: round, scenario: scenario, wrk: w,
		caddyCPU:    time.Duration(cpu*10000) * time.Microsecond,
		upstreamCPU: time.Duration(upstream*10000) * time.Microsecond}
}

func TestSummarizePairsWithinRounds(t *testing.T) {
	runs := []*runResult{
		fakeRun(0, scPlain, 1000, 60, 25), fakeRun(0, scKeygate, 950, 66, 26),
		fakeRun(1, scPlain, 800, 80, 25), fakeRun(1, scKeygate, 780, 84, 26),
		// Round 2: keygate ran while the VM was much slower; round 3: noisy.
		fakeRun(2, scPlain, 1000, 60, 25), fakeRun(2, scKeygate, 700, 90, 35),
		fakeRun(3, scPlain, 1000, 60, 25), fakeRun(3, scKeygate, 500, 60, 25),
	}
	runs[7].noisy = true
	changed := markSpeedChanges(runs)
	if changed[scKeygate] != 1 || !runs[5].speedChanged {
		t.Errorf("speed changes = %v, want round 2's keygate run", changed)
	}
	s := summarize(scKeygate, runs)
	if s.clean != 2 || s.dropped != 2 || s.fellBack {
		t.Fatalf("clean %d, dropped %d, fellBack %v; want 2, 2, false", s.clean, s.dropped, s.fellBack)
	}
	// Ratios 0.95 and 0.975: each round against its own plain run.
	if got := median(s.ratio); got < 0.9624 || got > 0.9626 {
		t.Errorf("median ratio = %v, want 0.9625", got)
	}
	if got := median(s.dcpu); got < 4.99 || got > 5.01 {
		t.Errorf("median CPU difference = %v µs/req, want 5", got)
	}
}
