package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

const (
	fpA = "0123456789abcdef"
	fpB = "fedcba9876543210"
)

// secretState is a store's secrets, without the times, in order.
func secretState(t *testing.T, s store.Store) []store.Secret {
	t.Helper()
	secrets, err := s.Secrets(context.Background())
	if err != nil {
		t.Fatalf("Secrets: %v", err)
	}
	out := make([]store.Secret, len(secrets))
	for i, sec := range secrets {
		out[i] = store.Secret{Fingerprint: sec.Fingerprint, Current: sec.Current, HasKeys: sec.HasKeys}
	}
	return out
}

func testSecrets(t *testing.T, s store.Store) {
	ctx := context.Background()
	f := newFixture(t, s)
	if got := secretState(t, s); len(got) != 0 {
		t.Fatalf("a new store has secrets %+v", got)
	}
	if cur, err := s.InitSecret(ctx, fpA); err != nil || cur != fpA {
		t.Fatalf("InitSecret(A) = %q, %v", cur, err)
	}
	// A store that has a current secret keeps it.
	if cur, err := s.InitSecret(ctx, fpB); err != nil || cur != fpA {
		t.Fatalf("InitSecret(B) after A = %q, %v", cur, err)
	}
	if got, want := secretState(t, s), []store.Secret{{Fingerprint: fpA, Current: true}}; !slices.Equal(got, want) {
		t.Fatalf("Secrets = %+v, want %+v", got, want)
	}
	acct := f.account("acme")
	k, _ := f.newKey(acct.ID, "one", store.Standard, "")
	k.Secret = fpA
	if _, err := s.CreateKey(ctx, k, createEvent()); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCurrentSecret(ctx, fpB); err != nil {
		t.Fatal(err)
	}
	want := []store.Secret{{Fingerprint: fpA, HasKeys: true}, {Fingerprint: fpB, Current: true}}
	if got := secretState(t, s); !slices.Equal(got, want) {
		t.Fatalf("after SetCurrentSecret(B): Secrets = %+v, want %+v", got, want)
	}
	if got, err := s.CountKeys(ctx); err != nil || len(got) != 1 || got[fpA] != 1 {
		t.Fatalf("CountKeys = %v, %v", got, err)
	}
	// Back to A: B made no key, so only A is listed.
	if err := s.SetCurrentSecret(ctx, fpA); err != nil {
		t.Fatal(err)
	}
	if got, want := secretState(t, s), []store.Secret{{Fingerprint: fpA, Current: true, HasKeys: true}}; !slices.Equal(got, want) {
		t.Fatalf("after SetCurrentSecret(A): Secrets = %+v, want %+v", got, want)
	}
	// Once its last key is gone, a previous secret is no longer listed.
	if err := s.SetCurrentSecret(ctx, fpB); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeleteKey(ctx, acct.ID, k.ID, deleteEvent()); err != nil {
		t.Fatal(err)
	}
	if got, want := secretState(t, s), []store.Secret{{Fingerprint: fpB, Current: true}}; !slices.Equal(got, want) {
		t.Fatalf("after deleting A's last key: Secrets = %+v, want %+v", got, want)
	}
}

func testSecretsConcurrentInit(t *testing.T, s store.Store) {
	ctx := context.Background()
	fps := []string{fpA, fpB, "00000000000000aa", "00000000000000bb"}
	got := make([]string, len(fps)*4)
	var wg sync.WaitGroup
	for i := range got {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cur, err := s.InitSecret(ctx, fps[i%len(fps)])
			if err != nil {
				t.Errorf("InitSecret: %v", err)
			}
			got[i] = cur
		}()
	}
	wg.Wait()
	for _, cur := range got {
		if cur != got[0] {
			t.Fatalf("instances starting together got different current secrets: %v", got)
		}
	}
	if st := secretState(t, s); len(st) != 1 || st[0].Fingerprint != got[0] {
		t.Fatalf("Secrets = %+v, want only %s", st, got[0])
	}
}

