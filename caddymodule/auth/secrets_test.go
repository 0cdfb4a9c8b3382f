package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/keygate/keygate/caddymodule/cache"
	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
	"github.com/keygate/keygate/caddymodule/store/postgres"
	"github.com/keygate/keygate/caddymodule/store/sqlite"
)

var (
	secretA = bytes.Repeat([]byte("a"), 32)
	secretB = bytes.Repeat([]byte("b"), 32)
	secretC = bytes.Repeat([]byte("c"), 32)
)

func keyring(t testing.TB, current []byte, previous ...[]byte) *keys.Keyring {
	t.Helper()
	kr, err := keys.NewKeyring(current, previous...)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// stores runs f against a real SQLite file and a real Postgres schema.
func stores(t *testing.T, f func(t *testing.T, st store.Store, local bool)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "keygate.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if err := st.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		f(t, st, true)
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		st, err := postgres.Open(context.Background(), pgtest.DSN(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		if err := st.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		f(t, st, false)
	})
}

// manager is a Manager on st with a keyring, as an instance has one.
func manager(t testing.TB, st store.Store, kr *keys.Keyring) *Manager {
	t.Helper()
	v, err := NewVerifier(VerifierConfig{Keyring: kr, Lookup: st.LookupKey, LookupAny: st.LookupKeyAny, Cache: testCache})
	if err != nil {
		t.Fatal(err)
	}
	return &Manager{Store: st, Keyring: kr, Verifier: v}
}

func makeKeys(t testing.TB, m *Manager, account string, n int) map[string]keys.Key {
	t.Helper()
	made := map[string]keys.Key{}
	for i := range n {
		k, plain, err := m.CreateKey(context.Background(), NewKey{AccountID: account, Name: fmt.Sprint("key ", i), Type: store.Standard}, Actor{UserID: "user-1"})
		if err != nil {
			t.Fatal(err)
		}
		made[k.ID] = plain
	}
	return made
}

// storeWithKeys checks kr's secret into st and makes n keys with it.
func storeWithKeys(t testing.TB, st store.Store, kr *keys.Keyring, local bool, n int) (store.Account, map[string]keys.Key) {
	t.Helper()
	ctx := context.Background()
	if _, err := CheckSecrets(ctx, st, kr, local); err != nil {
		t.Fatal(err)
	}
	acct, err := st.CreateAccount(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	return acct, makeKeys(t, manager(t, st, kr), acct.ID, n)
}

func allowed(t testing.TB, v *Verifier, plain keys.Key) bool {
	t.Helper()
	d := v.Verify(context.Background(), []string{"Bearer " + string(plain)})
	if d.Result == Unavailable {
		t.Fatalf("Verify: unavailable: %v", d.Err)
	}
	return d.Result == Allowed
}

func TestCheckSecrets(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store, local bool) {
		ctx := context.Background()
		a := keyring(t, secretA)
		// A new store takes the first instance's secret.
		check, err := CheckSecrets(ctx, st, a, local)
		if err != nil || check.Current != a.Current().Fingerprint() {
			t.Fatalf("CheckSecrets on a new store = %+v, %v", check, err)
		}
		acct, err := st.CreateAccount(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		makeKeys(t, manager(t, st, a), acct.ID, 3)

		// Another secret: refused, with the fingerprints and the fix.
		c := keyring(t, secretC)
		_, err = CheckSecrets(ctx, st, c, local)
		if !errors.Is(err, ErrWrongSecret) || !strings.Contains(err.Error(), a.Current().Fingerprint()) ||
			!strings.Contains(err.Error(), c.Current().Fingerprint()) || !strings.Contains(err.Error(), "previous_secrets") {
			t.Fatalf("CheckSecrets with another secret: %v", err)
		}
		// The new secret with the old one as previous: accepted.
		ba := keyring(t, secretB, secretA)
		check, err = CheckSecrets(ctx, st, ba, local)
		if err != nil {
			t.Fatal(err)
		}
		// On one node the new secret is current at once; a fleet keeps
		// the old one until a rotation.
		want := a.Current().Fingerprint()
		if local {
			want = ba.Current().Fingerprint()
		}
		if check.Current != want || len(check.Unused) != 0 {
			t.Fatalf("CheckSecrets(B, A) = %+v, want current %s", check, want)
		}
		// A previous secret that made nothing is reported as removable.
		bac := keyring(t, secretB, secretA, secretC)
		if check, err = CheckSecrets(ctx, st, bac, local); err != nil || !slices.Equal(check.Unused, []string{keyring(t, secretC).Current().Fingerprint()}) {
			t.Fatalf("CheckSecrets(B, A, C) = %+v, %v", check, err)
		}
	})
}

// TestCheckSecretsFleetMismatch: two instances of a fleet with different
// secrets, before any key: the second is refused; a single node that made
// no key may replace its secret.
func TestCheckSecretsFleetMismatch(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store, local bool) {
		ctx := context.Background()
		if _, err := CheckSecrets(ctx, st, keyring(t, secretA), local); err != nil {
			t.Fatal(err)
		}
		_, err := CheckSecrets(ctx, st, keyring(t, secretC), local)
		if local && err != nil {
			t.Fatalf("a single node that made no key could not replace its secret: %v", err)
		}
		if !local && !errors.Is(err, ErrWrongSecret) {
			t.Fatalf("second instance of a fleet with another secret: %v", err)
		}
	})
}

