package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	osexec "os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// BouncerConfig sets up a PgBouncer for a test.
type BouncerConfig struct {
	// PoolMode is PgBouncer's pool_mode. Default: transaction.
	PoolMode string
	// PoolSize is how many server connections PgBouncer opens to
	// Postgres (default_pool_size). Default: 2.
	PoolSize int
}

// Bouncer starts a real PgBouncer (Debian's pgbouncer package) on an
// ephemeral loopback port, in front of the database and schema of dsn (a
// DSN from DSN), stops it when the test ends, and returns a DSN that goes
// through it. PgBouncer refuses a search_path in the startup packet, so
// the schema is set on each server connection it opens (connect_query),
// as an operator would with ALTER ROLE … SET search_path. The test fails
// when pgbouncer is not installed.
func Bouncer(t testing.TB, dsn string, cfg BouncerConfig) string {
	t.Helper()
	bin := bouncerBin(t)
	if cfg.PoolMode == "" {
		cfg.PoolMode = "transaction"
	}
	if cfg.PoolSize == 0 {
		cfg.PoolSize = 2
	}
	pc, err := pgconn.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("pgtest: parsing the test DSN: %v", err)
	}
	schema := pc.RuntimeParams["search_path"]
	if !regexp.MustCompile(`^[a-z0-9_]+$`).MatchString(schema) {
		t.Fatalf("pgtest: Bouncer needs a DSN from pgtest.DSN, with a plain search_path (got %q)", schema)
	}

	// Not t.TempDir: its parent is closed to the postgres user that
	// PgBouncer runs as when the test runs as root.
	dir, err := os.MkdirTemp("", "keygate-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	users := filepath.Join(dir, "users.txt")
	// trust: PgBouncer still wants the user listed.
	writeFile(t, users, fmt.Sprintf("%q \"\"\n", pc.User))
	server := fmt.Sprintf("host=%s port=%d dbname=%s user=%s connect_query='set search_path to %s'",
		pc.Host, pc.Port, pc.Database, pc.User, schema)
	if pc.Password != "" {
		server += " password=" + pc.Password
	}
	for attempt := 0; ; attempt++ {
		port := FreePort(t)
		ini := filepath.Join(dir, "pgbouncer.ini")
		writeFile(t, ini, strings.Join([]string{
			"[databases]",
			"keygate = " + server,
			"[pgbouncer]",
			"listen_addr = 127.0.0.1",
			"listen_port = " + strconv.Itoa(port),
			"unix_socket_dir =",
			"auth_type = trust",
			"auth_file = " + users,
			"pool_mode = " + cfg.PoolMode,
			"default_pool_size = " + strconv.Itoa(cfg.PoolSize),
			"max_client_conn = 200",
			"logfile = " + filepath.Join(dir, "pgbouncer.log"),
			"",
		}, "\n"))
		err := startBouncer(t, bin, dir, ini, port)
		if err == nil {
			return fmt.Sprintf("postgres://%s@127.0.0.1:%d/keygate?sslmode=disable", url.User(pc.User), port)
		}
		if attempt == 2 {
			t.Fatal(err)
		}
	}
}

// BouncerVersion returns the installed PgBouncer's version, as "1.18.0".
func BouncerVersion(t testing.TB) string {
	t.Helper()
	out, err := osexec.Command(bouncerBin(t), "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("pgbouncer --version: %v (install Debian's pgbouncer package)", err)
	}
	m := regexp.MustCompile(`PgBouncer (\d+\.\d+\.\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("pgbouncer --version said %q", out)
	}
	return string(m[1])
}

// bouncerBin finds pgbouncer, which Debian installs in /usr/sbin, not
// always on a PATH.
func bouncerBin(t testing.TB) string {
	t.Helper()
	if bin, err := osexec.LookPath("pgbouncer"); err == nil {
		return bin
	}
	const bin = "/usr/sbin/pgbouncer"
	if _, err := os.Stat(bin); err != nil {
		t.Fatal("pgbouncer not found: install Debian's pgbouncer package (apt-get install pgbouncer; .ci/run does)")
	}
	return bin
}

// startBouncer runs pgbouncer in the foreground until the test ends and
// waits until it answers; an error means it exited (the port was taken).
func startBouncer(t testing.TB, bin, dir, ini string, port int) error {
	t.Helper()
	cmd := osexec.Command(bin, ini)
	// It goes with the test process, even one that dies without cleaning up.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGINT}
	if os.Geteuid() == 0 { // PgBouncer refuses to run as root
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Fatalf("pgtest: PgBouncer will not run as root and there is no postgres user: %v", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Chown(p, uid, gid)
		}); err != nil {
			t.Fatal(err)
		}
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting pgbouncer: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Signal(syscall.SIGINT) // PgBouncer's immediate shutdown
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	dsn := fmt.Sprintf("postgres://127.0.0.1:%d/pgbouncer?sslmode=disable&connect_timeout=2", port)
	deadline := time.Now().Add(15 * time.Second)
	for {
		select {
		case <-exited:
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			return fmt.Errorf("pgbouncer exited at start:\n%s", log)
		default:
		}
		// Its admin console answers once it listens.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, dsn+"&user=pgbouncer")
		cancel()
		if err == nil {
			conn.Close(context.Background())
			t.Cleanup(stop)
			return nil
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) { // it answered, if only to refuse
			t.Cleanup(stop)
			return nil
		}
		if time.Now().After(deadline) {
			stop()
			log, _ := os.ReadFile(filepath.Join(dir, "pgbouncer.log"))
			t.Fatalf("pgbouncer did not answer on port %d within 15s: %v\n%s", port, err, log)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
