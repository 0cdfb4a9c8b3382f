package keys

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sync"
)

// Digest is the HMAC-SHA-256 of a key: what the store indexes and the cache
// is keyed by. Without the keyring's secret it cannot be recomputed from a
// guessed key, so a copy of the database alone does not allow offline
// guessing.
type Digest [sha256.Size]byte

// MinSecretLen is the shortest secret a Keyring accepts.
const MinSecretLen = 32

// MaxSecrets is how many secrets a keyring holds at most: the current one
// and previous ones still being rotated out. A key not in the cache is
// looked up under each of them.
const MaxSecrets = 4

// ErrSealBroken is returned when a sealed key does not open: the wrong
// secret, a tampered ciphertext, or a sealed key moved to another key id.
var ErrSealBroken = errors.New("sealed API key does not open with this secret")

// A Secret is what one configured secret derives: a digest key, a sealing
// key and a fingerprint. It is safe for concurrent use.
type Secret struct {
	raw         []byte // kept only to derive further keys (DeriveKey)
	fingerprint string
	aead        cipher.AEAD
	hmacKey     []byte
	macs        sync.Pool // of *mac; hmac.New allocates, the request path must not
}

type mac struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

// NewSecret derives the keys of secret, which must be at least
// MinSecretLen bytes of high-entropy material (for example 32 random
// bytes, base64-encoded).
func NewSecret(secret []byte) (*Secret, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("secret is %d bytes; at least %d are needed (generate one with: openssl rand -base64 32)", len(secret), MinSecretLen)
	}
	hmacKey, err := hkdf.Key(sha256.New, secret, nil, "keygate digest v1", 32)
	if err != nil {
		return nil, fmt.Errorf("deriving digest key: %w", err)
	}
	sealKey, err := hkdf.Key(sha256.New, secret, nil, "keygate seal v1", 32)
	if err != nil {
		return nil, fmt.Errorf("deriving seal key: %w", err)
	}
	// A fingerprint lets a store say which secret made its keys without
	// holding anything that helps to guess the secret: its own purpose,
	// and only 8 bytes of it.
	fp, err := hkdf.Key(sha256.New, secret, nil, "keygate fingerprint v1", 8)
	if err != nil {
		return nil, fmt.Errorf("deriving fingerprint: %w", err)
	}
	block, err := aes.NewCipher(sealKey) // 32 bytes: AES-256
	if err != nil {
		return nil, fmt.Errorf("creating cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("creating GCM: %w", err)
	}
	s := &Secret{raw: bytes.Clone(secret), fingerprint: hex.EncodeToString(fp), aead: aead, hmacKey: hmacKey}
	s.macs.New = func() any { return &mac{h: hmac.New(sha256.New, s.hmacKey)} }
	return s, nil
}

// Fingerprint names the secret: 16 hex characters derived from it for no
// other purpose. Stores record it; logs and errors may show it.
func (s *Secret) Fingerprint() string { return s.fingerprint }

// Digest returns the lookup digest of a key given as bytes. It does not
// allocate in the steady state.
func (s *Secret) Digest(key []byte) Digest {
	m := s.macs.Get().(*mac)
	m.h.Reset()
	m.h.Write(key)
	m.h.Sum(m.sum[:0])
	d := Digest(m.sum)
	s.macs.Put(m)
	return d
}

// Seal encrypts key with AES-256-GCM, binding it to its account and key id
// as additional data, so that a sealed key copied onto another row does not
// open. The result is nonce || ciphertext.
func (s *Secret) Seal(key Key, accountID, keyID string) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(key)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("reading nonce: %w", err)
	}
	return s.aead.Seal(nonce, nonce, []byte(key), additionalData(accountID, keyID)), nil
}

// Open reverses Seal. It returns ErrSealBroken unless sealed was made by
// Seal with the same secret, account and key id.
func (s *Secret) Open(sealed []byte, accountID, keyID string) (Key, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return "", ErrSealBroken
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], additionalData(accountID, keyID))
	if err != nil {
		return "", ErrSealBroken
	}
	return Key(plain), nil
}

// additionalData encodes both ids with their lengths, so that no two
// (account, key) pairs share an encoding.
func additionalData(accountID, keyID string) []byte {
	return fmt.Appendf(nil, "keygate/v1/%d:%s/%d:%s", len(accountID), accountID, len(keyID), keyID)
}

