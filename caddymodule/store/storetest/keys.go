package storetest

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

func testCreateKey(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")

	for _, tc := range []struct {
		name     string
		typ      store.KeyType
		serverID string
	}{
		{"standard", store.Standard, ""},
		{"restricted", store.Restricted, "srv_AbC-12_x"},
	} {
		k, secret := f.newKey(a.ID, tc.name, tc.typ, tc.serverID)
		got, err := s.CreateKey(ctx, k, createEvent())
		if err != nil {
			t.Fatalf("CreateKey(%s): %v", tc.name, err)
		}
		checkTime(t, "CreatedAt", got.CreatedAt)
		if got.LastUsed != nil {
			t.Errorf("CreateKey(%s): LastUsed = %v, want nil", tc.name, got.LastUsed)
		}
		want := k
		want.CreatedAt = got.CreatedAt
		sameKey(t, "CreateKey("+tc.name+")", got, want)

		stored, err := s.GetKey(ctx, a.ID, k.ID)
		if err != nil {
			t.Fatalf("GetKey(%s): %v", tc.name, err)
		}
		sameKey(t, "GetKey("+tc.name+")", stored, got)

		id, err := s.LookupKey(ctx, f.kr.Digest([]byte(secret)))
		if err != nil {
			t.Fatalf("LookupKey(%s): %v", tc.name, err)
		}
		wantID := store.Identity{KeyID: k.ID, AccountID: a.ID, Type: tc.typ, ServerID: tc.serverID, Display: secret.Display()}
		if id != wantID {
			t.Errorf("LookupKey(%s) = %+v, want %+v", tc.name, id, wantID)
		}
	}

	// An account that does not exist.
	k, _ := f.newKey("acct_unknown", "orphan", store.Standard, "")
	_, err := s.CreateKey(ctx, k, createEvent())
	wantErr(t, "CreateKey on an unknown account", err, store.ErrNotFound)

	// Fields a key cannot do without.
	for field, clear := range map[string]func(*store.Key){
		"ID":        func(k *store.Key) { k.ID = "" },
		"Display":   func(k *store.Key) { k.Display = "" },
		"Sealed":    func(k *store.Key) { k.Sealed = nil },
		"CreatedBy": func(k *store.Key) { k.CreatedBy = "" },
	} {
		k, _ := f.newKey(a.ID, "missing "+field, store.Standard, "")
		clear(&k)
		_, err := s.CreateKey(ctx, k, createEvent())
		wantErr(t, "CreateKey without "+field, err, store.ErrInvalid)
	}
}

func testKeyNames(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")

	valid := []string{
		"x",
		strings.Repeat("n", store.MaxNameLen),
		strings.Repeat("é", store.MaxNameLen), // characters, not bytes
		"production – Zürich 🔑 鍵 ключ",
		"x'); DROP TABLE api_keys;--",
		`"quoted" \backslash\ 100% _under_ ?1 $1 :name`,
		"inner  spaces",
	}
	for _, name := range valid {
		got, secret := f.createKey(a.ID, name)
		if got.Name != name {
			t.Errorf("CreateKey(%q): Name = %q", name, got.Name)
		}
		stored, err := s.GetKey(ctx, a.ID, got.ID)
		if err != nil || stored.Name != name {
			t.Errorf("GetKey of %q: Name = %q, err %v", name, stored.Name, err)
		}
		if _, err := s.LookupKey(ctx, f.kr.Digest([]byte(secret))); err != nil {
			t.Errorf("LookupKey of %q: %v", name, err)
		}
	}
	// The table survived its name.
	ks, err := store.AllKeys(ctx, s, a.ID)
	if err != nil || len(ks) != len(valid) {
		t.Fatalf("ListKeys = %d keys, %v; want %d", len(ks), err, len(valid))
	}
	for i, name := range valid {
		if ks[i].Name != name {
			t.Errorf("ListKeys[%d].Name = %q, want %q", i, ks[i].Name, name)
		}
	}

	invalid := []string{
		"",
		strings.Repeat("n", store.MaxNameLen+1),
		strings.Repeat("é", store.MaxNameLen+1),
		"nul\x00byte",
		"bad utf-8 \xff\xfe",
		"new\nline",
		"tab\there",
		"bell\a",
		"escape \x1b[31mred",
		"right-to-left \u202e override",
		" leading space",
		"trailing space ",
	}
	for _, name := range invalid {
		k, _ := f.newKey(a.ID, name, store.Standard, "")
		_, err := s.CreateKey(ctx, k, createEvent())
		wantErr(t, fmt.Sprintf("CreateKey(%q)", name), err, store.ErrInvalid)
	}
	if ks, err := store.AllKeys(ctx, s, a.ID); err != nil || len(ks) != len(valid) {
		t.Errorf("ListKeys after invalid names = %d keys, %v; want %d", len(ks), err, len(valid))
	}
}