func testSecretsBadInput(t *testing.T, s store.Store) {
	ctx := context.Background()
	f := newFixture(t, s)
	acct := f.account("acme")
	for i, bad := range []string{"", "x", "0123456789ABCDEF", "'; drop table api_keys; --", "0123456789abcde\x00", "0123456789abcdef0"} {
		_, err := s.InitSecret(ctx, bad)
		wantErr(t, "InitSecret("+bad+")", err, store.ErrInvalid)
		wantErr(t, "SetCurrentSecret("+bad+")", s.SetCurrentSecret(ctx, bad), store.ErrInvalid)
		_, err = s.AdoptKeys(ctx, bad)
		wantErr(t, "AdoptKeys("+bad+")", err, store.ErrInvalid)
		if bad == "" {
			continue // a key without a fingerprint is one stored before them
		}
		k, _ := f.newKey(acct.ID, fmt.Sprint("k", i), store.Standard, "")
		k.Secret = bad
		_, err = s.CreateKey(ctx, k, createEvent())
		wantErr(t, "CreateKey with secret "+bad, err, store.ErrInvalid)
	}
	if got := secretState(t, s); len(got) != 0 {
		t.Fatalf("bad input left secrets %+v", got)
	}
}

func testLegacyKeys(t *testing.T, s store.Store) {
	ctx := context.Background()
	f := newFixture(t, s)
	acct := f.account("acme")
	k, _ := f.newKey(acct.ID, "old", store.Standard, "")
	k.Secret = "" // as a keygate from before fingerprints stored it
	if _, err := s.CreateKey(ctx, k, createEvent()); err != nil {
		t.Fatal(err)
	}
	if got, want := secretState(t, s), []store.Secret{{Fingerprint: "", HasKeys: true}}; !slices.Equal(got, want) {
		t.Fatalf("Secrets = %+v, want %+v", got, want)
	}
	legacy, err := s.KeysBySecret(ctx, "", "", 10)
	if err != nil || len(legacy) != 1 || legacy[0].ID != k.ID || !bytes.Equal(legacy[0].Sealed, k.Sealed) {
		t.Fatalf("KeysBySecret(\"\") = %+v, %v", legacy, err)
	}
	if n, err := s.AdoptKeys(ctx, fpA); err != nil || n != 1 {
		t.Fatalf("AdoptKeys = %d, %v", n, err)
	}
	if got, err := s.GetKey(ctx, acct.ID, k.ID); err != nil || got.Secret != fpA {
		t.Fatalf("after AdoptKeys: key secret %q, %v", got.Secret, err)
	}
	if got, err := s.CountKeys(ctx); err != nil || got[fpA] != 1 || got[""] != 0 {
		t.Fatalf("CountKeys = %v, %v", got, err)
	}
}

