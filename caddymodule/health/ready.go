package health

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/keygate/keygate/caddymodule/store"
)

// Defaults of CheckerConfig.
const (
	DefaultCheckTimeout = 2 * time.Second
	DefaultCacheFor     = time.Second
)

// Follower is what a Checker asks of the fleet's key event follower
// (fleet.Follower).
type Follower interface {
	// Up reports whether the follower receives key events.
	Up() bool
	// LastError says why it last failed, or nil.
	LastError() error
}

// CheckerConfig configures a Checker.
type CheckerConfig struct {
	// Check asks the store whether it can serve: the store's Ready.
	Check func(ctx context.Context) error
	// Diagnose explains Check's errors and the follower's.
	Diagnose func(error) store.Diagnosis
	// Follower is nil for a store that no fleet shares (SQLite).
	Follower Follower
	// Timeout bounds one check, and how long a probe waits for it.
	// Default: DefaultCheckTimeout.
	Timeout time.Duration
	// CacheFor is how long the store's answer is reused, so that probes
	// cannot hammer the database. Default: DefaultCacheFor.
	CacheFor time.Duration
	// Now is the clock of the cache. Default: time.Now.
	Now func() time.Time
}

// Values of Status.Store besides the kinds of store problem.
const (
	StoreOK       = "ok"
	StoreStarting = "starting"
)

// Values of Status.Listener.
const (
	ListenerFollowing    = "following"
	ListenerNotFollowing = "not_following"
	ListenerNone         = "none" // the store has no fleet to follow
)

// Status is the answer to a readiness probe, as sent in JSON.
type Status struct {
	Ready bool `json:"ready"`
	// Store is "ok", "starting" or the kind of the store's problem
	// (store.Kind*).
	Store string `json:"store"`
	// Listener is "following", "not_following" or "none".
	Listener string `json:"listener"`
	// Cause and Fix explain why it is not ready.
	Cause string `json:"cause,omitempty"`
	Fix   string `json:"fix,omitempty"`
}

// NotStarted is the status before keygate has opened its store.
func NotStarted() Status {
	return Status{Store: StoreStarting, Listener: ListenerNotFollowing, Cause: "keygate has not started yet"}
}

// A Checker answers readiness probes. It is safe for concurrent use: probes
// that arrive while the store is being asked wait for that one answer.
type Checker struct {
	cfg     CheckerConfig
	mu      sync.Mutex
	checked time.Time // when err was learnt; zero before the first check
	err     error
	running chan struct{} // closed when the running check ends; nil when none runs
}

// NewChecker returns a Checker.
func NewChecker(cfg CheckerConfig) *Checker {
	if cfg.Diagnose == nil {
		cfg.Diagnose = store.Diagnose
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultCheckTimeout
	}
	if cfg.CacheFor <= 0 {
		cfg.CacheFor = DefaultCacheFor
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Checker{cfg: cfg}
}

// Status says whether keygate is ready: the store answered within the
// timeout (now, or less than CacheFor ago) and the follower, if any, is
// up. It returns within the timeout, or sooner if ctx ends.
func (c *Checker) Status(ctx context.Context) Status {
	st := Status{Store: StoreOK, Listener: ListenerNone}
	if err := c.storeErr(ctx); err != nil {
		d := c.cfg.Diagnose(err)
		st.Store, st.Cause, st.Fix = d.Kind, d.Cause, d.Fix
	}
	if f := c.cfg.Follower; f != nil {
		st.Listener = ListenerFollowing
		if !f.Up() {
			st.Listener = ListenerNotFollowing
			if st.Cause == "" {
				st.Cause = "key event listener: connecting"
				if err := f.LastError(); err != nil {
					d := c.cfg.Diagnose(err)
					st.Cause, st.Fix = "key event listener: "+d.Cause, d.Fix
				}
			}
		}
	}
	st.Ready = st.Store == StoreOK && st.Listener != ListenerNotFollowing
	return st
}

// storeErr returns the store's answer, asking it unless a fresh answer is
// cached or a check is already running.
func (c *Checker) storeErr(ctx context.Context) error {
	c.mu.Lock()
	if !c.checked.IsZero() && c.cfg.Now().Sub(c.checked) < c.cfg.CacheFor {
		err := c.err
		c.mu.Unlock()
		return err
	}
	done := c.running
	if done == nil {
		done = make(chan struct{})
		c.running = done
		go c.check(done)
	}
	c.mu.Unlock()

	// The check is bounded by the timeout; so is the wait, in case the
	// store ignores its context.
	t := time.NewTimer(c.cfg.Timeout)
	defer t.Stop()
	select {
	case <-done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.err
	case <-t.C:
		return context.DeadlineExceeded
	case <-ctx.Done():
		return ctx.Err()
	}
}

// check asks the store, detached from any probe: a probe that gives up
// must not leave "canceled" as the answer for the others.
func (c *Checker) check(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.Timeout)
	err := c.cfg.Check(ctx)
	cancel()
	c.mu.Lock()
	c.err, c.checked, c.running = err, c.cfg.Now(), nil
	c.mu.Unlock()
	close(done)
}

// Write answers a probe with the status: 200 when ready, else 503, with
// the status as JSON (no body for HEAD).
func Write(w http.ResponseWriter, r *http.Request, st Status) error {
	body, err := json.Marshal(st)
	if err != nil {
		return err
	}
	body = append(body, '\n')
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	code := http.StatusOK
	if !st.Ready {
		code = http.StatusServiceUnavailable
	}
	w.WriteHeader(code)
	if r.Method == http.MethodHead {
		return nil
	}
	_, err = w.Write(body)
	return err
}
