package auth

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/store"
)

func TestUsage(t *testing.T) {
	u := NewUsage()
	a := newIdentity(store.Identity{KeyID: "key_a"})
	b := newIdentity(store.Identity{KeyID: "key_b"})
	t0 := time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC).UnixNano()
	u.mark(a, t0)
	u.mark(a, t0+int64(500*time.Millisecond)) // same second: no work
	u.mark(b, t0+int64(2*time.Second))
	got := u.Drain()
	if len(got) != 2 || !got["key_a"].Equal(time.Unix(0, t0)) || !got["key_b"].Equal(time.Unix(0, t0).Add(2*time.Second)) {
		t.Fatalf("Drain = %v", got)
	}
	if u.Drain() != nil {
		t.Fatal("a second Drain returned times again")
	}
	u.mark(a, t0+int64(5*time.Second))
	u.Restore(map[string]time.Time{"key_a": time.Unix(0, t0), "key_c": time.Unix(0, t0)})
	got = u.Drain()
	if !got["key_a"].Equal(time.Unix(0, t0).Add(5*time.Second)) || len(got) != 2 {
		t.Fatalf("Restore lost a later time or a failed write: %v", got)
	}
}

func TestVerifyMarksUsage(t *testing.T) {
	v, kt, kr := newVerifier(t)
	v.usage = NewUsage()
	k := kt.add(kr, store.Identity{KeyID: "key_1", AccountID: "acct_1", Type: store.Standard, Display: "kg_abcde"})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 100 {
				v.Verify(context.Background(), []string{"Bearer " + string(k)})
			}
		})
	}
	wg.Wait()
	if got := v.usage.Drain(); len(got) != 1 || time.Since(got["key_1"]) > 2*time.Second {
		t.Fatalf("usage after requests = %v", got)
	}
	v.Verify(context.Background(), []string{"Bearer kg_nope"})
	if got := v.usage.Drain(); got != nil {
		t.Fatalf("a refused key was marked: %v", got)
	}
}