// TestCheckSecretsAdoptsOldKeys: keys stored before fingerprints are
// recorded as made with the secret that opens them, and refused as
// another secret's when none does.
func TestCheckSecretsAdoptsOldKeys(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store, local bool) {
		ctx := context.Background()
		a := keyring(t, secretA)
		acct, err := st.CreateAccount(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		for i := range 3 { // as a keygate from before fingerprints stored them
			plain, _ := keys.New()
			id, _ := keys.NewID("key")
			sealed, _ := a.Seal(plain, acct.ID, id)
			k := store.Key{ID: id, AccountID: acct.ID, Name: fmt.Sprint("old ", i), Type: store.Standard, Display: plain.Display(), Digest: a.Digest([]byte(plain)), Sealed: sealed, CreatedBy: "user-1"}
			if _, err := st.CreateKey(ctx, k, store.AuditEvent{Actor: "user-1"}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := CheckSecrets(ctx, st, keyring(t, secretC), local); !errors.Is(err, ErrWrongSecret) {
			t.Fatalf("old keys checked with another secret: %v", err)
		}
		check, err := CheckSecrets(ctx, st, keyring(t, secretB, secretA), local)
		if err != nil || check.Adopted != 3 {
			t.Fatalf("CheckSecrets = %+v, %v; want 3 adopted", check, err)
		}
		counts, err := st.CountKeys(ctx)
		if err != nil || counts[a.Current().Fingerprint()] != 3 {
			t.Fatalf("CountKeys = %v, %v", counts, err)
		}
	})
}

// TestRotate re-keys every key while a verifier keeps checking each one,
// then checks that no digest made with the old secret is left.
func TestRotate(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store, local bool) {
		ctx := context.Background()
		a := keyring(t, secretA)
		acct, made := storeWithKeys(t, st, a, local, 40)

		ba := keyring(t, secretB, secretA)
		if _, err := CheckSecrets(ctx, st, ba, local); err != nil {
			t.Fatal(err)
		}
		m := manager(t, st, ba)
		for _, plain := range made {
			if !allowed(t, m.Verifier, plain) {
				t.Fatal("a key made with the previous secret is refused")
			}
		}
		// A client keeps using every key, from the cache and, with a
		// fresh verifier, from the store, while the rotation runs.
		stop := make(chan struct{})
		var wg sync.WaitGroup
		var refused sync.Map
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				fresh := manager(t, st, ba).Verifier
				for id, plain := range made {
					for _, v := range []*Verifier{m.Verifier, fresh} {
						if d := v.Verify(ctx, []string{"Bearer " + string(plain)}); d.Result != Allowed {
							refused.Store(id, fmt.Sprintf("%s (%v)", d.Result, d.Err))
						}
					}
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
		var progress []Progress
		res, err := Rotate(ctx, Rotation{Store: st, Keyring: ba, Actor: "operator:test", Batch: 7, Progress: func(p Progress) { progress = append(progress, p) }})
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		refused.Range(func(id, why any) bool { t.Errorf("key %s refused during the rotation: %s", id, why); return true })
		if res.Done != 40 || res.Total != 40 || res.Failed != 0 || !slices.Equal(res.Removable, []string{a.Current().Fingerprint()}) {
			t.Fatalf("Rotate = %+v", res)
		}
		if len(progress) != 6 || progress[5].Done != 40 {
			t.Fatalf("progress = %+v, want 6 batches ending at 40", progress)
		}
		// Without the previous secret, every key works and reveals; the
		// store holds no digest made with it.
		b := keyring(t, secretB)
		if _, err := CheckSecrets(ctx, st, b, local); err != nil {
			t.Fatalf("the previous secret is still needed after the rotation: %v", err)
		}
		mb := manager(t, st, b)
		for id, plain := range made {
			if !allowed(t, mb.Verifier, plain) {
				t.Fatalf("key %s refused after the rotation", id)
			}
			if _, got, err := mb.RevealKey(ctx, acct.ID, id, Actor{UserID: "user-1"}); err != nil || got != plain {
				t.Fatalf("reveal of %s after the rotation: %v", id, err)
			}
			if _, err := st.LookupKey(ctx, a.Digest([]byte(plain))); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("the old digest of %s is still stored: %v", id, err)
			}
		}
		page, err := st.ListAudit(ctx, acct.ID, store.AuditQuery{Action: store.ActionRotate})
		if err != nil {
			t.Fatal(err)
		}
		rotations := page.Events
		if len(rotations) != 1 || rotations[0].Actor != "operator:test" || !strings.Contains(rotations[0].Detail, "40 keys") {
			t.Fatalf("audit of the rotation: %+v", rotations)
		}
		// Again: nothing to do, and still done.
		if res, err := Rotate(ctx, Rotation{Store: st, Keyring: ba, Actor: "operator:test"}); err != nil || res.Done != 0 || len(res.Removable) != 1 {
			t.Fatalf("second Rotate = %+v, %v", res, err)
		}
	})
}

