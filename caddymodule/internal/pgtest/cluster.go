package pgtest

import (
	"context"
	"fmt"
	mathrand "math/rand/v2"
	"net"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a throwaway Postgres server that a test owns: for tests that
// need settings of their own (more connections than the shared server
// allows) or want to measure what the server alone spends.
type Cluster struct {
	dir  string // the data directory
	port int
	// DSN reaches the cluster's postgres database as the superuser.
	DSN string
}

// StartCluster makes a cluster with initdb, starts it on a free loopback
// port with the given settings (name=value, passed as -c), and stops it
// and removes its files when the test ends. It fails the test when the
// Postgres server binaries are missing.
func StartCluster(t testing.TB, settings ...string) *Cluster {
	t.Helper()
	bin, err := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if err != nil || len(bin) == 0 {
		t.Fatal("pgtest: pg_ctl not found under /usr/lib/postgresql: the Postgres server package is needed")
	}
	top, err := os.MkdirTemp("", "keygate-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	os.Chmod(top, 0o755)
	c := &Cluster{dir: filepath.Join(top, "data"), port: freePort(t)}
	c.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)

	run := func(name string, args ...string) {
		var cmd *osexec.Cmd
		if os.Geteuid() == 0 { // Postgres refuses to run as root
			os.MkdirAll(c.dir, 0o700)
			osexec.Command("chown", "-R", "postgres:postgres", top).Run()
			cmd = osexec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
		} else {
			cmd = osexec.Command(name, args...)
		}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pgtest: %s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
		}
	}
	run(filepath.Join(filepath.Dir(bin[0]), "initdb"), "-D", c.dir, "-A", "trust", "-U", "postgres", "--no-sync")
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -k %s -c fsync=off", c.port, top)
	for _, s := range settings {
		opts += " -c " + s
	}
	ctl := func(args ...string) {
		run(bin[0], append([]string{"-D", c.dir, "-w", "-t", "30", "-l", filepath.Join(top, "log"), "-o", opts}, args...)...)
	}
	ctl("start")
	t.Cleanup(func() { ctl("stop", "-m", "immediate") })
	return c
}

// freePort returns a loopback port that was free a moment ago, below the
// kernel's ephemeral range so that no outgoing connection takes it first.
func freePort(t testing.TB) int {
	t.Helper()
	for range 1000 {
		port := 20000 + mathrand.IntN(12000)
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		l.Close()
		return port
	}
	t.Fatal("pgtest: no free port")
	return 0
}

// CPU returns the CPU time (user and system) the cluster's processes have
// spent so far: the postmaster, every live backend and background process,
// and the backends that have exited (which the kernel adds to the
// postmaster's children's time when it reaps them).
func (c *Cluster) CPU() (time.Duration, error) {
	pidFile, err := os.ReadFile(filepath.Join(c.dir, "postmaster.pid"))
	if err != nil {
		return 0, fmt.Errorf("reading the postmaster's pid: %w", err)
	}
	postmaster, err := strconv.Atoi(strings.SplitN(string(pidFile), "\n", 2)[0])
	if err != nil {
		return 0, fmt.Errorf("reading the postmaster's pid: %w", err)
	}
	procs, err := filepath.Glob("/proc/[0-9]*/stat")
	if err != nil {
		return 0, err
	}
	var ticks int64
	for _, p := range procs {
		fields, ok := procStat(p)
		if !ok {
			continue // exited meanwhile
		}
		pid, _ := strconv.Atoi(fields[0])
		ppid, _ := strconv.Atoi(fields[3])
		switch {
		case pid == postmaster:
			for _, i := range []int{13, 14, 15, 16} { // utime, stime, cutime, cstime
				n, _ := strconv.ParseInt(fields[i], 10, 64)
				ticks += n
			}
		case ppid == postmaster:
			for _, i := range []int{13, 14} {
				n, _ := strconv.ParseInt(fields[i], 10, 64)
				ticks += n
			}
		}
	}
	// Linux reports these in USER_HZ, 100 on every architecture Go runs on.
	return time.Duration(ticks) * (time.Second / 100), nil
}

// procStat returns the fields of /proc/<pid>/stat, the command name (which
// may hold spaces) replaced by its parentheses' position.
func procStat(path string) ([]string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false
	}
	s := string(b)
	lp, rp := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
	if lp < 0 || rp < lp {
		return nil, false
	}
	rest := strings.Fields(s[rp+1:])
	return append([]string{strings.TrimSpace(s[:lp]), "comm"}, rest...), true
}

// ExecOn runs one statement on a connection of its own to dsn (a
// cluster's, say), failing the test on error.
func ExecOn(t testing.TB, dsn, sql string) {
	t.Helper()
	if err := exec(dsn, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// QueryRowOn runs one query on a connection of its own to dsn and scans
// its row into dest, failing the test on error.
func QueryRowOn(t testing.TB, dsn, sql string, args []any, dest ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, sql, args...).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
