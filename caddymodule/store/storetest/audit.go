package storetest

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

func testAuditKeyEvents(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	b := f.account("B")

	events := func(accountID string) []store.AuditEvent {
		t.Helper()
		evs, err := auditEvents(ctx, s, accountID, 0, 0)
		if err != nil {
			t.Fatalf("ListAudit: %v", err)
		}
		return evs
	}

	k, secret := f.createKey(a.ID, "k")
	evs := events(a.ID)
	if len(evs) != 1 {
		t.Fatalf("after CreateKey: %d events, want 1: %+v", len(evs), evs)
	}
	created := evs[0]
	want := store.AuditEvent{
		ID: created.ID, AccountID: a.ID, Actor: "user-1", Action: store.ActionCreate,
		KeyID: k.ID, KeyName: "k", KeyDisplay: secret.Display(), RemoteAddr: "192.0.2.1:1234", At: created.At,
	}
	if created != want {
		t.Errorf("create event = %+v\nwant %+v", created, want)
	}
	checkTime(t, "create event At", created.At)

	// Failed writes leave no event: the event shares the key's transaction.
	dup, _ := f.newKey(a.ID, "k", store.Standard, "")
	if _, err := s.CreateKey(ctx, dup, createEvent()); err == nil {
		t.Fatal("CreateKey with a taken name succeeded")
	}
	if _, err := s.DeleteKey(ctx, b.ID, k.ID, deleteEvent()); err == nil {
		t.Fatal("DeleteKey through another account succeeded")
	}
	if evs := events(a.ID); len(evs) != 1 {
		t.Errorf("after failed writes: %d events, want 1: %+v", len(evs), evs)
	}

	reveal := store.AuditEvent{
		AccountID: a.ID, Actor: "user-3", Action: store.ActionReveal,
		KeyID: k.ID, KeyName: k.Name, KeyDisplay: k.Display, RemoteAddr: "[2001:db8::1]:443",
	}
	if err := s.AppendAudit(ctx, reveal); err != nil {
		t.Fatalf("AppendAudit: %v", err)
	}
	for what, ev := range map[string]store.AuditEvent{
		"an unknown action":  {AccountID: a.ID, Actor: "x", Action: "key.steal"},
		"no actor":           {AccountID: a.ID, Action: store.ActionReveal},
		"no account":         {Actor: "x", Action: store.ActionReveal},
		"a NUL in the actor": {AccountID: a.ID, Actor: "x\x00", Action: store.ActionReveal},
	} {
		wantErr(t, "AppendAudit with "+what, s.AppendAudit(ctx, ev), store.ErrInvalid)
	}

	if _, err := s.DeleteKey(ctx, a.ID, k.ID, deleteEvent()); err != nil {
		t.Fatalf("DeleteKey: %v", err)
	}

	// Newest first; the key's events outlive it.
	evs = events(a.ID)
	if len(evs) != 3 {
		t.Fatalf("after create, reveal, delete: %d events, want 3: %+v", len(evs), evs)
	}
	for i, action := range []string{store.ActionDelete, store.ActionReveal, store.ActionCreate} {
		ev := evs[i]
		if ev.Action != action || ev.KeyID != k.ID || ev.KeyName != "k" || ev.KeyDisplay != k.Display || ev.AccountID != a.ID {
			t.Errorf("event %d = %+v, want %s of key %s", i, ev, action, k.ID)
		}
		if i > 0 && ev.ID >= evs[i-1].ID {
			t.Errorf("event ids are not descending: %d then %d", evs[i-1].ID, ev.ID)
		}
		checkTime(t, "At", ev.At)
		noSecret(t, ev, secret)
	}
	if evs[0].Actor != "user-2" || evs[0].RemoteAddr != "192.0.2.2:1234" ||
		evs[1].Actor != "user-3" || evs[1].RemoteAddr != "[2001:db8::1]:443" {
		t.Errorf("actors or addresses lost: %+v", evs)
	}

	if evs := events(b.ID); len(evs) != 0 {
		t.Errorf("account B sees events: %+v", evs)
	}
}

