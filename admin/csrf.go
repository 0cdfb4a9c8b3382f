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

// csrfKeys are the keys derived from each secret of a keyring, the
// current one's first, with the keyring they came from, so that a reload
// with other secrets derives them again. Tokens are made with the first
// and accepted with any: while a secret is rotated out, a page served by
// an instance not yet given the new secret still posts to one that has it.
type csrfKeys struct {
	kr   *keys.Keyring
	keys [][]byte
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

// validCSRF compares in constant time with the token of each key.
func validCSRF(keys [][]byte, userID, accountID, got string) bool {
	if got == "" {
		return false
	}
	ok := 0
	for _, key := range keys {
		ok |= subtle.ConstantTimeCompare([]byte(csrfToken(key, userID, accountID)), []byte(got))
	}
	return ok == 1
}
