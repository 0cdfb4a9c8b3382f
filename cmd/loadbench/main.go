// Command loadbench measures what keygate costs in front of an API: real
// Caddy processes from the keygate binary under wrk, keygate (on a cache
// hit) against plain reverse_proxy, an identical second plain Caddy (the
// A/A control that shows the noise) and basic_auth with its hash cache.
//
//	go run ./cmd/loadbench -keygate bin/keygate [-rounds 5] [-duration 10s] [-out report.md]
//
// It follows docs/benchmarking.md: on a shared 2-core VM absolute req/s
// describe the box, so scenarios alternate round by round with the order
// rotated, every figure is paired with plain Caddy in the same round, the
// medians over rounds are reported, and CPU time per request is measured
// from /proc because it is steadier than throughput. Every process it
// starts is bounded in time and stopped when it exits.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

func main() {
	if os.Getenv(upstreamEnv) != "" {
		if err := serveUpstream(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		return
	}

	var o options
	flag.StringVar(&o.keygate, "keygate", "", "the keygate binary to measure (required), e.g. bin/keygate")
	flag.IntVar(&o.rounds, "rounds", 5, "rounds; each runs every scenario once, in rotated order")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured load per scenario and round (whole seconds)")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "uncounted load before each measured run (whole seconds, 0 for none)")
	flag.IntVar(&o.threads, "threads", 2, "wrk threads")
	flag.IntVar(&o.connections, "connections", 32, "wrk connections (Caddy keeps at most 32 idle connections per upstream: above that it measures TCP set-up)")
	flag.StringVar(&o.path, "path", "/api/messages?server=abcd1234", "request path and query")
	flag.StringVar(&o.wrk, "wrk", "wrk", "the wrk binary")
	flag.Float64Var(&o.maxOthers, "max-others", 0.05, "flag a run as noisy when processes outside the benchmark, or the hypervisor (steal), took more than this share of the machine's CPU")
	flag.IntVar(&o.retries, "retries", 2, "run a scenario again, up to this many times, when other processes disturbed it")
	flag.DurationVar(&o.quietWait, "quiet-wait", 30*time.Second, "before each run, wait up to this long for other processes to leave the CPU alone")
	flag.StringVar(&o.out, "out", "", "also write the report as markdown to this file")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: go run ./cmd/loadbench -keygate bin/keygate [flags]\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()

	// SIGINT and SIGTERM cancel the run; the deferred cleanup in run stops
	// every child before loadbench exits.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "loadbench:", err)
		stop()
		os.Exit(1)
	}
}

type options struct {
	keygate          string
	rounds           int
	duration, warmup time.Duration
	threads          int
	connections      int
	path, wrk, out   string
	maxOthers        float64
	retries          int
	quietWait        time.Duration

	// Filled in by run.
	commandLine  string
	tick         time.Duration
	ncpu         int
	upstreamAddr string
}

func (o *options) check() error {
	if o.keygate == "" {
		return errors.New("-keygate is required (the binary `make build` writes: bin/keygate)")
	}
	abs, err := filepath.Abs(o.keygate)
	if err != nil {
		return err
	}
	if st, err := os.Stat(abs); err != nil || st.IsDir() {
		return fmt.Errorf("-keygate %s: not a binary (run `make build` first)", o.keygate)
	}
	o.keygate = abs
	if o.wrk, err = exec.LookPath(o.wrk); err != nil {
		return fmt.Errorf("finding wrk: %w (apt-get install wrk)", err)
	}
	switch {
	case o.rounds < 1:
		return errors.New("-rounds must be at least 1")
	case o.duration < time.Second || o.duration%time.Second != 0:
		return errors.New("-duration must be whole seconds, at least 1s (wrk's unit)")
	case o.warmup < 0 || o.warmup%time.Second != 0:
		return errors.New("-warmup must be whole seconds")
	case o.threads < 1 || o.connections < o.threads:
		return errors.New("-threads must be at least 1 and -connections at least -threads")
	case o.retries < 0 || o.quietWait < 0:
		return errors.New("-retries and -quiet-wait must not be negative")
	case !strings.HasPrefix(o.path, "/"):
		return errors.New("-path must start with /")
	}
	return nil
}

// runResult is one measured wrk run of one scenario.
type runResult struct {
	round, pos  int // round (from 0) and position in that round's order
	scenario    string
	load        string // /proc/loadavg before the run
	wrk         wrkResult
	wall        time.Duration
	caddyCPU    time.Duration // the scenario's Caddy process
	upstreamCPU time.Duration
	wrkCPU      time.Duration
	othersShare float64 // CPU used outside the benchmark, share of the machine
	stealShare  float64 // CPU the hypervisor took, share of the machine
	noisy       bool
	// disturbed: something outside the benchmark spoiled the run, which
	// running it again may avoid (unlike failed requests).
	disturbed bool
	// speedChanged: the VM ran at another speed than in the plain run of
	// the same round (set by the report, from the upstream's CPU).
	speedChanged bool
	notes        []string
	attempts     int // 1, or more when disturbed runs were run again
}

