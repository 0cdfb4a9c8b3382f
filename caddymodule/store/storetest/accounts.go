package storetest

import (
	"strings"
	"testing"

	"github.com/keygate/keygate/caddymodule/store"
)

func testPing(t *testing.T, s store.Store) {
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

func testAccounts(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)

	a := f.account("Acme")
	if !strings.HasPrefix(a.ID, "acct_") || a.Name != "Acme" {
		t.Errorf("CreateAccount = %+v: want id acct_… and name Acme", a)
	}
	checkTime(t, "CreatedAt", a.CreatedAt)

	got, err := s.GetAccount(ctx, a.ID)
	if err != nil {
		t.Fatalf("GetAccount: %v", err)
	}
	if got != a {
		t.Errorf("GetAccount = %+v, want %+v", got, a)
	}

	_, err = s.CreateAccount(ctx, "Acme")
	wantErr(t, "CreateAccount with a taken name", err, store.ErrNameTaken)
	_, err = s.CreateAccount(ctx, "")
	wantErr(t, "CreateAccount with an empty name", err, store.ErrInvalid)
	_, err = s.CreateAccount(ctx, "tab\tname")
	wantErr(t, "CreateAccount with a tab in the name", err, store.ErrInvalid)

	for _, id := range []string{"acct_unknown", "", "acct_\x00", "acct_\xff"} {
		_, err = s.GetAccount(ctx, id)
		wantErr(t, "GetAccount("+strings.ToValidUTF8(id, "?")+")", err, store.ErrNotFound)
	}

	// Oldest first.
	b := f.account("Beta")
	c := f.account("Ωmega")
	all, err := s.ListAccounts(ctx)
	if err != nil {
		t.Fatalf("ListAccounts: %v", err)
	}
	want := []store.Account{a, b, c}
	if len(all) != len(want) {
		t.Fatalf("ListAccounts = %+v, want %+v", all, want)
	}
	for i := range want {
		if all[i] != want[i] {
			t.Errorf("ListAccounts[%d] = %+v, want %+v", i, all[i], want[i])
		}
	}
}

func testMembers(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	b := f.account("B")

	m, err := s.SetMember(ctx, a.ID, "alice@example.com", store.Admin)
	if err != nil {
		t.Fatalf("SetMember: %v", err)
	}
	if m.AccountID != a.ID || m.UserID != "alice@example.com" || m.Role != store.Admin {
		t.Errorf("SetMember = %+v", m)
	}
	checkTime(t, "Membership.CreatedAt", m.CreatedAt)

	// Changing the role keeps the membership, and when it began.
	m2, err := s.SetMember(ctx, a.ID, "alice@example.com", store.Member)
	if err != nil {
		t.Fatalf("SetMember (change role): %v", err)
	}
	if m2.Role != store.Member || !m2.CreatedAt.Equal(m.CreatedAt) {
		t.Errorf("SetMember (change role) = %+v, want role member since %v", m2, m.CreatedAt)
	}

	_, err = s.SetMember(ctx, a.ID, "bob", store.Role("owner"))
	wantErr(t, "SetMember with an unknown role", err, store.ErrInvalid)
	_, err = s.SetMember(ctx, a.ID, "", store.Member)
	wantErr(t, "SetMember with an empty user id", err, store.ErrInvalid)
	_, err = s.SetMember(ctx, a.ID, "bob\x00", store.Member)
	wantErr(t, "SetMember with a NUL in the user id", err, store.ErrInvalid)
	_, err = s.SetMember(ctx, "acct_unknown", "bob", store.Member)
	wantErr(t, "SetMember on an unknown account", err, store.ErrNotFound)

	if _, err := s.SetMember(ctx, a.ID, "bob", store.Member); err != nil {
		t.Fatalf("SetMember: %v", err)
	}
	if _, err := s.SetMember(ctx, b.ID, "alice@example.com", store.Admin); err != nil {
		t.Fatalf("SetMember: %v", err)
	}

	ms, err := s.ListMembers(ctx, a.ID)
	if err != nil {
		t.Fatalf("ListMembers: %v", err)
	}
	if len(ms) != 2 || ms[0].UserID != "alice@example.com" || ms[0].Role != store.Member || ms[1].UserID != "bob" {
		t.Errorf("ListMembers(A) = %+v, want alice (member) then bob", ms)
	}

	// Memberships across accounts, oldest first.
	ms, err = s.MembershipsOf(ctx, "alice@example.com")
	if err != nil {
		t.Fatalf("MembershipsOf: %v", err)
	}
	if len(ms) != 2 || ms[0].AccountID != a.ID || ms[0].Role != store.Member ||
		ms[1].AccountID != b.ID || ms[1].Role != store.Admin {
		t.Errorf("MembershipsOf(alice) = %+v, want member of A, admin of B", ms)
	}
	if ms, err := s.MembershipsOf(ctx, "nobody"); err != nil || len(ms) != 0 {
		t.Errorf("MembershipsOf(nobody) = %+v, %v; want none", ms, err)
	}

	if err := s.RemoveMember(ctx, a.ID, "alice@example.com"); err != nil {
		t.Fatalf("RemoveMember: %v", err)
	}
	ms, err = s.ListMembers(ctx, a.ID)
	if err != nil || len(ms) != 1 || ms[0].UserID != "bob" {
		t.Errorf("ListMembers(A) after removing alice = %+v, %v; want bob alone", ms, err)
	}
	ms, err = s.MembershipsOf(ctx, "alice@example.com")
	if err != nil || len(ms) != 1 || ms[0].AccountID != b.ID {
		t.Errorf("MembershipsOf(alice) after removal from A = %+v, %v; want B alone", ms, err)
	}

	wantErr(t, "RemoveMember again", s.RemoveMember(ctx, a.ID, "alice@example.com"), store.ErrNotFound)
	wantErr(t, "RemoveMember of a stranger", s.RemoveMember(ctx, a.ID, "carol"), store.ErrNotFound)
	wantErr(t, "RemoveMember on an unknown account", s.RemoveMember(ctx, "acct_unknown", "bob"), store.ErrNotFound)
	wantErr(t, "RemoveMember with a NUL in the user id", s.RemoveMember(ctx, a.ID, "bob\x00"), store.ErrNotFound)
}
