package auth

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/store"
)

// clock is a settable time for an Activity.
type clock struct{ t atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.set(t)
	return c
}
func (c *clock) set(t time.Time)     { c.t.Store(t.UnixNano()) }
func (c *clock) now() time.Time      { return time.Unix(0, c.t.Load()) }
func (c *clock) add(d time.Duration) { c.t.Add(int64(d)) }

var (
	t10        = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)
	standardID = store.Identity{KeyID: "key_s", AccountID: "acct_1", Type: store.Standard, Display: "kg_aaaaa"}
	restrictID = store.Identity{KeyID: "key_r", AccountID: "acct_1", Type: store.Restricted, ServerID: "abcd1234", Display: "kg_bbbbb"}
)

// sorted orders drained hours by key and hour, and each hour's values, so
// that tests compare them whole.
func sorted(hours []store.ActivityHour) []store.ActivityHour {
	out, err := store.PrepareActivity(hours)
	if err != nil {
		panic(err)
	}
	return out
}

func hourString(hs []store.ActivityHour) string {
	var b strings.Builder
	for _, h := range hs {
		fmt.Fprintf(&b, "%s %s allowed=%d refused=%d others=%v\n", h.KeyID, h.Hour.Format("15:04"), h.Allowed, h.Refused, h.Others)
		for _, v := range h.Values {
			fmt.Fprintf(&b, "  %s %q %d\n", v.Kind, v.Value, v.Requests)
		}
	}
	return b.String()
}

func checkHours(t *testing.T, got, want []store.ActivityHour) {
	t.Helper()
	if g, w := hourString(sorted(got)), hourString(sorted(want)); g != w {
		t.Fatalf("drained:\n%s\nwant:\n%s", g, w)
	}
}

func TestActivityRecord(t *testing.T) {
	c := newClock(t10.Add(5 * time.Minute))
	a := NewActivity(ActivityConfig{Now: c.now})
	s, r := NewIdentity(standardID), NewIdentity(restrictID)
	a.Record(s, Use{Client: "203.0.113.9", Agent: "mailosaur-node/11.1.1", Server: "abcd1234"})
	a.Record(s, Use{Client: "203.0.113.9", Agent: "mailosaur-node/11.1.1", Server: "efgh5678"})
	a.Record(s, Use{Refused: true, Client: "2001:db8::1", Agent: "", Server: "abcd1234"})
	a.Record(s, Use{Server: "../etc"}) // not a server id: not kept; no client
	a.Record(r, Use{Client: "203.0.113.9", Agent: "mailosaur-python/7.2.0", Server: "abcd1234"})
	a.Record(r, Use{Refused: true, Client: "203.0.113.9", Agent: "mailosaur-python/7.2.0", Server: "other999"})
	checkHours(t, a.Drain(), []store.ActivityHour{
		{KeyID: "key_s", Hour: t10, Allowed: 3, Refused: 1, Values: []store.ActivityValue{
			{Kind: store.ActivityAddress, Value: "203.0.113.9", Requests: 2},
			{Kind: store.ActivityAddress, Value: "2001:db8::1", Requests: 1},
			{Kind: store.ActivityAgent, Value: "mailosaur-node/11.1.1", Requests: 2},
			{Kind: store.ActivityAgent, Value: "", Requests: 2},
			{Kind: store.ActivityServer, Value: "abcd1234", Requests: 2},
			{Kind: store.ActivityServer, Value: "efgh5678", Requests: 1},
		}},
		// A restricted key's servers are its own: not kept.
		{KeyID: "key_r", Hour: t10, Allowed: 1, Refused: 1, Values: []store.ActivityValue{
			{Kind: store.ActivityAddress, Value: "203.0.113.9", Requests: 2},
			{Kind: store.ActivityAgent, Value: "mailosaur-python/7.2.0", Requests: 2},
		}},
	})
	if got := a.Drain(); got != nil {
		t.Fatalf("a second Drain returned %v", got)
	}
	// The drained record, which the cached identity points to until its
	// next request, keeps nothing.
	if ka := s.activity.Load(); ka == nil || ka.hours != nil {
		t.Fatalf("a drained record holds %v", ka)
	}
}