func testKeyNameUniqueness(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	b := f.account("B")

	first, _ := f.createKey(a.ID, "ci")

	k, secret := f.newKey(a.ID, "ci", store.Standard, "")
	_, err := s.CreateKey(ctx, k, createEvent())
	wantErr(t, "CreateKey with a name taken in the account", err, store.ErrNameTaken)
	if _, err := s.LookupKey(ctx, f.kr.Digest([]byte(secret))); err == nil {
		t.Error("the rejected key was stored anyway")
	}
	// Names differing only in case are different names.
	f.createKey(a.ID, "CI")

	// Another account may use the name.
	f.createKey(b.ID, "ci")

	// Deleting the key frees its name.
	if _, err := s.DeleteKey(ctx, a.ID, first.ID, deleteEvent()); err != nil {
		t.Fatalf("DeleteKey: %v", err)
	}
	again, _ := f.createKey(a.ID, "ci")
	if again.ID == first.ID {
		t.Error("the new key has the deleted key's id")
	}
}

func testKeyTypes(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")

	for _, tc := range []struct {
		what     string
		typ      store.KeyType
		serverID string
	}{
		{"restricted key without a server", store.Restricted, ""},
		{"standard key with a server", store.Standard, "srv1"},
		{"restricted key with a bad server id", store.Restricted, "srv/1"},
		{"restricted key with a NUL in the server id", store.Restricted, "srv\x00"},
		{"key of no type", "", ""},
		{"key of an unknown type", "admin", ""},
	} {
		k, _ := f.newKey(a.ID, tc.what, tc.typ, tc.serverID)
		_, err := s.CreateKey(ctx, k, createEvent())
		wantErr(t, "CreateKey of a "+tc.what, err, store.ErrInvalid)
	}
}

func testLookupKey(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	k, secret := f.createKey(a.ID, "k")
	other, _ := f.createKey(a.ID, "other")

	id, err := s.LookupKey(ctx, f.kr.Digest([]byte(secret)))
	if err != nil || id.KeyID != k.ID || id.AccountID != a.ID || id.Type != store.Standard || id.ServerID != "" {
		t.Errorf("LookupKey = %+v, %v; want key %s of %s", id, err, k.ID, a.ID)
	}

	unknown, _ := keys.New()
	_, err = s.LookupKey(ctx, f.kr.Digest([]byte(unknown)))
	wantErr(t, "LookupKey of an unknown key", err, store.ErrNotFound)
	_, err = s.LookupKey(ctx, keys.Digest{})
	wantErr(t, "LookupKey of a zero digest", err, store.ErrNotFound)

	if _, err := s.DeleteKey(ctx, a.ID, k.ID, deleteEvent()); err != nil {
		t.Fatalf("DeleteKey: %v", err)
	}
	_, err = s.LookupKey(ctx, f.kr.Digest([]byte(secret)))
	wantErr(t, "LookupKey after delete", err, store.ErrNotFound)
	if _, err := s.LookupKey(ctx, other.Digest); err != nil {
		t.Errorf("LookupKey of the other key after delete: %v", err)
	}
}

func testGetKeySealed(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	b := f.account("B")
	k, secret := f.newKey(a.ID, "sealed", store.Restricted, "inbox1")
	if _, err := s.CreateKey(ctx, k, createEvent()); err != nil {
		t.Fatalf("CreateKey: %v", err)
	}

	got, err := s.GetKey(ctx, a.ID, k.ID)
	if err != nil {
		t.Fatalf("GetKey: %v", err)
	}
	opened, err := f.kr.Current().Open(got.Sealed, got.AccountID, got.ID)
	if err != nil {
		t.Fatalf("opening the sealed copy GetKey returned: %v", err)
	}
	if opened != secret {
		t.Error("the sealed copy opens to another key")
	}
	if f.kr.Digest([]byte(opened)) != got.Digest {
		t.Error("the revealed key does not match the stored digest")
	}

	_, err = s.GetKey(ctx, b.ID, k.ID)
	wantErr(t, "GetKey through another account", err, store.ErrNotFound)
	_, err = s.GetKey(ctx, a.ID, "key_unknown")
	wantErr(t, "GetKey of an unknown key", err, store.ErrNotFound)
	_, err = s.GetKey(ctx, a.ID, "key_\xff\x00")
	wantErr(t, "GetKey of an impossible id", err, store.ErrNotFound)
}

func testListKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	b := f.account("B")

	var want []store.Key
	for i := range 3 {
		k, _ := f.createKey(a.ID, fmt.Sprintf("a%d", i))
		want = append(want, k)
		f.createKey(b.ID, fmt.Sprintf("b%d", i))
	}
	r, _ := f.newKey(a.ID, "restricted", store.Restricted, "inbox")
	r, err := s.CreateKey(ctx, r, createEvent())
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	want = append(want, r)

	got, err := store.AllKeys(ctx, s, a.ID)
	if err != nil {
		t.Fatalf("ListKeys: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("ListKeys = %d keys, want %d", len(got), len(want))
	}
	for i := range want {
		sameKey(t, fmt.Sprintf("ListKeys[%d]", i), got[i], want[i])
		if got[i].Sealed != nil {
			t.Errorf("ListKeys[%d] has its sealed copy", i)
		}
	}

	if ks, err := store.AllKeys(ctx, s, "acct_unknown"); err != nil || len(ks) != 0 {
		t.Errorf("ListKeys of an unknown account = %+v, %v; want none", ks, err)
	}
}

