package caddymodule

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/cache"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
	"github.com/keygate/keygate/caddymodule/store/sqlite"
)

func migratedSQLite(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "keygate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st
}

func TestLocalSecretIsNeverSilentlyReplaced(t *testing.T) {
	ctx := context.Background()
	st := migratedSQLite(t)
	path := filepath.Join(t.TempDir(), "keygate", "secret")

	// A new store: the secret is made, 0600, and read back the same.
	secret, err := loadOrCreateSecret(ctx, path, st)
	if err != nil {
		t.Fatal(err)
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("secret file: %v, %v", info, err)
	}
	if again, err := loadOrCreateSecret(ctx, path, st); err != nil || string(again) != string(secret) {
		t.Fatalf("read again: %v", err)
	}
	kr, err := keys.NewKeyring(secret)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := auth.CheckSecrets(ctx, st, kr, true); err != nil {
		t.Fatal(err)
	}
	// Lost while the store records a secret but holds no key: a new one
	// is made, and the single node takes it.
	os.Remove(path)
	secret2, err := loadOrCreateSecret(ctx, path, st)
	if err != nil || string(secret2) == string(secret) {
		t.Fatalf("secret for an empty store: %v", err)
	}
	kr2, _ := keys.NewKeyring(secret2)
	if _, err := auth.CheckSecrets(ctx, st, kr2, true); err != nil {
		t.Fatalf("an empty store refuses a new secret: %v", err)
	}

	// Keys stored: a missing file is an error, and no file is made.
	acct, _ := st.CreateAccount(ctx, "acme")
	v, _ := auth.NewVerifier(auth.VerifierConfig{Keyring: kr2, Lookup: st.LookupKey, Cache: cache.Config{Size: 10, TTL: time.Minute, NegativeTTL: time.Minute, FetchTimeout: time.Second}})
	m := &auth.Manager{Store: st, Keyring: kr2, Verifier: v}
	if _, _, err := m.CreateKey(ctx, auth.NewKey{AccountID: acct.ID, Name: "k", Type: store.Standard}, auth.Actor{UserID: "u"}); err != nil {
		t.Fatal(err)
	}
	os.Remove(path)
	_, err = loadOrCreateSecret(ctx, path, st)
	if err == nil || !strings.Contains(err.Error(), "is missing") || !strings.Contains(err.Error(), kr2.Current().Fingerprint()) || !strings.Contains(err.Error(), "Restore the file") {
		t.Fatalf("missing secret beside keys: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a secret file was made: %v", err)
	}

	// Unreadable, or readable by others: an error, never a new secret.
	if err := os.WriteFile(path, secret2, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadOrCreateSecret(ctx, path, st); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable secret: %v", err)
	}
	os.Remove(path)
	if err := os.Mkdir(path, 0o700); err != nil { // a directory where the file should be
		t.Fatal(err)
	}
	if _, err := loadOrCreateSecret(ctx, path, st); err == nil {
		t.Fatal("a directory was read as a secret")
	}
}
