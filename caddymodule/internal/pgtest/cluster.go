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
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Cluster is a throwaway Postgres server that a test owns: it may stop,
// restart, kill or promote it without touching the machine's shared one.
// It listens on 127.0.0.1 on a port of its own, trusts every local
// connection, and is stopped and removed when the test ends.
type Cluster struct {
	t       testing.TB
	home    string // socket directory, log and data directory live here
	Dir     string // the data directory
	Port    int
	DSN     string // as the postgres superuser, database postgres
	Standby bool   // made by StartStandby and not yet promoted
}

// bin returns the path of a Postgres server program. The test fails,
// never skips, when the server package is missing.
func bin(t testing.TB, name string) string {
	t.Helper()
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(found) == 0 {
		t.Fatalf("%s not found under /usr/lib/postgresql/*/bin: the Postgres server package is needed (.ci/run installs it)", name)
	}
	return found[len(found)-1] // the newest version
}

// StartCluster creates a cluster with initdb and starts it. conf lines
// (such as "wal_level = replica") are added to its postgresql.conf.
func StartCluster(t testing.TB, conf ...string) *Cluster {
	t.Helper()
	c := newCluster(t)
	c.run(bin(t, "initdb"), "-D", c.Dir, "-A", "trust", "-U", "postgres", "--no-sync")
	// Replication and throwaway durability: a standby may be made of any
	// cluster, and nothing here must survive a crash of the machine.
	c.appendConf(append([]string{"fsync = off", "max_wal_senders = 10", "wal_level = replica"}, conf...)...)
	c.Ctl("start")
	return c
}

// StartStandby makes a streaming standby of c with pg_basebackup, through
// a physical replication slot named slot (so that the primary knows of
// the standby even while it is disconnected), and starts it.
func (c *Cluster) StartStandby(t testing.TB, slot string) *Cluster {
	t.Helper()
	s := newCluster(t)
	s.Standby = true
	s.run(bin(t, "pg_basebackup"), "-D", s.Dir, "-d", c.DSN, "-R", "-C", "-S", slot, "-X", "stream", "--checkpoint=fast", "--no-sync")
	s.Ctl("start")
	return s
}

func newCluster(t testing.TB) *Cluster {
	t.Helper()
	// Not t.TempDir: its parent is private to this user, and Postgres,
	// which refuses to run as root, runs as postgres when the test is root.
	home, err := os.MkdirTemp("", "keygate-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(home) })
	os.Chmod(home, 0o755)
	c := &Cluster{t: t, home: home, Dir: filepath.Join(home, "data"), Port: FreePort(t)}
	c.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.Port)
	if err := os.Mkdir(c.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if out, err := osexec.Command("chown", "-R", "postgres:postgres", home).CombinedOutput(); err != nil {
			t.Fatalf("chown %s: %v\n%s", home, err, out)
		}
	}
	// Registered after the removal, so run before it: whatever state the
	// test left the server in, it is gone before its files are.
	t.Cleanup(func() {
		if _, err := os.Stat(filepath.Join(c.Dir, "postmaster.pid")); err == nil {
			c.Ctl("stop", "-m", "immediate")
		}
	})
	return c
}

// Ctl runs pg_ctl on the cluster (start, stop, restart, promote), waiting
// for it to finish, and fails the test if it fails.
func (c *Cluster) Ctl(args ...string) {
	c.t.Helper()
	c.run(bin(c.t, "pg_ctl"), append([]string{"-D", c.Dir, "-w", "-t", "60", "-l", filepath.Join(c.home, "log"),
		"-o", fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -k %s", c.Port, c.home)}, args...)...)
	if len(args) > 0 && args[0] == "promote" {
		c.Standby = false
	}
}

// Exec runs one statement on the cluster's postgres database.
func (c *Cluster) Exec(t testing.TB, sql string) {
	t.Helper()
	if err := exec(c.DSN, sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// QueryRow runs one query on the cluster's postgres database, on a
// connection of its own, and scans its row into dest, failing the test on
// error.
func (c *Cluster) QueryRow(t testing.TB, sql string, args []any, dest ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, sql, args...).Scan(dest...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// CPU returns the CPU time (user and system) the cluster's processes have
// spent so far: the postmaster, every live backend and background process,
// and the backends that have exited (which the kernel adds to the
// postmaster's children's time when it reaps them).
func (c *Cluster) CPU() (time.Duration, error) {
	pidFile, err := os.ReadFile(filepath.Join(c.Dir, "postmaster.pid"))
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

// Log returns the server's log, for a test's failure message.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.home, "log"))
	return string(b)
}

func (c *Cluster) appendConf(lines ...string) {
	f, err := os.OpenFile(filepath.Join(c.Dir, "postgresql.conf"), os.O_APPEND|os.O_WRONLY, 0)
	if err == nil {
		_, err = f.WriteString("\n" + strings.Join(lines, "\n") + "\n")
		f.Close()
	}
	if err != nil {
		c.t.Fatalf("configuring the cluster: %v", err)
	}
}

// run runs a Postgres program, as postgres when the test runs as root.
func (c *Cluster) run(name string, args ...string) {
	c.t.Helper()
	cmd := osexec.Command(name, args...)
	if os.Geteuid() == 0 {
		cmd = osexec.Command("runuser", append([]string{"-u", "postgres", "--", name}, args...)...)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("%s %s: %v\n%s", filepath.Base(name), strings.Join(args, " "), err, out)
	}
}

// handedOut holds the ports FreePort gave this process.
var handedOut sync.Map

// FreePort returns a loopback port that was free a moment ago: tests
// never use fixed ports. It is below the kernel's ephemeral range, so
// that no outgoing connection takes it before the test's server binds it,
// and never handed out twice in a process, so that tests running in
// parallel cannot be given the same one.
func FreePort(t testing.TB) int {
	t.Helper()
	for range 1000 {
		port := 20000 + mathrand.IntN(12000)
		if _, taken := handedOut.LoadOrStore(port, true); taken {
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue // another service's
		}
		l.Close()
		return port
	}
	t.Fatal("no free port between 20000 and 32000")
	return 0
}
