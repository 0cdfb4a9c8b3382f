package store

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestCheckText(t *testing.T) {
	for _, tc := range []struct {
		what  string
		ss    []string
		valid bool
	}{
		{"nothing", nil, true},
		{"empty", []string{""}, true},
		{"plain and accented", []string{"acct_1", "Zoë's key ✓"}, true},
		{"control characters other than NUL", []string{"tab\there\nnewline"}, true},
		{"NUL", []string{"a\x00b"}, false},
		{"invalid UTF-8", []string{"\xc3\x28"}, false},
		{"second of several", []string{"fine", "\x00"}, false},
	} {
		err := CheckText(tc.ss...)
		if tc.valid && err != nil {
			t.Errorf("%s: CheckText = %v; want nil", tc.what, err)
		}
		if !tc.valid && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: CheckText = %v; want ErrInvalid", tc.what, err)
		}
	}
}

func TestPrepareAccount(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a, err := PrepareAccount("Acme", now)
	if err != nil {
		t.Fatalf("PrepareAccount: %v", err)
	}
	if a.Name != "Acme" || !a.CreatedAt.Equal(now) || !strings.HasPrefix(a.ID, "acct") {
		t.Errorf("PrepareAccount = %+v; want Acme, created now, with an acct id", a)
	}
	b, err := PrepareAccount("Acme", now)
	if err != nil || b.ID == a.ID {
		t.Errorf("PrepareAccount again = %+v, %v; want a fresh id", b, err)
	}
	for _, name := range []string{"", " Acme", "Ac\x00me", "\xff", strings.Repeat("a", MaxNameLen+1)} {
		if _, err := PrepareAccount(name, now); !errors.Is(err, ErrInvalid) {
			t.Errorf("PrepareAccount(%q) = %v; want ErrInvalid", name, err)
		}
	}
}

func TestPrepareKey(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	used := now.Add(-time.Hour)
	valid := Key{ID: "key_1", AccountID: "acct_1", Name: "ci", Type: Standard, Display: "kg_live_ab",
		Sealed: []byte{1}, CreatedBy: "bob", CreatedAt: used, LastUsed: &used}

	k, ev, err := PrepareKey(valid, AuditEvent{RemoteAddr: "192.0.2.1:5000"}, now)
	if err != nil {
		t.Fatalf("PrepareKey: %v", err)
	}
	if !k.CreatedAt.Equal(now) || k.LastUsed != nil {
		t.Errorf("PrepareKey key created %v, last used %v; want created now, never used", k.CreatedAt, k.LastUsed)
	}
	if k.ID != valid.ID || k.Name != valid.Name || k.CreatedBy != valid.CreatedBy {
		t.Errorf("PrepareKey changed the caller's fields: %+v", k)
	}
	want := AuditEvent{AccountID: "acct_1", Actor: "bob", Action: ActionCreate, KeyID: "key_1",
		KeyName: "ci", KeyDisplay: "kg_live_ab", RemoteAddr: "192.0.2.1:5000", At: now}
	if ev != want {
		t.Errorf("PrepareKey event = %+v; want %+v", ev, want)
	}

	for _, tc := range []struct {
		what string
		edit func(k *Key, ev *AuditEvent)
	}{
		{"no name", func(k *Key, _ *AuditEvent) { k.Name = "" }},
		{"unknown type", func(k *Key, _ *AuditEvent) { k.Type = "admin" }},
		{"restricted without server", func(k *Key, _ *AuditEvent) { k.Type = Restricted }},
		{"standard with a server", func(k *Key, _ *AuditEvent) { k.ServerID = "srv1" }},
		{"no sealed copy", func(k *Key, _ *AuditEvent) { k.Sealed = nil }},
		{"NUL in id", func(k *Key, _ *AuditEvent) { k.ID = "key\x00" }},
		{"invalid UTF-8 in account", func(k *Key, _ *AuditEvent) { k.AccountID = "acct\xff" }},
		{"NUL in display", func(k *Key, _ *AuditEvent) { k.Display = "\x00" }},
		{"NUL in creator", func(k *Key, _ *AuditEvent) { k.CreatedBy = "b\x00b" }},
		{"event for another action", func(_ *Key, ev *AuditEvent) { ev.Action = ActionDelete }},
		{"NUL in the event's address", func(_ *Key, ev *AuditEvent) { ev.RemoteAddr = "\x00" }},
	} {
		k, ev := valid, AuditEvent{}
		tc.edit(&k, &ev)
		if _, _, err := PrepareKey(k, ev, now); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: PrepareKey = %v; want ErrInvalid", tc.what, err)
		}
	}
}

func TestValidateMember(t *testing.T) {
	for _, tc := range []struct {
		user  string
		role  Role
		valid bool
	}{
		{"alice", Admin, true},
		{"alice@example.com", Member, true},
		{"", Member, false},
		{strings.Repeat("u", 201), Member, false},
		{"al\x00ice", Member, false},
		{"alice", "owner", false},
		{"alice", "", false},
	} {
		err := ValidateMember(tc.user, tc.role)
		if tc.valid && err != nil {
			t.Errorf("ValidateMember(%q, %q) = %v; want nil", tc.user, tc.role, err)
		}
		if !tc.valid && !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateMember(%q, %q) = %v; want ErrInvalid", tc.user, tc.role, err)
		}
	}
}

func TestValidateObjects(t *testing.T) {
	att := Object{Kind: ObjectAttachment, ID: "att_1", ServerID: "srv1"}
	pre := Object{Kind: ObjectPreview, ID: "pre_1", ServerID: "srv2"}
	for _, tc := range []struct {
		what    string
		account string
		objs    []Object
		valid   bool
	}{
		{"none", "acct_1", nil, true},
		{"two kinds", "acct_1", []Object{att, pre}, true},
		{"no account", "", []Object{att}, false},
		{"NUL in account", "acct\x00", []Object{att}, false},
		{"invalid UTF-8 in account", "acct\xff", nil, false},
		{"unknown kind", "acct_1", []Object{att, {Kind: "message", ID: "m", ServerID: "srv1"}}, false},
		{"no id", "acct_1", []Object{{Kind: ObjectPreview, ServerID: "srv1"}}, false},
		{"NUL in id", "acct_1", []Object{{Kind: ObjectPreview, ID: "p\x00", ServerID: "srv1"}}, false},
		{"bad server", "acct_1", []Object{{Kind: ObjectPreview, ID: "p", ServerID: "srv/1"}}, false},
	} {
		err := ValidateObjects(tc.account, tc.objs)
		if tc.valid && err != nil {
			t.Errorf("%s: ValidateObjects = %v; want nil", tc.what, err)
		}
		if !tc.valid && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: ValidateObjects = %v; want ErrInvalid", tc.what, err)
		}
	}
}
