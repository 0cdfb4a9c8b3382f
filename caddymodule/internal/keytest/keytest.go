// Package keytest makes keys for tests the way the key manager makes
// them, without a manager: a storable row and the key it stands for.
package keytest

import (
	"testing"

	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

// Mint makes a standard key of the account under the keyring's current
// secret, as auth.Manager does, without storing it: the row to store
// (CreatedBy "test") and the key a client sends.
func Mint(tb testing.TB, kr *keys.Keyring, accountID, name string) (store.Key, keys.Key) {
	tb.Helper()
	secret, err := keys.New()
	if err != nil {
		tb.Fatal(err)
	}
	id, err := keys.NewID("key")
	if err != nil {
		tb.Fatal(err)
	}
	sealed, err := kr.Seal(secret, accountID, id)
	if err != nil {
		tb.Fatal(err)
	}
	return store.Key{
		ID:        id,
		AccountID: accountID,
		Name:      name,
		Type:      store.Standard,
		Display:   secret.Display(),
		Digest:    kr.Digest([]byte(secret)),
		Sealed:    sealed,
		Secret:    kr.Current().Fingerprint(),
		CreatedBy: "test",
	}, secret
}
