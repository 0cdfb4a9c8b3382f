package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

// ErrNoPreviousSecret: a rotation needs the secret being rotated out.
var ErrNoPreviousSecret = errors.New("no previous secret is configured")

// DefaultRotateBatch is how many keys a rotation re-keys per transaction:
// small enough that a batch holds its row locks for milliseconds.
const DefaultRotateBatch = 500

// Rotation re-keys a store's keys under the current secret.
type Rotation struct {
	Store   store.Store
	Keyring *keys.Keyring
	// Actor is recorded in each account's audit log ("operator:<user>").
	Actor string
	// Batch is how many keys each transaction re-keys. Default:
	// DefaultRotateBatch.
	Batch int
	// Instances, for a store shared by a fleet, lists the live
	// instances: the rotation makes the current secret the store's only
	// when every one of them has it.
	Instances func(ctx context.Context) ([]store.Instance, error)
	// Progress, when set, is told after each batch.
	Progress func(Progress)
}

// Progress is how far a rotation is.
type Progress struct {
	Done   int64 // keys re-keyed
	Failed int64 // keys whose sealed copy opens under no configured secret
	Total  int64 // keys not made with the current secret when it began
}

// RotateResult is what a rotation did.
type RotateResult struct {
	Progress
	// Current is the fingerprint of the secret every key is now made with.
	Current string
	// Broken are the keys left as they were: their sealed copy opens
	// under no configured secret.
	Broken []store.Key
	// Removable are the previous secrets no key is made with any more:
	// they can be removed from the configuration of every instance.
	Removable []string
}

// Rotate makes the keyring's current secret the store's and re-keys every
// key made with a previous secret: each sealed copy is opened with the
// secret that made it, and the key's digest and sealed copy are made
// again with the current one, in batches, while instances serve (a key is
// found under any configured secret throughout). An interrupted rotation
// is resumed by running it again: what is left is what is not yet made
// with the current secret. Each account's audit log records how many of
// its keys were re-keyed.
func Rotate(ctx context.Context, r Rotation) (res RotateResult, err error) {
	kr, st := r.Keyring, r.Store
	current := kr.Current().Fingerprint()
	if r.Actor == "" {
		return RotateResult{}, errors.New("a rotation needs an actor for the audit log")
	}
	if len(kr.Secrets()) == 1 {
		return RotateResult{}, fmt.Errorf("%w: set `secret` to the new secret and `previous_secrets` to the old one, give that configuration to every instance, then run this again", ErrNoPreviousSecret)
	}
	if _, err := CheckSecrets(ctx, st, kr, false); err != nil {
		return RotateResult{}, err
	}
	release, err := st.LockRotation(ctx)
	if errors.Is(err, store.ErrBusy) {
		return RotateResult{}, errors.New("another `keygate secret rotate` is running on this store: wait for it to end (stopped, it resumes where it was when run again)")
	}
	if err != nil {
		return RotateResult{}, fmt.Errorf("locking the rotation: %w", err)
	}
	defer release()
	if err := r.checkInstances(ctx, current); err != nil {
		return RotateResult{}, err
	}
	if err := st.SetCurrentSecret(ctx, current); err != nil {
		return RotateResult{}, fmt.Errorf("making secret %s current: %w", current, err)
	}

	res.Current = current
	counts, err := st.CountKeys(ctx)
	if err != nil {
		return res, fmt.Errorf("counting keys: %w", err)
	}
	for fp, n := range counts {
		if fp != current {
			res.Total += n
		}
	}
	perAccount := map[string]int64{}
	defer func() { err = errors.Join(err, r.audit(ctx, perAccount, current)) }()
	secrets, err := st.Secrets(ctx)
	if err != nil {
		return res, fmt.Errorf("reading the store's secrets: %w", err)
	}
	for _, s := range secrets {
		if s.Fingerprint == current {
			continue
		}
		if err := r.rekeyAll(ctx, s.Fingerprint, &res, perAccount); err != nil {
			return res, err
		}
	}
	if counts, err = st.CountKeys(ctx); err != nil {
		return res, fmt.Errorf("counting keys: %w", err)
	}
	left := false
	for fp, n := range counts {
		left = left || (fp != current && n > 0)
	}
	if !left {
		res.Removable = kr.Fingerprints()[1:]
	}
	return res, nil
}