func TestActivityCaps(t *testing.T) {
	a := NewActivity(ActivityConfig{Now: newClock(t10).now})
	id := NewIdentity(standardID)
	for i := range 1000 {
		a.Record(id, Use{
			Client: fmt.Sprintf("198.51.100.%d", i%250),
			Agent:  fmt.Sprintf("flood/%d", i),
			Server: fmt.Sprintf("srv%05d", i%40),
		})
	}
	hs := a.Drain()
	if len(hs) != 1 {
		t.Fatalf("drained %d hours", len(hs))
	}
	h := hs[0]
	var kept [store.NumActivityKinds]int
	var requests [store.NumActivityKinds]int64
	for _, v := range h.Values {
		kept[v.Kind]++
		requests[v.Kind] += v.Requests
	}
	for k := range store.NumActivityKinds {
		if kept[k] != store.ActivityCap(k) || requests[k]+h.Others[k] != 1000 {
			t.Errorf("%v: %d values kept with %d requests, others %d; want %d values and 1000 requests in all",
				k, kept[k], requests[k], h.Others[k], store.ActivityCap(k))
		}
	}
	// The first values seen are kept, with every request they made.
	if h.Values[0].Value != "198.51.100.0" || h.Values[0].Requests != 4 {
		t.Errorf("first address = %+v, want 198.51.100.0 with 4 requests", h.Values[0])
	}
}

func TestActivityCleansValues(t *testing.T) {
	a := NewActivity(ActivityConfig{Now: newClock(t10).now})
	id := NewIdentity(standardID)
	long := "mailosaur-node/11.1.1 " + strings.Repeat("x", 5000)
	agents := []string{
		long,
		long + "another tail", // the same once cut: one value
		"bad\xff\xfe bytes\x00 and\r\n controls\u202e",
		`<script>alert("x")</script>`,
		"'; drop table api_keys; --",
	}
	for _, ag := range agents {
		a.Record(id, Use{Agent: ag, Client: "192.0.2.1\x00<b>"})
	}
	h := a.Drain()[0]
	got := map[string]int64{}
	for _, v := range h.Values {
		if len(v.Value) > store.MaxActivityValueLen {
			t.Errorf("%v of %d bytes kept", v.Kind, len(v.Value))
		}
		got[v.Kind.String()+" "+v.Value] = v.Requests
	}
	want := map[string]int64{
		"agent " + long[:store.MaxAgentLen]:                                2,
		"agent bad\uFFFD\uFFFD bytes\uFFFD and\uFFFD\uFFFD controls\uFFFD": 1,
		`agent <script>alert("x")</script>`:                                1,
		"agent '; drop table api_keys; --":                                 1,
		"address 192.0.2.1\uFFFD<b>":                                       5,
	}
	if !maps.Equal(got, want) {
		t.Fatalf("values = %v\nwant %v", got, want)
	}
	if _, err := store.PrepareActivity([]store.ActivityHour{h}); err != nil {
		t.Fatalf("the store refuses what was gathered: %v", err)
	}
}

func TestActivityHours(t *testing.T) {
	c := newClock(t10.Add(59*time.Minute + 59*time.Second))
	a := NewActivity(ActivityConfig{Now: c.now})
	id := NewIdentity(standardID)
	a.Record(id, Use{Agent: "a"})
	c.add(time.Second) // 11:00:00
	a.Record(id, Use{Agent: "b"})
	a.Record(id, Use{Agent: "b"})
	c.add(-time.Millisecond) // a request that began before the turn
	a.Record(id, Use{Agent: "a", Refused: true})
	t11 := t10.Add(time.Hour)
	checkHours(t, a.Drain(), []store.ActivityHour{
		{KeyID: "key_s", Hour: t10, Allowed: 1, Refused: 1, Values: []store.ActivityValue{{Kind: store.ActivityAgent, Value: "a", Requests: 2}}},
		{KeyID: "key_s", Hour: t11, Allowed: 2, Values: []store.ActivityValue{{Kind: store.ActivityAgent, Value: "b", Requests: 2}}},
	})
}

