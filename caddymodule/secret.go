package caddymodule

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

// keyring builds the keyring from the configured secrets or, with none
// configured, from the local secret file, which only a local store may
// use: a fleet must share one configured secret.
func (a *App) keyring(st store.Store) (*keys.Keyring, error) {
	if a.secret != nil {
		kr, err := keys.NewKeyring(a.secret, a.previous...)
		if err != nil {
			return nil, fmt.Errorf("keygate secret: %w", err)
		}
		return kr, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// Whether a missing secret file may be created depends on what the
	// store holds, which needs its schema.
	if a.Migrate == "auto" {
		if err := migrateOnce(ctx, st); err != nil {
			return nil, err
		}
	}
	secret, err := loadOrCreateSecret(ctx, filepath.Join(caddy.AppDataDir(), "keygate", "secret"), st)
	if err != nil {
		return nil, err
	}
	kr, err := keys.NewKeyring(secret)
	if err != nil {
		return nil, fmt.Errorf("keygate secret: %w", err)
	}
	return kr, nil
}

// loadOrCreateSecret reads the secret kept at path. It creates one (32
// random bytes, mode 0600, in a 0700 directory) only for a store that
// holds no key: a lost secret file must be restored, never replaced by a
// new secret that would refuse every key.
func loadOrCreateSecret(ctx context.Context, path string, st store.Store) ([]byte, error) {
	b, err := readSecret(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return b, err
	}
	secrets, err := st.Secrets(ctx)
	if err != nil {
		return nil, fmt.Errorf("keygate: the secret file %s does not exist, and whether the store holds keys made with a lost secret could not be checked: %w", path, err)
	}
	for _, s := range secrets {
		if s.HasKeys {
			return nil, fmt.Errorf("keygate: the secret file %s is missing, but the store holds keys made with the secret of fingerprint %s. Restore the file from a backup (one line, mode 0600) and start again. Without it no key can be checked or revealed; a new secret would refuse every one. To start over without these keys, move the store's file away",
				path, fingerprintOrUnrecorded(s.Fingerprint))
		}
	}
	if err := createSecret(path); err != nil {
		return nil, err
	}
	return readSecret(path)
}

func fingerprintOrUnrecorded(fp string) string {
	if fp == "" {
		return "(unrecorded)"
	}
	return fp
}

// createSecret writes a new secret to path, unless the file exists.
func createSecret(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating secret directory: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return fmt.Errorf("generating secret: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case errors.Is(err, fs.ErrExist): // another process made it first
		return nil
	case err != nil:
		return fmt.Errorf("creating secret %s: %w", path, err)
	}
	_, werr := f.WriteString(base64.StdEncoding.EncodeToString(raw) + "\n")
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(path)
		return fmt.Errorf("writing secret %s: %w", path, werr)
	}
	return nil
}

// readSecret reads a secret file that only its owner may read. An
// unreadable file is an error, never a reason to make a new secret.
func readSecret(path string) ([]byte, error) {
	info, err := os.Stat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("reading secret: %w", err)
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secret %s is readable by other users (mode %v); run: chmod 600 %s", path, info.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading secret: %w", err)
	}
	return []byte(strings.TrimSpace(string(b))), nil
}
