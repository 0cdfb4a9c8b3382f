// Package cache is a loading LRU cache with positive and negative entries,
// per-kind TTLs (a longer one for positive entries while every
// invalidation is known to arrive), one fill for concurrent misses of a key, and a guard that
// keeps a fill racing an invalidation from putting stale data back.
// Positive entries may carry a tag (an API key's id) by which they can be
// invalidated too, whatever their cache key.
//
// Positive and negative entries live in LRUs of their own, so that a flood
// of keys that do not exist evicts only other negative entries, never a
// key that does.
//
// It wraps hashicorp/golang-lru's plain LRU and keeps expiry times in the
// values, because that library's expirable LRU starts a goroutine per cache
// that never stops.
package cache

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Outcome says how a Load was answered.
type Outcome uint8

const (
	Hit         Outcome = iota // a live positive entry
	NegativeHit                // a live negative entry: known not to exist
	Miss                       // fetched, this caller leading the fill
	Shared                     // fetched by a concurrent caller's fill
	Failed                     // the fetch failed; nothing was cached
)

var outcomeNames = [...]string{"hit", "negative_hit", "miss", "shared", "failed"}

// String returns the outcome's metric label.
func (o Outcome) String() string { return outcomeNames[o] }

// Fetch loads the value of k from the source of truth. found=false with a
// nil error means that k does not exist, which is cached as a negative entry.
type Fetch[K comparable, V any] func(ctx context.Context, k K) (v V, found bool, err error)

// Config sets a cache's size and lifetimes.
type Config struct {
	Size        int           // positive entries; negative entries have as many again of their own
	TTL         time.Duration // lifetime of a positive entry
	NegativeTTL time.Duration // lifetime of a negative entry
	// FetchTimeout bounds one fill. A fill runs detached from the request
	// that led it, so that its cancellation does not fail the others waiting.
	FetchTimeout time.Duration
	// StaleBound, when positive, limits how long entries are trusted while
	// the cache is distrusted (Distrust): an entry is then used only if it
	// was filled, or the distrust began, less than StaleBound ago.
	StaleBound time.Duration
	// TTLFollowing, when longer than TTL, is the lifetime of a positive
	// entry while the cache is trusted: while every invalidation reaches
	// it (between Trust and Distrust), an entry needs no TTL to be right,
	// and one only bounds what an invalidation that never comes could
	// cost. Once distrusted, TTL and StaleBound apply again to every
	// entry, whenever it was filled.
	TTLFollowing time.Duration
	// Clock is the cache's clock. Default: time.Now. A benchmark that
	// plays hours of traffic in seconds gives its own.
	Clock func() time.Time
}

// Cache is a loading cache. It is safe for concurrent use.
type Cache[K comparable, V any] struct {
	cfg   Config
	fetch Fetch[K, V]
	lru   *lru.Cache[K, entry[V]] // positive entries
	neg   *lru.Cache[K, entry[V]] // negative entries
	now   func() time.Time        // a seam for tests
	tag   func(V) string          // nil: untagged

	mu      sync.Mutex
	flights map[K]*flight[V]
	epoch   uint64       // counts invalidations; a fill started in an older epoch is not stored
	tagged  map[string]K // the positive entry of each tag; kept by the positive LRU's eviction callback, under mu

	distrusted atomic.Int64 // unix nanoseconds since when invalidations may be missed; 0: none
}

type entry[V any] struct {
	v      V
	found  bool
	filled int64 // unix nanoseconds; its lifetime depends on the cache's trust when it is used
}

type flight[V any] struct {
	done  chan struct{}
	epoch uint64
	v     V
	found bool
	err   error
}

// New returns a cache that fills itself with fetch.
func New[K comparable, V any](cfg Config, fetch Fetch[K, V]) (*Cache[K, V], error) {
	return NewTagged(cfg, fetch, nil)
}