// TestActivityConcurrent: counts are exact with requests recorded from
// many goroutines while another drains: each request is in exactly one
// drain.
func TestActivityConcurrent(t *testing.T) {
	c := newClock(t10)
	a := NewActivity(ActivityConfig{Now: c.now})
	ids := []*Identity{NewIdentity(standardID), NewIdentity(restrictID)}
	const workers, perWorker = 8, 2000
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		drained []store.ActivityHour
		stop    = make(chan struct{})
		drainer sync.WaitGroup
	)
	drainer.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			hs := a.Drain()
			mu.Lock()
			drained = append(drained, hs...)
			mu.Unlock()
			runtime.Gosched() // drain while the workers record, whatever the timing
		}
	})
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				if i == perWorker/2 && w == 0 {
					c.add(time.Hour)
				}
				a.Record(ids[i%2], Use{Refused: i%5 == 0, Client: fmt.Sprint("192.0.2.", w), Agent: "mailosaur-go/1.0", Server: "abcd1234"})
			}
		})
	}
	wg.Wait()
	close(stop)
	drainer.Wait()
	drained = append(drained, a.Drain()...)
	var allowed, refused, addresses, agents int64
	for _, h := range drained {
		allowed += h.Allowed
		refused += h.Refused
		for _, v := range h.Values {
			switch v.Kind {
			case store.ActivityAddress:
				addresses += v.Requests
			case store.ActivityAgent:
				agents += v.Requests
			}
		}
	}
	const total = workers * perWorker
	if allowed+refused != total || refused != total/5 || addresses != total || agents != total {
		t.Fatalf("allowed %d, refused %d, addresses %d, agents %d; want %d requests, %d refused", allowed, refused, addresses, agents, total, total/5)
	}
}

func TestActivityMaxKeys(t *testing.T) {
	a := NewActivity(ActivityConfig{MaxKeys: 2, Now: newClock(t10).now})
	ids := []*Identity{
		NewIdentity(store.Identity{KeyID: "key_1", Type: store.Standard}),
		NewIdentity(store.Identity{KeyID: "key_2", Type: store.Standard}),
		NewIdentity(store.Identity{KeyID: "key_3", Type: store.Standard}),
	}
	for range 3 {
		for _, id := range ids {
			a.Record(id, Use{})
		}
	}
	if hs := a.Drain(); len(hs) != 2 || a.Dropped() != 3 {
		t.Fatalf("drained %d keys, dropped %d requests; want 2 keys and the third's 3 requests dropped", len(hs), a.Dropped())
	}
	// A new round tracks the key it could not before.
	a.Record(ids[2], Use{})
	if hs := a.Drain(); len(hs) != 1 || hs[0].KeyID != "key_3" || a.Dropped() != 3 {
		t.Fatalf("next round: %v, dropped %d", hs, a.Dropped())
	}
}

func TestActivityRestore(t *testing.T) {
	c := newClock(t10)
	a := NewActivity(ActivityConfig{Now: c.now})
	id := NewIdentity(standardID)
	for i := range 12 {
		a.Record(id, Use{Agent: fmt.Sprint("agent/", i)})
	}
	failed := a.Drain() // the write fails…
	a.Record(id, Use{Agent: "agent/0"})
	a.Record(id, Use{Agent: "late/1"}) // over the cap after the restore
	a.Restore(failed)
	hs := a.Drain()
	if len(hs) != 1 {
		t.Fatalf("drained %d hours", len(hs))
	}
	h := hs[0]
	if h.Allowed != 14 || len(h.Values) != store.MaxActivityAgents || h.Others[store.ActivityAgent] != 3 {
		t.Fatalf("after restore: %s", hourString([]store.ActivityHour{h}))
	}
	if i := slices.IndexFunc(h.Values, func(v store.ActivityValue) bool { return v.Value == "agent/0" }); i < 0 || h.Values[i].Requests != 2 {
		t.Fatalf("agent/0 not counted twice: %s", hourString(hs))
	}

	// Restoring into a full Activity drops and counts.
	full := NewActivity(ActivityConfig{MaxKeys: 1, Now: c.now})
	full.Record(NewIdentity(restrictID), Use{})
	full.Restore(hs)
	if full.Dropped() != 14 {
		t.Fatalf("dropped %d, want the 14 requests restored past MaxKeys", full.Dropped())
	}
}

