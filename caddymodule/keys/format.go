package keys

import (
	"crypto/rand"
	"errors"
	"hash/crc32"
)

const (
	// Prefix starts every key. It is what secret scanners match on.
	Prefix = "kg_"
	// randomLen base62 characters give 30·log2(62) ≈ 178 random bits.
	randomLen = 30
	// checksumLen base62 characters hold any CRC32 (62^6 > 2^32).
	checksumLen = 6
	// Len is the length of every key.
	Len = len(Prefix) + randomLen + checksumLen
	// displayLen characters of a key identify it to people (logs, the
	// dashboard) without weakening it: 5 of its 30 random characters.
	displayLen = len(Prefix) + 5

	// Pattern matches a keygate key, for secret scanners.
	Pattern = `\bkg_[0-9A-Za-z]{36}\b`
)

const alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// ErrMalformed is returned for anything that is not a well-formed key. It
// deliberately says nothing about which part was wrong.
var ErrMalformed = errors.New("malformed API key")

// Key is a plaintext API key. Its String method hides the secret, so that a
// Key printed by mistake shows only its display prefix.
type Key string

// String returns the display prefix followed by an ellipsis.
func (k Key) String() string { return k.Display() + "…" }

// Display returns the part of the key that may be shown and logged.
func (k Key) Display() string {
	if len(k) < displayLen {
		return Prefix
	}
	return string(k[:displayLen])
}

// Secret returns the whole key. Call it only to hand the key to its owner.
func (k Key) Secret() string { return string(k) }

// New returns a fresh random key.
func New() (Key, error) {
	var b [Len]byte
	copy(b[:], Prefix)
	if err := randomBase62(b[len(Prefix) : len(Prefix)+randomLen]); err != nil {
		return "", err
	}
	putChecksum(b[len(Prefix)+randomLen:], crc32.ChecksumIEEE(b[:len(Prefix)+randomLen]))
	return Key(b[:]), nil
}

// Valid reports whether b is a well-formed key with a matching checksum. It
// does not allocate, so the request path can call it on every request.
func Valid(b []byte) bool {
	if len(b) != Len || string(b[:len(Prefix)]) != Prefix {
		return false
	}
	body := b[:len(Prefix)+randomLen]
	for _, c := range b[len(Prefix):] {
		if decode[c] < 0 {
			return false
		}
	}
	var sum uint64
	for _, c := range b[len(body):] {
		sum = sum*62 + uint64(decode[c])
	}
	return sum == uint64(crc32.ChecksumIEEE(body))
}

// Parse checks s and returns it as a Key, or ErrMalformed.
func Parse(s string) (Key, error) {
	if !Valid([]byte(s)) {
		return "", ErrMalformed
	}
	return Key(s), nil
}

// NewID returns a random identifier such as "key_4XbT0aQ1mZr8pL2d": a
// readable kind followed by 16 base62 characters (95 bits). IDs are public:
// they appear in logs, headers and URLs.
func NewID(kind string) (string, error) {
	b := make([]byte, len(kind)+1+16)
	copy(b, kind)
	b[len(kind)] = '_'
	if err := randomBase62(b[len(kind)+1:]); err != nil {
		return "", err
	}
	return string(b), nil
}

// randomBase62 fills dst with uniformly random base62 characters, using
// rejection sampling so that no character is more likely than another.
func randomBase62(dst []byte) error {
	var buf [64]byte
	for i := 0; i < len(dst); {
		if _, err := rand.Read(buf[:]); err != nil {
			return errors.New("reading random bytes: " + err.Error())
		}
		for _, r := range buf {
			if r >= 248 { // 248 = 4·62: keep the modulo unbiased
				continue
			}
			dst[i] = alphabet[r%62]
			if i++; i == len(dst) {
				break
			}
		}
	}
	return nil
}

func putChecksum(dst []byte, sum uint32) {
	v := uint64(sum)
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = alphabet[v%62]
		v /= 62
	}
}

var decode = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = int8(i)
	}
	return t
}()
