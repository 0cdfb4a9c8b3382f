// Package caddyconf holds what keygate's Caddy modules share for reading
// their configuration: errors that name the line and the option meant, and
// header name checks.
package caddyconf

import (
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// UnknownOption reports an unknown subdirective with the line it is on,
// the options that exist and, for a likely typo, the one that was meant.
func UnknownOption(d *caddyfile.Dispenser, where string, known ...string) error {
	got := d.Val()
	best, bestDist := "", 3 // suggest only within two edits
	for _, k := range known {
		if dist := EditDistance(got, k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best != "" {
		return d.Errf("unknown %s %q: did you mean %s? (options: %s)", where, got, best, strings.Join(known, ", "))
	}
	return d.Errf("unknown %s %q (options: %s)", where, got, strings.Join(known, ", "))
}

// EditDistance is the Levenshtein distance between two short strings.
func EditDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// ValidHeaderName reports whether s is an RFC 9110 token.
func ValidHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}