// NewTagged returns a cache whose positive entries can also be invalidated
// by tag(value) (InvalidateTag): when what a value stands for can be
// reached by several cache keys, such as a key found under a previous
// secret, and a change names the value, not the key.
func NewTagged[K comparable, V any](cfg Config, fetch Fetch[K, V], tag func(V) string) (*Cache[K, V], error) {
	if cfg.Size <= 0 || cfg.TTL <= 0 || cfg.NegativeTTL <= 0 || cfg.FetchTimeout <= 0 {
		return nil, errors.New("cache size, TTLs and fetch timeout must be positive")
	}
	c := &Cache[K, V]{cfg: cfg, fetch: fetch, now: time.Now, tag: tag, flights: make(map[K]*flight[V])}
	if cfg.Clock != nil {
		c.now = cfg.Clock
	}
	var err error
	if tag == nil {
		c.lru, err = lru.New[K, entry[V]](cfg.Size)
	} else {
		c.tagged = make(map[string]K)
		// Every change to the positive LRU happens under mu, and the
		// callback runs inside it: the tag map needs no lock of its own.
		c.lru, err = lru.NewWithEvict(cfg.Size, func(k K, e entry[V]) {
			if t := tag(e.v); c.tagged[t] == k {
				delete(c.tagged, t)
			}
		})
	}
	if err != nil {
		return nil, err
	}
	if c.neg, err = lru.New[K, entry[V]](cfg.Size); err != nil {
		return nil, err
	}
	return c, nil
}

// Load returns the value of k from the cache or, on a miss or an expired
// entry, from one fetch shared by every concurrent caller for k. Errors are
// returned to every caller of that fetch and not cached. Load allocates
// nothing on a hit.
func (c *Cache[K, V]) Load(ctx context.Context, k K) (v V, found bool, o Outcome, err error) {
	return c.LoadWith(ctx, k, c.fetch)
}

// LoadWith is Load with this call's own fetch, for a caller that knows
// more about k than k itself (a key's digests under previous secrets). A
// caller that joins a fill in flight shares that fill's fetch.
func (c *Cache[K, V]) LoadWith(ctx context.Context, k K, fetch Fetch[K, V]) (v V, found bool, o Outcome, err error) {
	if v, found, o, ok := c.Cached(k); ok {
		return v, found, o, nil
	}

	c.mu.Lock()
	// A fill may have completed between the miss above and the lock.
	if e, ok := c.get(k, (*lru.Cache[K, entry[V]]).Peek); ok {
		c.mu.Unlock()
		if e.found {
			return e.v, true, Hit, nil
		}
		return v, false, NegativeHit, nil
	}
	if f, ok := c.flights[k]; ok {
		c.mu.Unlock()
		select {
		case <-f.done:
			if f.err != nil {
				return v, false, Failed, f.err
			}
			return f.v, f.found, Shared, nil
		case <-ctx.Done():
			return v, false, Failed, ctx.Err()
		}
	}
	f := &flight[V]{done: make(chan struct{}), epoch: c.epoch}
	c.flights[k] = f
	c.mu.Unlock()

	// The entry's age counts from before the query: what the query read
	// may have changed while it was answered.
	start := c.now()
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.FetchTimeout)
	f.v, f.found, f.err = fetch(fctx, k)
	cancel()

	c.mu.Lock()
	if c.flights[k] == f {
		delete(c.flights, k)
	}
	// An invalidation during the fetch may have made its answer stale (a
	// key deleted after the query read it): hand the answer to the callers
	// that were already waiting, but do not keep it.
	if f.err == nil && f.epoch == c.epoch {
		if f.found {
			c.neg.Remove(k)
			c.lru.Remove(k) // an entry of another tag must not keep its tag
			c.lru.Add(k, entry[V]{v: f.v, found: true, filled: start.UnixNano()})
			if c.tag != nil {
				c.tagged[c.tag(f.v)] = k
			}
		} else {
			c.lru.Remove(k) // an expired entry of a key since deleted
			c.neg.Add(k, entry[V]{filled: start.UnixNano()})
		}
	}
	c.mu.Unlock()
	close(f.done)

	if f.err != nil {
		return v, false, Failed, f.err
	}
	return f.v, f.found, Miss, nil
}

