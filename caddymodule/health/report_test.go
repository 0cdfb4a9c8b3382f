package health

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/keygate/keygate/caddymodule/store"
	"github.com/keygate/keygate/caddymodule/store/postgres"
)

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newTestReporter(t *testing.T) (*Reporter, *observer.ObservedLogs, *clock) {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	clk := newClock()
	r := NewReporter(ReporterConfig{Logger: zap.New(core), Diagnose: (*postgres.Store)(nil).Diagnose, Now: clk.Now})
	return r, logs, clk
}

func missingDatabase() error {
	return fmt.Errorf("looking up key: %w", &pgconn.PgError{Severity: "FATAL", Code: "3D000", Message: `database "keygate" does not exist`})
}

func TestReporterOncePerMinutePerKind(t *testing.T) {
	r, logs, clk := newTestReporter(t)

	// Many requests meet the same missing database: one ERROR line.
	for range 1000 {
		r.Report("key lookup", missingDatabase())
		clk.advance(10 * time.Millisecond)
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d lines for 1000 errors within 10s; want 1", n)
	}
	line := logs.All()[0]
	fields := line.ContextMap()
	if line.Level != zapcore.ErrorLevel || fields["kind"] != store.KindDatabaseMissing ||
		!strings.Contains(fields["cause"].(string), `database "keygate" does not exist`) ||
		!strings.Contains(fields["fix"].(string), "create the database") || fields["during"] != "key lookup" {
		t.Fatalf("the line: %s %s %v; want ERROR with kind, cause, fix and what was being done", line.Level, line.Message, fields)
	}

	// Another kind of problem is logged at once, transient at WARN.
	r.Report("key lookup", fmt.Errorf("looking up key: %w", errors.Join(errors.New("dial"), errTimeout{})))
	if n := logs.Len(); n != 2 || logs.All()[1].Level != zapcore.WarnLevel || logs.All()[1].ContextMap()["kind"] != store.KindTimeout {
		t.Fatalf("after a timeout: %d lines, last %+v; want a second line, WARN, kind timeout", n, logs.All()[n-1])
	}

	// A minute after the first line, the next one, counting what it left out.
	clk.advance(time.Minute - 10*time.Second)
	r.Report("key event listener", missingDatabase())
	if n := logs.Len(); n != 3 {
		t.Fatalf("a minute later: %d lines; want 3", n)
	}
	if got := logs.All()[2].ContextMap()["repeats_not_logged"]; got != int64(999) {
		t.Errorf("repeats_not_logged = %v; want 999", got)
	}
	r.Report("key lookup", missingDatabase())
	if n := logs.Len(); n != 3 {
		t.Fatalf("right after: %d lines; want still 3", n)
	}
}

// errTimeout is a net.Error that timed out.
type errTimeout struct{}

func (errTimeout) Error() string   { return "i/o timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }

// Concurrent reports of one kind log one line.
func TestReporterConcurrent(t *testing.T) {
	r, logs, _ := newTestReporter(t)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				r.Report("key lookup", missingDatabase())
			}
		})
	}
	wg.Wait()
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d lines from concurrent reports; want 1", n)
	}
}

// A malformed DSN's error text may quote the DSN (pgx hides the password
// only on a best-effort basis): it is withheld.
func TestReporterWithholdsDSN(t *testing.T) {
	r, logs, _ := newTestReporter(t)
	_, err := pgconn.ParseConfig("postgres://u:hunter2-s3cret@[::1/x")
	if err == nil {
		t.Fatal("a malformed DSN parsed")
	}
	r.Report("key event listener", fmt.Errorf("connecting the key event listener: %w", err))
	for _, line := range logs.All() {
		for k, v := range line.ContextMap() {
			if s, ok := v.(string); ok && (strings.Contains(s, "hunter2") || strings.Contains(s, "[::1")) {
				t.Errorf("field %s quotes the DSN: %q", k, s)
			}
		}
	}
}