// cpuPerReq returns µs of CPU per completed request.
func perReq(d time.Duration, r wrkResult) float64 {
	if r.Requests == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(r.Requests)
}

func run(ctx context.Context, o options) error {
	o.commandLine = commandLine()
	if err := o.check(); err != nil {
		return err
	}
	o.tick = clockTick()
	o.ncpu = runtime.NumCPU()

	// The whole benchmark is bounded: set-up plus every run with a generous
	// margin. Each wrk run has its own bound as well.
	perRun := o.quietWait + 2*time.Second + o.warmup + o.duration + 15*time.Second
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute+time.Duration(o.rounds*4*(1+o.retries))*perRun)
	defer cancel()

	root, err := os.MkdirTemp("", "keygate-loadbench-")
	if err != nil {
		return fmt.Errorf("creating the temporary directory: %w", err)
	}
	defer os.RemoveAll(root)

	procs := &children{}
	defer procs.stopAll()

	up, upAddr, err := startUpstream(procs)
	if err != nil {
		return err
	}
	o.upstreamAddr = upAddr
	fmt.Printf("upstream (pid %d) on %s\n", up.pid(), upAddr)

	scs, auth, err := setup(ctx, o.keygate, root, upAddr, procs)
	if err != nil {
		return fmt.Errorf("setting up the scenarios: %w", err)
	}
	for _, s := range scs {
		fmt.Printf("%-10s (pid %d) on %s: %s\n", s.name, s.proc.pid(), s.addr, s.what)
	}
	if err := verify(ctx, scs, o.path, auth); err != nil {
		return err
	}
	fmt.Println("verified: every scenario answers 200 with the key; keygate and basic_auth answer 401 without it")

	env := collectEnv(o)
	w := wrkConfig{bin: o.wrk, threads: o.threads, connections: o.connections, auth: auth}
	var runs []*runResult
	for round := range o.rounds {
		fmt.Printf("\nround %d/%d, load average %s\n", round+1, o.rounds, loadavg())
		for pos := range scs {
			s := scs[(round+pos)%len(scs)] // A B C D, B C D A, …
			// Another process on this shared box (a build, a test) spoils
			// a run: wait for it to pass, and run again a run it spoiled
			// anyway, up to -retries times; then keep it, flagged.
			for attempt := 0; ; attempt++ {
				if waited, err := waitQuiet(ctx, o, procs); err != nil {
					return err
				} else if waited > 0 {
					fmt.Printf("  (waited %s for other processes to quieten)\n", waited.Round(time.Second))
				}
				r, err := measure(ctx, o, w, s, up, procs)
				if err != nil {
					return err
				}
				r.round, r.pos, r.attempts = round, pos, attempt+1
				if r.disturbed && attempt < o.retries {
					fmt.Println("  " + r.line() + "; running it again")
					continue
				}
				runs = append(runs, r)
				fmt.Println("  " + r.line())
				break
			}
		}
	}

	report := buildReport(o, env, scs, runs)
	fmt.Print("\n" + report)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
			return fmt.Errorf("writing the report to %s: %w", o.out, err)
		}
		fmt.Printf("\nreport written to %s\n", o.out)
	}
	return nil
}

// measure warms s up, then runs the measured load and charges CPU time to
// each process from /proc before and after.
func measure(ctx context.Context, o options, w wrkConfig, s *scenario, up *child, procs *children) (*runResult, error) {
	url := "http://" + s.addr + o.path
	r := &runResult{scenario: s.name, load: loadavg()}
	if o.warmup > 0 {
		wr, _, err := w.run(ctx, url, o.warmup)
		if err != nil {
			return nil, fmt.Errorf("warming up %s: %w", s.name, err)
		}
		if wr.Non2xx > 0 || wr.SocketErrors > 0 {
			r.notes = append(r.notes, fmt.Sprintf("warm-up: %d non-2xx, %d socket errors", wr.Non2xx, wr.SocketErrors))
		}
	}

	before, err := snapshotCPU(o, procs)
	if err != nil {
		return nil, err
	}
	res, wrkCPU, err := w.run(ctx, url, o.duration)
	if err != nil {
		return nil, fmt.Errorf("measuring %s: %w", s.name, err)
	}
	after, err := snapshotCPU(o, procs)
	if err != nil {
		return nil, err
	}
	// A Caddy that died during the run would make every figure meaningless.
	for _, c := range procs.all() {
		if err := c.alive(); err != nil {
			return nil, fmt.Errorf("after measuring %s: %w", s.name, err)
		}
	}

	r.wrk, r.wrkCPU = res, wrkCPU
	r.wall = after.at.Sub(before.at)
	r.caddyCPU = after.procs[s.proc] - before.procs[s.proc]
	r.upstreamCPU = after.procs[up] - before.procs[up]

	r.othersShare, r.stealShare = outsideShares(o, before, after, wrkCPU)

	if r.othersShare > o.maxOthers {
		r.noisy, r.disturbed = true, true
		r.notes = append(r.notes, fmt.Sprintf("other processes used %.0f%% of the machine", 100*r.othersShare))
	}
	if r.stealShare > o.maxOthers {
		r.noisy, r.disturbed = true, true
		r.notes = append(r.notes, fmt.Sprintf("hypervisor steal %.0f%%", 100*r.stealShare))
	}
	if res.Non2xx > 0 {
		r.noisy = true
		r.notes = append(r.notes, fmt.Sprintf("%d non-2xx responses", res.Non2xx))
	}
	if res.SocketErrors > 0 {
		r.noisy = true
		r.notes = append(r.notes, fmt.Sprintf("%d socket errors", res.SocketErrors))
	}
	return r, nil
}

