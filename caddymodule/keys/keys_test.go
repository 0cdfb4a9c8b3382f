package keys

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"regexp"
	"strings"
	"testing"
)

func TestNewKeysAreValidAndDistinct(t *testing.T) {
	re := regexp.MustCompile(`^` + Pattern + `$`)
	seen := map[Key]bool{}
	for range 1000 {
		k, err := New()
		if err != nil {
			t.Fatal(err)
		}
		if len(k) != Len || !strings.HasPrefix(string(k), Prefix) {
			t.Fatalf("key %v has the wrong shape", k)
		}
		if !Valid([]byte(k)) {
			t.Fatalf("new key %v is not Valid", k)
		}
		if !re.MatchString(string(k)) {
			t.Fatalf("Pattern does not match new key %v", k)
		}
		if seen[k] {
			t.Fatal("duplicate key")
		}
		seen[k] = true
	}
}

func TestRandomPartIsUniform(t *testing.T) {
	// 2000 keys × 30 characters: each of 62 characters is expected ≈ 968
	// times. A biased modulo would skew the first 8 characters by ≈ 3 %;
	// this only guards against gross mistakes (a fixed or short alphabet).
	count := map[byte]int{}
	for range 2000 {
		k, _ := New()
		for _, c := range []byte(k[len(Prefix) : len(Prefix)+randomLen]) {
			count[c]++
		}
	}
	if len(count) != 62 {
		t.Fatalf("random part used %d distinct characters, want 62", len(count))
	}
	for c, n := range count {
		if n < 700 || n > 1250 {
			t.Errorf("character %q appeared %d times, expected about 968", c, n)
		}
	}
}

func TestValidRejects(t *testing.T) {
	k, _ := New()
	s := string(k)
	flip := func(i int) string {
		b := []byte(s)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	cases := map[string]string{
		"empty":               "",
		"prefix only":         Prefix,
		"short":               s[:Len-1],
		"long":                s + "0",
		"other prefix":        "kh_" + s[3:],
		"typo in random part": flip(10),
		"typo in checksum":    flip(Len - 1),
		"swapped characters":  s[:5] + s[6:7] + s[5:6] + s[7:],
		"non-base62":          s[:10] + "-" + s[11:],
		"NUL":                 s[:10] + "\x00" + s[11:],
		"high byte":           s[:10] + "\xff" + s[11:],
		"upper-cased":         strings.ToUpper(s),
		"with space":          " " + s[1:],
	}
	for name, in := range cases {
		if in == s {
			continue // a swap of two equal characters
		}
		if Valid([]byte(in)) {
			t.Errorf("%s: Valid(%q) = true", name, in)
		}
		if _, err := Parse(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Parse error = %v", name, err)
		}
	}
	if _, err := Parse(s); err != nil {
		t.Fatalf("Parse(valid) = %v", err)
	}
}

func TestKeyStringHidesSecret(t *testing.T) {
	k, _ := New()
	for _, shown := range []string{k.String(), k.Display()} {
		if strings.Contains(shown, string(k[displayLen:displayLen+8])) {
			t.Fatalf("%q shows more than the display prefix", shown)
		}
	}
	if got := Key("kg").Display(); got != Prefix {
		t.Fatalf("Display of a short string = %q", got)
	}
}

func TestNewID(t *testing.T) {
	id, err := NewID("key")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`^key_[0-9A-Za-z]{16}$`).MatchString(id) {
		t.Fatalf("NewID = %q", id)
	}
}

// FuzzValid checks that Valid never panics, accepts only keys of the exact
// shape, and agrees with a slow reference implementation.
func FuzzValid(f *testing.F) {
	k, _ := New()
	f.Add([]byte(k))
	f.Add([]byte(Prefix))
	f.Add([]byte("kg_000000000000000000000000000000000000"))
	f.Add([]byte{0xff, 0x00})
	f.Fuzz(func(t *testing.T, b []byte) {
		got := Valid(b)
		want := len(b) == Len && strings.HasPrefix(string(b), Prefix) &&
			regexp.MustCompile(`^`+Pattern+`$`).Match(b) && checksumOf(b[:Len-checksumLen]) == string(b[Len-checksumLen:])
		if got != want {
			t.Fatalf("Valid(%q) = %v, reference says %v", b, got, want)
		}
		if got {
			if _, err := Parse(string(b)); err != nil {
				t.Fatalf("Parse of a Valid key failed: %v", err)
			}
		}
	})
}

func checksumOf(body []byte) string {
	var b [checksumLen]byte
	putChecksum(b[:], crc32IEEE(body))
	return string(b[:])
}

