// Package fleet keeps one instance's key cache in step with every other
// instance sharing a store: it follows the store's key events (Postgres
// LISTEN/NOTIFY), evicts what they name, catches up from the store after
// any gap or reconnect (emptying the cache where it cannot, or where a
// failover changed the events it had applied), and reports the instance's
// state so the dashboard can tell on how many instances a deletion has
// taken effect.
//
// While it cannot follow, the cache is distrusted: cached keys are trusted
// only within the cache's staleness bound, never longer. Following means
// listening and caught up: once a heartbeat, the follower compares the
// store's last key event with the last it applied, and an event that has
// gone unapplied for a heartbeat makes it distrust the cache and listen
// afresh, which catches up.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

// Cache is what the follower keeps in step: auth.Verifier.
type Cache interface {
	Forget(keys.Digest)
	ForgetKey(keyID string)
	ForgetAll()
	Distrust(since time.Time)
	Trust()
}

// Config configures a Follower.
type Config struct {
	Store     store.FleetStore
	ListenDSN string // a session connection: transaction poolers break LISTEN
	Cache     Cache
	// Instance identifies this instance to the fleet.
	InstanceID string
	Address    string
	// Secrets are the fingerprints of the secrets this instance has, its
	// current one first, reported so that a rotation can tell whether
	// every live instance has the secret it makes current.
	Secrets []string
	// Heartbeat is how often the instance reports itself. Default: 2s.
	Heartbeat time.Duration
	// Keepalive is how long the listener may stay silent before its
	// connection is pinged; keep it well under the cache's staleness
	// bound. Default: 1s.
	Keepalive time.Duration
	Logger    *zap.Logger
	// ObserveLag, when set, is told how long each key event took from its
	// commit to being applied here.
	ObserveLag func(time.Duration)
	// Report, when set, is told why the listener could not connect, each
	// time it tries (health.Reporter limits how much of it is logged).
	// Default: a debug line each time.
	Report func(error)
}

// A Follower follows the store's key events for one instance.
type Follower struct {
	cfg     Config
	started time.Time

	up        atomic.Bool
	applied   atomic.Int64 // last applied seq; -1 before the first catch-up
	appliedAt atomic.Int64 // unix nanoseconds
	alive     atomic.Int64 // unix nanoseconds the listener was last known to work
	connected atomic.Int64 // unix nanoseconds the listener last caught up on connecting
	lastErr   atomic.Pointer[error]
	beat      chan struct{}
	wg        sync.WaitGroup

	// Only Run's goroutine uses these: what this instance applied, to
	// tell whether the store's history is still the one it followed.
	lastEvent store.KeyEvent   // the last event applied; zero when unknown
	deletions []store.KeyEvent // the latest deletions applied, oldest first

	mu       sync.Mutex
	hangUp   context.CancelFunc // ends the listener's current connection
	behind   bool               // hangUp was called for events not applied
	probe    int64              // the store's last key event, read at probedAt (heartbeats only)
	probedAt time.Time
}

// remembered is how many applied deletions a follower keeps, to name
// those a failover loses.
const remembered = 1000

// errBehind: the listener stays connected but events go unapplied.
var errBehind = errors.New("key events committed a heartbeat ago or earlier were not received: listening afresh to catch up")

