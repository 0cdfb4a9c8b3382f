package auth

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/caddymodule/cache"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

// Result is the answer to a request's key.
type Result uint8

const (
	// Allowed: the key is live; Decision.Identity says whose it is.
	Allowed Result = iota
	// Unauthorized: no key, a malformed key, an unknown or a deleted key.
	// These are deliberately indistinguishable to the client.
	Unauthorized
	// Unavailable: the key is not cached and the store did not answer,
	// or was not asked because the lookup budget was spent
	// (ErrLookupBudget). Never an Unauthorized: a valid key must not be
	// told it is wrong.
	Unavailable
	// Throttled: the client sent too many refused requests lately, and
	// this one's key is not a cached valid key; Decision.RetryAfter says
	// when it may try again.
	Throttled
)

var resultNames = [...]string{"allowed", "unauthorized", "unavailable", "throttled"}

// String returns the result's metric label.
func (r Result) String() string { return resultNames[r] }

// Decision is the outcome of Verify.
type Decision struct {
	Result   Result
	Identity *Identity     // set when Allowed
	Cache    cache.Outcome // valid when Cached is true
	Cached   bool          // whether the cache was consulted (not for malformed keys)
	Err      error         // the store's error when Unavailable
	// RetryAfter is how long a Throttled client must wait.
	RetryAfter time.Duration
}

// Field names one piece of a key's identity, as sent upstream in headers
// and offered to Caddy as placeholders.
type Field uint8

const (
	FieldAccountID Field = iota
	FieldKeyID
	FieldKeyType
	FieldServerID
	FieldKeyPrefix
	numFields
)

// Identity is a live key as the request path sees it. Its placeholder
// values are boxed once, when the cache is filled, so that a request on a
// cache hit allocates nothing to use them.
type Identity struct {
	store.Identity
	fields     [numFields]string
	boxed      [numFields]any
	lastMarked atomic.Int64 // the second Usage last recorded this key in

	activity atomic.Pointer[keyActivity] // its record in the Activity that saw it last
}

// NewIdentity makes the request path's view of a key, as the Verifier does
// when it caches one: for recording Activity without a Verifier.
func NewIdentity(si store.Identity) *Identity { return newIdentity(si) }

func newIdentity(si store.Identity) *Identity {
	id := &Identity{Identity: si}
	id.fields = [numFields]string{si.AccountID, si.KeyID, string(si.Type), si.ServerID, si.Display}
	for f, v := range id.fields {
		if v != "" { // a standard key has no server: no placeholder
			id.boxed[f] = v
		}
	}
	return id
}

// Field returns the field, or "" when the key has none (a standard key's
// server).
func (id *Identity) Field(f Field) string { return id.fields[f] }

// Value returns the field boxed for a placeholder, or nil.
func (id *Identity) Value(f Field) any { return id.boxed[f] }

// Lookup finds a key by digest: store.Store's LookupKey.
type Lookup func(ctx context.Context, d keys.Digest) (store.Identity, error)

// LookupAny finds a key by any of its digests, in one statement:
// store.Store's LookupKeyAny.
type LookupAny func(ctx context.Context, ds []keys.Digest) (store.Identity, error)

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	Keyring *keys.Keyring
	Lookup  Lookup
	// LookupAny is used instead of Lookup while the keyring has previous
	// secrets; required then.
	LookupAny LookupAny
	Cache     cache.Config
	// ObserveLookup, when set, is told the duration and error of every
	// store lookup (for metrics).
	ObserveLookup func(d time.Duration, err error)
	// Usage, when set, gathers when each allowed key was last used.
	Usage *Usage
	// Limits bound what keys that fail may cost: store lookups and each
	// client's refused requests. The zero value limits nothing.
	Limits Limits
}

// A Verifier answers whether a request's Authorization header carries a
// live key. It is safe for concurrent use.
//
// Keys are cached under their digest by the current secret, whichever
// secret the store holds them under, so that a key behaves the same
// before, during and after a rotation re-keys it; a deletion is applied by
// key id (ForgetKey), which does not depend on the secret either.
type Verifier struct {
	keyring   *keys.Keyring
	lookup    Lookup
	lookupAny LookupAny
	observe   func(d time.Duration, err error)
	cache     *cache.Cache[keys.Digest, *Identity]
	usage     *Usage
	limits    *limiter
	bufs      sync.Pool // of *[maxBasicLen]byte
}

// NewVerifier returns a Verifier that answers from a cache in front of
// cfg.Lookup.
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	if cfg.Keyring == nil || cfg.Lookup == nil || (len(cfg.Keyring.Secrets()) > 1 && cfg.LookupAny == nil) {
		return nil, errors.New("verifier needs a keyring and a lookup (one for any of several digests, with previous secrets)")
	}
	v := &Verifier{keyring: cfg.Keyring, lookup: cfg.Lookup, lookupAny: cfg.LookupAny, observe: cfg.ObserveLookup, usage: cfg.Usage}
	c, err := cache.NewTagged(cfg.Cache, v.fetch, func(id *Identity) string { return id.KeyID })
	if err != nil {
		return nil, fmt.Errorf("creating key cache: %w", err)
	}
	limits, err := newLimiter(cfg.Limits)
	if err != nil {
		return nil, fmt.Errorf("creating key limits: %w", err)
	}
	v.cache, v.limits = c, limits
	v.bufs.New = func() any { return new([maxBasicLen]byte) }
	return v, nil
}

