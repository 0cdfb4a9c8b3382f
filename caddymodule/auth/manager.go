package auth

import (
	"context"
	"fmt"
	"time"

	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

// Manager creates, reveals and deletes keys: the store writes with their
// audit events, and the cache evictions that make them take effect at once.
// The dashboard and the command line both go through it.
type Manager struct {
	Store    store.Store
	Keyring  *keys.Keyring
	Verifier *Verifier
}

// Actor says who asks for a change, for the audit log.
type Actor struct {
	UserID     string // a dashboard user, or "operator:<name>" on the command line
	RemoteAddr string // empty on the command line
}

// NewKey describes a key to create.
type NewKey struct {
	AccountID string
	Name      string
	Type      store.KeyType
	ServerID  string // for a Restricted key
}

// CreateKey makes a key with the store's current secret, stores it and
// returns it with its plaintext, which the caller shows once to its owner.
// The cache forgets the key's digest, so that a lookup of this key that
// was cached as unknown does not outlive the creation.
func (m *Manager) CreateKey(ctx context.Context, nk NewKey, by Actor) (store.Key, keys.Key, error) {
	secret, err := maker(ctx, m.Store, m.Keyring)
	if err != nil {
		return store.Key{}, "", fmt.Errorf("creating key: %w", err)
	}
	plain, err := keys.New()
	if err != nil {
		return store.Key{}, "", fmt.Errorf("creating key: %w", err)
	}
	id, err := keys.NewID("key")
	if err != nil {
		return store.Key{}, "", fmt.Errorf("creating key: %w", err)
	}
	sealed, err := secret.Seal(plain, nk.AccountID, id)
	if err != nil {
		return store.Key{}, "", fmt.Errorf("creating key: %w", err)
	}
	k := store.Key{
		ID:        id,
		AccountID: nk.AccountID,
		Name:      nk.Name,
		Type:      nk.Type,
		ServerID:  nk.ServerID,
		Display:   plain.Display(),
		Digest:    secret.Digest([]byte(plain)),
		Sealed:    sealed,
		Secret:    secret.Fingerprint(),
		CreatedBy: by.UserID,
	}
	k, err = m.Store.CreateKey(ctx, k, m.event(store.ActionCreate, k, by))
	if err != nil {
		return store.Key{}, "", err
	}
	m.Verifier.Forget(m.Keyring.Digest([]byte(plain))) // the cache's key: the current secret's digest
	return k, plain, nil
}

// RevealKey opens a key's sealed copy, under whichever configured secret
// made it, and records that it was revealed.
func (m *Manager) RevealKey(ctx context.Context, accountID, keyID string, by Actor) (store.Key, keys.Key, error) {
	k, err := m.Store.GetKey(ctx, accountID, keyID)
	if err != nil {
		return store.Key{}, "", fmt.Errorf("revealing key: %w", err)
	}
	plain, _, err := m.Keyring.Open(k.Sealed, k.AccountID, k.ID, k.Secret)
	if err != nil {
		return store.Key{}, "", fmt.Errorf("revealing key %s (made with secret %q; this instance has %s): %w", k.ID, k.Secret, describeKeyring(m.Keyring), err)
	}
	if err := m.Store.AppendAudit(ctx, m.event(store.ActionReveal, k, by)); err != nil {
		return store.Key{}, "", fmt.Errorf("revealing key: %w", err)
	}
	k.Sealed = nil
	return k, plain, nil
}

// DeleteKey revokes a key for good. The cache forgets it, by id, before
// DeleteKey returns, so the next request with it is refused.
func (m *Manager) DeleteKey(ctx context.Context, accountID, keyID string, by Actor) (store.Key, error) {
	k, err := m.Store.DeleteKey(ctx, accountID, keyID, m.event(store.ActionDelete, store.Key{ID: keyID, AccountID: accountID}, by))
	if err != nil {
		return store.Key{}, fmt.Errorf("deleting key: %w", err)
	}
	m.Verifier.ForgetKey(k.ID)
	return k, nil
}

func (m *Manager) event(action string, k store.Key, by Actor) store.AuditEvent {
	return store.AuditEvent{
		AccountID:  k.AccountID,
		Actor:      by.UserID,
		Action:     action,
		KeyID:      k.ID,
		KeyName:    k.Name,
		KeyDisplay: k.Display,
		RemoteAddr: by.RemoteAddr,
		At:         time.Now().UTC(),
	}
}