// checkInstances refuses while a live instance of the fleet lacks the
// secret about to become current: it could not check the keys made with
// it.
func (r Rotation) checkInstances(ctx context.Context, current string) error {
	if r.Instances == nil {
		return nil
	}
	live, err := r.Instances(ctx)
	if err != nil {
		return fmt.Errorf("listing the fleet's instances: %w", err)
	}
	var lacking []string
	for _, in := range live {
		if !slices.Contains(in.Secrets, current) {
			has := "no fingerprints reported: an older keygate"
			if len(in.Secrets) > 0 {
				has = "has " + strings.Join(in.Secrets, ", ")
			}
			lacking = append(lacking, fmt.Sprintf("%s (%s)", in.Address, has))
		}
	}
	if len(lacking) > 0 {
		return fmt.Errorf("%d live instance(s) do not have secret %s yet: %s. Give each the new secret as `secret` with the old one in `previous_secrets`, restart or reload it, then run this again",
			len(lacking), current, strings.Join(lacking, "; "))
	}
	return nil
}

// rekeyAll re-keys, batch by batch, the keys made with the secret from.
func (r Rotation) rekeyAll(ctx context.Context, from string, res *RotateResult, perAccount map[string]int64) error {
	batch := r.Batch
	if batch <= 0 {
		batch = DefaultRotateBatch
	}
	to := r.Keyring.Current()
	for after := ""; ; {
		ks, err := r.Store.KeysBySecret(ctx, from, after, batch)
		if err != nil {
			return fmt.Errorf("reading keys to re-key: %w", err)
		}
		if len(ks) == 0 {
			return nil
		}
		after = ks[len(ks)-1].ID
		rekeys := make([]store.Rekey, 0, len(ks))
		for _, k := range ks {
			plain, _, err := r.Keyring.Open(k.Sealed, k.AccountID, k.ID, k.Secret)
			if err != nil {
				res.Failed++
				k.Sealed = nil
				res.Broken = append(res.Broken, k)
				continue
			}
			sealed, err := to.Seal(plain, k.AccountID, k.ID)
			if err != nil {
				return fmt.Errorf("sealing key %s: %w", k.ID, err)
			}
			perAccount[k.AccountID]++ // one too many only for a key deleted meanwhile
			rekeys = append(rekeys, store.Rekey{KeyID: k.ID, From: k.Secret, To: to.Fingerprint(), Digest: to.Digest([]byte(plain)), Sealed: sealed})
		}
		n, err := r.rekey(ctx, rekeys)
		if err != nil {
			return fmt.Errorf("re-keying keys after %s: %w", ks[0].ID, err)
		}
		res.Done += int64(n)
		if r.Progress != nil {
			r.Progress(res.Progress)
		}
	}
}

// rekeyAttempts bounds the tries of one batch that the store refuses as
// busy.
const rekeyAttempts = 5

// rekey writes one batch, again when the store says it was busy (a
// deadlock or serialization failure with another writer of the same
// keys, such as an instance's last-used flush): such a batch was rolled
// back whole, and each update is conditional on the row being what was
// read, so writing it again is safe.
func (r Rotation) rekey(ctx context.Context, rekeys []store.Rekey) (int, error) {
	for attempt := 1; ; attempt++ {
		n, err := r.Store.RekeyKeys(ctx, rekeys)
		if err == nil || attempt == rekeyAttempts || r.Store.Diagnose(err).Kind != store.KindBusy || ctx.Err() != nil {
			return n, err
		}
	}
}

// audit tells each account how many of its keys were re-keyed, also when
// the rotation stopped half way.
func (r Rotation) audit(ctx context.Context, perAccount map[string]int64, current string) error {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var errs []error
	for account, n := range perAccount {
		if n == 0 {
			continue
		}
		ev := store.AuditEvent{
			AccountID: account,
			Actor:     r.Actor,
			Action:    store.ActionRotate,
			Detail:    fmt.Sprintf("%d keys re-keyed under secret %s", n, current),
			At:        time.Now().UTC(),
		}
		if err := r.Store.AppendAudit(actx, ev); err != nil {
			errs = append(errs, fmt.Errorf("recording the rotation in account %s's audit log: %w", account, err))
		}
	}
	return errors.Join(errs...)
}