func TestRotateBadInput(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store, local bool) {
		ctx := context.Background()
		a := keyring(t, secretA)
		acct, made := storeWithKeys(t, st, a, local, 5)

		if _, err := Rotate(ctx, Rotation{Store: st, Keyring: a, Actor: "operator:test"}); !errors.Is(err, ErrNoPreviousSecret) {
			t.Fatalf("Rotate without a previous secret: %v", err)
		}
		if _, err := Rotate(ctx, Rotation{Store: st, Keyring: keyring(t, secretC, secretB), Actor: "operator:test"}); !errors.Is(err, ErrWrongSecret) {
			t.Fatalf("Rotate with secrets that made no key: %v", err)
		}
		ba := keyring(t, secretB, secretA)
		release, err := st.LockRotation(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Rotate(ctx, Rotation{Store: st, Keyring: ba, Actor: "operator:test"}); err == nil || !strings.Contains(err.Error(), "another `keygate secret rotate` is running") {
			t.Fatalf("Rotate while another runs: %v", err)
		}
		release()

		// A key whose sealed copy opens under no secret: reported, the
		// others re-keyed.
		var broken string
		for id := range made {
			broken = id
			break
		}
		k, err := st.GetKey(ctx, acct.ID, broken)
		if err != nil {
			t.Fatal(err)
		}
		c := keyring(t, secretC)
		sealed, _ := c.Seal(made[broken], acct.ID, broken)
		if _, err := st.RekeyKeys(ctx, []store.Rekey{{KeyID: broken, From: k.Secret, To: k.Secret, Digest: k.Digest, Sealed: sealed}}); err != nil {
			t.Fatal(err)
		}
		res, err := Rotate(ctx, Rotation{Store: st, Keyring: ba, Actor: "operator:test"})
		if err != nil || res.Done != 4 || res.Failed != 1 || len(res.Broken) != 1 || res.Broken[0].ID != broken || len(res.Removable) != 0 {
			t.Fatalf("Rotate with a broken key = %+v, %v", res, err)
		}
		// Fleet: refused while a live instance lacks the new secret.
		if !local {
			lacking := func(context.Context) ([]store.Instance, error) {
				return []store.Instance{{Address: "host-1 pid 1", Secrets: a.Fingerprints()}, {Address: "host-2 pid 2", Secrets: ba.Fingerprints()}}, nil
			}
			_, err := Rotate(ctx, Rotation{Store: st, Keyring: ba, Actor: "operator:test", Instances: lacking})
			if err == nil || !strings.Contains(err.Error(), "host-1 pid 1") || strings.Contains(err.Error(), "host-2") {
				t.Fatalf("Rotate with an instance lacking the secret: %v", err)
			}
		}
	})
}

