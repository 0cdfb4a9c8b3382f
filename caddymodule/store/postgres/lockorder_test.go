package postgres

import (
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/internal/keytest"
	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

// TestKeyWritersDoNotDeadlock: the writers of many keys at once (the
// last-used flush, the activity flush, a rotation's re-keying) lock the
// keys' rows in one order, so that running together they queue rather
// than deadlock. A deadlock fails one of them (SQLSTATE 40P01): a
// rotation would stop half way.
func TestKeyWritersDoNotDeadlock(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := openMigrated(t, pgtest.DSN(t))
	a, err := s.CreateAccount(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	kr, err := keys.NewKeyring([]byte("lock order test secret 0123456789abcdefgh"))
	if err != nil {
		t.Fatal(err)
	}
	next, err := keys.NewKeyring([]byte("lock order test secret, the next one 0123"))
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	var made []store.Key
	var secrets []keys.Key
	for i := range n {
		k, secret := keytest.Mint(t, kr, a.ID, "key "+string(rune('a'+i%26))+time.Duration(i).String())
		if k, err = s.CreateKey(ctx, k, store.AuditEvent{Actor: "test"}); err != nil {
			t.Fatal(err)
		}
		made, secrets = append(made, k), append(secrets, secret)
	}
	const rounds = 20
	var wg sync.WaitGroup
	errs := make(chan error, 3*rounds)
	wg.Go(func() { // re-keying back and forth, in batches in id order
		for r := range rounds {
			from, to := kr, next
			if r%2 == 1 {
				from, to = next, kr
			}
			var batch []store.Rekey
			for i, k := range made {
				sealed, err := to.Seal(secrets[i], a.ID, k.ID)
				if err != nil {
					errs <- err
					return
				}
				batch = append(batch, store.Rekey{KeyID: k.ID, From: from.Current().Fingerprint(), To: to.Current().Fingerprint(),
					Digest: to.Digest([]byte(secrets[i])), Sealed: sealed})
			}
			if _, err := s.RekeyKeys(ctx, batch); err != nil {
				errs <- err
			}
		}
	})
	wg.Go(func() { // last-used flushes of every key
		for r := range rounds {
			used := map[string]time.Time{}
			for _, k := range made {
				used[k.ID] = time.Now().Add(time.Duration(r) * time.Second)
			}
			if err := s.TouchKeys(ctx, used); err != nil {
				errs <- err
			}
		}
	})
	wg.Go(func() { // activity flushes of every key
		for range rounds {
			var hours []store.ActivityHour
			for _, k := range made {
				hours = append(hours, store.ActivityHour{KeyID: k.ID, Hour: store.ActivityHourOf(time.Now()), Allowed: 1})
			}
			if err := s.RecordActivity(ctx, hours); err != nil {
				errs <- err
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("a writer failed: %v", err)
	}
}