func TestKeyringRoundTrip(t *testing.T) {
	kr := newTestKeyring(t, "a-test-secret-that-is-long-enough-000")
	k, _ := New()
	sealed, err := kr.Seal(k, "acct_1", "key_1")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(k)) {
		t.Fatal("sealed copy contains the key")
	}
	got, err := kr.Current().Open(sealed, "acct_1", "key_1")
	if err != nil || got != k {
		t.Fatalf("Open = %v, %v", got, err)
	}
	again, _ := kr.Seal(k, "acct_1", "key_1")
	if bytes.Equal(sealed, again) {
		t.Fatal("two seals of one key are equal: the nonce is not random")
	}
}

func TestKeyringTamper(t *testing.T) {
	kr := newTestKeyring(t, "a-test-secret-that-is-long-enough-000")
	other := newTestKeyring(t, "another-test-secret-long-enough-00000")
	k, _ := New()
	sealed, _ := kr.Seal(k, "acct_1", "key_1")

	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	cases := map[string]func() (Key, error){
		"other key id":   func() (Key, error) { return kr.Current().Open(sealed, "acct_1", "key_2") },
		"other account":  func() (Key, error) { return kr.Current().Open(sealed, "acct_2", "key_1") },
		"ids shifted":    func() (Key, error) { return kr.Current().Open(sealed, "acct_1k", "ey_1") },
		"flipped bit":    func() (Key, error) { return kr.Current().Open(flipped, "acct_1", "key_1") },
		"truncated":      func() (Key, error) { return kr.Current().Open(sealed[:10], "acct_1", "key_1") },
		"empty":          func() (Key, error) { return kr.Current().Open(nil, "acct_1", "key_1") },
		"another secret": func() (Key, error) { return other.Current().Open(sealed, "acct_1", "key_1") },
		"nonce of another": func() (Key, error) {
			return kr.Current().Open(append(bytes.Clone(sealed[:12]), sealed[13:]...), "acct_1", "key_1")
		},
	}
	for name, open := range cases {
		if got, err := open(); !errors.Is(err, ErrSealBroken) || got != "" {
			t.Errorf("%s: Open = %q, %v; want ErrSealBroken", name, got, err)
		}
	}
}

func TestKeyringDigest(t *testing.T) {
	kr := newTestKeyring(t, "a-test-secret-that-is-long-enough-000")
	other := newTestKeyring(t, "another-test-secret-long-enough-00000")
	k1, _ := New()
	k2, _ := New()
	if kr.Digest([]byte(k1)) != kr.Digest([]byte(k1)) {
		t.Fatal("digest is not deterministic")
	}
	if kr.Digest([]byte(k1)) == kr.Digest([]byte(k2)) {
		t.Fatal("two keys share a digest")
	}
	if kr.Digest([]byte(k1)) == other.Digest([]byte(k1)) {
		t.Fatal("digest does not depend on the secret")
	}
}

// TestDigestAllocs: `make test` runs it a second time without -race, which
// makes sync.Pool drop items and so allocate.
func TestDigestAllocs(t *testing.T) {
	if raceEnabled {
		t.Log("allocation counts are checked in the run without -race")
		return
	}
	kr := newTestKeyring(t, "a-test-secret-that-is-long-enough-000")
	k, _ := New()
	kb := []byte(k)
	if a := testing.AllocsPerRun(100, func() { kr.Digest(kb) }); a != 0 {
		t.Fatalf("Digest allocates %v times", a)
	}
}

func TestNewKeyringRejectsShortSecret(t *testing.T) {
	_, err := NewKeyring([]byte("short"))
	if err == nil || !strings.Contains(err.Error(), "openssl rand") {
		t.Fatalf("NewKeyring(short) error = %v; want one that says how to make a secret", err)
	}
	if strings.Contains(err.Error(), "short") {
		t.Fatal("error repeats the secret")
	}
}

