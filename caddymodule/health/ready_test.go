package health

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/store"
	"github.com/keygate/keygate/caddymodule/store/sqlite"
)

func openSQLite(t *testing.T, migrate bool) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(t.Context(), filepath.Join(t.TempDir(), "keygate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if migrate {
		if err := s.Migrate(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// follower is a settable Follower.
type follower struct {
	up  atomic.Bool
	err atomic.Pointer[error]
}

func (f *follower) Up() bool { return f.up.Load() }
func (f *follower) LastError() error {
	if p := f.err.Load(); p != nil {
		return *p
	}
	return nil
}

func probe(t *testing.T, c *Checker) (int, Status) {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := Write(rec, httptest.NewRequest("GET", "/ready", nil), c.Status(t.Context())); err != nil {
		t.Fatal(err)
	}
	var st Status
	if err := json.Unmarshal(rec.Body.Bytes(), &st); err != nil {
		t.Fatalf("body %q: %v", rec.Body, err)
	}
	if rec.Header().Get("Content-Type") != "application/json; charset=utf-8" || rec.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("headers %v", rec.Header())
	}
	return rec.Code, st
}

func TestCheckerSQLite(t *testing.T) {
	s := openSQLite(t, false)
	c := NewChecker(CheckerConfig{Check: s.Ready, Diagnose: s.Diagnose, CacheFor: time.Nanosecond})

	code, st := probe(t, c)
	if code != http.StatusServiceUnavailable || st.Ready || st.Store != store.KindNotMigrated || !strings.Contains(st.Fix, "keygate migrate") || st.Listener != ListenerNone {
		t.Fatalf("before migrating: %d %+v; want 503, not_migrated, a fix naming keygate migrate", code, st)
	}
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatal(err)
	}
	code, st = probe(t, c)
	if want := (Status{Ready: true, Store: StoreOK, Listener: ListenerNone}); code != http.StatusOK || st != want {
		t.Fatalf("after migrating: %d %+v; want 200 %+v", code, st, want)
	}
}

func TestCheckerFollower(t *testing.T) {
	s := openSQLite(t, true)
	f := &follower{}
	c := NewChecker(CheckerConfig{Check: s.Ready, Diagnose: s.Diagnose, Follower: f})

	if code, st := probe(t, c); code != http.StatusServiceUnavailable || st.Store != StoreOK || st.Listener != ListenerNotFollowing || st.Cause == "" {
		t.Fatalf("follower not yet up: %d %+v; want 503, store ok, listener not_following, a cause", code, st)
	}
	err := errors.New("connecting the key event listener: dial tcp 10.0.0.7:5432: connection refused")
	f.err.Store(&err)
	if _, st := probe(t, c); !strings.Contains(st.Cause, "key event listener") || st.Ready {
		t.Fatalf("follower failing: %+v; want the listener named in the cause", st)
	}
	f.up.Store(true)
	if code, st := probe(t, c); code != http.StatusOK || !st.Ready || st.Listener != ListenerFollowing {
		t.Fatalf("follower up: %d %+v; want 200, following", code, st)
	}
}

// Probes within CacheFor share one check; concurrent probes share the
// running one.
func TestCheckerCaches(t *testing.T) {
	s := openSQLite(t, true)
	clk := newClock()
	var checks atomic.Int32
	check := func(ctx context.Context) error { checks.Add(1); return s.Ready(ctx) }
	c := NewChecker(CheckerConfig{Check: check, Diagnose: s.Diagnose, Now: clk.Now})

	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if st := c.Status(context.Background()); !st.Ready {
				t.Errorf("status %+v", st)
			}
		})
	}
	wg.Wait()
	if n := checks.Load(); n != 1 {
		t.Fatalf("50 probes at one moment ran %d checks; want 1", n)
	}
	clk.advance(999 * time.Millisecond)
	c.Status(context.Background())
	if n := checks.Load(); n != 1 {
		t.Fatalf("a probe within the second ran a check (%d)", n)
	}
	clk.advance(time.Millisecond)
	c.Status(context.Background())
	if n := checks.Load(); n != 2 {
		t.Fatalf("a probe a second later ran %d checks in all; want 2", n)
	}
}

// A store that does not answer holds a probe no longer than the timeout,
// even if it ignores its context, and the probe says it timed out.
func TestCheckerTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	var deadlines atomic.Int32
	hang := func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); ok {
			deadlines.Add(1)
		}
		<-release // ignores ctx
		return nil
	}
	const timeout = 200 * time.Millisecond
	c := NewChecker(CheckerConfig{Check: hang, Timeout: timeout})
	start := time.Now()
	st := c.Status(context.Background())
	if took := time.Since(start); took < timeout || took > 10*timeout {
		t.Errorf("the probe took %v; want about %v", took, timeout)
	}
	if st.Ready || st.Store != store.KindTimeout {
		t.Errorf("status %+v; want not ready, timeout", st)
	}
	if deadlines.Load() != 1 {
		t.Error("the check ran without a deadline")
	}

	// A probe that gives up sooner gets its own answer.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if st := c.Status(ctx); st.Ready {
		t.Errorf("status %+v with the check still hanging", st)
	}
}

func TestWriteHead(t *testing.T) {
	rec := httptest.NewRecorder()
	if err := Write(rec, httptest.NewRequest("HEAD", "/ready", nil), NotStarted()); err != nil {
		t.Fatal(err)
	}
	if rec.Code != http.StatusServiceUnavailable || rec.Body.Len() != 0 || rec.Header().Get("Content-Length") == "" {
		t.Fatalf("HEAD: %d, body %q, headers %v", rec.Code, rec.Body, rec.Header())
	}
}
