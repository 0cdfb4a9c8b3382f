package auth

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/cache"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

// keyTable is an in-memory key lookup, standing in for a store so that
// these tests pin down the verifier's own logic. The stores are tested
// against real databases in their packages.
type keyTable struct {
	mu      sync.Mutex
	byHash  map[keys.Digest]store.Identity
	down    bool
	lookups atomic.Int64
}

func (kt *keyTable) lookup(_ context.Context, d keys.Digest) (store.Identity, error) {
	kt.lookups.Add(1)
	kt.mu.Lock()
	defer kt.mu.Unlock()
	if kt.down {
		return store.Identity{}, errors.New("connection refused")
	}
	id, ok := kt.byHash[d]
	if !ok {
		return store.Identity{}, store.ErrNotFound
	}
	return id, nil
}

// lookupAny is one lookup of several digests, as the stores make it.
func (kt *keyTable) lookupAny(ctx context.Context, ds []keys.Digest) (store.Identity, error) {
	kt.lookups.Add(1)
	kt.mu.Lock()
	defer kt.mu.Unlock()
	if kt.down {
		return store.Identity{}, errors.New("connection refused")
	}
	for _, d := range ds {
		if id, ok := kt.byHash[d]; ok {
			return id, nil
		}
	}
	return store.Identity{}, store.ErrNotFound
}

var testCache = cache.Config{Size: 1000, TTL: time.Minute, NegativeTTL: time.Minute, FetchTimeout: time.Second}