func testRekey(t *testing.T, s store.Store) {
	ctx := context.Background()
	f := newFixture(t, s)
	next, err := keys.NewKeyring(bytes.Repeat([]byte("storetest next secret "), 2))
	if err != nil {
		t.Fatal(err)
	}
	from, to := f.kr.Current().Fingerprint(), next.Current().Fingerprint()
	acct := f.account("acme")
	plains := map[string]keys.Key{}
	var ids []string
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		k, plain := f.createKey(acct.ID, name)
		plains[k.ID] = plain
		ids = append(ids, k.ID)
	}
	slices.Sort(ids)

	// Paging by id, sealed copies included.
	page, err := s.KeysBySecret(ctx, from, "", 2)
	if err != nil || len(page) != 2 || page[0].ID != ids[0] || page[1].ID != ids[1] || page[0].Secret != from || len(page[0].Sealed) == 0 {
		t.Fatalf("first page = %+v, %v", page, err)
	}
	rest, err := s.KeysBySecret(ctx, from, page[1].ID, 10)
	if err != nil || len(rest) != 3 || rest[0].ID != ids[2] {
		t.Fatalf("next page = %+v, %v", rest, err)
	}
	if none, err := s.KeysBySecret(ctx, to, "", 10); err != nil || len(none) != 0 {
		t.Fatalf("KeysBySecret(other) = %+v, %v", none, err)
	}

	rekey := func(k store.Key) store.Rekey {
		plain := plains[k.ID]
		sealed, err := next.Seal(plain, k.AccountID, k.ID)
		if err != nil {
			t.Fatal(err)
		}
		return store.Rekey{KeyID: k.ID, From: from, To: to, Digest: next.Digest([]byte(plain)), Sealed: sealed}
	}
	// A key deleted between reading and re-keying is left deleted.
	deleted := page[0]
	if _, err := s.DeleteKey(ctx, acct.ID, deleted.ID, deleteEvent()); err != nil {
		t.Fatal(err)
	}
	n, err := s.RekeyKeys(ctx, []store.Rekey{rekey(page[0]), rekey(page[1])})
	if err != nil || n != 1 {
		t.Fatalf("RekeyKeys = %d, %v; want 1 (one key was deleted)", n, err)
	}
	if _, err := s.GetKey(ctx, acct.ID, deleted.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("re-keying brought back a deleted key: %v", err)
	}
	// Re-keyed: found under the new digest only, sealed under the new secret.
	k := page[1]
	if _, err := s.LookupKey(ctx, f.kr.Digest([]byte(plains[k.ID]))); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("old digest still found: %v", err)
	}
	if id, err := s.LookupKey(ctx, next.Digest([]byte(plains[k.ID]))); err != nil || id.KeyID != k.ID {
		t.Fatalf("new digest: %+v, %v", id, err)
	}
	got, err := s.GetKey(ctx, acct.ID, k.ID)
	if err != nil || got.Secret != to {
		t.Fatalf("GetKey after re-key: secret %q, %v", got.Secret, err)
	}
	if plain, err := next.Current().Open(got.Sealed, got.AccountID, got.ID); err != nil || plain != plains[k.ID] {
		t.Fatalf("new sealed copy does not open: %v", err)
	}
	// Again, as a second rotation racing the first would: nothing changes.
	if n, err := s.RekeyKeys(ctx, []store.Rekey{rekey(k)}); err != nil || n != 0 {
		t.Fatalf("RekeyKeys of a key already re-keyed = %d, %v", n, err)
	}
	// The rest, in one batch.
	var batch []store.Rekey
	for _, k := range rest {
		batch = append(batch, rekey(k))
	}
	if n, err := s.RekeyKeys(ctx, batch); err != nil || n != len(rest) {
		t.Fatalf("RekeyKeys(rest) = %d, %v", n, err)
	}
	if counts, err := s.CountKeys(ctx); err != nil || counts[to] != 4 || counts[from] != 0 {
		t.Fatalf("CountKeys = %v, %v", counts, err)
	}
	// One statement finds a key under any of its digests.
	unknown := next.Digest([]byte("kg_not a key"))
	if id, err := s.LookupKeyAny(ctx, []keys.Digest{unknown, next.Digest([]byte(plains[k.ID]))}); err != nil || id.KeyID != k.ID {
		t.Fatalf("LookupKeyAny = %+v, %v", id, err)
	}
	for _, ds := range [][]keys.Digest{nil, {unknown}, {f.kr.Digest([]byte(plains[k.ID]))}} {
		if _, err := s.LookupKeyAny(ctx, ds); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("LookupKeyAny(%d digests, none stored): %v", len(ds), err)
		}
	}
	if n, err := s.RekeyKeys(ctx, nil); err != nil || n != 0 {
		t.Fatalf("RekeyKeys(nil) = %d, %v", n, err)
	}
	bad := rekey(rest[0])
	bad.To = "not a fingerprint"
	_, err = s.RekeyKeys(ctx, []store.Rekey{bad})
	wantErr(t, "RekeyKeys to a bad fingerprint", err, store.ErrInvalid)
}

func testLockRotation(t *testing.T, s store.Store) {
	ctx := context.Background()
	release, err := s.LockRotation(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LockRotation(ctx); !errors.Is(err, store.ErrBusy) {
		t.Fatalf("second LockRotation: %v, want ErrBusy", err)
	}
	release()
	again, err := s.LockRotation(ctx)
	if err != nil {
		t.Fatalf("LockRotation after release: %v", err)
	}
	again()
}

func testAuditDetail(t *testing.T, s store.Store) {
	ctx := context.Background()
	f := newFixture(t, s)
	acct := f.account("acme")
	ev := store.AuditEvent{AccountID: acct.ID, Actor: "operator:root", Action: store.ActionRotate, Detail: "12 keys re-keyed under secret " + fpB}
	if err := s.AppendAudit(ctx, ev); err != nil {
		t.Fatal(err)
	}
	evs, err := auditEvents(ctx, s, acct.ID, 0, 10)
	if err != nil || len(evs) != 1 || evs[0].Action != store.ActionRotate || evs[0].Detail != ev.Detail || evs[0].KeyID != "" {
		t.Fatalf("ListAudit = %+v, %v", evs, err)
	}
}