func newTestKeyring(t *testing.T, secret string) *Keyring {
	t.Helper()
	kr, err := NewKeyring([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

func BenchmarkValid(b *testing.B) {
	k, _ := New()
	kb := []byte(k)
	b.ReportAllocs()
	for b.Loop() {
		if !Valid(kb) {
			b.Fatal("invalid")
		}
	}
}

func BenchmarkDigest(b *testing.B) {
	kr, _ := NewKeyring(bytes.Repeat([]byte("s"), 32))
	k, _ := New()
	kb := []byte(k)
	b.ReportAllocs()
	for b.Loop() {
		kr.Digest(kb)
	}
}

func crc32IEEE(b []byte) uint32 { return crc32.ChecksumIEEE(b) }

func TestDeriveKey(t *testing.T) {
	kr := newTestKeyring(t, "a-test-secret-that-is-long-enough-000")
	a, b := kr.DeriveKey("csrf"), kr.DeriveKey("other")
	if len(a) != 32 || bytes.Equal(a, b) || !bytes.Equal(a, kr.DeriveKey("csrf")) || bytes.Equal(a, kr.Current().hmacKey) {
		t.Fatal("DeriveKey is not a deterministic, purpose-bound 32-byte key")
	}
	if bytes.Equal(a, newTestKeyring(t, "another-test-secret-long-enough-00000").DeriveKey("csrf")) {
		t.Fatal("DeriveKey does not depend on the secret")
	}
}

func TestKeyringPreviousSecrets(t *testing.T) {
	oldSecret := []byte("the old secret, 32 bytes or more.....")
	newSecret := []byte("the new secret, 32 bytes or more.....")
	before := newTestKeyring(t, string(oldSecret))
	kr, err := NewKeyring(newSecret, oldSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := kr.Fingerprints(); len(got) != 2 || got[0] != kr.Current().Fingerprint() || got[1] != before.Current().Fingerprint() {
		t.Fatalf("Fingerprints = %v", got)
	}
	key, _ := New()
	// A key made before the rotation: its digest under the previous secret
	// is the one the old keyring made, and its sealed copy opens.
	if s, ok := kr.Secret(before.Current().Fingerprint()); !ok || s.Digest([]byte(key)) != before.Digest([]byte(key)) {
		t.Fatal("the previous secret does not make the old digest")
	}
	sealed, _ := before.Seal(key, "acct_1", "key_1")
	got, by, err := kr.Open(sealed, "acct_1", "key_1", "")
	if err != nil || got != key || by.Fingerprint() != before.Current().Fingerprint() {
		t.Fatalf("Open of an old sealed copy = %v, %v", by, err)
	}
	// Named with a wrong fingerprint, it still opens under the right one.
	if got, _, err := kr.Open(sealed, "acct_1", "key_1", kr.Current().Fingerprint()); err != nil || got != key {
		t.Fatalf("Open with the wrong fingerprint: %v", err)
	}
	// A secret the keyring does not have: broken, whatever it is named.
	stranger := newTestKeyring(t, "a stranger's secret, 32 bytes or more")
	foreign, _ := stranger.Seal(key, "acct_1", "key_1")
	if _, _, err := kr.Open(foreign, "acct_1", "key_1", stranger.Current().Fingerprint()); !errors.Is(err, ErrSealBroken) {
		t.Fatalf("Open of a stranger's sealed copy: %v", err)
	}
	if kr.Digest([]byte(key)) == before.Digest([]byte(key)) {
		t.Fatal("the current secret makes the old digest")
	}
}

func TestKeyringRejectsBadPreviousSecrets(t *testing.T) {
	a := bytes.Repeat([]byte("a"), 32)
	b := bytes.Repeat([]byte("b"), 32)
	for name, tc := range map[string]struct {
		previous [][]byte
		want     string
	}{
		"previous is current": {[][]byte{b, a}, "previous secret 2 is the current secret"},
		"twice the same":      {[][]byte{b, b}, "previous secrets 1 and 2 are the same secret"},
		"too short":           {[][]byte{[]byte("short")}, "previous secret 1: secret is 5 bytes"},
		"too many":            {[][]byte{b, bytes.Repeat([]byte("c"), 32), bytes.Repeat([]byte("d"), 32), bytes.Repeat([]byte("e"), 32)}, "at most 3 are kept"},
	} {
		_, err := NewKeyring(a, tc.previous...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
}

func TestFingerprint(t *testing.T) {
	secret := []byte("fingerprint test secret, 32 bytes+")
	a, b := newTestKeyring(t, string(secret)), newTestKeyring(t, string(secret))
	fp := a.Current().Fingerprint()
	if fp != b.Current().Fingerprint() || len(fp) != 16 {
		t.Fatalf("fingerprint %q is not stable 16 hex characters", fp)
	}
	if other := newTestKeyring(t, "another fingerprint test secret, 32+"); other.Current().Fingerprint() == fp {
		t.Fatal("two secrets share a fingerprint")
	}
	// Not a plain hash of the secret: its own HKDF purpose.
	plain := sha256.Sum256(secret)
	if strings.HasPrefix(hex.EncodeToString(plain[:]), fp) {
		t.Fatal("the fingerprint is the secret's SHA-256")
	}
}
