package storetest

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/store"
)

// activityString renders a KeyActivity whole, for exact comparisons.
func activityString(a store.KeyActivity) string {
	var b strings.Builder
	for _, h := range a.Hours {
		fmt.Fprintf(&b, "%s allowed=%d refused=%d\n", h.Hour.Format(time.RFC3339), h.Allowed, h.Refused)
	}
	for _, v := range a.Values {
		fmt.Fprintf(&b, "%s %q requests=%d last=%s\n", v.Kind, v.Value, v.Requests, v.LastSeen.Format(time.RFC3339))
	}
	fmt.Fprintf(&b, "others=%v\n", a.Others)
	return b.String()
}

func checkActivity(t *testing.T, what string, got, want store.KeyActivity) {
	t.Helper()
	if g, w := activityString(got), activityString(want); g != w {
		t.Errorf("%s:\n%s\nwant:\n%s", what, g, w)
	}
	for _, h := range got.Hours {
		if h.Hour.Location() != time.UTC {
			t.Errorf("%s: hour %v is not UTC", what, h.Hour)
		}
	}
}

func keyActivity(t *testing.T, s store.Store, accountID, keyID string, since time.Time) store.KeyActivity {
	t.Helper()
	a, err := s.KeyActivity(t.Context(), accountID, keyID, since)
	if err != nil {
		t.Fatalf("KeyActivity: %v", err)
	}
	return a
}

func recordActivity(t *testing.T, s store.Store, hours ...store.ActivityHour) {
	t.Helper()
	if err := s.RecordActivity(t.Context(), hours); err != nil {
		t.Fatalf("RecordActivity: %v", err)
	}
}

// testActivity: activity is read back as written, counts add up across
// flushes, and it is read only through the key's account.
func testActivity(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a, b := f.account("A"), f.account("B")
	k, _ := f.createKey(a.ID, "k")
	other, _ := f.createKey(a.ID, "other")
	h0 := store.ActivityHourOf(time.Now()).Add(-3 * time.Hour)
	h1 := h0.Add(time.Hour)
	first := []store.ActivityHour{
		{KeyID: k.ID, Hour: h0, Allowed: 5, Refused: 2, Others: [store.NumActivityKinds]int64{1, 0, 3}, Values: []store.ActivityValue{
			{Kind: store.ActivityAddress, Value: "203.0.113.9", Requests: 6},
			{Kind: store.ActivityAddress, Value: "2001:db8::1", Requests: 1},
			{Kind: store.ActivityAgent, Value: "mailosaur-node/11.1.1", Requests: 4},
			{Kind: store.ActivityAgent, Value: "", Requests: 3},
			{Kind: store.ActivityServer, Value: "abcd1234", Requests: 4},
		}},
		{KeyID: k.ID, Hour: h1, Allowed: 1, Values: []store.ActivityValue{
			{Kind: store.ActivityAddress, Value: "203.0.113.9", Requests: 1},
			{Kind: store.ActivityAgent, Value: "mailosaur-python/7.2.0", Requests: 1},
		}},
		{KeyID: other.ID, Hour: h1, Allowed: 9},
	}
	recordActivity(t, s, first...)
	if err := s.RecordActivity(ctx, nil); err != nil {
		t.Fatalf("recording nothing: %v", err)
	}
	want := store.KeyActivity{
		Hours: []store.ActivityCount{{Hour: h0, Allowed: 5, Refused: 2}, {Hour: h1, Allowed: 1}},
		Values: []store.ActivitySeen{
			{Kind: store.ActivityAddress, Value: "203.0.113.9", Requests: 7, LastSeen: h1},
			{Kind: store.ActivityAddress, Value: "2001:db8::1", Requests: 1, LastSeen: h0},
			{Kind: store.ActivityAgent, Value: "mailosaur-python/7.2.0", Requests: 1, LastSeen: h1},
			{Kind: store.ActivityAgent, Value: "mailosaur-node/11.1.1", Requests: 4, LastSeen: h0},
			{Kind: store.ActivityAgent, Value: "", Requests: 3, LastSeen: h0},
			{Kind: store.ActivityServer, Value: "abcd1234", Requests: 4, LastSeen: h0},
		},
		Others: [store.NumActivityKinds]int64{1, 0, 3},
	}
	checkActivity(t, "KeyActivity", keyActivity(t, s, a.ID, k.ID, h0.Add(59*time.Minute)), want)
	checkActivity(t, "KeyActivity since the second hour", keyActivity(t, s, a.ID, k.ID, h1), store.KeyActivity{
		Hours: []store.ActivityCount{{Hour: h1, Allowed: 1}},
		Values: []store.ActivitySeen{
			{Kind: store.ActivityAddress, Value: "203.0.113.9", Requests: 1, LastSeen: h1},
			{Kind: store.ActivityAgent, Value: "mailosaur-python/7.2.0", Requests: 1, LastSeen: h1},
		},
	})

	// A second flush adds to the first.
	recordActivity(t, s, first...)
	want.Hours = []store.ActivityCount{{Hour: h0, Allowed: 10, Refused: 4}, {Hour: h1, Allowed: 2}}
	for i := range want.Values {
		want.Values[i].Requests *= 2
	}
	want.Others = [store.NumActivityKinds]int64{2, 0, 6}
	checkActivity(t, "KeyActivity after two flushes", keyActivity(t, s, a.ID, k.ID, h0), want)

	// Only through the key's account; a key without activity has none.
	for name, ids := range map[string][2]string{
		"other account": {b.ID, k.ID},
		"unknown key":   {a.ID, "key_nope"},
		"sql":           {a.ID, "' or 1=1 --"},
		"nul":           {a.ID, "key\x00"},
		"empty":         {a.ID, ""},
	} {
		_, err := s.KeyActivity(ctx, ids[0], ids[1], h0)
		wantErr(t, "KeyActivity through "+name, err, store.ErrNotFound)
	}
	fresh, _ := f.createKey(a.ID, "fresh")
	checkActivity(t, "KeyActivity of an unused key", keyActivity(t, s, a.ID, fresh.ID, h0), store.KeyActivity{})
	_, err := s.KeyActivity(ctx, a.ID, k.ID, time.Time{})
	wantErr(t, "KeyActivity since the zero time", err, store.ErrInvalid)
}

