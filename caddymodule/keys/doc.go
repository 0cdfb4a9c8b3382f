// Package keys defines keygate's API key format and the keyring that turns a
// key into the two forms the store keeps: a lookup digest and a sealed copy.
//
// A key reads
//
//	kg_<30 random base62 characters><6 base62 characters of CRC32>
//
// The 30 random characters carry 178 bits from crypto/rand. The checksum
// (GitHub's token design) lets [Parse] reject a typo or a random string with
// no cache or database work, and the fixed prefix lets secret scanners find
// leaked keys with [Pattern].
//
// Nothing in this package logs, and no error it returns contains key material.
package keys