// Cached answers from the cache alone: ok is false when k has no usable
// entry, positive or negative. It allocates nothing.
func (c *Cache[K, V]) Cached(k K) (v V, found bool, o Outcome, ok bool) {
	e, ok := c.get(k, (*lru.Cache[K, entry[V]]).Get)
	switch {
	case !ok:
		return v, false, Miss, false
	case e.found:
		return e.v, true, Hit, true
	}
	return v, false, NegativeHit, true
}

// get finds a usable entry of k, positive first, with the LRU's Get (which
// marks it recently used) or Peek.
func (c *Cache[K, V]) get(k K, find func(*lru.Cache[K, entry[V]], K) (entry[V], bool)) (entry[V], bool) {
	now := c.now().UnixNano()
	if e, ok := find(c.lru, k); ok && c.usable(&e, now) {
		return e, true
	}
	if e, ok := find(c.neg, k); ok && c.usable(&e, now) {
		return e, true
	}
	return entry[V]{}, false
}

// usable reports whether an entry may answer at now: live, and either the
// cache is trusted or the entry is within the staleness bound. A positive
// entry lives for TTLFollowing while the cache is trusted, TTL otherwise.
func (c *Cache[K, V]) usable(e *entry[V], now int64) bool {
	since := c.distrusted.Load()
	ttl := c.cfg.NegativeTTL
	if e.found {
		ttl = c.cfg.TTL
		if since == 0 {
			ttl = max(ttl, c.cfg.TTLFollowing)
		}
	}
	if e.filled+int64(ttl) <= now {
		return false
	}
	if since == 0 || c.cfg.StaleBound <= 0 {
		return true
	}
	cutoff := now - int64(c.cfg.StaleBound)
	return e.filled >= cutoff || since >= cutoff
}

// Distrust says that from since on, invalidations may be missed (the
// source of invalidations is down): entries are then trusted only within
// Config.StaleBound. An earlier distrust is kept.
func (c *Cache[K, V]) Distrust(since time.Time) {
	c.distrusted.CompareAndSwap(0, since.UnixNano())
}

// Trust says that invalidations arrive again, and none was missed.
func (c *Cache[K, V]) Trust() { c.distrusted.Store(0) }

// Distrusted returns since when the cache is distrusted, or the zero time.
func (c *Cache[K, V]) Distrusted() time.Time {
	if ns := c.distrusted.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Invalidate drops k, positive or negative, and makes every fill in flight
// discard its answer, so the next Load reads the source of truth.
func (c *Cache[K, V]) Invalidate(k K) {
	c.mu.Lock()
	c.epoch++
	delete(c.flights, k) // later callers start a fresh fill instead of joining a stale one
	c.lru.Remove(k)
	c.neg.Remove(k)
	c.mu.Unlock()
}

// InvalidateTag drops the positive entry tagged tag (see NewTagged) and,
// like Invalidate, makes every fill in flight discard its answer.
func (c *Cache[K, V]) InvalidateTag(tag string) {
	c.mu.Lock()
	c.epoch++
	if k, ok := c.tagged[tag]; ok {
		delete(c.flights, k)
		c.lru.Remove(k)
	}
	c.mu.Unlock()
}

// Purge drops every entry and, like Invalidate, every fill in flight.
func (c *Cache[K, V]) Purge() {
	c.mu.Lock()
	c.epoch++
	clear(c.flights)
	c.lru.Purge()
	c.neg.Purge()
	c.mu.Unlock()
}

// Len returns the number of entries, positive and negative, expired ones
// included until evicted.
func (c *Cache[K, V]) Len() int { return c.lru.Len() + c.neg.Len() }