// testActivityBadInput: values clients control are stored as cleaned,
// whatever they hold; what is not clean is refused whole.
func testActivityBadInput(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	k, _ := f.createKey(a.ID, "k")
	h := store.ActivityHourOf(time.Now())
	raws := []string{
		`<img src=x onerror="alert(1)">`,
		"'; drop table key_activity; --",
		`\x00 \' " $1 ?1 %s`,
		"binary \x00\x01\xff\xfe\x1b[31m end",
		"mailosaur-java/8.0 " + strings.Repeat("long ", 2000),
		"emoji 🦫 and right-to-left \u202e override",
	}
	act := auth.NewActivity(auth.ActivityConfig{})
	id := auth.NewIdentity(store.Identity{KeyID: k.ID, AccountID: a.ID, Type: store.Standard})
	for _, raw := range raws {
		act.Record(id, auth.Use{Agent: raw, Client: raw, Server: raw})
	}
	recordActivity(t, s, act.Drain()...)
	got := keyActivity(t, s, a.ID, k.ID, h)
	for _, raw := range raws {
		for _, kind := range []store.ActivityKind{store.ActivityAddress, store.ActivityAgent} {
			clean, _ := store.CleanActivityValue(kind, raw)
			found := false
			for _, v := range got.Of(kind) {
				found = found || v.Value == clean && v.Requests == 1
			}
			if !found {
				t.Errorf("%v %q: not read back as %q: %s", kind, raw, clean, activityString(got))
			}
		}
	}
	if len(got.Of(store.ActivityServer)) != 0 {
		t.Errorf("values that are no server ids were kept as servers: %v", got.Of(store.ActivityServer))
	}

	for name, v := range map[string]store.ActivityValue{
		"NUL":       {Kind: store.ActivityAgent, Value: "a\x00b", Requests: 1},
		"too long":  {Kind: store.ActivityAgent, Value: strings.Repeat("a", store.MaxAgentLen+1), Requests: 1},
		"bad UTF-8": {Kind: store.ActivityAddress, Value: "\xff", Requests: 1},
		"bad kind":  {Kind: store.NumActivityKinds, Value: "a", Requests: 1},
		"server":    {Kind: store.ActivityServer, Value: "<b>", Requests: 1},
	} {
		err := s.RecordActivity(ctx, []store.ActivityHour{
			{KeyID: k.ID, Hour: h.Add(-time.Hour), Allowed: 1}, // refused with it
			{KeyID: k.ID, Hour: h, Allowed: 1, Values: []store.ActivityValue{v}},
		})
		wantErr(t, "RecordActivity with a value "+name, err, store.ErrInvalid)
	}
	err := s.RecordActivity(ctx, []store.ActivityHour{{KeyID: k.ID, Hour: h.Add(time.Minute), Allowed: 1}})
	wantErr(t, "RecordActivity mid-hour", err, store.ErrInvalid)
	if after := keyActivity(t, s, a.ID, k.ID, h.Add(-time.Hour)); activityString(after) != activityString(got) {
		t.Errorf("a refused batch wrote something:\n%s", activityString(after))
	}
}

