package auth

import (
	"errors"
	"math"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"golang.org/x/time/rate"
)

// ErrLookupBudget is the Unavailable error of a key that was not looked
// up because unknown keys came faster than the store may be asked about
// them: the instance's budget of unknown-key lookups was spent.
var ErrLookupBudget = errors.New("too many unknown keys: the budget of store lookups for unknown keys is spent for now")

// Limits keep keys that fail from costing anyone else anything: a budget
// of store lookups that find no key, per second, and per client a budget of
// refused requests, past which the client is throttled. A valid key in the
// cache passes whatever the limits say, and lookups of valid keys spend no
// budget: only a flood of unknown keys makes keys not in the cache wait.
type Limits struct {
	// UnknownLookups is how many store lookups per second (and burst) may
	// find no key, on this instance; past it, keys not in the cache are
	// not looked up (503) until the budget refills. 0: no limit.
	UnknownLookups int
	// ClientRefusals is how many refused requests per minute (and burst)
	// a client may send before it is throttled; 0: no limit.
	ClientRefusals int
	// Clients bounds how many clients are remembered. Default: 65536.
	Clients int
}

// limiter applies Limits. It is safe for concurrent use.
type limiter struct {
	lookups *rate.Limiter // nil: no limit
	mu      sync.Mutex    // guards pending
	pending int           // lookups under way, each holding a token they may spend
	clients *lru.Cache[string, *rate.Limiter]
	refusal rate.Limit
	burst   int
	now     func() time.Time
}

func newLimiter(l Limits) (*limiter, error) {
	lim := &limiter{now: time.Now}
	if l.UnknownLookups > 0 {
		lim.lookups = rate.NewLimiter(rate.Limit(l.UnknownLookups), l.UnknownLookups)
	}
	if l.ClientRefusals > 0 {
		size := l.Clients
		if size <= 0 {
			size = 65536
		}
		c, err := lru.New[string, *rate.Limiter](size)
		if err != nil {
			return nil, err
		}
		lim.clients, lim.refusal, lim.burst = c, rate.Limit(float64(l.ClientRefusals)/60), l.ClientRefusals
	}
	return lim, nil
}

// lookup reports whether a key not in the cache may be looked up: the
// budget of unknown-key lookups holds a token for it beyond those that
// lookups under way may spend. A true answer must be followed by looked.
func (l *limiter) lookup() bool {
	if l.lookups == nil {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lookups.TokensAt(l.now())-float64(l.pending) < 1 {
		return false
	}
	l.pending++
	return true
}

// looked ends a lookup that lookup allowed, spending its token if the
// lookup found no key.
func (l *limiter) looked(unknown bool) {
	if l.lookups == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.pending--
	if unknown {
		l.lookups.AllowN(l.now(), 1)
	}
}

// throttled returns how long the client must wait before it may send a
// key that is not a cached valid one, or 0.
func (l *limiter) throttled(client string) time.Duration {
	if l.clients == nil || client == "" {
		return 0
	}
	c, ok := l.clients.Get(client)
	if !ok {
		return 0
	}
	now := l.now()
	tokens := c.TokensAt(now)
	if tokens >= 1 {
		return 0
	}
	return time.Duration(math.Ceil((1 - tokens) / float64(l.refusal) * float64(time.Second)))
}

// refused counts a refused request against the client.
func (l *limiter) refused(client string) {
	if l.clients == nil || client == "" {
		return
	}
	c, ok := l.clients.Get(client)
	if !ok {
		c = rate.NewLimiter(l.refusal, l.burst)
		if prev, ok, _ := l.clients.PeekOrAdd(client, c); ok {
			c = prev
		}
	}
	c.AllowN(l.now(), 1)
}
