package keys

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
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

// ErrSealBroken is returned when a sealed key does not open: the wrong
// secret, a tampered ciphertext, or a sealed key moved to another key id.
var ErrSealBroken = errors.New("sealed API key does not open with this secret")

// A Keyring holds the two keys derived from the configured secret: one for
// digests and one for sealing. It is safe for concurrent use.
type Keyring struct {
	secret  []byte // kept only to derive further keys (DeriveKey)
	aead    cipher.AEAD
	hmacKey []byte
	macs    sync.Pool // of *mac; hmac.New allocates, the request path must not
}

type mac struct {
	h   hash.Hash
	sum [sha256.Size]byte
}

// NewKeyring derives a keyring from secret, which must be at least
// MinSecretLen bytes of high-entropy material (for example 32 random bytes,
// base64-encoded). Every instance of a fleet must use the same secret.
func NewKeyring(secret []byte) (*Keyring, error) {
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
	block, err := aes.NewCipher(sealKey) // 32 bytes: AES-256
	if err != nil {
		return nil, fmt.Errorf("creating cipher: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("creating GCM: %w", err)
	}
	kr := &Keyring{secret: bytes.Clone(secret), aead: aead, hmacKey: hmacKey}
	kr.macs.New = func() any { return &mac{h: hmac.New(sha256.New, kr.hmacKey)} }
	return kr, nil
}

// DeriveKey returns a 32-byte key for another purpose (for example the
// dashboard's CSRF tokens), derived from the secret with HKDF, so that every
// instance of a fleet derives the same one and none of them is the digest
// or sealing key.
func (kr *Keyring) DeriveKey(purpose string) []byte {
	k, err := hkdf.Key(sha256.New, kr.secret, nil, "keygate "+purpose+" v1", 32)
	if err != nil { // only for lengths HKDF cannot produce
		panic(err)
	}
	return k
}

// Digest returns the lookup digest of a key given as bytes. It does not
// allocate in the steady state.
func (kr *Keyring) Digest(key []byte) Digest {
	m := kr.macs.Get().(*mac)
	m.h.Reset()
	m.h.Write(key)
	m.h.Sum(m.sum[:0])
	d := Digest(m.sum)
	kr.macs.Put(m)
	return d
}

// Seal encrypts key with AES-256-GCM, binding it to its account and key id
// as additional data, so that a sealed key copied onto another row does not
// open. The result is nonce || ciphertext.
func (kr *Keyring) Seal(key Key, accountID, keyID string) ([]byte, error) {
	nonce := make([]byte, kr.aead.NonceSize(), kr.aead.NonceSize()+len(key)+kr.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("reading nonce: %w", err)
	}
	return kr.aead.Seal(nonce, nonce, []byte(key), additionalData(accountID, keyID)), nil
}

// Open reverses Seal. It returns ErrSealBroken unless sealed was made by
// Seal with the same secret, account and key id.
func (kr *Keyring) Open(sealed []byte, accountID, keyID string) (Key, error) {
	n := kr.aead.NonceSize()
	if len(sealed) < n+kr.aead.Overhead() {
		return "", ErrSealBroken
	}
	plain, err := kr.aead.Open(nil, sealed[:n], sealed[n:], additionalData(accountID, keyID))
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