// testActivityInstances: two instances' gatherers record a known number
// of requests of one key, and flush into the store at once, several
// times: every request is counted, and the key's hour holds no more
// distinct values than the caps, though each instance kept its own.
func testActivityInstances(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	a := f.account("A")
	k, _ := f.createKey(a.ID, "k")
	si := store.Identity{KeyID: k.ID, AccountID: a.ID, Type: store.Standard}
	now := time.Now()
	clock := func() time.Time { return now }

	const instances, rounds, perRound = 2, 3, 400
	var wg sync.WaitGroup
	for i := range instances {
		act := auth.NewActivity(auth.ActivityConfig{Now: clock})
		id := auth.NewIdentity(si)
		wg.Go(func() {
			for r := range rounds {
				for n := range perRound {
					act.Record(id, auth.Use{
						Refused: n%4 == 0,
						Client:  fmt.Sprintf("192.0.2.%d", 10*i+n%8),       // 8 of each instance's
						Agent:   fmt.Sprintf("client-%d/%d.%d", i, r, n%6), // 6 of each round
						Server:  fmt.Sprintf("srv%d%04d", i, n%15),         // 15 of each instance's
					})
				}
				if err := s.RecordActivity(t.Context(), act.Drain()); err != nil {
					t.Errorf("instance %d, round %d: %v", i, r, err)
				}
			}
		})
	}
	wg.Wait()
	got := keyActivity(t, s, a.ID, k.ID, now)
	const total = instances * rounds * perRound
	if allowed, refused := got.Totals(); allowed+refused != total || refused != total/4 {
		t.Errorf("allowed %d, refused %d; want %d requests, %d refused", allowed, refused, total, total/4)
	}
	checkCaps(t, got, total)
}

// checkCaps checks that each kind holds at most its cap of values, and
// that they and the others count every request (servers: every request
// names one).
func checkCaps(t *testing.T, got store.KeyActivity, total int64) {
	t.Helper()
	for kind := range store.NumActivityKinds {
		vs := got.Of(kind)
		sum := got.Others[kind]
		for _, v := range vs {
			sum += v.Requests
		}
		if len(vs) > store.ActivityCap(kind) || sum != total {
			t.Errorf("%v: %d values (cap %d), %d requests with the others; want %d", kind, len(vs), store.ActivityCap(kind), sum, total)
		}
	}
}

// testActivityFlood: many writers at once, each with its own capped set of
// distinct agents for the same key and hour, thousands in all: the store
// keeps the cap.
func testActivityFlood(t *testing.T, s store.Store) {
	f := newFixture(t, s)
	a := f.account("A")
	k, _ := f.createKey(a.ID, "k")
	h := store.ActivityHourOf(time.Now())
	const writers, batches = 8, 25
	var (
		wg    sync.WaitGroup
		total atomic.Int64
	)
	for w := range writers {
		wg.Go(func() {
			for b := range batches {
				ah := store.ActivityHour{KeyID: k.ID, Hour: h, Allowed: 20, Others: [store.NumActivityKinds]int64{0, 10, 0}}
				for i := range store.MaxActivityAgents {
					ah.Values = append(ah.Values,
						store.ActivityValue{Kind: store.ActivityAgent, Value: fmt.Sprintf("flood/%d/%d/%d", w, b, i), Requests: 1},
						store.ActivityValue{Kind: store.ActivityAddress, Value: fmt.Sprintf("198.51.%d.%d", w, i), Requests: 2},
						store.ActivityValue{Kind: store.ActivityServer, Value: fmt.Sprintf("s%d%d", b, i), Requests: 2},
					)
				}
				if err := s.RecordActivity(t.Context(), []store.ActivityHour{ah}); err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				total.Add(20)
			}
		})
	}
	wg.Wait()
	got := keyActivity(t, s, a.ID, k.ID, h)
	checkCaps(t, got, total.Load())
	if len(got.Of(store.ActivityAgent)) != store.MaxActivityAgents {
		t.Errorf("%d agents kept, want the cap, %d", len(got.Of(store.ActivityAgent)), store.MaxActivityAgents)
	}
}