// A Keyring holds the current secret and the previous ones still being
// rotated out. New keys are made with one of them (the one the store names
// current, see auth.Manager); a key is found under any of them. It is safe
// for concurrent use.
type Keyring struct {
	secrets []*Secret // the current one first
}

// NewKeyring derives a keyring from the current secret and up to
// MaxSecrets-1 previous ones. Every instance of a fleet must use the same
// current secret, or know the others' as previous ones while rotating.
func NewKeyring(current []byte, previous ...[]byte) (*Keyring, error) {
	if len(previous) >= MaxSecrets {
		return nil, fmt.Errorf("%d previous secrets given; at most %d are kept (finish a rotation with `keygate secret rotate` before starting the next)", len(previous), MaxSecrets-1)
	}
	kr := &Keyring{}
	for i, raw := range append([][]byte{current}, previous...) {
		s, err := NewSecret(raw)
		if err != nil {
			if i == 0 {
				return nil, err
			}
			return nil, fmt.Errorf("previous secret %d: %w", i, err)
		}
		for j, other := range kr.secrets {
			if other.fingerprint != s.fingerprint {
				continue
			}
			if j == 0 {
				return nil, fmt.Errorf("previous secret %d is the current secret: after a rotation, remove it from the previous secrets; to rotate, give a new current secret", i)
			}
			return nil, fmt.Errorf("previous secrets %d and %d are the same secret", j, i)
		}
		kr.secrets = append(kr.secrets, s)
	}
	return kr, nil
}

// Current returns the current secret.
func (kr *Keyring) Current() *Secret { return kr.secrets[0] }

// Secrets returns every secret, the current one first. The caller must not
// modify the slice.
func (kr *Keyring) Secrets() []*Secret { return kr.secrets }

// Secret returns the secret with the fingerprint, if the keyring has it.
func (kr *Keyring) Secret(fingerprint string) (*Secret, bool) {
	for _, s := range kr.secrets {
		if s.fingerprint == fingerprint {
			return s, true
		}
	}
	return nil, false
}

// Fingerprints returns the fingerprints of every secret, the current one
// first.
func (kr *Keyring) Fingerprints() []string {
	fps := make([]string, len(kr.secrets))
	for i, s := range kr.secrets {
		fps[i] = s.fingerprint
	}
	return fps
}

// DeriveKey returns a 32-byte key for another purpose (for example the
// dashboard's CSRF tokens), derived from the current secret with HKDF, so
// that every instance of a fleet derives the same one and none of them is
// the digest or sealing key.
func (kr *Keyring) DeriveKey(purpose string) []byte { return kr.DeriveKeys(purpose)[0] }

// DeriveKeys returns DeriveKey's key from each secret, the current one's
// first: for what a previous secret's key must still verify while it is
// rotated out.
func (kr *Keyring) DeriveKeys(purpose string) [][]byte {
	ks := make([][]byte, len(kr.secrets))
	for i, s := range kr.secrets {
		k, err := hkdf.Key(sha256.New, s.raw, nil, "keygate "+purpose+" v1", 32)
		if err != nil { // only for lengths HKDF cannot produce
			panic(err)
		}
		ks[i] = k
	}
	return ks
}

// Digest returns the digest of a key under the current secret.
func (kr *Keyring) Digest(key []byte) Digest { return kr.secrets[0].Digest(key) }

// Seal seals a key under the current secret.
func (kr *Keyring) Seal(key Key, accountID, keyID string) ([]byte, error) {
	return kr.secrets[0].Seal(key, accountID, keyID)
}

// Open opens a sealed key under whichever secret made it, trying the one
// with the fingerprint first (the one the store says sealed it; "" when
// unknown). It returns the secret that opened it, or ErrSealBroken.
func (kr *Keyring) Open(sealed []byte, accountID, keyID, fingerprint string) (Key, *Secret, error) {
	if s, ok := kr.Secret(fingerprint); ok {
		if k, err := s.Open(sealed, accountID, keyID); err == nil {
			return k, s, nil
		}
	}
	for _, s := range kr.secrets {
		if s.fingerprint == fingerprint {
			continue
		}
		if k, err := s.Open(sealed, accountID, keyID); err == nil {
			return k, s, nil
		}
	}
	return "", nil, ErrSealBroken
}
