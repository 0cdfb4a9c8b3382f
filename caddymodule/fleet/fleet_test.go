package fleet

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/keygate/keygate/caddymodule/internal/keytest"
	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
	"github.com/keygate/keygate/caddymodule/store/postgres"
)

// cacheLog records what the follower asked of the cache.
type cacheLog struct {
	mu         sync.Mutex
	forgot     []keys.Digest
	forgotKeys []string
	forgotAll  int
	distrusted bool
	distrusts  int
}

func (c *cacheLog) Forget(d keys.Digest) { c.mu.Lock(); c.forgot = append(c.forgot, d); c.mu.Unlock() }
func (c *cacheLog) ForgetKey(id string) {
	c.mu.Lock()
	c.forgotKeys = append(c.forgotKeys, id)
	c.mu.Unlock()
}
func (c *cacheLog) ForgetAll() { c.mu.Lock(); c.forgotAll++; c.mu.Unlock() }
func (c *cacheLog) Distrust(time.Time) {
	c.mu.Lock()
	c.distrusted = true
	c.distrusts++
	c.mu.Unlock()
}
func (c *cacheLog) Trust() { c.mu.Lock(); c.distrusted = false; c.mu.Unlock() }

func (c *cacheLog) state() (forgot []keys.Digest, all int, distrusted bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]keys.Digest(nil), c.forgot...), c.forgotAll, c.distrusted
}