// testActivityDeletedKey: a key's activity goes with it, and activity
// flushed after the key was deleted is not written.
func testActivityDeletedKey(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	k, _ := f.createKey(a.ID, "k")
	kept, _ := f.createKey(a.ID, "kept")
	h := store.ActivityHourOf(time.Now())
	hour := func(id string) store.ActivityHour {
		return store.ActivityHour{KeyID: id, Hour: h, Allowed: 1, Values: []store.ActivityValue{{Kind: store.ActivityAgent, Value: "a", Requests: 1}}}
	}
	recordActivity(t, s, hour(k.ID), hour(kept.ID))
	if _, err := s.DeleteKey(ctx, a.ID, k.ID, deleteEvent()); err != nil {
		t.Fatal(err)
	}
	_, err := s.KeyActivity(ctx, a.ID, k.ID, h)
	wantErr(t, "KeyActivity of a deleted key", err, store.ErrNotFound)
	// A flush that gathered requests before the delete.
	recordActivity(t, s, hour(k.ID), hour(kept.ID), hour("key_never_existed"))
	if n, err := s.PurgeActivity(ctx, h.Add(time.Hour)); err != nil || n != 1 {
		t.Fatalf("PurgeActivity = %d, %v; want only the live key's hour", n, err)
	}
}

// testActivityPurge: hours that began before the time go, with their
// values; later ones stay.
func testActivityPurge(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	k, _ := f.createKey(a.ID, "k")
	h := store.ActivityHourOf(time.Now())
	old, recent := h.Add(-100*24*time.Hour), h.Add(-time.Hour)
	recordActivity(t, s,
		store.ActivityHour{KeyID: k.ID, Hour: old, Allowed: 3, Values: []store.ActivityValue{{Kind: store.ActivityAgent, Value: "old/1", Requests: 3}}},
		store.ActivityHour{KeyID: k.ID, Hour: old.Add(time.Hour), Refused: 1, Values: []store.ActivityValue{{Kind: store.ActivityAgent, Value: "old/1", Requests: 1}}},
		store.ActivityHour{KeyID: k.ID, Hour: recent, Allowed: 2, Values: []store.ActivityValue{{Kind: store.ActivityAgent, Value: "new/1", Requests: 2}}},
	)
	if n, err := s.PurgeActivity(ctx, old); err != nil || n != 0 {
		t.Fatalf("purging nothing = %d, %v", n, err)
	}
	if n, err := s.PurgeActivity(ctx, recent.Add(-time.Minute)); err != nil || n != 2 {
		t.Fatalf("PurgeActivity = %d, %v; want the 2 old hours", n, err)
	}
	checkActivity(t, "after purge", keyActivity(t, s, a.ID, k.ID, old), store.KeyActivity{
		Hours:  []store.ActivityCount{{Hour: recent, Allowed: 2}},
		Values: []store.ActivitySeen{{Kind: store.ActivityAgent, Value: "new/1", Requests: 2, LastSeen: recent}},
	})
	// Written again, an old hour starts over: its values went with it.
	recordActivity(t, s, store.ActivityHour{KeyID: k.ID, Hour: old, Allowed: 1, Values: []store.ActivityValue{{Kind: store.ActivityAgent, Value: "old/2", Requests: 1}}})
	if got := keyActivity(t, s, a.ID, k.ID, old).Of(store.ActivityAgent); len(got) != 2 || got[1].Value != "old/2" || got[1].Requests != 1 {
		t.Fatalf("after writing a purged hour again: %+v", got)
	}
	if _, err := s.PurgeActivity(ctx, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got := keyActivity(t, s, a.ID, k.ID, old); len(got.Hours) != 0 || len(got.Values) != 0 {
		t.Fatalf("after purging all: %s", activityString(got))
	}
}
