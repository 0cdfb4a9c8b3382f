package auth

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

// ErrWrongSecret says that a store's keys were made with a secret the
// keyring does not have: serving with it would answer 401 to every key.
var ErrWrongSecret = errors.New("this store's keys were made with another secret")

// SecretCheck is what CheckSecrets found.
type SecretCheck struct {
	// Current is the fingerprint of the secret the store makes new keys
	// with.
	Current string
	// Adopted is how many keys stored without a fingerprint were found
	// to be made with one of the keyring's secrets, and recorded so.
	Adopted int64
	// Unused are the keyring's previous secrets that made no stored key
	// and are not current: they can be removed from the configuration.
	Unused []string
}

// CheckSecrets makes sure that every key in the store was made with a
// secret of the keyring, before an instance serves with it, and records
// the keyring's current secret as the store's on a store that has none.
//
// On a single node (local), the keyring's current secret becomes the
// store's at once. In a fleet it becomes current only through a rotation
// (Rotate), once every live instance has it: until then an instance that
// has the new secret makes keys with the old one, so that the instances
// not yet given the new secret can check them.
func CheckSecrets(ctx context.Context, st store.Store, kr *keys.Keyring, local bool) (SecretCheck, error) {
	secrets, err := st.Secrets(ctx)
	if err != nil {
		return SecretCheck{}, fmt.Errorf("checking the secret: %w", err)
	}
	var check SecretCheck
	var foreign []string
	for _, s := range secrets {
		if s.Fingerprint == "" {
			n, err := adoptKeys(ctx, st, kr)
			if errors.Is(err, ErrWrongSecret) {
				foreign = append(foreign, "unrecorded (keys stored before keygate recorded fingerprints)")
				continue
			}
			if err != nil {
				return SecretCheck{}, err
			}
			check.Adopted = n
			continue
		}
		if _, ok := kr.Secret(s.Fingerprint); !ok && (s.HasKeys || !local) {
			// A fleet's current secret counts even before it made a key:
			// two instances with different secrets would make keys the
			// other refuses. A single node loses nothing by replacing
			// a secret that made none.
			foreign = append(foreign, s.Fingerprint)
		}
	}
	if len(foreign) > 0 {
		return SecretCheck{}, fmt.Errorf("%w (fingerprint %s); the configured secrets are %s. Restore the secret that made them as `secret`, or give it in `previous_secrets` while rotating: starting with another secret would refuse every key",
			ErrWrongSecret, strings.Join(foreign, ", "), describeKeyring(kr))
	}
	current := kr.Current().Fingerprint()
	if check.Current, err = st.InitSecret(ctx, current); err != nil {
		return SecretCheck{}, fmt.Errorf("recording the secret: %w", err)
	}
	if local && check.Current != current {
		if err := st.SetCurrentSecret(ctx, current); err != nil {
			return SecretCheck{}, fmt.Errorf("making the configured secret current: %w", err)
		}
		check.Current = current
	}
	for _, s := range kr.Secrets()[1:] {
		fp := s.Fingerprint()
		if fp != check.Current && !slices.ContainsFunc(secrets, func(ss store.Secret) bool { return ss.Fingerprint == fp }) {
			check.Unused = append(check.Unused, fp)
		}
	}
	return check, nil
}

// adoptKeys records which secret made the keys stored without a
// fingerprint (by a keygate from before fingerprints), after opening one
// of them with it. Such keys were all made with the one secret of that
// keygate.
func adoptKeys(ctx context.Context, st store.Store, kr *keys.Keyring) (int64, error) {
	ks, err := st.KeysBySecret(ctx, "", "", 1)
	if err != nil {
		return 0, fmt.Errorf("checking the secret: %w", err)
	}
	if len(ks) == 0 { // adopted meanwhile by another instance
		return 0, nil
	}
	_, by, err := kr.Open(ks[0].Sealed, ks[0].AccountID, ks[0].ID, "")
	if err != nil {
		return 0, ErrWrongSecret
	}
	if _, err := st.InitSecret(ctx, by.Fingerprint()); err != nil {
		return 0, fmt.Errorf("recording the secret: %w", err)
	}
	n, err := st.AdoptKeys(ctx, by.Fingerprint())
	if err != nil {
		return 0, fmt.Errorf("recording the secret of existing keys: %w", err)
	}
	return n, nil
}

// describeKeyring names a keyring's secrets by fingerprint.
func describeKeyring(kr *keys.Keyring) string {
	fps := kr.Fingerprints()
	s := fps[0] + " (current)"
	if len(fps) > 1 {
		s += " and " + strings.Join(fps[1:], ", ") + " (previous)"
	}
	return s
}

// maker returns the secret new keys are made with: the store's current
// one, which this keyring must have.
func maker(ctx context.Context, st store.Store, kr *keys.Keyring) (*keys.Secret, error) {
	secrets, err := st.Secrets(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the current secret: %w", err)
	}
	for _, s := range secrets {
		if !s.Current {
			continue
		}
		if sec, ok := kr.Secret(s.Fingerprint); ok {
			return sec, nil
		}
		return nil, fmt.Errorf("the store makes keys with secret %s, which this instance does not have (it has %s): give it the new secret, with the old one in previous_secrets", s.Fingerprint, describeKeyring(kr))
	}
	// A store that never went through CheckSecrets (tests): the keyring's.
	return kr.Current(), nil
}
