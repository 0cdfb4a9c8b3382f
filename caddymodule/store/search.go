package store

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/keygate/keygate/caddymodule/keys"
)

// MaxSearchLen is the longest search, in characters: a longer one could
// not be part of any name (MaxNameLen).
const MaxSearchLen = MaxNameLen

// CleanSearch returns the search as ListKeys and ListAudit run it: without
// the spaces around it, a display prefix followed by "…" or "..." (as the
// dashboard shows one) without them, and anything that could be more of
// a key than its display prefix (a whole key pasted in by mistake: the
// prefix kg_ and more letters and digits than a display prefix holds) cut
// to a display prefix, so that a search never holds more of a key than a
// page may show. A search that is not valid text (CheckText) or is longer
// than MaxSearchLen characters is ErrInvalid.
func CleanSearch(s string) (string, error) {
	s = strings.TrimSpace(s)
	if err := CheckText(s); err != nil {
		return "", fmt.Errorf("%w: the search holds a NUL byte or invalid UTF-8", ErrInvalid)
	}
	if strings.HasPrefix(s, keys.Prefix) {
		s = strings.TrimSuffix(strings.TrimSuffix(s, "…"), "...")
		if d := keys.Key(s).Display(); d != keys.Prefix && len(s) > len(d) && alphanumeric(s[len(keys.Prefix):]) {
			s = d
		}
	}
	if n := utf8.RuneCountInString(s); n > MaxSearchLen {
		return "", fmt.Errorf("%w: the search is %d characters; at most %d are allowed", ErrInvalid, n, MaxSearchLen)
	}
	return s, nil
}

func alphanumeric(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// Match is a search as a store's SQL applies it. A row matches when its
// name, with ASCII letters in lower case, is LIKE Name (escape character
// '\'), or when its display prefix starts with Display. Both are "" when
// there is no search; Display is "" for a search that is not the start
// of a display prefix.
//
// Only ASCII letters are folded, in the search here and in the names by
// the stores' SQL (SQLite's lower, Postgres's lower under the "C"
// collation), so that every store finds the same keys whatever its
// database's locale. Display prefixes are matched exactly: keys differ
// by the case of their letters.
type Match struct {
	Name    string
	Display string
}

// Any reports whether the search matches every row.
func (m Match) Any() bool { return m.Name == "" && m.Display == "" }

// match makes the Match of a search that CleanSearch returned.
func match(search string) Match {
	if search == "" {
		return Match{}
	}
	m := Match{Name: "%" + escapeLike(lowerASCII(search)) + "%"}
	if strings.HasPrefix(search, keys.Prefix) {
		m.Display = search
	}
	return m
}

// escapeLike makes s match itself in a LIKE pattern with the escape
// character '\'.
func escapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// lowerASCII folds A–Z to a–z and leaves every other character alone.
func lowerASCII(s string) string {
	return strings.Map(func(r rune) rune {
		if 'A' <= r && r <= 'Z' {
			return r + ('a' - 'A')
		}
		return r
	}, s)
}

// Direction is how a scan of ListKeys or ListAudit reads, in SQL: past
// its bound upwards (">", "asc") or, descending, downwards ("<", "desc").
func Direction(desc bool) (op, order string) {
	if desc {
		return "<", "desc"
	}
	return ">", "asc"
}