type world struct {
	t       *testing.T
	dsn     string
	app     string // the listener's application_name, to find its backend
	st      *postgres.Store
	kr      *keys.Keyring
	account string
	f       *Follower
	cache   *cacheLog
	stop    context.CancelFunc
	done    chan struct{}
}

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := t.Context()
	w := &world{t: t, dsn: pgtest.DSN(t), cache: &cacheLog{}, done: make(chan struct{})}
	w.app = "kg-fleet-test-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	var err error
	if w.st, err = postgres.Open(ctx, w.dsn); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.st.Close() })
	if err := w.st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	w.kr, _ = keys.NewKeyring([]byte("fleet test secret 0123456789abcdef"))
	a, err := w.st.CreateAccount(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	w.account = a.ID
	w.f, err = New(Config{Store: w.st, ListenDSN: w.dsn + "&application_name=" + w.app, Cache: w.cache,
		InstanceID: "inst-1", Address: "test", Heartbeat: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, w.stop = context.WithCancel(context.Background())
	go func() { w.f.Run(ctx); close(w.done) }()
	t.Cleanup(func() { w.stop(); <-w.done })
	w.waitFor("the first connection", func() bool { return w.f.Up() })
	return w
}

func (w *world) waitFor(what string, cond func() bool) {
	w.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			w.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (w *world) createKey(name string) store.Key {
	w.t.Helper()
	k, _ := keytest.Mint(w.t, w.kr, w.account, name)
	k, err := w.st.CreateKey(w.t.Context(), k, store.AuditEvent{Actor: "u"})
	if err != nil {
		w.t.Fatal(err)
	}
	return k
}

func (w *world) deleteKey(k store.Key) store.Key {
	w.t.Helper()
	d, err := w.st.DeleteKey(w.t.Context(), w.account, k.ID, store.AuditEvent{Actor: "u", Action: store.ActionDelete})
	if err != nil {
		w.t.Fatal(err)
	}
	return d
}

func (w *world) forgot(d keys.Digest) bool {
	forgot, _, _ := w.cache.state()
	for _, f := range forgot {
		if f == d {
			return true
		}
	}
	return false
}

func TestFollowerAppliesEvents(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	if err := w.f.LastError(); err != nil {
		t.Fatalf("LastError while up: %v", err)
	}
	if _, all, distrusted := w.cache.state(); all != 1 || distrusted {
		t.Fatalf("after the first connection: %d flushes, distrusted %v; want the cache emptied once and trusted", all, distrusted)
	}
	k := w.createKey("one")
	w.waitFor("the create", func() bool { return w.f.Applied() == k.Seq && w.forgot(k.Digest) })
	d := w.deleteKey(k)
	w.waitFor("the delete", func() bool { return w.f.Applied() == d.Seq })

	// The receipt: this instance applied it.
	w.waitFor("the receipt", func() bool {
		r, err := ReceiptOf(t.Context(), w.st, d.Seq, d.LSN, time.Minute)
		return err == nil && r.Applied == 1 && r.Live == 1
	})
}

// TestFollowerRecoversFromKilledListener kills the listener's backend,
// changes keys while it is gone, and checks that it comes back, distrusts
// the cache meanwhile, and applies what it missed.
func TestFollowerRecoversFromKilledListener(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	k1 := w.createKey("one")
	w.waitFor("the create", func() bool { return w.f.Applied() == k1.Seq })

	conn, err := pgx.Connect(t.Context(), w.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var killed int
	if err := conn.QueryRow(t.Context(), `select count(pg_terminate_backend(pid)) from pg_stat_activity where application_name = $1`, w.app).Scan(&killed); err != nil || killed != 1 {
		t.Fatalf("terminating the listener: %d, %v", killed, err)
	}
	w.waitFor("the listener to notice", func() bool { _, _, d := w.cache.state(); return d || !w.f.Up() })
	// Missed while down (or caught as it reconnects): both must be applied.
	d1 := w.deleteKey(k1)
	k2 := w.createKey("two")
	w.waitFor("recovery", func() bool {
		_, _, distrusted := w.cache.state()
		return w.f.Up() && !distrusted && w.f.Applied() == k2.Seq
	})
	if !w.forgot(k2.Digest) || d1.Seq != k1.Seq+1 {
		t.Fatal("an event of the outage was not applied")
	}
	if err := w.f.LastError(); err != nil {
		t.Fatalf("LastError after recovering: %v", err)
	}
}

// TestFollowerEmptiesCacheWhenEventsAreGone: events pruned before an
// instance caught up cannot be replayed, so it forgets everything.
func TestFollowerEmptiesCacheWhenEventsAreGone(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.stop()
	<-w.done
	_, before, _ := w.cache.state()

	k := w.createKey("while away")
	if _, err := w.st.PruneKeyEvents(t.Context(), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.f.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	w.waitFor("the catch-up", func() bool { return w.f.Up() && w.f.Applied() == k.Seq })
	if _, after, _ := w.cache.state(); after != before+1 {
		t.Fatalf("cache flushes %d → %d, want one more", before, after)
	}
}

// TestFollowerNumbersWentBack: a restored or recreated schema restarts its
// numbering; the follower must not ignore events up to its old number.
func TestFollowerNumbersWentBack(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.stop()
	<-w.done
	_, before, _ := w.cache.state()
	w.f.applied.Store(1000) // as if the schema had been far ahead before

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.f.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	w.waitFor("the catch-up", func() bool { return w.f.Up() })
	if _, after, _ := w.cache.state(); after != before+1 || w.f.Applied() != 0 {
		t.Fatalf("after numbers went back: %d flushes (was %d), applied %d", after, before, w.f.Applied())
	}
	k := w.createKey("after the restore")
	w.waitFor("the new event", func() bool { return w.f.Applied() == k.Seq && w.forgot(k.Digest) })
}

// stoppedWithDatabase stops the world's follower, for a test to run one
// of its own, and returns the world's DSN with another database: a
// listener that cannot connect, or one that hears no event of this schema.
func (w *world) stoppedWithDatabase(name string) string {
	w.t.Helper()
	w.stop()
	<-w.done
	u, err := url.Parse(w.dsn)
	if err != nil {
		w.t.Fatal(err)
	}
	u.Path = "/" + name
	return u.String()
}

// TestFollowerReportsWhyItCannotConnect: a listen DSN naming a database
// that does not exist is reported on every try, and LastError says why
// until the follower is up.
func TestFollowerReportsWhyItCannotConnect(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	listenDSN := w.stoppedWithDatabase("kg_no_such_database_" + strconv.FormatInt(time.Now().UnixNano(), 36))
	reports := make(chan error, 100)
	f, err := New(Config{Store: w.st, ListenDSN: listenDSN, Cache: w.cache, InstanceID: "inst-2", Address: "test",
		Heartbeat: 100 * time.Millisecond, Report: func(err error) {
			select {
			case reports <- err:
			default:
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if f.LastError() != nil {
		t.Fatalf("LastError before the first try: %v", f.LastError())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for range 2 {
		select {
		case err := <-reports:
			if d := w.st.Diagnose(err); d.Kind != store.KindDatabaseMissing {
				t.Fatalf("reported %v, diagnosed %+v; want %s", err, d, store.KindDatabaseMissing)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("the failure to connect was not reported twice")
		}
	}
	if f.Up() || w.st.Diagnose(f.LastError()).Kind != store.KindDatabaseMissing {
		t.Fatalf("Up %v, LastError %v; want down, for the missing database", f.Up(), f.LastError())
	}
}

// TestFollowerHistoryDiverged: a failover promoted a standby that lacked
// the last deletion, and the new primary numbered another event as it
// was. The numbers match; the follower must still see that the history
// is not the one it applied, empty the cache, and name the lost deletion.
func TestFollowerHistoryDiverged(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	w.deleteKey(w.createKey("deleted long ago"))
	pruned := time.Now()
	w.createKey("kept")
	lost := w.deleteKey(w.createKey("deleted, then lost"))
	w.waitFor("the deletion", func() bool { return w.f.Applied() == lost.Seq })
	w.stop()
	<-w.done
	_, before, _ := w.cache.state()
	// Pruned: the old deletion is not lost, only forgotten by the store.
	if n, err := w.st.PruneKeyEvents(t.Context(), pruned); err != nil || n != 2 {
		t.Fatalf("pruning the old events: %d, %v", n, err)
	}

	// What the standby had: everything but the deletion's event.
	conn, err := pgx.Connect(t.Context(), w.dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(t.Context(), `delete from key_events where seq = $1`, lost.Seq); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(t.Context(), `update key_event_seq set value = $1`, lost.Seq-1); err != nil {
		t.Fatal(err)
	}
	other := w.createKey("created on the new primary")
	if other.Seq != lost.Seq {
		t.Fatalf("the new event is number %d, want %d, the lost one's", other.Seq, lost.Seq)
	}

	core, logs := observer.New(zap.WarnLevel)
	w.f.cfg.Logger = zap.New(core)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.f.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	w.waitFor("the catch-up", func() bool { return w.f.Up() })
	if _, after, _ := w.cache.state(); after != before+1 || w.f.Applied() != other.Seq {
		t.Fatalf("after the history diverged: %d flushes (was %d), applied %d; want one more flush and %d", after, before, w.f.Applied(), other.Seq)
	}
	named := logs.FilterMessageSnippet("gone from the store").All()
	if len(named) != 1 || fmt.Sprint(named[0].ContextMap()["key_ids"]) != "["+lost.ID+"]" {
		t.Fatalf("log lines about lost deletions: %+v; want one naming %s", named, lost.ID)
	}

	// Followed from there on: the next event applies as usual.
	next := w.createKey("after")
	w.waitFor("the next event", func() bool { return w.f.Applied() == next.Seq && w.forgot(next.Digest) })
}

// TestFollowerCatchesUpWhenEventsGoUnapplied: a listener that stays
// connected but receives nothing (its DSN reaches another database than
// the pool, where no NOTIFY of this schema arrives) is found behind by
// the heartbeat's comparison with the store's last event: the follower
// distrusts the cache and listens afresh, which applies what it missed.
func TestFollowerCatchesUpWhenEventsGoUnapplied(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	f, err := New(Config{Store: w.st, ListenDSN: w.stoppedWithDatabase("postgres"), Cache: w.cache, InstanceID: "inst-2", Address: "test",
		Heartbeat: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	w.waitFor("the listener", f.Up)
	w.cache.mu.Lock()
	before := w.cache.distrusts
	w.cache.mu.Unlock()

	k := w.createKey("unannounced")
	w.waitFor("the missed event to be applied", func() bool { return f.Applied() == k.Seq && w.forgot(k.Digest) })
	w.waitFor("following again", func() bool { _, _, distrusted := w.cache.state(); return f.Up() && !distrusted })
	w.cache.mu.Lock()
	after := w.cache.distrusts
	w.cache.mu.Unlock()
	if after == before {
		t.Fatal("the cache was not distrusted while the follower was behind")
	}
}
