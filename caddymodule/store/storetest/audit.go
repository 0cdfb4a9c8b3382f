package storetest

import (
	"fmt"
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
		evs, err := s.ListAudit(ctx, accountID, 0, 0)
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
		evs, err := s.ListAudit(ctx, a.ID, 0, limit)
		if err != nil || len(evs) != 100 {
			t.Errorf("ListAudit(limit %d) = %d events, %v; want 100", limit, len(evs), err)
		}
	}

	// Page through with a limit of 10, and find every event once, in order.
	var all []store.AuditEvent
	before := int64(0)
	for page := 0; ; page++ {
		evs, err := s.ListAudit(ctx, a.ID, before, 10)
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

	// A large limit returns everything there is.
	if evs, err := s.ListAudit(ctx, b.ID, 0, 5000); err != nil || len(evs) != n {
		t.Errorf("ListAudit(B, limit 5000) = %d events, %v; want %d", len(evs), err, n)
	}
	if evs, err := s.ListAudit(ctx, "acct_unknown", 0, 10); err != nil || len(evs) != 0 {
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
	evs, err := s.ListAudit(ctx, a.ID, 0, 0)
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
