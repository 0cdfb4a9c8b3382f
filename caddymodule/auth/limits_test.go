package auth

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

func newLimitedVerifier(t *testing.T, l Limits) (*Verifier, *keyTable, *keys.Keyring, *time.Time) {
	t.Helper()
	kr, err := keys.NewKeyring([]byte("verifier-test-secret-0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	kt := &keyTable{byHash: map[keys.Digest]store.Identity{}}
	v, err := NewVerifier(VerifierConfig{Keyring: kr, Lookup: kt.lookup, Cache: testCache, Limits: l})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1_000_000, 0)
	v.limits.now = func() time.Time { return now }
	return v, kt, kr, &now
}

func unknownKey(t *testing.T) string {
	t.Helper()
	k, err := keys.New()
	if err != nil {
		t.Fatal(err)
	}
	return k.Secret()
}

// TestLookupBudget: lookups of valid keys spend nothing; once the budget
// of lookups that find no key is spent, keys not in the cache are
// Unavailable (503, never 401) without a lookup, while cached keys, valid
// or unknown, are answered as before.
func TestLookupBudget(t *testing.T) {
	v, kt, kr, now := newLimitedVerifier(t, Limits{UnknownLookups: 2})
	ctx := context.Background()
	var valid []keys.Key
	for range 5 {
		valid = append(valid, kt.add(kr, store.Identity{KeyID: "key_1", AccountID: "acct_1", Type: store.Standard}))
	}
	for _, k := range valid[1:] {
		if d := v.Verify(ctx, []string{bearerOf(k.Secret())}); d.Result != Allowed {
			t.Fatalf("valid key: %v", d.Result)
		}
	}
	seen := unknownKey(t)
	for _, k := range []string{seen, unknownKey(t)} {
		if d := v.Verify(ctx, []string{bearerOf(k)}); d.Result != Unauthorized {
			t.Fatalf("unknown key: %v", d.Result)
		}
	}
	for _, k := range []string{unknownKey(t), valid[0].Secret()} {
		d := v.Verify(ctx, []string{bearerOf(k)})
		if d.Result != Unavailable || !errors.Is(d.Err, ErrLookupBudget) || kt.lookups.Load() != 6 {
			t.Fatalf("past the budget: %v %v after %d lookups; want Unavailable, no lookup", d.Result, d.Err, kt.lookups.Load())
		}
	}
	cachedValid := valid[1]
	if d := v.Verify(ctx, []string{bearerOf(cachedValid.Secret())}); d.Result != Allowed || d.Cache.String() != "hit" {
		t.Fatalf("cached valid key past the budget: %v", d.Result)
	}
	if d := v.Verify(ctx, []string{bearerOf(seen)}); d.Result != Unauthorized || kt.lookups.Load() != 6 {
		t.Fatalf("cached unknown key past the budget: %v", d.Result)
	}
	*now = now.Add(time.Second)
	if d := v.Verify(ctx, []string{bearerOf(valid[0].Secret())}); d.Result != Allowed {
		t.Fatalf("a second later: %v", d.Result)
	}
}

// TestClientRefusals: a client past its refusals is throttled for
// everything but a cached valid key, and no other client notices.
func TestClientRefusals(t *testing.T) {
	v, kt, kr, now := newLimitedVerifier(t, Limits{ClientRefusals: 3})
	ctx := context.Background()
	cached := kt.add(kr, store.Identity{KeyID: "key_1", AccountID: "acct_1", Type: store.Standard})
	uncached := kt.add(kr, store.Identity{KeyID: "key_2", AccountID: "acct_1", Type: store.Standard})
	if d := v.VerifyFrom(ctx, []string{bearerOf(cached.Secret())}, "203.0.113.9"); d.Result != Allowed {
		t.Fatalf("valid key: %v", d.Result)
	}
	for i, authz := range [][]string{{"Bearer kg_malformed"}, {bearerOf(unknownKey(t))}, nil} {
		if d := v.VerifyFrom(ctx, authz, "203.0.113.9"); d.Result != Unauthorized {
			t.Fatalf("refusal %d: %v", i, d.Result)
		}
	}
	before := kt.lookups.Load()
	d := v.VerifyFrom(ctx, []string{bearerOf(unknownKey(t))}, "203.0.113.9")
	if d.Result != Throttled || d.RetryAfter != 20*time.Second || kt.lookups.Load() != before {
		t.Fatalf("past 3 refusals: %v, retry after %v, %d lookups; want Throttled after 20s, no lookup", d.Result, d.RetryAfter, kt.lookups.Load()-before)
	}
	if d := v.VerifyFrom(ctx, []string{"Bearer kg_malformed"}, "203.0.113.9"); d.Result != Throttled {
		t.Fatalf("malformed key while throttled: %v", d.Result)
	}
	if d := v.VerifyFrom(ctx, []string{bearerOf(uncached.Secret())}, "203.0.113.9"); d.Result != Throttled {
		t.Fatalf("uncached valid key while throttled: %v", d.Result)
	}
	if d := v.VerifyFrom(ctx, []string{bearerOf(cached.Secret())}, "203.0.113.9"); d.Result != Allowed {
		t.Fatalf("cached valid key while throttled: %v", d.Result)
	}
	if d := v.VerifyFrom(ctx, []string{bearerOf(unknownKey(t))}, "198.51.100.7"); d.Result != Unauthorized {
		t.Fatalf("another client: %v", d.Result)
	}
	*now = now.Add(20 * time.Second)
	if d := v.VerifyFrom(ctx, []string{bearerOf(uncached.Secret())}, "203.0.113.9"); d.Result != Allowed {
		t.Fatalf("after the wait: %v", d.Result)
	}
}

func bearerOf(k string) string { return "Bearer " + k }