func testAuditPaging(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	b := f.account("B")

	const n = 105
	for i := range n {
		for _, acct := range []string{a.ID, b.ID} {
			ev := store.AuditEvent{AccountID: acct, Actor: "user-1", Action: store.ActionReveal, KeyID: fmt.Sprintf("key_%03d", i)}
			if err := s.AppendAudit(ctx, ev); err != nil {
				t.Fatalf("AppendAudit: %v", err)
			}
		}
	}

	// limit <= 0 means 100.
	for _, limit := range []int{0, -1} {
		evs, err := auditEvents(ctx, s, a.ID, 0, limit)
		if err != nil || len(evs) != 100 {
			t.Errorf("ListAudit(limit %d) = %d events, %v; want 100", limit, len(evs), err)
		}
	}

	// Page through with a limit of 10, and find every event once, in order.
	var all []store.AuditEvent
	before := int64(0)
	for page := 0; ; page++ {
		evs, err := auditEvents(ctx, s, a.ID, before, 10)
		if err != nil {
			t.Fatalf("ListAudit: %v", err)
		}
		if len(evs) == 0 {
			break
		}
		if len(evs) > 10 || page > n/10 {
			t.Fatalf("page %d has %d events", page, len(evs))
		}
		all = append(all, evs...)
		before = evs[len(evs)-1].ID
	}
	if len(all) != n {
		t.Fatalf("paged through %d events, want %d", len(all), n)
	}
	for i, ev := range all {
		if want := fmt.Sprintf("key_%03d", n-1-i); ev.KeyID != want || ev.AccountID != a.ID {
			t.Errorf("event %d = %+v, want key %s of A", i, ev, want)
		}
	}

	// The pages' own links: Older to the end, then Newer back to the
	// start, page for page.
	pages := auditPages(t, s, a.ID, store.AuditQuery{Limit: 10})
	if got := slices.Concat(pages...); len(got) != n || got[0].ID != all[0].ID || got[n-1].ID != all[n-1].ID {
		t.Errorf("paged through %d events by Older, want %d", len(got), n)
	}

	// A large limit returns everything there is.
	if evs, err := auditEvents(ctx, s, b.ID, 0, 5000); err != nil || len(evs) != n {
		t.Errorf("ListAudit(B, limit 5000) = %d events, %v; want %d", len(evs), err, n)
	}
	if evs, err := auditEvents(ctx, s, "acct_unknown", 0, 10); err != nil || len(evs) != 0 {
		t.Errorf("ListAudit of an unknown account = %+v, %v", evs, err)
	}
}

func testAuditNoSecrets(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")

	var secrets []keys.Key
	for i := range 5 {
		k, secret := f.newKey(a.ID, fmt.Sprintf("key %d", i), store.Restricted, "inbox")
		if _, err := s.CreateKey(ctx, k, store.AuditEvent{}); err != nil { // the store fills in the event
			t.Fatalf("CreateKey: %v", err)
		}
		secrets = append(secrets, secret)
		if i%2 == 0 {
			if _, err := s.DeleteKey(ctx, a.ID, k.ID, deleteEvent()); err != nil {
				t.Fatalf("DeleteKey: %v", err)
			}
		}
	}
	evs, err := auditEvents(ctx, s, a.ID, 0, 0)
	if err != nil || len(evs) != 8 {
		t.Fatalf("ListAudit = %d events, %v; want 8", len(evs), err)
	}
	for _, ev := range evs {
		for _, secret := range secrets {
			noSecret(t, ev, secret)
		}
		if ev.Action == store.ActionCreate && ev.Actor != "user-1" {
			t.Errorf("create event without an actor did not default to the creator: %+v", ev)
		}
	}
}

// auditPages reads every page of q by Older, then back by Newer from the
// last page to the first, checking that both ways give the same pages.
func auditPages(t *testing.T, s store.Store, accountID string, q store.AuditQuery) [][]store.AuditEvent {
	t.Helper()
	ctx := t.Context()
	var pages [][]store.AuditEvent
	var last store.AuditPage
	for {
		p, err := s.ListAudit(ctx, accountID, q)
		if err != nil {
			t.Fatalf("ListAudit(%+v): %v", q, err)
		}
		if len(pages) == 0 && p.Newer != 0 {
			t.Errorf("ListAudit(%+v): the newest page has newer events", q)
		}
		if len(pages) > 1000 {
			t.Fatal("ListAudit pages on and on")
		}
		pages, last = append(pages, p.Events), p
		if p.Older == 0 {
			break
		}
		q.Before, q.After = p.Older, 0
	}
	ids := func(evs []store.AuditEvent) []int64 {
		var out []int64
		for _, ev := range evs {
			out = append(out, ev.ID)
		}
		return out
	}
	for i := len(pages) - 2; i >= 0; i-- {
		if last.Newer == 0 {
			t.Fatalf("ListAudit(%+v): page %d has no newer page", q, i+1)
		}
		q.Before, q.After = 0, last.Newer
		p, err := s.ListAudit(ctx, accountID, q)
		if err != nil {
			t.Fatalf("ListAudit(%+v): %v", q, err)
		}
		if !slices.Equal(ids(p.Events), ids(pages[i])) {
			t.Fatalf("ListAudit(%+v): page %d by Newer is %v, by Older %v", q, i, ids(p.Events), ids(pages[i]))
		}
		last = p
	}
	if len(pages) > 1 && last.Newer != 0 {
		t.Errorf("ListAudit(%+v): the newest page, reached by Newer, has newer events", q)
	}
	all := slices.Concat(pages...)
	for i := 1; i < len(all); i++ {
		if all[i].ID >= all[i-1].ID {
			t.Fatalf("ListAudit(%+v): event %d after %d", q, all[i].ID, all[i-1].ID)
		}
	}
	return pages
}