// New returns a Follower; Run starts it.
func New(cfg Config) (*Follower, error) {
	if cfg.Store == nil || cfg.Cache == nil || cfg.ListenDSN == "" || cfg.InstanceID == "" {
		return nil, errors.New("fleet: a store, a cache, a listen DSN and an instance id are needed")
	}
	if cfg.Heartbeat <= 0 {
		cfg.Heartbeat = 2 * time.Second
	}
	if cfg.Keepalive <= 0 {
		cfg.Keepalive = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	f := &Follower{cfg: cfg, started: time.Now(), beat: make(chan struct{}, 1)}
	f.applied.Store(-1)
	// Until the first catch-up nothing is known of changes made elsewhere.
	cfg.Cache.Distrust(f.started)
	return f, nil
}

// Up reports whether the follower is receiving key events.
func (f *Follower) Up() bool { return f.up.Load() }

// LastError says why the listener last failed or could not connect, while
// it is not up; nil while it is up, and before its first try.
func (f *Follower) LastError() error {
	if p := f.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Applied returns the last key event applied to the cache.
func (f *Follower) Applied() int64 { return f.applied.Load() }

// Run follows key events until ctx ends, reconnecting after any failure,
// then removes the instance from the fleet's list.
func (f *Follower) Run(ctx context.Context) {
	f.cfg.Cache.Distrust(time.Now())
	f.wg.Add(1)
	go f.heartbeats(ctx)

	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		connectedAt := time.Time{}
		lctx, hangUp := context.WithCancel(ctx)
		f.mu.Lock()
		f.hangUp, f.behind = hangUp, false
		f.mu.Unlock()
		err := f.cfg.Store.ListenKeyEvents(lctx, f.cfg.ListenDSN, f.cfg.Keepalive,
			func() error {
				if err := f.catchUp(ctx); err != nil {
					return err
				}
				connectedAt = time.Now()
				f.connected.Store(connectedAt.UnixNano())
				f.alive.Store(connectedAt.UnixNano())
				f.lastErr.Store(nil)
				f.up.Store(true)
				f.cfg.Cache.Trust()
				f.signal()
				f.cfg.Logger.Info("following key events", zap.Int64("applied_seq", f.applied.Load()))
				return nil
			},
			func() { f.alive.Store(time.Now().UnixNano()) },
			func(ev store.KeyEvent) error { return f.event(lctx, ev) })
		hangUp()
		if ctx.Err() != nil {
			break
		}
		f.mu.Lock()
		if f.behind {
			err = errBehind
		}
		f.mu.Unlock()
		f.lastErr.Store(&err)
		if f.up.Swap(false) {
			// Deletions may have gone unseen since the connection last
			// worked, not only since the failure was noticed.
			f.cfg.Cache.Distrust(time.Unix(0, f.alive.Load()))
			f.signal()
			f.cfg.Logger.Warn("key event listener lost; cached keys are trusted only within the staleness bound until it is back", zap.Error(err))
		} else {
			f.cfg.Cache.Distrust(time.Now())
			if f.cfg.Report != nil {
				f.cfg.Report(err)
			} else if c := f.cfg.Logger.Check(zap.DebugLevel, "key event listener could not connect"); c != nil {
				c.Write(zap.Error(err))
			}
		}
		if !connectedAt.IsZero() && time.Since(connectedAt) > 10*time.Second {
			backoff = 50 * time.Millisecond // it was healthy: retry at once
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
	f.up.Store(false)
	f.wg.Wait()
	rctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := f.cfg.Store.RemoveInstance(rctx, f.cfg.InstanceID); err != nil {
		f.cfg.Logger.Warn("removing this instance from the fleet list failed", zap.Error(err))
	}
}

// catchUp applies every event this instance has not applied, reading them
// from the store. Where they cannot all be read (pruned, or this is the
// first connection and the cache holds entries from before it), or the
// store's history is no longer the one this instance followed (a failover
// to a standby that lacked the latest events), it empties the cache
// instead.
func (f *Follower) catchUp(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	last, err := f.cfg.Store.LastKeyEvent(ctx)
	if err != nil {
		return fmt.Errorf("catching up: %w", err)
	}
	applied := f.applied.Load()
	switch {
	case applied < 0:
		f.cfg.Cache.ForgetAll() // anything cached before the first connection
		return f.adopt(ctx, applied, last)
	case last < applied:
		// The numbers went back: the schema was recreated or restored, or
		// a failover promoted a standby that lacked the latest events.
		f.cfg.Logger.Warn("key event numbers went back; emptying the key cache", zap.Int64("applied_seq", applied), zap.Int64("last_seq", last))
		f.reportLost(ctx, last)
		f.cfg.Cache.ForgetAll()
		return f.adopt(ctx, applied, last)
	}
	const most = 10_000
	var evs []store.KeyEvent
	if last-applied < most {
		// From the last applied event on, which must still be the store's.
		if evs, err = f.cfg.Store.KeyEventsSince(ctx, max(applied-1, 0), int(last-applied)+1); err != nil {
			return fmt.Errorf("catching up: %w", err)
		}
	}
	if len(evs) > 0 && evs[0].Seq == applied {
		if f.lastEvent.Seq == applied && !sameEvent(evs[0], f.lastEvent) {
			// A failover lost events, and the new primary has numbered
			// others as they were: the numbers alone cannot tell.
			f.cfg.Logger.Warn("the store's key events are no longer the ones this instance applied (a failover?); emptying the key cache",
				zap.Int64("applied_seq", applied), zap.Int64("last_seq", last))
			f.reportLost(ctx, last)
			f.cfg.Cache.ForgetAll()
			return f.adopt(ctx, applied, last)
		}
		evs = evs[1:]
	}
	if int64(len(evs)) < last-applied || len(evs) > 0 && evs[0].Seq != applied+1 {
		f.cfg.Logger.Warn("key events since the last applied one are gone; emptying the key cache",
			zap.Int64("applied_seq", applied), zap.Int64("last_seq", last))
		f.cfg.Cache.ForgetAll()
		return f.adopt(ctx, applied, last)
	}
	for _, ev := range evs[:last-applied] {
		f.apply(ev)
	}
	if last > applied {
		f.applied.Store(last)
		f.appliedAt.Store(time.Now().UnixNano())
	}
	return nil
}

// adopt takes the store's last event as applied, the cache having been
// emptied, and reads it, to check the store's history against it later.
func (f *Follower) adopt(ctx context.Context, applied, last int64) error {
	f.lastEvent = store.KeyEvent{}
	if last > 0 {
		evs, err := f.cfg.Store.KeyEventsSince(ctx, last-1, 1)
		if err != nil {
			return fmt.Errorf("catching up: %w", err)
		}
		if len(evs) == 1 && evs[0].Seq == last {
			f.lastEvent = evs[0]
		}
	}
	f.applied.Store(last)
	if last > applied {
		f.appliedAt.Store(time.Now().UnixNano())
	}
	return nil
}

// reportLost names the deletions this instance applied that the store no
// longer has, its history now ending at last: a failover to a standby
// that had not received them undid them, and those keys work again.
func (f *Follower) reportLost(ctx context.Context, last int64) {
	dels := f.deletions
	f.deletions = nil
	if len(dels) == 0 {
		return
	}
	// The store's events from the oldest remembered deletion on: lo to hi
	// is what the read covered, events before lo having been pruned.
	have := map[int64]store.KeyEvent{}
	lo, hi := last+1, last
	if from := dels[0].Seq; from <= last {
		const most = 10_000
		evs, err := f.cfg.Store.KeyEventsSince(ctx, from-1, int(min(last-from+1, most)))
		if err != nil {
			f.cfg.Logger.Error("key deletions may have been lost; the store's key events could not be read to tell which", zap.Error(err))
			return
		}
		for _, ev := range evs {
			have[ev.Seq] = ev
		}
		if len(evs) > 0 {
			lo = evs[0].Seq
			if len(evs) == most {
				hi = evs[len(evs)-1].Seq
			}
		}
	}
	var lost []string
	for _, d := range dels {
		ev, ok := have[d.Seq]
		if d.Seq > last || d.Seq >= lo && d.Seq <= hi && (!ok || !sameEvent(ev, d)) {
			lost = append(lost, d.KeyID)
		}
	}
	if len(lost) > 0 {
		f.cfg.Logger.Error("key deletions applied here are gone from the store (a failover to a standby that had not received them?): these keys work again until deleted anew",
			zap.Strings("key_ids", lost))
	}
}

func sameEvent(a, b store.KeyEvent) bool {
	return a.Seq == b.Seq && a.Op == b.Op && a.Digest == b.Digest && a.KeyID == b.KeyID && a.At.Equal(b.At)
}

// event applies one notified key event; a gap is repaired from the store.
func (f *Follower) event(ctx context.Context, ev store.KeyEvent) error {
	applied := f.applied.Load()
	switch {
	case ev.Seq <= applied:
		return nil // already applied by a catch-up
	case ev.Seq != applied+1:
		return f.catchUp(ctx) // it includes ev
	}
	f.apply(ev)
	now := time.Now()
	f.applied.Store(ev.Seq)
	f.appliedAt.Store(now.UnixNano())
	if f.cfg.ObserveLag != nil {
		f.cfg.ObserveLag(now.Sub(ev.At))
	}
	f.signal()
	return nil
}

// apply makes the cache follow one key event: a creation evicts a cached
// "unknown", a deletion the key, by id, as it may be cached under a
// digest other than the stored one (made with another secret).
func (f *Follower) apply(ev store.KeyEvent) {
	f.cfg.Cache.Forget(ev.Digest)
	if ev.Op == store.OpDelete && ev.KeyID != "" {
		f.cfg.Cache.ForgetKey(ev.KeyID)
		if len(f.deletions) == remembered {
			f.deletions = append(f.deletions[:0], f.deletions[1:]...)
		}
		f.deletions = append(f.deletions, ev)
	}
	f.lastEvent = ev
}

// signal asks for a heartbeat now: the receipt of an applied event.
func (f *Follower) signal() {
	select {
	case f.beat <- struct{}{}:
	default:
	}
}

func (f *Follower) heartbeats(ctx context.Context) {
	defer f.wg.Done()
	t := time.NewTicker(f.cfg.Heartbeat)
	defer t.Stop()
	prune := time.Now()
	for {
		f.heartbeat(ctx)
		f.checkCaughtUp(ctx)
		if time.Since(prune) > time.Hour {
			prune = time.Now()
			pctx, cancel := context.WithTimeout(ctx, time.Minute)
			// Instances down for longer than a day catch up by emptying
			// their cache; nothing else needs older events.
			if _, err := f.cfg.Store.PruneKeyEvents(pctx, time.Now().Add(-24*time.Hour)); err != nil && ctx.Err() == nil {
				f.cfg.Logger.Warn("pruning old key events failed", zap.Error(err))
			}
			cancel()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-f.beat:
		}
	}
}

func (f *Follower) heartbeat(ctx context.Context) {
	in := store.Instance{
		ID:         f.cfg.InstanceID,
		Address:    f.cfg.Address,
		ListenerUp: f.up.Load(),
		AppliedSeq: max(f.applied.Load(), 0),
		StartedAt:  f.started,
		Secrets:    f.cfg.Secrets,
	}
	if ns := f.appliedAt.Load(); ns != 0 {
		in.AppliedAt = time.Unix(0, ns)
	}
	hctx, cancel := context.WithTimeout(ctx, f.cfg.Heartbeat)
	defer cancel()
	if err := f.cfg.Store.Heartbeat(hctx, in); err != nil && ctx.Err() == nil {
		if c := f.cfg.Logger.Check(zap.DebugLevel, "heartbeat failed"); c != nil {
			c.Write(zap.Error(err))
		}
	}
}

// checkCaughtUp compares the store's last key event with the last one
// applied here. An event the store had a heartbeat ago or earlier that is
// still not applied was missed while the listener seemed fine (a listen
// DSN that reaches another database than the pool, a notification lost):
// the cache is distrusted from when the listener last applied anything or
// connected, and the listener hangs up, to reconnect and catch up.
func (f *Follower) checkCaughtUp(ctx context.Context) {
	now := time.Now()
	if now.Sub(f.probedAt) < f.cfg.Heartbeat {
		return // heartbeats also come early, with every applied event
	}
	cctx, cancel := context.WithTimeout(ctx, f.cfg.Heartbeat)
	last, err := f.cfg.Store.LastKeyEvent(cctx)
	cancel()
	if err != nil {
		return // the store is down: the listener finds out by itself
	}
	probe, probed := f.probe, !f.probedAt.IsZero()
	f.probe, f.probedAt = last, now
	if !probed || !f.up.Load() || f.applied.Load() >= probe {
		return
	}
	since := max(f.appliedAt.Load(), f.connected.Load())
	f.cfg.Cache.Distrust(time.Unix(0, since))
	f.cfg.Logger.Warn("key events go unapplied while the listener seems connected; listening afresh",
		zap.Int64("applied_seq", f.applied.Load()), zap.Int64("last_seq", probe))
	f.mu.Lock()
	if f.hangUp != nil {
		f.behind = true
		f.hangUp()
	}
	f.mu.Unlock()
}

// Receipt says on how many live instances a key event has taken effect,
// and, for a deletion, on how many of the database's standbys it would
// survive a failover.
type Receipt struct {
	Applied int           // live instances that applied the event
	Live    int           // instances heard from within the liveness window
	Lag     time.Duration // from the event's commit to the last live instance applying it (when all did)
	// Standbys is how many standbys the database knows of; Replicated
	// how many of them have flushed the change (store.FleetStore.Standbys).
	// A failover to a standby that has not could undo it.
	Standbys, Replicated int
}

// ReceiptOf reads the receipt of key event seq, committed at
// write-ahead log position lsn (store.Key.LSN; 0: unknown, not counted as
// replicated anywhere). An instance is live when heard from within
// liveness. The lag is measured from the time the event was recorded in
// its transaction, just before it committed.
func ReceiptOf(ctx context.Context, st store.FleetStore, seq, lsn int64, liveness time.Duration) (Receipt, error) {
	evs, err := st.KeyEventsSince(ctx, seq-1, 1)
	if err != nil {
		return Receipt{}, err
	}
	ins, err := st.ListInstances(ctx, time.Now().Add(-liveness))
	if err != nil {
		return Receipt{}, err
	}
	var r Receipt
	if r.Standbys, r.Replicated, err = st.Standbys(ctx, lsn); err != nil {
		return Receipt{}, err
	}
	var last time.Time
	for _, in := range ins {
		r.Live++
		if in.AppliedSeq >= seq {
			r.Applied++
			if in.AppliedAt.After(last) {
				last = in.AppliedAt
			}
		}
	}
	if r.Applied == r.Live && r.Live > 0 && len(evs) == 1 && evs[0].Seq == seq && last.After(evs[0].At) {
		r.Lag = last.Sub(evs[0].At)
	}
	return r, nil
}
