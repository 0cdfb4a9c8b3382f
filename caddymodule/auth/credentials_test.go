package auth

import (
	"encoding/base64"
	"strings"
	"testing"
)

const testKey = "kg_0123456789abcdefghijABCDEFGHIJ000000" // shape only; checksum not checked here

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestKeyFromAuthorization(t *testing.T) {
	cases := []struct {
		name, header, want string
		ok                 bool
	}{
		{"basic key as user", "Basic " + b64(testKey+":"), testKey, true},
		{"basic key as password", "Basic " + b64("api:"+testKey), testKey, true},
		{"basic any user with password", "Basic " + b64("someone:"+testKey), testKey, true},
		{"basic no colon", "Basic " + b64(testKey), testKey, true},
		{"basic unpadded", "Basic " + strings.TrimRight(b64(testKey+":"), "="), testKey, true},
		{"basic scheme case", "bAsIc " + b64(testKey+":"), testKey, true},
		{"basic extra spaces", "  Basic    " + b64(testKey+":") + "  ", testKey, true},
		{"bearer", "Bearer " + testKey, testKey, true},
		{"bearer lower", "bearer " + testKey, testKey, true},
		{"bearer tab padded", "Bearer " + testKey + "\t", testKey, true},

		{"empty", "", "", false},
		{"scheme only", "Basic", "", false},
		{"bearer empty", "Bearer ", "", false},
		{"basic empty", "Basic ", "", false},
		{"basic colon only", "Basic " + b64(":"), "", false},
		{"basic empty user and password", "Basic " + b64(":"), "", false},
		{"basic not base64", "Basic !!!notbase64", "", false},
		{"basic huge", "Basic " + b64(strings.Repeat("k", 4096)+":"), "", false},
		{"other scheme", "Token " + testKey, "", false},
		{"digest scheme", `Digest username="x"`, "", false},
		{"no scheme", testKey, "", false},
		{"scheme prefix", "Basicx " + b64(testKey+":"), "", false},
		{"non-ascii scheme", "B\xc3\xa1sic " + b64(testKey+":"), "", false},
	}
	for _, c := range cases {
		var buf [maxBasicLen]byte
		got, ok := keyFromAuthorization(c.header, &buf)
		if ok != c.ok || (ok && string(got) != c.want) {
			t.Errorf("%s: keyFromAuthorization(%q) = %q, %v; want %q, %v", c.name, c.header, got, ok, c.want, c.ok)
		}
	}
}

func TestEqualFold(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{{"Basic", "basic", true}, {"BEARER", "bearer", true}, {"Basic", "Basi", false}, {"Ba`ic", "Basic", false}, {"B@sic", "B`sic", false}} {
		if got := equalFold(c.a, c.b); got != c.want {
			t.Errorf("equalFold(%q, %q) = %v", c.a, c.b, got)
		}
	}
}

// FuzzKeyFromAuthorization checks that no header value panics, that what
// comes out is always part of what went in (or of its Basic decoding), and
// that no result is longer than the input could carry.
func FuzzKeyFromAuthorization(f *testing.F) {
	f.Add("Basic " + b64(testKey+":"))
	f.Add("Bearer " + testKey)
	f.Add("Basic " + b64("api:"+testKey))
	f.Add("Basic ===")
	f.Add("Bearer \x00\xff")
	f.Fuzz(func(t *testing.T, h string) {
		var buf [maxBasicLen]byte
		key, ok := keyFromAuthorization(h, &buf)
		if !ok {
			return
		}
		if len(key) == 0 {
			t.Fatalf("ok with an empty key for %q", h)
		}
		if len(key) > len(h) && len(key) > maxBasicLen {
			t.Fatalf("key of %d bytes from a header of %d", len(key), len(h))
		}
		if !strings.Contains(h, string(key)) && !strings.Contains(string(buf[:]), string(key)) {
			t.Fatalf("key %q is neither in the header nor in its decoding", key)
		}
	})
}