// testAuditSearch filters the log by key name or display prefix, as
// ListKeys does, and by action, and pages through what it keeps.
func testAuditSearch(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	b := f.account("B")

	keyNames := []string{"prod_a", "prodXa", "Prod EU", "staging", "100%", `x'); DROP TABLE audit_events;--`}
	made := map[string]store.Key{}
	for _, name := range keyNames {
		made[name], _ = f.createKey(a.ID, name)
		f.createKey(b.ID, name)
	}
	for _, name := range []string{"prod_a", "staging", "staging", "100%"} {
		k := made[name]
		ev := store.AuditEvent{AccountID: a.ID, Actor: "user-3", Action: store.ActionReveal, KeyID: k.ID, KeyName: k.Name, KeyDisplay: k.Display}
		if err := s.AppendAudit(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.DeleteKey(ctx, a.ID, made["Prod EU"].ID, deleteEvent()); err != nil {
		t.Fatal(err)
	}
	rotate := store.AuditEvent{AccountID: a.ID, Actor: "operator:x", Action: store.ActionRotate, Detail: "re-keyed 6 keys"}
	if err := s.AppendAudit(ctx, rotate); err != nil {
		t.Fatal(err)
	}

	type event struct{ action, name string }
	find := func(q store.AuditQuery) []event {
		t.Helper()
		var got []event
		for _, page := range auditPages(t, s, a.ID, q) {
			for _, ev := range page {
				if ev.AccountID != a.ID {
					t.Fatalf("ListAudit(%+v) returned an event of another account", q)
				}
				got = append(got, event{ev.Action, ev.KeyName})
			}
		}
		return got
	}
	c, r, d := store.ActionCreate, store.ActionReveal, store.ActionDelete
	for _, tc := range []struct {
		q    store.AuditQuery
		want []event
	}{
		{store.AuditQuery{Search: "prod_", Limit: 1}, []event{{r, "prod_a"}, {c, "prod_a"}}},
		{store.AuditQuery{Search: "PROD", Limit: 2}, []event{{d, "Prod EU"}, {r, "prod_a"}, {c, "Prod EU"}, {c, "prodXa"}, {c, "prod_a"}}},
		{store.AuditQuery{Search: "%"}, []event{{r, "100%"}, {c, "100%"}}},
		{store.AuditQuery{Search: "'); DROP TABLE audit_events;--"}, []event{{c, `x'); DROP TABLE audit_events;--`}}},
		{store.AuditQuery{Search: made["staging"].Display}, []event{{r, "staging"}, {r, "staging"}, {c, "staging"}}},
		{store.AuditQuery{Action: r, Limit: 3}, []event{{r, "100%"}, {r, "staging"}, {r, "staging"}, {r, "prod_a"}}},
		{store.AuditQuery{Action: r, Search: "staging", Limit: 1}, []event{{r, "staging"}, {r, "staging"}}},
		{store.AuditQuery{Action: d}, []event{{d, "Prod EU"}}},
		{store.AuditQuery{Action: store.ActionRotate}, []event{{store.ActionRotate, ""}}},
		{store.AuditQuery{Action: d, Search: "staging"}, nil},
		{store.AuditQuery{Search: "nothing like it"}, nil},
		{store.AuditQuery{KeyID: made["staging"].ID, Limit: 2}, []event{{r, "staging"}, {r, "staging"}, {c, "staging"}}},
		{store.AuditQuery{KeyID: made["staging"].ID, Action: c}, []event{{c, "staging"}}},
		{store.AuditQuery{KeyID: made["Prod EU"].ID}, []event{{d, "Prod EU"}, {c, "Prod EU"}}},
		{store.AuditQuery{KeyID: "' or 1=1 --"}, nil},
	} {
		if got := find(tc.q); !slices.Equal(got, tc.want) {
			t.Errorf("ListAudit(%+v) = %v\nwant %v", tc.q, got, tc.want)
		}
	}
	if got := find(store.AuditQuery{Limit: 4}); len(got) != len(keyNames)+4+1+1 {
		t.Errorf("ListAudit with no filter = %d events, want %d", len(got), len(keyNames)+6)
	}

	for what, q := range map[string]store.AuditQuery{
		"an unknown action":       {Action: "key.steal"},
		"an action of SQL":        {Action: "' or 1=1 --"},
		"both bounds":             {Before: 10, After: 2},
		"a NUL in the search":     {Search: "\x00"},
		"a search of 1 MB":        {Search: strings.Repeat("_", 1<<20)},
		"invalid UTF-8 to search": {Search: "\xff"},
		"a NUL in the key id":     {KeyID: "k\x00"},
	} {
		_, err := s.ListAudit(ctx, a.ID, q)
		wantErr(t, "ListAudit with "+what, err, store.ErrInvalid)
	}
}