func testDeleteKey(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	b := f.account("B")
	k, secret := f.createKey(a.ID, "k")

	_, err := s.DeleteKey(ctx, b.ID, k.ID, deleteEvent())
	wantErr(t, "DeleteKey through another account", err, store.ErrNotFound)
	if _, err := s.LookupKey(ctx, f.kr.Digest([]byte(secret))); err != nil {
		t.Errorf("LookupKey after a refused delete: %v", err)
	}
	if _, err := s.GetKey(ctx, a.ID, k.ID); err != nil {
		t.Errorf("GetKey after a refused delete: %v", err)
	}

	_, err = s.DeleteKey(ctx, a.ID, k.ID, store.AuditEvent{})
	wantErr(t, "DeleteKey without an actor", err, store.ErrInvalid)
	if _, err := s.GetKey(ctx, a.ID, k.ID); err != nil {
		t.Errorf("GetKey after a refused delete: %v", err)
	}

	del, err := s.DeleteKey(ctx, a.ID, k.ID, deleteEvent())
	if err != nil {
		t.Fatalf("DeleteKey: %v", err)
	}
	sameKey(t, "DeleteKey", del, k)

	_, err = s.GetKey(ctx, a.ID, k.ID)
	wantErr(t, "GetKey after delete", err, store.ErrNotFound)
	_, err = s.DeleteKey(ctx, a.ID, k.ID, deleteEvent())
	wantErr(t, "DeleteKey again", err, store.ErrNotFound)
	if ks, err := store.AllKeys(ctx, s, a.ID); err != nil || len(ks) != 0 {
		t.Errorf("ListKeys after delete = %+v, %v; want none", ks, err)
	}
}

func testTouchKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	k1, _ := f.createKey(a.ID, "one")
	k2, _ := f.createKey(a.ID, "two")
	k3, _ := f.createKey(a.ID, "three")

	lastUsed := func(id string) *time.Time {
		t.Helper()
		k, err := s.GetKey(ctx, a.ID, id)
		if err != nil {
			t.Fatalf("GetKey: %v", err)
		}
		return k.LastUsed
	}
	check := func(what, id string, want time.Time) {
		t.Helper()
		got := lastUsed(id)
		if got == nil || !got.Equal(want) || got.Location() != time.UTC {
			t.Errorf("%s: LastUsed = %v, want %v in UTC", what, got, want)
		}
	}

	// Nanoseconds and another zone: the stores keep microseconds in UTC.
	zone := time.FixedZone("UTC+5", 5*3600)
	t1 := time.Now().In(zone).Truncate(time.Microsecond).Add(789 * time.Nanosecond)
	want1 := t1.Truncate(time.Microsecond)
	if err := s.TouchKeys(ctx, map[string]time.Time{k1.ID: t1, k2.ID: t1, "key_deleted": t1, "key_\x00": t1}); err != nil {
		t.Fatalf("TouchKeys: %v", err)
	}
	check("first use", k1.ID, want1)
	check("first use", k2.ID, want1)
	if lastUsed(k3.ID) != nil {
		t.Error("an untouched key has a LastUsed time")
	}

	// An older time (a batch from a slower instance) does not go back.
	earlier, later := want1.Add(-time.Hour), want1.Add(time.Minute)
	if err := s.TouchKeys(ctx, map[string]time.Time{k1.ID: earlier, k2.ID: later}); err != nil {
		t.Fatalf("TouchKeys: %v", err)
	}
	check("older time", k1.ID, want1)
	check("later time", k2.ID, later)

	// ListKeys shows it too.
	ks, err := store.AllKeys(ctx, s, a.ID)
	if err != nil || len(ks) != 3 || ks[1].LastUsed == nil || !ks[1].LastUsed.Equal(later) {
		t.Errorf("ListKeys after TouchKeys = %+v, %v", ks, err)
	}

	if err := s.TouchKeys(ctx, nil); err != nil {
		t.Errorf("TouchKeys(nil): %v", err)
	}
	if err := s.TouchKeys(ctx, map[string]time.Time{"key_gone": later}); err != nil {
		t.Errorf("TouchKeys of only unknown ids: %v", err)
	}
}

func testMigrateAgain(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	_, secret := f.createKey(a.ID, "k")

	for range 2 {
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("Migrate again: %v", err)
		}
	}
	if _, err := s.LookupKey(ctx, f.kr.Digest([]byte(secret))); err != nil {
		t.Errorf("LookupKey after migrating again: %v", err)
	}
	if as, err := s.ListAccounts(ctx); err != nil || len(as) != 1 {
		t.Errorf("ListAccounts after migrating again = %+v, %v", as, err)
	}
}
