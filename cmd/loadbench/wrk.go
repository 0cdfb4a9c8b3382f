package main

// Running wrk and reading its report.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// wrkResult is what one wrk run reported.
type wrkResult struct {
	Requests     int64         // responses completed ("N requests in …")
	Elapsed      time.Duration // wrk's own run time
	RPS          float64       // "Requests/sec"
	P50, P99     time.Duration // from --latency's distribution
	Non2xx       int64         // "Non-2xx or 3xx responses": wrk counts status ≥ 400
	SocketErrors int64         // connect+read+write+timeout
}

var (
	wrkRequestsRe = regexp.MustCompile(`(?m)^\s*(\d+) requests in (\S+?),`)
	wrkRPSRe      = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkPctRe      = regexp.MustCompile(`(?m)^\s+(50|75|90|99)(?:\.0+)?%\s+(\S+)\s*$`)
	wrkNon2xxRe   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkSocketRe   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// parseWrk reads the report `wrk --latency` prints. The request count, the
// rate and the 50th and 99th percentiles are required; the error and
// non-2xx lines are printed only when non-zero.
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRequestsRe.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New(`parsing wrk output: no "N requests in T" line`)
	}
	r.Requests, _ = strconv.ParseInt(m[1], 10, 64)
	d, err := parseWrkDuration(m[2])
	if err != nil {
		return r, fmt.Errorf("parsing wrk's run time: %w", err)
	}
	r.Elapsed = d

	m = wrkRPSRe.FindStringSubmatch(out)
	if m == nil {
		return r, errors.New(`parsing wrk output: no "Requests/sec:" line`)
	}
	if r.RPS, err = strconv.ParseFloat(m[1], 64); err != nil {
		return r, fmt.Errorf("parsing wrk's Requests/sec: %w", err)
	}

	for _, m := range wrkPctRe.FindAllStringSubmatch(out, -1) {
		d, err := parseWrkDuration(m[2])
		if err != nil {
			return r, fmt.Errorf("parsing wrk's %s%% latency: %w", m[1], err)
		}
		switch m[1] {
		case "50":
			r.P50 = d
		case "99":
			r.P99 = d
		}
	}
	if r.P50 == 0 || r.P99 == 0 {
		return r, errors.New("parsing wrk output: no 50% and 99% latency (was --latency given?)")
	}

	if m := wrkNon2xxRe.FindStringSubmatch(out); m != nil {
		r.Non2xx, _ = strconv.ParseInt(m[1], 10, 64)
	}
	if m := wrkSocketRe.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseInt(s, 10, 64)
			r.SocketErrors += n
		}
	}
	return r, nil
}

// parseWrkDuration parses wrk's time format: a decimal number followed by
// us, ms, s, m or h ("812.00us", "1.23ms", "10.00s", "1.00m").
func parseWrkDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		unit   time.Duration
	}{
		// "us" and "ms" before "s", "ms" before "m".
		{"us", time.Microsecond}, {"ms", time.Millisecond}, {"s", time.Second},
		{"m", time.Minute}, {"h", time.Hour},
	}
	for _, u := range units {
		if num, ok := strings.CutSuffix(s, u.suffix); ok {
			v, err := strconv.ParseFloat(num, 64)
			if err != nil || v < 0 {
				return 0, fmt.Errorf("bad duration %q", s)
			}
			return time.Duration(math.Round(v * float64(u.unit))), nil
		}
	}
	return 0, fmt.Errorf("duration %q has no unit (us, ms, s, m, h)", s)
}

// wrkConfig is the load every scenario gets.
type wrkConfig struct {
	bin         string
	threads     int
	connections int
	auth        string // the Authorization header's value
}

// run loads url for d and returns wrk's report and the CPU time wrk itself
// used (so that it is not mistaken for someone else's). The run is bounded:
// wrk stops itself after d, and is killed if it has not 30 s later.
func (c wrkConfig) run(ctx context.Context, url string, d time.Duration) (wrkResult, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, c.bin,
		"-t", strconv.Itoa(c.threads), "-c", strconv.Itoa(c.connections),
		"-d", fmt.Sprintf("%ds", int(d/time.Second)), "--latency",
		"-H", "Authorization: "+c.auth, url)
	cmd.WaitDelay = 5 * time.Second
	setDeathSignal(cmd)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var cpu time.Duration
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	if ctx.Err() != nil {
		return wrkResult{}, cpu, fmt.Errorf("running wrk against %s: %w", url, ctx.Err())
	}
	if err != nil {
		return wrkResult{}, cpu, fmt.Errorf("running wrk against %s: %v\n%s%s", url, err, stdout.String(), stderr.String())
	}
	r, err := parseWrk(stdout.String())
	if err != nil {
		return r, cpu, fmt.Errorf("%w\nwrk printed:\n%s%s", err, stdout.String(), stderr.String())
	}
	return r, cpu, nil
}

// wrkVersion returns the first line of `wrk -v` (which exits 1).
func wrkVersion(bin string) string {
	out, _ := exec.Command(bin, "-v").CombinedOutput()
	line, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(line)
}
