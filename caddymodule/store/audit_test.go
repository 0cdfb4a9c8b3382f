package store

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPlanAudit(t *testing.T) {
	for _, tc := range []struct {
		q         AuditQuery
		wantDesc  bool
		wantBound int64
		wantFetch int
	}{
		{AuditQuery{}, true, math.MaxInt64, DefaultAuditLimit + 1},
		{AuditQuery{Before: -1, After: -1, Limit: -5}, true, math.MaxInt64, DefaultAuditLimit + 1},
		{AuditQuery{Before: 42, Limit: 10}, true, 42, 11},
		{AuditQuery{After: 42, Limit: 10}, false, 42, 11},
		{AuditQuery{Before: 1, Limit: 1}, true, 1, 2},
		{AuditQuery{Before: 7, Limit: MaxAuditLimit}, true, 7, MaxAuditLimit + 1},
		{AuditQuery{Before: 7, Limit: MaxAuditLimit + 1}, true, 7, MaxAuditLimit + 1},
		{AuditQuery{Before: 7, Limit: math.MaxInt}, true, 7, MaxAuditLimit + 1},
	} {
		s, err := PlanAudit(tc.q)
		if err != nil || s.Desc != tc.wantDesc || s.Bound != tc.wantBound || s.Fetch != tc.wantFetch {
			t.Errorf("PlanAudit(%+v) = %+v, %v; want desc %v, bound %d, fetch %d", tc.q, s, err, tc.wantDesc, tc.wantBound, tc.wantFetch)
		}
	}
	for what, q := range map[string]AuditQuery{
		"both bounds":    {Before: 9, After: 3},
		"unknown action": {Action: "key.steal"},
		"NUL in search":  {Search: "a\x00b"},
		"long search":    {Search: strings.Repeat("x", MaxSearchLen+1)},
	} {
		if _, err := PlanAudit(q); !errors.Is(err, ErrInvalid) {
			t.Errorf("PlanAudit with %s = %v; want ErrInvalid", what, err)
		}
	}
}

func TestAuditScanPage(t *testing.T) {
	evs := func(ids ...int64) []AuditEvent {
		var out []AuditEvent
		for _, id := range ids {
			out = append(out, AuditEvent{ID: id})
		}
		return out
	}
	for _, tc := range []struct {
		what         string
		q            AuditQuery
		read         []AuditEvent // as the scan reads them
		want         []int64
		older, newer int64
	}{
		{"newest, more", AuditQuery{Limit: 2}, evs(9, 8, 7), []int64{9, 8}, 8, 0},
		{"newest, all", AuditQuery{Limit: 3}, evs(9, 8), []int64{9, 8}, 0, 0},
		{"older, more", AuditQuery{Before: 9, Limit: 2}, evs(8, 7, 6), []int64{8, 7}, 7, 8},
		{"older, last", AuditQuery{Before: 9, Limit: 2}, evs(8), []int64{8}, 0, 8},
		{"newer, more", AuditQuery{After: 5, Limit: 2}, evs(6, 7, 8), []int64{7, 6}, 6, 7},
		{"newer, newest", AuditQuery{After: 5, Limit: 2}, evs(6, 7), []int64{7, 6}, 6, 0},
		{"nothing", AuditQuery{Before: 3}, nil, nil, 0, 0},
	} {
		s, err := PlanAudit(tc.q)
		if err != nil {
			t.Fatal(err)
		}
		p := s.Page(tc.read)
		var got []int64
		for _, ev := range p.Events {
			got = append(got, ev.ID)
		}
		if !slices.Equal(got, tc.want) || p.Older != tc.older || p.Newer != tc.newer {
			t.Errorf("%s: page %v, older %d, newer %d; want %v, %d, %d", tc.what, got, p.Older, p.Newer, tc.want, tc.older, tc.newer)
		}
	}
}

func TestValidateAuditEvent(t *testing.T) {
	ok := AuditEvent{AccountID: "acct_1", Actor: "alice", Action: ActionReveal, KeyID: "key_1",
		KeyName: "ci", KeyDisplay: "kg_live_ab", RemoteAddr: "192.0.2.1:5000"}
	for _, tc := range []struct {
		what  string
		edit  func(*AuditEvent)
		valid bool
	}{
		{"complete", func(*AuditEvent) {}, true},
		{"create", func(ev *AuditEvent) { ev.Action = ActionCreate }, true},
		{"delete", func(ev *AuditEvent) { ev.Action = ActionDelete }, true},
		{"no key or address", func(ev *AuditEvent) { ev.KeyID, ev.KeyName, ev.KeyDisplay, ev.RemoteAddr = "", "", "", "" }, true},
		{"no action", func(ev *AuditEvent) { ev.Action = "" }, false},
		{"unknown action", func(ev *AuditEvent) { ev.Action = "key.rename" }, false},
		{"no account", func(ev *AuditEvent) { ev.AccountID = "" }, false},
		{"no actor", func(ev *AuditEvent) { ev.Actor = "" }, false},
		{"NUL in actor", func(ev *AuditEvent) { ev.Actor = "al\x00ice" }, false},
		{"invalid UTF-8 in key name", func(ev *AuditEvent) { ev.KeyName = "ci\xff" }, false},
		{"NUL in address", func(ev *AuditEvent) { ev.RemoteAddr = "\x00" }, false},
	} {
		ev := ok
		tc.edit(&ev)
		err := ValidateAuditEvent(ev)
		if tc.valid && err != nil {
			t.Errorf("%s: ValidateAuditEvent = %v; want nil", tc.what, err)
		}
		if !tc.valid && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: ValidateAuditEvent = %v; want ErrInvalid", tc.what, err)
		}
	}
}