func newVerifier(t testing.TB) (*Verifier, *keyTable, *keys.Keyring) {
	t.Helper()
	kr, err := keys.NewKeyring([]byte("verifier-test-secret-0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	kt := &keyTable{byHash: map[keys.Digest]store.Identity{}}
	v, err := NewVerifier(VerifierConfig{Keyring: kr, Lookup: kt.lookup, Cache: testCache})
	if err != nil {
		t.Fatal(err)
	}
	return v, kt, kr
}

func (kt *keyTable) add(kr *keys.Keyring, id store.Identity) keys.Key {
	k, _ := keys.New()
	kt.mu.Lock()
	kt.byHash[kr.Digest([]byte(k))] = id
	kt.mu.Unlock()
	return k
}

func TestVerify(t *testing.T) {
	v, kt, kr := newVerifier(t)
	restricted := store.Identity{KeyID: "key_r", AccountID: "acct_1", Type: store.Restricted, ServerID: "abcd1234", Display: "kg_abcde"}
	k := kt.add(kr, restricted)
	ctx := context.Background()

	d := v.Verify(ctx, []string{"Basic " + b64(string(k)+":")})
	if d.Result != Allowed || d.Identity.Identity != restricted || d.Cache != cache.Miss {
		t.Fatalf("Verify = %+v", d)
	}
	if got := d.Identity.Field(FieldServerID); got != "abcd1234" {
		t.Fatalf("server = %q", got)
	}
	if d.Identity.Value(FieldKeyID) != "key_r" {
		t.Fatalf("key id value = %v", d.Identity.Value(FieldKeyID))
	}
	for _, h := range []string{"Bearer " + string(k), "Basic " + b64("api:"+string(k))} {
		if d := v.Verify(ctx, []string{h}); d.Result != Allowed || d.Cache != cache.Hit {
			t.Fatalf("Verify(%q) = %+v", h, d)
		}
	}
	if n := kt.lookups.Load(); n != 1 {
		t.Fatalf("lookups = %d, want 1", n)
	}

	standard := kt.add(kr, store.Identity{KeyID: "key_s", AccountID: "acct_1", Type: store.Standard, Display: "kg_xyzab"})
	d = v.Verify(ctx, []string{"Bearer " + string(standard)})
	if d.Result != Allowed || d.Identity.Field(FieldServerID) != "" || d.Identity.Value(FieldServerID) != nil {
		t.Fatalf("standard key: %+v, server %q", d, d.Identity.Field(FieldServerID))
	}
}

func TestVerifyRefusals(t *testing.T) {
	v, kt, kr := newVerifier(t)
	k := kt.add(kr, store.Identity{KeyID: "key_1", AccountID: "acct_1", Type: store.Standard, Display: "kg_abcde"})
	unknown, _ := keys.New()
	typo := []byte(k)
	typo[10] ^= 0x01
	ctx := context.Background()

	cases := map[string][]string{
		"no header":       nil,
		"two headers":     {"Bearer " + string(k), "Bearer " + string(k)},
		"empty":           {""},
		"other scheme":    {"Token " + string(k)},
		"typo":            {"Bearer " + string(typo)},
		"random string":   {"Bearer hello"},
		"binary":          {"Bearer \x00\x01\xfe\xff"},
		"unknown key":     {"Bearer " + string(unknown)},
		"key in password": {"Basic " + b64(string(k)+":"+"x")},
	}
	for name, h := range cases {
		if d := v.Verify(ctx, h); d.Result != Unauthorized || d.Identity != nil {
			t.Errorf("%s: Verify = %+v, want Unauthorized", name, d)
		}
	}
	// Only the well-formed unknown key reached the store, once; the
	// malformed ones were rejected offline.
	if n := kt.lookups.Load(); n != 1 {
		t.Fatalf("lookups = %d, want 1", n)
	}
	if d := v.Verify(ctx, cases["unknown key"]); d.Result != Unauthorized || d.Cache != cache.NegativeHit {
		t.Fatalf("repeat unknown key: %+v", d)
	}
}

func TestVerifyStoreDown(t *testing.T) {
	v, kt, kr := newVerifier(t)
	cached := kt.add(kr, store.Identity{KeyID: "key_1", AccountID: "acct_1", Type: store.Standard, Display: "kg_abcde"})
	uncached := kt.add(kr, store.Identity{KeyID: "key_2", AccountID: "acct_1", Type: store.Standard, Display: "kg_fghij"})
	ctx := context.Background()
	v.Verify(ctx, []string{"Bearer " + string(cached)})

	kt.mu.Lock()
	kt.down = true
	kt.mu.Unlock()
	if d := v.Verify(ctx, []string{"Bearer " + string(uncached)}); d.Result != Unavailable || d.Err == nil {
		t.Fatalf("uncached key with the store down: %+v, want Unavailable", d)
	}
	if d := v.Verify(ctx, []string{"Bearer " + string(cached)}); d.Result != Allowed {
		t.Fatalf("cached key with the store down: %+v, want Allowed", d)
	}
	kt.mu.Lock()
	kt.down = false
	kt.mu.Unlock()
	if d := v.Verify(ctx, []string{"Bearer " + string(uncached)}); d.Result != Allowed {
		t.Fatalf("uncached key after recovery: %+v", d)
	}
}

func TestForget(t *testing.T) {
	v, kt, kr := newVerifier(t)
	k := kt.add(kr, store.Identity{KeyID: "key_1", AccountID: "acct_1", Type: store.Standard, Display: "kg_abcde"})
	h := []string{"Bearer " + string(k)}
	ctx := context.Background()
	if d := v.Verify(ctx, h); d.Result != Allowed {
		t.Fatal(d)
	}
	d := kr.Digest([]byte(k))
	kt.mu.Lock()
	delete(kt.byHash, d)
	kt.mu.Unlock()
	v.Forget(d)
	if got := v.Verify(ctx, h); got.Result != Unauthorized {
		t.Fatalf("after delete and Forget: %+v", got)
	}
	if v.CacheLen() != 1 {
		t.Fatalf("CacheLen = %d", v.CacheLen())
	}
	v.ForgetAll()
	if v.CacheLen() != 0 {
		t.Fatalf("CacheLen after ForgetAll = %d", v.CacheLen())
	}
}

// TestVerifyHitAllocs: `make test` runs it a second time without -race,
// which makes sync.Pool drop items and so allocate.
func TestVerifyHitAllocs(t *testing.T) {
	if raceEnabled {
		t.Log("allocation counts are checked in the run without -race")
		return
	}
	v, kt, kr := newVerifier(t)
	v.usage = NewUsage() // marking last use is part of the hit path
	k := kt.add(kr, store.Identity{KeyID: "key_1", AccountID: "acct_1", Type: store.Standard, Display: "kg_abcde"})
	ctx := context.Background()
	for _, h := range [][]string{{"Basic " + b64(string(k)+":")}, {"Bearer " + string(k)}} {
		v.Verify(ctx, h)
		if a := testing.AllocsPerRun(200, func() { v.Verify(ctx, h) }); a != 0 {
			t.Errorf("Verify(%q) on a hit allocates %v times", h[0][:8], a)
		}
	}
}

// BenchmarkVerifyHit is the request check on a cache hit, in the form the
// official clients send: Basic with the key as user name.
func BenchmarkVerifyHit(b *testing.B) {
	v, kt, kr := newVerifier(b)
	v.usage = NewUsage()
	k := kt.add(kr, store.Identity{KeyID: "key_1", AccountID: "acct_1", Type: store.Restricted, ServerID: "abcd1234", Display: "kg_abcde"})
	h := []string{"Basic " + b64(string(k)+":")}
	ctx := context.Background()
	v.Verify(ctx, h)
	b.ReportAllocs()
	for b.Loop() {
		if v.Verify(ctx, h).Result != Allowed {
			b.Fatal("not allowed")
		}
	}
}

func BenchmarkVerifyHitParallel(b *testing.B) {
	v, kt, kr := newVerifier(b)
	k := kt.add(kr, store.Identity{KeyID: "key_1", AccountID: "acct_1", Type: store.Standard, Display: "kg_abcde"})
	h := []string{"Bearer " + string(k)}
	v.Verify(context.Background(), h)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			v.Verify(context.Background(), h)
		}
	})
}

func BenchmarkVerifyMalformed(b *testing.B) {
	v, _, _ := newVerifier(b)
	h := []string{"Bearer kg_thisisnotakeyatallbutlookslikeone000"}
	b.ReportAllocs()
	for b.Loop() {
		v.Verify(context.Background(), h)
	}
}