// outsideShares returns the shares of the machine's CPU, between two
// snapshots, that processes outside the benchmark and the hypervisor took.
// Outside is the busy time in /proc/stat minus every process of the
// benchmark: all the children (idle ones too), wrk, and loadbench itself.
func outsideShares(o options, before, after cpuSnapshot, wrkCPU time.Duration) (others, steal float64) {
	ours := after.self - before.self + wrkCPU
	for c, t := range after.procs {
		ours += t - before.procs[c]
	}
	busy := time.Duration(after.machine.busy-before.machine.busy) * o.tick
	stolen := time.Duration(after.machine.steal-before.machine.steal) * o.tick
	capacity := float64(after.at.Sub(before.at)) * float64(o.ncpu)
	return float64(busy-ours) / capacity, float64(stolen) / capacity
}

// waitQuiet waits, up to -quiet-wait, until processes outside the benchmark
// and the hypervisor leave the machine alone for a second, and returns how
// long it waited. Past -quiet-wait it goes ahead: the run will say it was
// disturbed.
func waitQuiet(ctx context.Context, o options, procs *children) (time.Duration, error) {
	start := time.Now()
	for {
		before, err := snapshotCPU(o, procs)
		if err != nil {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for a quiet machine: %w", ctx.Err())
		case <-time.After(time.Second):
		}
		after, err := snapshotCPU(o, procs)
		if err != nil {
			return 0, err
		}
		others, steal := outsideShares(o, before, after, 0)
		waited := time.Since(start) - time.Second
		if (others <= o.maxOthers && steal <= o.maxOthers) || waited >= o.quietWait {
			return waited.Truncate(time.Second), nil
		}
	}
}

// cpuSnapshot is the CPU time of every process of the benchmark and of the
// machine at one moment.
type cpuSnapshot struct {
	at      time.Time
	procs   map[*child]time.Duration
	self    time.Duration
	machine cpuTotals
}

func snapshotCPU(o options, procs *children) (cpuSnapshot, error) {
	s := cpuSnapshot{at: time.Now(), procs: map[*child]time.Duration{}}
	var err error
	if s.machine, err = machineCPU(); err != nil {
		return s, err
	}
	for _, c := range procs.all() {
		if s.procs[c], err = procCPU(c.pid(), o.tick); err != nil {
			return s, fmt.Errorf("%s: %w", c.name, err)
		}
	}
	if s.self, err = procCPU(os.Getpid(), o.tick); err != nil {
		return s, err
	}
	return s, nil
}

func (r *runResult) line() string {
	s := fmt.Sprintf("%-10s %8.0f req/s  p50 %6.0f µs  p99 %6.0f µs  CPU %6.1f µs/req  upstream %5.1f µs/req  others %4.1f%%  steal %4.1f%%",
		r.scenario, r.wrk.RPS, us(r.wrk.P50), us(r.wrk.P99), perReq(r.caddyCPU, r.wrk), perReq(r.upstreamCPU, r.wrk),
		100*r.othersShare, 100*r.stealShare)
	if r.noisy {
		s += "  NOISY: " + strings.Join(r.notes, "; ")
	} else if len(r.notes) > 0 {
		s += "  (" + strings.Join(r.notes, "; ") + ")"
	}
	return s
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// commandLine is how loadbench was invoked, as a shell would take it.
func commandLine() string {
	name := os.Args[0]
	if strings.Contains(name, "go-build") { // `go run` builds into a temporary directory
		name = "go run ./cmd/loadbench"
	}
	parts := []string{name}
	for _, a := range os.Args[1:] {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$*?&;|<>()") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}