func TestPrepareAuditEvent(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	earlier := now.Add(-time.Hour)
	ev := AuditEvent{AccountID: "acct_1", Actor: "alice", Action: ActionReveal, KeyID: "key_1"}

	got, err := PrepareAuditEvent(ev, now)
	if err != nil || !got.At.Equal(now) {
		t.Errorf("untimed: PrepareAuditEvent = %+v, %v; want it timed now", got, err)
	}
	ev.At = earlier
	got, err = PrepareAuditEvent(ev, now)
	if err != nil || !got.At.Equal(earlier) {
		t.Errorf("timed: PrepareAuditEvent = %+v, %v; want the caller's time kept", got, err)
	}
	ev.Action = "key.rename"
	if _, err := PrepareAuditEvent(ev, now); !errors.Is(err, ErrInvalid) {
		t.Errorf("unknown action: PrepareAuditEvent = %v; want ErrInvalid", err)
	}
}

func TestCheckKeyAuditEvent(t *testing.T) {
	for _, tc := range []struct {
		what   string
		ev     AuditEvent
		action string
		valid  bool
	}{
		{"create, nothing chosen", AuditEvent{}, ActionCreate, true},
		{"create by an actor", AuditEvent{Actor: "alice"}, ActionCreate, true},
		{"create, action given", AuditEvent{Action: ActionCreate}, ActionCreate, true},
		{"create claiming a delete", AuditEvent{Action: ActionDelete}, ActionCreate, false},
		{"delete by an actor", AuditEvent{Actor: "alice"}, ActionDelete, true},
		{"delete, action given", AuditEvent{Actor: "alice", Action: ActionDelete}, ActionDelete, true},
		{"delete without actor", AuditEvent{}, ActionDelete, false},
		{"delete claiming a reveal", AuditEvent{Actor: "alice", Action: ActionReveal}, ActionDelete, false},
	} {
		err := CheckKeyAuditEvent(tc.ev, tc.action)
		if tc.valid && err != nil {
			t.Errorf("%s: CheckKeyAuditEvent = %v; want nil", tc.what, err)
		}
		if !tc.valid && !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: CheckKeyAuditEvent = %v; want ErrInvalid", tc.what, err)
		}
	}
}

func TestPrepareKeyAuditEvent(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	earlier := at.Add(-time.Minute)
	k := Key{ID: "key_1", AccountID: "acct_1", Name: "ci", Display: "kg_live_ab", CreatedBy: "bob"}
	for _, tc := range []struct {
		what   string
		ev     AuditEvent
		action string
		want   AuditEvent
	}{
		{"create, actor from the key", AuditEvent{RemoteAddr: "192.0.2.1:5000"}, ActionCreate,
			AuditEvent{AccountID: "acct_1", Actor: "bob", Action: ActionCreate, KeyID: "key_1", KeyName: "ci", KeyDisplay: "kg_live_ab", RemoteAddr: "192.0.2.1:5000", At: at}},
		{"create by an operator", AuditEvent{Actor: "operator:root"}, ActionCreate,
			AuditEvent{AccountID: "acct_1", Actor: "operator:root", Action: ActionCreate, KeyID: "key_1", KeyName: "ci", KeyDisplay: "kg_live_ab", At: at}},
		{"delete, timed by the caller", AuditEvent{Actor: "alice", At: earlier}, ActionDelete,
			AuditEvent{AccountID: "acct_1", Actor: "alice", Action: ActionDelete, KeyID: "key_1", KeyName: "ci", KeyDisplay: "kg_live_ab", At: earlier}},
		{"key fields come from the key", AuditEvent{Actor: "alice", AccountID: "acct_2", KeyID: "key_2", KeyName: "other", KeyDisplay: "kg_live_zz"}, ActionDelete,
			AuditEvent{AccountID: "acct_1", Actor: "alice", Action: ActionDelete, KeyID: "key_1", KeyName: "ci", KeyDisplay: "kg_live_ab", At: at}},
	} {
		got, err := PrepareKeyAuditEvent(tc.ev, tc.action, k, at)
		if err != nil || got != tc.want {
			t.Errorf("%s: PrepareKeyAuditEvent = %+v, %v; want %+v", tc.what, got, err, tc.want)
		}
	}

	for _, tc := range []struct {
		what   string
		ev     AuditEvent
		action string
		k      Key
	}{
		{"delete without actor", AuditEvent{}, ActionDelete, k},
		{"wrong action", AuditEvent{Action: ActionReveal}, ActionCreate, k},
		{"unknown action", AuditEvent{Actor: "alice"}, "key.rename", k},
		{"key without account", AuditEvent{}, ActionCreate, Key{ID: "key_1", CreatedBy: "bob"}},
		{"key without creator", AuditEvent{}, ActionCreate, Key{ID: "key_1", AccountID: "acct_1"}},
		{"NUL in the key's name", AuditEvent{}, ActionCreate, Key{ID: "key_1", AccountID: "acct_1", Name: "c\x00i", CreatedBy: "bob"}},
	} {
		if _, err := PrepareKeyAuditEvent(tc.ev, tc.action, tc.k, at); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: PrepareKeyAuditEvent = %v; want ErrInvalid", tc.what, err)
		}
	}
}
