package cache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var testConfig = Config{Size: 128, TTL: time.Minute, NegativeTTL: 10 * time.Second, FetchTimeout: time.Second}

// source is a fake source of truth whose fetches can be held open.
type source struct {
	mu      sync.Mutex
	data    map[string]int
	calls   atomic.Int64
	gate    chan struct{} // when non-nil, fetches wait on it
	entered chan struct{} // when non-nil, receives once per fetch started
	err     error
}

func (s *source) fetch(ctx context.Context, k string) (int, bool, error) {
	s.calls.Add(1)
	// Read before waiting: the point of the race tests is a read that
	// happens before a concurrent change and returns after it.
	s.mu.Lock()
	v, ok := s.data[k]
	err, gate := s.err, s.gate
	s.mu.Unlock()
	if s.entered != nil {
		s.entered <- struct{}{}
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return 0, false, ctx.Err()
		}
	}
	return v, ok, err
}

func (s *source) setGate(g chan struct{}) { s.mu.Lock(); s.gate = g; s.mu.Unlock() }

func (s *source) set(k string, v int, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ok {
		s.data[k] = v
	} else {
		delete(s.data, k)
	}
}

func newTest(t *testing.T, cfg Config) (*Cache[string, int], *source, *fakeClock) {
	t.Helper()
	src := &source{data: map[string]int{"a": 1}}
	c, err := New(cfg, src.fetch)
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	c.now = clk.Now
	return c, src, clk
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeClock) Now() time.Time          { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeClock) Advance(d time.Duration) { f.mu.Lock(); f.t = f.t.Add(d); f.mu.Unlock() }

