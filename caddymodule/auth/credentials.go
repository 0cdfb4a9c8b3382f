package auth

import (
	"encoding/base64"
	"unsafe"
)

// maxBasicLen bounds the decoded Basic credentials we look at. A key is
// keys.Len bytes; the rest is room for a user name such as "api".
const maxBasicLen = 256

// keyFromAuthorization returns the key an Authorization header value
// carries, in any of the forms the inbox API's clients send:
//
//	Basic base64("<key>:")      the key as user name, empty password
//	Basic base64("api:<key>")   the key as password (curl -u api:KEY)
//	Bearer <key>
//
// Basic credentials are decoded into buf, so the result may alias buf or h.
// It never allocates. ok is false for anything else; the caller answers
// that with the same 401 as an unknown key.
func keyFromAuthorization(h string, buf *[maxBasicLen]byte) (key []byte, ok bool) {
	h = trimOWS(h)
	scheme, rest := h, ""
	for i := 0; i < len(h); i++ {
		if h[i] == ' ' {
			scheme, rest = h[:i], trimOWS(h[i+1:])
			break
		}
	}
	switch {
	case equalFold(scheme, "Bearer"):
		if rest == "" {
			return nil, false
		}
		return bytesOf(rest), true
	case equalFold(scheme, "Basic"):
		src := bytesOf(rest)
		enc := base64.StdEncoding
		if len(rest)%4 != 0 {
			enc = base64.RawStdEncoding // tolerate clients that drop the padding
		}
		if rest == "" || enc.DecodedLen(len(src)) > len(buf) {
			return nil, false
		}
		n, err := enc.Decode(buf[:], src)
		if err != nil {
			return nil, false
		}
		cred := buf[:n]
		for i, c := range cred {
			if c == ':' {
				user, pass := cred[:i], cred[i+1:]
				if len(pass) == 0 {
					return user, len(user) > 0
				}
				return pass, true
			}
		}
		return cred, len(cred) > 0 // no colon: the whole is the user name
	}
	return nil, false
}

// bytesOf views s as bytes without copying. The result must not be
// modified; it is only read (checksum, HMAC).
func bytesOf(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// equalFold is an ASCII-only strings.EqualFold, which is all an HTTP
// auth-scheme needs.
func equalFold(s, t string) bool {
	if len(s) != len(t) {
		return false
	}
	for i := 0; i < len(s); i++ {
		a, b := s[i]|0x20, t[i]|0x20
		if a != b || a < 'a' || a > 'z' {
			return false
		}
	}
	return true
}