// Verify checks the values of a request's Authorization header, for no
// client in particular: see VerifyFrom.
func (v *Verifier) Verify(ctx context.Context, authorization []string) Decision {
	return v.VerifyFrom(ctx, authorization, "")
}

// VerifyFrom checks the values of a request's Authorization header sent by
// client (an address; "" for none). Exactly one value is accepted: two
// could be read two ways. A valid key in the cache is allowed whatever the
// limits; anything else of a throttled client is Throttled, and a key not
// in the cache is looked up only while the budget of lookups that find no
// key is not spent.
func (v *Verifier) VerifyFrom(ctx context.Context, authorization []string, client string) Decision {
	if len(authorization) != 1 {
		return v.refuse(client, Decision{Result: Unauthorized})
	}
	buf := v.bufs.Get().(*[maxBasicLen]byte)
	defer v.bufs.Put(buf)
	key, ok := keyFromAuthorization(authorization[0], buf)
	if !ok || !keys.Valid(key) {
		return v.refuse(client, Decision{Result: Unauthorized})
	}
	d := v.keyring.Digest(key)
	id, found, o, cached := v.cache.Cached(d)
	if !(cached && found) {
		if wait := v.limits.throttled(client); wait > 0 {
			return Decision{Result: Throttled, RetryAfter: wait}
		}
		if !cached && !v.limits.lookup() {
			return Decision{Result: Unavailable, Cache: cache.Failed, Cached: true, Err: ErrLookupBudget}
		}
	}
	if !cached {
		var err error
		if len(v.keyring.Secrets()) == 1 {
			id, found, o, err = v.cache.Load(ctx, d)
		} else {
			id, found, o, err = v.cache.LoadWith(ctx, d, func(ctx context.Context, d keys.Digest) (*Identity, bool, error) {
				return v.fetchAll(ctx, d, key)
			})
		}
		v.limits.looked(err == nil && !found)
		if err != nil {
			return Decision{Result: Unavailable, Cache: o, Cached: true, Err: err}
		}
	}
	if !found {
		return v.refuse(client, Decision{Result: Unauthorized, Cache: o, Cached: true})
	}
	if v.usage != nil {
		v.usage.mark(id, time.Now().UnixNano())
	}
	return Decision{Result: Allowed, Identity: id, Cache: o, Cached: true}
}

// fetch looks a digest up in the store.
func (v *Verifier) fetch(ctx context.Context, d keys.Digest) (*Identity, bool, error) {
	return v.found(v.timed(func() (store.Identity, error) { return v.lookup(ctx, d) }))
}

// fetchAll looks a key up under its current digest d and each previous
// secret's: until a rotation has re-keyed it, the store holds a key under
// the secret that made it.
func (v *Verifier) fetchAll(ctx context.Context, d keys.Digest, key []byte) (*Identity, bool, error) {
	var buf [keys.MaxSecrets]keys.Digest
	ds := buf[:0]
	for i, s := range v.keyring.Secrets() {
		if i == 0 {
			ds = append(ds, d)
		} else {
			ds = append(ds, s.Digest(key))
		}
	}
	return v.found(v.timed(func() (store.Identity, error) { return v.lookupAny(ctx, ds) }))
}

// timed runs a store lookup, telling ObserveLookup how long it took.
func (v *Verifier) timed(lookup func() (store.Identity, error)) (store.Identity, error) {
	start := time.Now()
	si, err := lookup()
	if v.observe != nil {
		obsErr := err
		if errors.Is(err, store.ErrNotFound) {
			obsErr = nil
		}
		v.observe(time.Since(start), obsErr)
	}
	return si, err
}

// found turns a lookup's answer into a cache fill.
func (v *Verifier) found(si store.Identity, err error) (*Identity, bool, error) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, false, nil
	case err != nil:
		return nil, false, err
	}
	return newIdentity(si), true, nil
}

// refuse counts a refusal against the client, unless it is throttled
// already: then it is told so, and when it may try again.
func (v *Verifier) refuse(client string, d Decision) Decision {
	if wait := v.limits.throttled(client); wait > 0 {
		return Decision{Result: Throttled, RetryAfter: wait}
	}
	v.limits.refused(client)
	return d
}

// Forget drops what the cache knows of a key by its digest under the
// current secret: call it after the store created the key, which may have
// been cached as unknown.
func (v *Verifier) Forget(d keys.Digest) { v.cache.Invalidate(d) }

// ForgetKey drops a key from the cache by its id: call it after the store
// deleted the key, whichever secret's digest it was found under.
func (v *Verifier) ForgetKey(keyID string) { v.cache.InvalidateTag(keyID) }

// Keyring returns the keyring the Verifier digests keys with.
func (v *Verifier) Keyring() *keys.Keyring { return v.keyring }

// ForgetAll empties the cache.
func (v *Verifier) ForgetAll() { v.cache.Purge() }

// Distrust says that from since on, deletions elsewhere may go unseen:
// cached keys are then trusted only within the cache's staleness bound.
func (v *Verifier) Distrust(since time.Time) { v.cache.Distrust(since) }

// Trust says that deletions elsewhere are seen again, none missed.
func (v *Verifier) Trust() { v.cache.Trust() }

// CacheLen returns the number of cached entries.
func (v *Verifier) CacheLen() int { return v.cache.Len() }
