// Package storetest is the conformance suite every store.Store passes.
//
// A store's own test calls Run with a function that opens a fresh, migrated
// store for each subtest, so that the subtests can run in parallel.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/internal/keytest"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

// Run runs the suite. open must return an empty, migrated store and arrange
// (with t.Cleanup) for it to be closed.
func Run(t *testing.T, open func(t *testing.T) store.Store) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Ping", testPing},
		{"Ready", testReady},
		{"Diagnose", testDiagnose},
		{"Accounts", testAccounts},
		{"Members", testMembers},
		{"CreateKey", testCreateKey},
		{"KeyNames", testKeyNames},
		{"KeyNameUniqueness", testKeyNameUniqueness},
		{"KeyTypes", testKeyTypes},
		{"LookupKey", testLookupKey},
		{"GetKeySealed", testGetKeySealed},
		{"ListKeys", testListKeys},
		{"KeyPaging", testKeyPaging},
		{"KeyPagingChanges", testKeyPagingChanges},
		{"KeySearch", testKeySearch},
		{"KeyListBadQuery", testKeyListBadQuery},
		{"DeleteKey", testDeleteKey},
		{"TouchKeys", testTouchKeys},
		{"AuditKeyEvents", testAuditKeyEvents},
		{"AuditPaging", testAuditPaging},
		{"AuditNoSecrets", testAuditNoSecrets},
		{"AuditSearch", testAuditSearch},
		{"Objects", testObjects},
		{"MigrateAgain", testMigrateAgain},
		{"ConcurrentKeys", testConcurrentKeys},
		{"ConcurrentSameName", testConcurrentSameName},
		{"Secrets", testSecrets},
		{"SecretsConcurrentInit", testSecretsConcurrentInit},
		{"SecretsBadInput", testSecretsBadInput},
		{"LegacyKeys", testLegacyKeys},
		{"Rekey", testRekey},
		{"LockRotation", testLockRotation},
		{"AuditDetail", testAuditDetail},
		{"Activity", testActivity},
		{"ActivityBadInput", testActivityBadInput},
		{"ActivityInstances", testActivityInstances},
		{"ActivityFlood", testActivityFlood},
		{"ActivityDeletedKey", testActivityDeletedKey},
		{"ActivityPurge", testActivityPurge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.fn(t, open(t))
		})
	}
}

// fixture is what most subtests need: a store, a keyring and helpers.
type fixture struct {
	t  *testing.T
	s  store.Store
	kr *keys.Keyring
}

func newFixture(t *testing.T, s store.Store) *fixture {
	t.Helper()
	kr, err := keys.NewKeyring(bytes.Repeat([]byte("storetest secret "), 2))
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, s: s, kr: kr}
}

func (f *fixture) account(name string) store.Account {
	f.t.Helper()
	a, err := f.s.CreateAccount(context.Background(), name)
	if err != nil {
		f.t.Fatalf("CreateAccount(%q): %v", name, err)
	}
	return a
}

// newKey builds (without storing) a key of the account, as the dashboard
// would: a fresh secret, its digest and its sealed copy.
func (f *fixture) newKey(accountID, name string, typ store.KeyType, serverID string) (store.Key, keys.Key) {
	f.t.Helper()
	k, secret := keytest.Mint(f.t, f.kr, accountID, name)
	k.Type, k.ServerID, k.CreatedBy = typ, serverID, "user-1"
	return k, secret
}

func createEvent() store.AuditEvent {
	return store.AuditEvent{Actor: "user-1", Action: store.ActionCreate, RemoteAddr: "192.0.2.1:1234"}
}

func deleteEvent() store.AuditEvent {
	return store.AuditEvent{Actor: "user-2", Action: store.ActionDelete, RemoteAddr: "192.0.2.2:1234"}
}

// createKey stores a fresh standard key.
func (f *fixture) createKey(accountID, name string) (store.Key, keys.Key) {
	f.t.Helper()
	k, secret := f.newKey(accountID, name, store.Standard, "")
	got, err := f.s.CreateKey(context.Background(), k, createEvent())
	if err != nil {
		f.t.Fatalf("CreateKey(%q): %v", name, err)
	}
	return got, secret
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Errorf("%s: got error %v, want %v", what, err, target)
	}
}

// checkTime checks that a time came back as the stores keep it: set, UTC,
// whole microseconds.
func checkTime(t *testing.T, what string, tm time.Time) {
	t.Helper()
	if tm.IsZero() || tm.Location() != time.UTC || tm.Nanosecond()%1000 != 0 {
		t.Errorf("%s = %v (%v): want a UTC time in whole microseconds", what, tm, tm.Location())
	}
	if d := time.Since(tm); d < -time.Minute || d > time.Hour {
		t.Errorf("%s = %v: not close to now", what, tm)
	}
}

// sameKey compares keys as stored, ignoring Sealed (which only GetKey
// fills) and comparing times with Equal.
func sameKey(t *testing.T, what string, got, want store.Key) {
	t.Helper()
	g, w := got, want
	g.Sealed, w.Sealed = nil, nil
	g.LastUsed, w.LastUsed = nil, nil
	g.CreatedAt, w.CreatedAt = time.Time{}, time.Time{}
	if g.ID != w.ID || g.AccountID != w.AccountID || g.Name != w.Name || g.Type != w.Type ||
		g.ServerID != w.ServerID || g.Display != w.Display || g.Digest != w.Digest || g.CreatedBy != w.CreatedBy ||
		(got.Sealed != nil && g.Secret != w.Secret) {
		t.Errorf("%s:\n got %+v\nwant %+v", what, g, w)
	}
	if !got.CreatedAt.Equal(want.CreatedAt) {
		t.Errorf("%s: CreatedAt = %v, want %v", what, got.CreatedAt, want.CreatedAt)
	}
	if (got.LastUsed == nil) != (want.LastUsed == nil) ||
		got.LastUsed != nil && !got.LastUsed.Equal(*want.LastUsed) {
		t.Errorf("%s: LastUsed = %v, want %v", what, got.LastUsed, want.LastUsed)
	}
}

// noSecret fails if any text of the event holds the key, or the part of
// it that its display prefix does not show.
func noSecret(t *testing.T, ev store.AuditEvent, secret keys.Key) {
	t.Helper()
	hidden := strings.TrimPrefix(secret.Secret(), secret.Display())
	for _, field := range []string{ev.AccountID, ev.Actor, ev.Action, ev.KeyID, ev.KeyName, ev.KeyDisplay, ev.RemoteAddr} {
		if strings.Contains(field, hidden) {
			t.Errorf("audit event %d holds key material: %+v", ev.ID, ev)
		}
	}
}

// auditEvents is the events of one page of ListAudit: up to limit of them
// older than the event before.
func auditEvents(ctx context.Context, s store.Store, accountID string, before int64, limit int) ([]store.AuditEvent, error) {
	p, err := s.ListAudit(ctx, accountID, store.AuditQuery{Before: before, Limit: limit})
	return p.Events, err
}
