package admin

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"

	"github.com/keygate/keygate/caddymodule/keys"
)

// csrfPurpose names the key the tokens are made with, derived from the
// keygate secret: every instance of a fleet makes and accepts the same
// tokens.
const csrfPurpose = "dashboard csrf"

// csrfKey is the derived key with the keyring it came from, so that a
// reload with another secret derives it again.
type csrfKey struct {
	kr  *keys.Keyring
	key []byte
}

// csrfToken binds a token to the user and the account: it is useless to
// another user, and for another account of the same user.
func csrfToken(key []byte, userID, accountID string) string {
	m := hmac.New(sha256.New, key)
	var n [8]byte
	for _, s := range []string{userID, accountID} {
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		m.Write(n[:])
		m.Write([]byte(s))
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// validCSRF compares in constant time.
func validCSRF(key []byte, userID, accountID, got string) bool {
	if got == "" {
		return false
	}
	want := csrfToken(key, userID, accountID)
	return subtle.ConstantTimeCompare([]byte(want), []byte(got)) == 1
}
