package keytest

import (
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

func TestMint(t *testing.T) {
	kr, err := keys.NewKeyring([]byte("keytest secret 0123456789abcdefghijklmnopq"))
	if err != nil {
		t.Fatal(err)
	}
	k, secret := Mint(t, kr, "acct_1", "ci")
	if _, _, err := store.PrepareKey(k, store.AuditEvent{Actor: "test"}, time.Now()); err != nil {
		t.Fatalf("the minted row is not storable: %v", err)
	}
	if k.Digest != kr.Digest([]byte(secret)) || k.Display != secret.Display() || k.Secret != kr.Current().Fingerprint() {
		t.Fatalf("the row does not stand for the key: %+v", k)
	}
	plain, _, err := kr.Open(k.Sealed, "acct_1", k.ID, k.Secret)
	if err != nil || plain != secret {
		t.Fatalf("the sealed copy opens to %q, %v", plain, err)
	}
	if other, _ := Mint(t, kr, "acct_1", "ci"); other.ID == k.ID || other.Digest == k.Digest {
		t.Fatal("two minted keys are the same")
	}
}