func mustLoad(t *testing.T, c *Cache[string, int], k string, wantV int, wantFound bool, wantO Outcome) {
	t.Helper()
	v, found, o, err := c.Load(context.Background(), k)
	if err != nil || v != wantV || found != wantFound || o != wantO {
		t.Fatalf("Load(%q) = %d, %v, %v, %v; want %d, %v, %v, nil", k, v, found, o, err, wantV, wantFound, wantO)
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	for _, cfg := range []Config{{}, {Size: 1, TTL: 1, NegativeTTL: 1}, {Size: -1, TTL: 1, NegativeTTL: 1, FetchTimeout: 1}} {
		if _, err := New(cfg, (&source{}).fetch); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestPositiveAndNegativeEntries(t *testing.T) {
	c, src, _ := newTest(t, testConfig)
	mustLoad(t, c, "a", 1, true, Miss)
	mustLoad(t, c, "a", 1, true, Hit)
	mustLoad(t, c, "nope", 0, false, Miss)
	mustLoad(t, c, "nope", 0, false, NegativeHit)
	if got := src.calls.Load(); got != 2 {
		t.Fatalf("fetches = %d, want 2", got)
	}
	if c.Len() != 2 {
		t.Fatalf("Len = %d, want 2", c.Len())
	}
}

func TestTTLs(t *testing.T) {
	c, src, clk := newTest(t, testConfig)
	mustLoad(t, c, "a", 1, true, Miss)
	mustLoad(t, c, "nope", 0, false, Miss)

	clk.Advance(testConfig.NegativeTTL) // negative entry expires, positive lives on
	mustLoad(t, c, "a", 1, true, Hit)
	src.set("nope", 7, true)
	mustLoad(t, c, "nope", 7, true, Miss)

	clk.Advance(testConfig.TTL)
	src.set("a", 2, true)
	mustLoad(t, c, "a", 2, true, Miss)
	if got := src.calls.Load(); got != 4 {
		t.Fatalf("fetches = %d, want 4", got)
	}
}

func TestErrorsAreNotCached(t *testing.T) {
	c, src, _ := newTest(t, testConfig)
	src.err = errors.New("store down")
	if _, _, o, err := c.Load(context.Background(), "a"); err == nil || o != Failed {
		t.Fatalf("Load = %v, %v; want Failed with an error", o, err)
	}
	src.err = nil
	mustLoad(t, c, "a", 1, true, Miss)
}

func TestInvalidate(t *testing.T) {
	c, src, _ := newTest(t, testConfig)
	mustLoad(t, c, "a", 1, true, Miss)
	src.set("a", 0, false)
	c.Invalidate("a")
	mustLoad(t, c, "a", 0, false, Miss)

	// A negative entry goes too: a key created after a lookup works at once.
	src.set("a", 3, true)
	c.Invalidate("a")
	mustLoad(t, c, "a", 3, true, Miss)
}

func TestPurge(t *testing.T) {
	c, _, _ := newTest(t, testConfig)
	mustLoad(t, c, "a", 1, true, Miss)
	c.Purge()
	if c.Len() != 0 {
		t.Fatalf("Len after Purge = %d", c.Len())
	}
	mustLoad(t, c, "a", 1, true, Miss)
}

func TestEvictsLeastRecentlyUsed(t *testing.T) {
	cfg := testConfig
	cfg.Size = 2
	c, src, _ := newTest(t, cfg)
	src.set("b", 2, true)
	src.set("c", 3, true)
	mustLoad(t, c, "a", 1, true, Miss)
	mustLoad(t, c, "b", 2, true, Miss)
	mustLoad(t, c, "a", 1, true, Hit) // a is now the most recent
	mustLoad(t, c, "c", 3, true, Miss)
	mustLoad(t, c, "a", 1, true, Hit)
	mustLoad(t, c, "b", 2, true, Miss)
}

// TestUnknownKeysNeverEvictKnownOnes: a flood of keys that do not exist
// fills the negative entries' own LRU, and every positive entry stays.
func TestUnknownKeysNeverEvictKnownOnes(t *testing.T) {
	cfg := testConfig
	cfg.Size = 2
	c, src, _ := newTest(t, cfg)
	src.set("b", 2, true)
	mustLoad(t, c, "a", 1, true, Miss)
	mustLoad(t, c, "b", 2, true, Miss)
	for i := range 100 {
		mustLoad(t, c, fmt.Sprintf("unknown %d", i), 0, false, Miss)
	}
	mustLoad(t, c, "a", 1, true, Hit)
	mustLoad(t, c, "b", 2, true, Hit)
	mustLoad(t, c, "unknown 99", 0, false, NegativeHit)
	mustLoad(t, c, "unknown 0", 0, false, Miss) // evicted by its own kind
	if c.Len() != 4 {
		t.Fatalf("Len = %d, want 2 positive + 2 negative", c.Len())
	}

	// A key that comes to exist replaces its negative entry, and one that
	// goes away replaces its (expired) positive entry.
	src.set("unknown 99", 99, true)
	c.Invalidate("unknown 99")
	mustLoad(t, c, "unknown 99", 99, true, Miss)
	mustLoad(t, c, "unknown 99", 99, true, Hit)
}

func TestConcurrentMissesShareOneFetch(t *testing.T) {
	c, src, _ := newTest(t, testConfig)
	src.gate = make(chan struct{})
	src.entered = make(chan struct{}, 100) // room for extra fetches, so a bug fails the count instead of hanging

	const n = 50
	var wg sync.WaitGroup
	outcomes := make(chan Outcome, n)
	leader := func() {
		defer wg.Done()
		v, found, o, err := c.Load(context.Background(), "a")
		if err != nil || v != 1 || !found {
			t.Errorf("Load = %d, %v, %v", v, found, err)
		}
		outcomes <- o
	}
	wg.Add(1)
	go leader()
	<-src.entered // the leader's fetch is in flight
	for range n - 1 {
		wg.Add(1)
		go leader()
	}
	waitFor(t, func() bool { return src.calls.Load() == 1 && waiters(c, "a") })
	time.Sleep(20 * time.Millisecond) // let the other goroutines reach the flight
	close(src.gate)
	wg.Wait()
	close(outcomes)

	if got := src.calls.Load(); got != 1 {
		t.Fatalf("fetches = %d, want 1", got)
	}
	count := map[Outcome]int{}
	for o := range outcomes {
		count[o]++
	}
	if count[Miss] != 1 || count[Shared]+count[Hit] != n-1 {
		t.Fatalf("outcomes = %v, want one miss and the rest shared or hits", count)
	}
}

// TestInvalidateDuringFillIsNotUndone is the revocation race: a lookup reads
// the key, the key is deleted and invalidated, and only then does the lookup
// return. Its stale answer must not land in the cache.
func TestInvalidateDuringFillIsNotUndone(t *testing.T) {
	c, src, _ := newTest(t, testConfig)
	gate := make(chan struct{})
	src.gate = gate
	src.entered = make(chan struct{}, 2)

	done := make(chan struct{})
	go func() {
		defer close(done)
		// The fill read "a" before the delete; its caller may see it.
		if v, found, _, err := c.Load(context.Background(), "a"); err != nil || !found || v != 1 {
			t.Errorf("in-flight Load = %d, %v, %v", v, found, err)
		}
	}()
	<-src.entered
	src.set("a", 0, false) // the delete commits
	c.Invalidate("a")      // and is announced

	// A request after the delete must not join the stale fill.
	src.setGate(nil)
	mustLoad(t, c, "a", 0, false, Miss)

	// The stale fill completes last and must not resurrect the key.
	close(gate)
	<-done
	mustLoad(t, c, "a", 0, false, NegativeHit)
}

func TestWaiterContextCancelled(t *testing.T) {
	c, src, _ := newTest(t, testConfig)
	gate := make(chan struct{})
	src.gate = gate
	src.entered = make(chan struct{}, 1)
	go c.Load(context.Background(), "a")
	<-src.entered

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, o, err := c.Load(ctx, "a"); !errors.Is(err, context.Canceled) || o != Failed {
		t.Fatalf("Load with a cancelled context = %v, %v", o, err)
	}
	close(gate)
}

func TestLeaderCancellationDoesNotFailTheFill(t *testing.T) {
	c, src, _ := newTest(t, testConfig)
	gate := make(chan struct{})
	src.gate = gate
	src.entered = make(chan struct{}, 1)

	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() { _, _, _, err := c.Load(ctx, "a"); res <- err }()
	<-src.entered
	cancel() // the leading request goes away
	close(gate)
	if err := <-res; err != nil {
		t.Fatalf("leader Load = %v; its fill should run detached", err)
	}
	mustLoad(t, c, "a", 1, true, Hit)
}

func TestFetchTimeout(t *testing.T) {
	cfg := testConfig
	cfg.FetchTimeout = 10 * time.Millisecond
	c, src, _ := newTest(t, cfg)
	src.gate = make(chan struct{}) // never opened
	if _, _, o, err := c.Load(context.Background(), "a"); !errors.Is(err, context.DeadlineExceeded) || o != Failed {
		t.Fatalf("Load = %v, %v; want a deadline error", o, err)
	}
}

// TestRace hammers every operation at once; run it under -race. The
// invariant: after the last delete is invalidated, nothing brings it back.
func TestRace(t *testing.T) {
	c, src, _ := newTest(t, Config{Size: 8, TTL: time.Minute, NegativeTTL: time.Minute, FetchTimeout: time.Second})
	c.now = time.Now
	keys := []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j"}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				k := keys[(i+j)%len(keys)]
				switch j % 7 {
				case 0:
					src.set(k, j, j%2 == 0)
					c.Invalidate(k)
				case 5:
					if j%70 == 5 {
						c.Purge()
					}
				default:
					c.Load(context.Background(), k)
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()

	for _, k := range keys {
		src.set(k, 0, false)
		c.Invalidate(k)
		mustLoad(t, c, k, 0, false, Miss)
	}
}

func waiters(c *Cache[string, int], k string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.flights[k]
	return ok
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func BenchmarkLoadHit(b *testing.B) {
	c, err := New(testConfig, (&source{data: map[string]int{"a": 1}}).fetch)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	c.Load(ctx, "a")
	b.ReportAllocs()
	for b.Loop() {
		if _, found, _, _ := c.Load(ctx, "a"); !found {
			b.Fatal("miss")
		}
	}
}

// TestStaleBound: while distrusted, an entry is used only within the bound
// of its fill or of the start of the distrust; trusted again, as before.
func TestStaleBound(t *testing.T) {
	cfg := testConfig
	cfg.StaleBound = 5 * time.Second
	c, src, clk := newTest(t, cfg)
	mustLoad(t, c, "a", 1, true, Miss) // filled at t0
	clk.Advance(10 * time.Second)

	c.Distrust(clk.Now()) // the listener went down at t0+10s
	mustLoad(t, c, "a", 1, true, Hit)
	clk.Advance(4 * time.Second)
	mustLoad(t, c, "a", 1, true, Hit) // 4s into the outage
	clk.Advance(2 * time.Second)
	src.set("a", 2, true)
	mustLoad(t, c, "a", 2, true, Miss) // 6s: past the bound, asked again
	mustLoad(t, c, "a", 2, true, Hit)  // freshly filled: trusted for the bound
	clk.Advance(6 * time.Second)
	mustLoad(t, c, "a", 2, true, Miss)

	c.Distrust(clk.Now().Add(time.Hour)) // a later distrust does not move the start
	if got := c.Distrusted(); !got.Equal(clk.Now().Add(-12 * time.Second)) {
		t.Fatalf("Distrusted = %v", got)
	}
	c.Trust()
	clk.Advance(30 * time.Second)
	mustLoad(t, c, "a", 2, true, Hit) // trusted: only the TTL counts
	if !c.Distrusted().IsZero() {
		t.Fatal("still distrusted after Trust")
	}
}

// TestTTLFollowing: while trusted, a positive entry lives for
// TTLFollowing; distrusted, the same entry is judged by TTL and the
// staleness bound again, however long it was trusted before; negative
// entries keep their own TTL throughout.
func TestTTLFollowing(t *testing.T) {
	cfg := testConfig
	cfg.StaleBound = 5 * time.Second
	cfg.TTLFollowing = time.Hour
	c, src, clk := newTest(t, cfg)
	mustLoad(t, c, "a", 1, true, Miss) // filled at t0, trusted
	mustLoad(t, c, "nope", 0, false, Miss)
	clk.Advance(30 * time.Minute)
	mustLoad(t, c, "a", 1, true, Hit) // past TTL, within TTLFollowing
	src.set("nope", 3, true)
	mustLoad(t, c, "nope", 3, true, Miss) // the negative entry's TTL is its own

	c.Distrust(clk.Now()) // the listener went down: TTL applies again
	src.set("a", 2, true)
	mustLoad(t, c, "a", 2, true, Miss) // filled 30m ago: past TTL
	clk.Advance(4 * time.Second)
	mustLoad(t, c, "a", 2, true, Hit) // within the staleness bound
	clk.Advance(2 * time.Second)
	src.set("a", 4, true)
	mustLoad(t, c, "a", 4, true, Miss) // past it

	c.Trust() // following again: the entry filled while distrusted lives on
	clk.Advance(59 * time.Minute)
	mustLoad(t, c, "a", 4, true, Hit)
	clk.Advance(2 * time.Minute)
	src.set("a", 5, true)
	mustLoad(t, c, "a", 5, true, Miss) // past TTLFollowing
	if got := src.calls.Load(); got != 6 {
		t.Fatalf("fetches = %d, want 6", got)
	}

	// A TTLFollowing shorter than TTL shortens nothing.
	cfg.TTLFollowing = time.Second
	c, _, clk = newTest(t, cfg)
	mustLoad(t, c, "a", 1, true, Miss)
	clk.Advance(cfg.TTL - time.Second)
	mustLoad(t, c, "a", 1, true, Hit)
}

// TestEntryAgeCountsFromTheQuery: a slow query's answer may be stale by
// the time it returns, so its age counts from when the query started.
func TestEntryAgeCountsFromTheQuery(t *testing.T) {
	cfg := testConfig
	cfg.StaleBound = 5 * time.Second
	src := &source{data: map[string]int{"a": 1}}
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	c, err := New(cfg, func(ctx context.Context, k string) (int, bool, error) {
		clk.Advance(3 * time.Second) // the query takes 3 s
		return src.fetch(ctx, k)
	})
	if err != nil {
		t.Fatal(err)
	}
	c.now = clk.Now
	c.Distrust(clk.Now())
	mustLoad(t, c, "a", 1, true, Miss) // started at t0, returned at t0+3s
	clk.Advance(2500 * time.Millisecond)
	mustLoad(t, c, "a", 1, true, Miss) // t0+5.5s: past the bound from the query's start
}

// newTagged is newTest with values tagged by their value: "a" and "b"
// holding the same number stand for the same thing.
func newTagged(t *testing.T, cfg Config) (*Cache[string, int], *source) {
	t.Helper()
	src := &source{data: map[string]int{"a": 1, "b": 2, "a2": 1}}
	c, err := NewTagged(cfg, src.fetch, func(v int) string { return fmt.Sprint(v) })
	if err != nil {
		t.Fatal(err)
	}
	return c, src
}

func TestInvalidateTag(t *testing.T) {
	c, src := newTagged(t, testConfig)
	mustLoad(t, c, "a", 1, true, Miss)
	mustLoad(t, c, "b", 2, true, Miss)
	src.set("a", 0, false)
	c.InvalidateTag("1")
	mustLoad(t, c, "a", 0, false, Miss)
	mustLoad(t, c, "b", 2, true, Hit)
	c.InvalidateTag("nothing") // unknown tags are fine
	mustLoad(t, c, "b", 2, true, Hit)
}

func TestInvalidateTagDuringFillIsNotUndone(t *testing.T) {
	c, src := newTagged(t, testConfig)
	gate := make(chan struct{})
	src.gate = gate
	src.entered = make(chan struct{}, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Load(context.Background(), "a")
	}()
	<-src.entered
	src.set("a", 0, false)
	c.InvalidateTag("1") // the fill has no entry yet: only the epoch can stop it
	close(gate)
	<-done
	src.setGate(nil)
	mustLoad(t, c, "a", 0, false, Miss)
}

func TestTagsFollowEvictions(t *testing.T) {
	cfg := testConfig
	cfg.Size = 8
	c, src := newTagged(t, cfg)
	for i := range 100 {
		src.set(fmt.Sprint("k", i), 100+i, true)
		mustLoad(t, c, fmt.Sprint("k", i), 100+i, true, Miss)
	}
	c.Invalidate("k99")
	c.mu.Lock()
	n := len(c.tagged)
	c.mu.Unlock()
	if n != cfg.Size-1 {
		t.Fatalf("%d tags kept for %d entries", n, c.lru.Len())
	}
	// A cache key whose value changes tag keeps only the new tag.
	mustLoad(t, c, "a", 1, true, Miss)
	src.set("a", 5, true)
	c.Invalidate("a")
	mustLoad(t, c, "a", 5, true, Miss)
	c.InvalidateTag("1")
	mustLoad(t, c, "a", 5, true, Hit)
	c.Purge()
	if len(c.tagged) != 0 {
		t.Fatalf("%d tags kept after Purge", len(c.tagged))
	}
}

func TestLoadWith(t *testing.T) {
	c, src, _ := newTest(t, testConfig)
	other := func(ctx context.Context, k string) (int, bool, error) { return 42, true, nil }
	v, found, o, err := c.LoadWith(context.Background(), "x", other)
	if err != nil || !found || v != 42 || o != Miss {
		t.Fatalf("LoadWith = %d, %v, %v, %v", v, found, o, err)
	}
	mustLoad(t, c, "x", 42, true, Hit)
	if src.calls.Load() != 0 {
		t.Fatal("LoadWith used the cache's own fetch")
	}
}
