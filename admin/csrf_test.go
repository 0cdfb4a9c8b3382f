package admin

import (
	"bytes"
	"testing"

	"github.com/keygate/keygate/caddymodule/keys"
)

// While a secret is rotated out, a token made by an instance that has only
// the old secret is accepted by one that has both.
func TestCSRFAcrossARotation(t *testing.T) {
	oldSecret, newSecret := bytes.Repeat([]byte("o"), 32), bytes.Repeat([]byte("n"), 32)
	before, _ := keys.NewKeyring(oldSecret)
	during, _ := keys.NewKeyring(newSecret, oldSecret)
	stranger, _ := keys.NewKeyring(bytes.Repeat([]byte("s"), 32))
	oldToken := csrfToken(before.DeriveKeys(csrfPurpose)[0], "alice", "acct_1")
	if !validCSRF(during.DeriveKeys(csrfPurpose), "alice", "acct_1", oldToken) {
		t.Fatal("a token of the previous secret is refused")
	}
	newToken := csrfToken(during.DeriveKeys(csrfPurpose)[0], "alice", "acct_1")
	if newToken == oldToken {
		t.Fatal("tokens are not made with the current secret")
	}
	for name, ok := range map[string]bool{
		"another user":    validCSRF(during.DeriveKeys(csrfPurpose), "bob", "acct_1", oldToken),
		"another account": validCSRF(during.DeriveKeys(csrfPurpose), "alice", "acct_2", newToken),
		"another secret":  validCSRF(stranger.DeriveKeys(csrfPurpose), "alice", "acct_1", newToken),
		"empty":           validCSRF(during.DeriveKeys(csrfPurpose), "alice", "acct_1", ""),
	} {
		if ok {
			t.Errorf("%s: token accepted", name)
		}
	}
}