// TestActivityRestoreHours: a key keeps its 24 latest hours while writes
// fail.
func TestActivityRestoreHours(t *testing.T) {
	a := NewActivity(ActivityConfig{Now: newClock(t10).now})
	var hours []store.ActivityHour
	for i := range 30 {
		hours = append(hours, store.ActivityHour{KeyID: "key_s", Hour: t10.Add(time.Duration(i) * time.Hour), Allowed: 1})
	}
	a.Restore(hours)
	got := sorted(a.Drain())
	if len(got) != maxActivityHours || !got[0].Hour.Equal(t10.Add(6*time.Hour)) || a.Dropped() != 6 {
		t.Fatalf("kept %d hours from %v, dropped %d", len(got), got[0].Hour, a.Dropped())
	}
}

// TestActivityTwoActivities: an identity recorded by two Activities (two
// runtimes) is counted in each.
func TestActivityTwoActivities(t *testing.T) {
	a, b := NewActivity(ActivityConfig{}), NewActivity(ActivityConfig{})
	id := NewIdentity(standardID)
	a.Record(id, Use{})
	b.Record(id, Use{})
	a.Record(id, Use{})
	if ha, hb := a.Drain(), b.Drain(); len(ha) != 1 || ha[0].Allowed != 2 || len(hb) != 1 || hb[0].Allowed != 1 {
		t.Fatalf("a %v, b %v", ha, hb)
	}
}

func TestActivityRecordAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	a := NewActivity(ActivityConfig{})
	id := NewIdentity(standardID)
	flood := strings.Repeat("\xff", 1000)
	for i := range 30 { // past the caps
		a.Record(id, Use{Client: fmt.Sprint("192.0.2.", i), Agent: fmt.Sprint("agent/", i), Server: fmt.Sprintf("srv%05d", i)})
	}
	a.Record(id, Use{Agent: flood})
	for name, u := range map[string]Use{
		"kept":       {Client: "192.0.2.1", Agent: "agent/1", Server: "srv00001"},
		"past caps":  {Client: "192.0.2.29", Agent: "agent/29", Server: "srv00029"},
		"cleaned":    {Agent: flood},
		"new unkept": {Client: "198.51.100.7", Agent: "other/1", Server: "zzz"},
		"no values":  {},
		"refused":    {Refused: true},
	} {
		if n := testing.AllocsPerRun(1000, func() { a.Record(id, u) }); n != 0 {
			t.Errorf("%s: %v allocations per request", name, n)
		}
	}
}

// BenchmarkActivityRecord is the request path's cost of recording a
// request of a key already tracked, its values kept, just after Verify
// noted the second it checked the key in.
func BenchmarkActivityRecord(b *testing.B) {
	a := NewActivity(ActivityConfig{})
	id := NewIdentity(standardID)
	id.lastMarked.Store(time.Now().Unix())
	u := Use{Client: "203.0.113.9", Agent: "mailosaur-node/11.1.1", Server: "abcd1234"}
	a.Record(id, u)
	b.ReportAllocs()
	for b.Loop() {
		a.Record(id, u)
	}
}

func BenchmarkActivityRecordParallel(b *testing.B) {
	a := NewActivity(ActivityConfig{})
	id := NewIdentity(standardID)
	id.lastMarked.Store(time.Now().Unix())
	u := Use{Client: "203.0.113.9", Agent: "mailosaur-node/11.1.1", Server: "abcd1234"}
	a.Record(id, u)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			a.Record(id, u)
		}
	})
}