// TestVerifierPreviousSecrets: a key stored under a previous secret's
// digest is found, cached under the current one's, and its deletion
// applied by key id evicts it.
func TestVerifierPreviousSecrets(t *testing.T) {
	old, ba := keyring(t, secretA), keyring(t, secretB, secretA)
	kt := &keyTable{byHash: map[keys.Digest]store.Identity{}}
	v, err := NewVerifier(VerifierConfig{Keyring: ba, Lookup: kt.lookup, LookupAny: kt.lookupAny, Cache: testCache})
	if err != nil {
		t.Fatal(err)
	}
	k := kt.add(old, store.Identity{KeyID: "key_old", AccountID: "acct_1", Type: store.Standard, Display: "kg_abcde"})
	ctx := context.Background()
	if d := v.Verify(ctx, []string{"Bearer " + string(k)}); d.Result != Allowed || d.Cache != cache.Miss {
		t.Fatalf("key under the previous secret: %+v", d)
	}
	if n := kt.lookups.Load(); n != 1 {
		t.Fatalf("lookups = %d, want 1 (current and previous in one)", n)
	}
	if d := v.Verify(ctx, []string{"Bearer " + string(k)}); d.Result != Allowed || d.Cache != cache.Hit {
		t.Fatalf("second check: %+v", d)
	}
	// Re-keyed meanwhile (the row moves to the current digest): still
	// served from the cache, and found again after.
	kt.mu.Lock()
	delete(kt.byHash, old.Digest([]byte(k)))
	kt.byHash[ba.Digest([]byte(k))] = store.Identity{KeyID: "key_old", AccountID: "acct_1", Type: store.Standard, Display: "kg_abcde"}
	kt.mu.Unlock()
	if d := v.Verify(ctx, []string{"Bearer " + string(k)}); d.Result != Allowed {
		t.Fatalf("after re-keying: %+v", d)
	}
	// Deleted: the event names the stored digest (the current one) and
	// the key id; by id, the cached entry goes whatever digest it is under.
	kt.mu.Lock()
	clear(kt.byHash)
	kt.mu.Unlock()
	v.ForgetKey("key_old")
	if d := v.Verify(ctx, []string{"Bearer " + string(k)}); d.Result != Unauthorized {
		t.Fatalf("deleted key: %+v", d)
	}
	// An unknown key costs one lookup, then is cached as unknown.
	before := kt.lookups.Load()
	unknown, _ := keys.New()
	for range 3 {
		if d := v.Verify(ctx, []string{"Bearer " + string(unknown)}); d.Result != Unauthorized {
			t.Fatalf("unknown key: %+v", d)
		}
	}
	if n := kt.lookups.Load() - before; n != 1 {
		t.Fatalf("unknown key: %d lookups, want 1", n)
	}
}

// TestManagerMakesKeysWithTheStoresSecret: in a fleet, until a rotation
// makes the new secret current, an instance that has it makes keys with
// the store's current one, which every instance can check.
func TestManagerMakesKeysWithTheStoresSecret(t *testing.T) {
	st, err := postgres.Open(context.Background(), pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	a, ba := keyring(t, secretA), keyring(t, secretB, secretA)
	if _, err := CheckSecrets(ctx, st, a, false); err != nil {
		t.Fatal(err)
	}
	if _, err := CheckSecrets(ctx, st, ba, false); err != nil {
		t.Fatal(err)
	}
	acct, _ := st.CreateAccount(ctx, "acme")
	made := makeKeys(t, manager(t, st, ba), acct.ID, 1)
	old := manager(t, st, a) // an instance not yet given the new secret
	for id, plain := range made {
		if !allowed(t, old.Verifier, plain) {
			t.Fatal("a key made by an instance with the new secret is refused by one without it")
		}
		if k, _ := st.GetKey(ctx, acct.ID, id); k.Secret != a.Current().Fingerprint() {
			t.Fatalf("key made with secret %s, want the store's current %s", k.Secret, a.Current().Fingerprint())
		}
	}
	if err := st.SetCurrentSecret(ctx, ba.Current().Fingerprint()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := old.CreateKey(ctx, NewKey{AccountID: acct.ID, Name: "late", Type: store.Standard}, Actor{UserID: "user-1"}); err == nil || !strings.Contains(err.Error(), "does not have") {
		t.Fatalf("an instance without the store's current secret made a key: %v", err)
	}
}

// busyStore refuses the first batches it is asked to re-key as the store
// refuses a batch that ran into another writer (a deadlock), and then
// writes them.
type busyStore struct {
	store.Store
	refusals int
	asked    int
}

var errDeadlock = errors.New("re-keying keys: ERROR: deadlock detected (SQLSTATE 40P01)")

func (b *busyStore) RekeyKeys(ctx context.Context, rekeys []store.Rekey) (int, error) {
	b.asked++
	if b.asked <= b.refusals {
		return 0, errDeadlock
	}
	return b.Store.RekeyKeys(ctx, rekeys)
}

func (b *busyStore) Diagnose(err error) store.Diagnosis {
	if errors.Is(err, errDeadlock) {
		return store.Diagnosis{Kind: store.KindBusy}
	}
	return b.Store.Diagnose(err)
}

// TestRotateRetriesBusyBatches: a batch the store refuses as busy is
// written again, a few times, rather than stopping the rotation half way;
// past that, the rotation stops and says why.
func TestRotateRetriesBusyBatches(t *testing.T) {
	stores(t, func(t *testing.T, st store.Store, local bool) {
		ctx := context.Background()
		a := keyring(t, secretA)
		storeWithKeys(t, st, a, local, 5)
		ba := keyring(t, secretB, secretA)

		busy := &busyStore{Store: st, refusals: rekeyAttempts}
		if _, err := Rotate(ctx, Rotation{Store: busy, Keyring: ba, Actor: "operator:test", Batch: 2}); !errors.Is(err, errDeadlock) {
			t.Fatalf("Rotate with a store busy %d times: %v", rekeyAttempts, err)
		}
		busy = &busyStore{Store: st, refusals: rekeyAttempts - 1}
		res, err := Rotate(ctx, Rotation{Store: busy, Keyring: ba, Actor: "operator:test", Batch: 2})
		if err != nil || res.Done != 5 || res.Failed != 0 {
			t.Fatalf("Rotate with a store busy %d times = %+v, %v", rekeyAttempts-1, res, err)
		}
	})
}
