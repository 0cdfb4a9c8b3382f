package store

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// KeyOrder is what ListKeys sorts by. Keys that tie are sorted by id, so
// that every order is total and a page boundary falls between two keys.
type KeyOrder string

const (
	// ByCreated sorts by creation time: the default.
	ByCreated KeyOrder = "created"
	// ByName sorts by name, with ASCII letters folded to lower case.
	ByName KeyOrder = "name"
	// ByLastUsed sorts by the time of last use, keys never used first.
	ByLastUsed KeyOrder = "last_used"
)

// ParseKeyOrder checks an order's name: "" is ByCreated, and anything
// else that is not a KeyOrder is ErrInvalid.
func ParseKeyOrder(s string) (KeyOrder, error) {
	switch o := KeyOrder(s); o {
	case "":
		return ByCreated, nil
	case ByCreated, ByName, ByLastUsed:
		return o, nil
	}
	return "", fmt.Errorf("%w: keys sort by %s, %s or %s", ErrInvalid, ByName, ByCreated, ByLastUsed)
}

// Page sizes of ListKeys.
const (
	DefaultKeyLimit = 50  // the page size when the caller gives none
	MaxKeyLimit     = 500 // the largest page, whatever the caller asks
)

// KeyQuery asks ListKeys for one page of an account's keys.
type KeyQuery struct {
	// Search keeps the keys whose name holds it, ignoring the case of
	// ASCII letters, or whose display prefix starts with it (see
	// CleanSearch and Match). "" keeps every key.
	Search string
	Order  KeyOrder // "" is ByCreated
	Desc   bool     // descending: newest, last (Z) or most recently used first
	// Cursor is a KeyPage's Next or Prev, for the page after or before
	// it; "" asks for the first page. A cursor is made for one Order and
	// Desc, and is ErrInvalid with another.
	Cursor string
	Limit  int // keys per page: <= 0 is DefaultKeyLimit, none above MaxKeyLimit
}

// KeyPage is one page of a key listing.
type KeyPage struct {
	Keys  []Key  // in the query's order, without Sealed
	Next  string // the Cursor of the following page; "" when this is the last
	Prev  string // the Cursor of the preceding page; "" when this is the first
	Total int    // how many of the account's keys match the search, on every page
}

// KeyPosition is where a key falls in a KeyOrder: the value sorted on,
// then the id.
type KeyPosition struct {
	Name     string     // ByName
	Created  time.Time  // ByCreated
	LastUsed *time.Time // ByLastUsed; nil for never used
	ID       string
}

// Value is what the order sorts on at the position: a string (ByName), a
// time.Time (ByCreated) or a *time.Time (ByLastUsed, nil for never used).
func (p KeyPosition) Value(o KeyOrder) any {
	switch o {
	case ByName:
		return p.Name
	case ByLastUsed:
		return p.LastUsed
	}
	return p.Created
}

func positionOf(k Key) KeyPosition {
	return KeyPosition{Name: k.Name, Created: k.CreatedAt, LastUsed: k.LastUsed, ID: k.ID}
}

// KeyScan is a KeyQuery as a store's SQL runs it (PlanKeys): read the
// account's keys that Match, in Order (descending if Desc), after From
// in that direction, at most Fetch of them, and count how many Match.
type KeyScan struct {
	Match Match
	Order KeyOrder
	// Desc reads the order descending: the query's direction, reversed
	// for the page before a cursor (Page puts it back in order).
	Desc bool
	// From is the position the scan starts after, excluding it; nil
	// starts at the beginning.
	From *KeyPosition
	// Fetch is one more than the page, which tells whether more follow.
	Fetch int

	query KeyQuery
	back  bool // a page before the cursor: scanned backwards, then reversed
}

// PlanKeys checks a KeyQuery and turns it into the scan a store runs:
// the search cleaned (CleanSearch), the order checked, the cursor decoded
// and the limit bounded, alike in every store. A bad order, search or
// cursor is ErrInvalid.
func PlanKeys(q KeyQuery) (KeyScan, error) {
	order, err := ParseKeyOrder(string(q.Order))
	if err != nil {
		return KeyScan{}, err
	}
	search, err := CleanSearch(q.Search)
	if err != nil {
		return KeyScan{}, err
	}
	q.Order, q.Search = order, search
	switch {
	case q.Limit <= 0:
		q.Limit = DefaultKeyLimit
	case q.Limit > MaxKeyLimit:
		q.Limit = MaxKeyLimit
	}
	scan := KeyScan{Match: match(search), Order: order, Desc: q.Desc, Fetch: q.Limit + 1, query: q}
	if q.Cursor != "" {
		c, err := decodeKeyCursor(q.Cursor, order, q.Desc)
		if err != nil {
			return KeyScan{}, err
		}
		scan.From, scan.back = &c.pos, c.Back
		if c.Back {
			scan.Desc = !scan.Desc
		}
	}
	return scan, nil
}

// Page makes the KeyPage of the keys the scan read, in its order, and
// the number of keys that match.
func (s KeyScan) Page(keys []Key, total int) KeyPage {
	more := len(keys) >= s.Fetch
	if more {
		keys = keys[:s.Fetch-1]
	}
	if s.back {
		slices.Reverse(keys)
	}
	p := KeyPage{Keys: keys, Total: total}
	if len(keys) == 0 {
		return p
	}
	first, last := positionOf(keys[0]), positionOf(keys[len(keys)-1])
	if s.back {
		// The key of the cursor follows this page; more precede it if
		// the scan found more.
		p.Next = s.cursor(last, false)
		if more {
			p.Prev = s.cursor(first, true)
		}
		return p
	}
	if more {
		p.Next = s.cursor(last, false)
	}
	if s.From != nil {
		p.Prev = s.cursor(first, true)
	}
	return p
}

// keyCursor is a KeyQuery's Cursor: a position, and whether the page
// wanted is after it or before it.
type keyCursor struct {
	Order KeyOrder `json:"o"`
	Desc  bool     `json:"d,omitempty"`
	Back  bool     `json:"b,omitempty"`
	Name  string   `json:"n,omitempty"`
	At    *int64   `json:"t,omitempty"` // Unix microseconds: created, or last used
	ID    string   `json:"i"`

	pos KeyPosition
}

func (s KeyScan) cursor(pos KeyPosition, back bool) string {
	c := keyCursor{Order: s.query.Order, Desc: s.query.Desc, Back: back, ID: pos.ID}
	switch c.Order {
	case ByName:
		c.Name = pos.Name
	case ByCreated:
		us := pos.Created.UnixMicro()
		c.At = &us
	case ByLastUsed:
		if pos.LastUsed != nil {
			us := pos.LastUsed.UnixMicro()
			c.At = &us
		}
	}
	b, _ := json.Marshal(c)
	return base64.RawURLEncoding.EncodeToString(b)
}

// maxCursorLen bounds what decodeKeyCursor reads: a cursor of the
// longest name is well under it.
const maxCursorLen = 1024

// The times a cursor may hold, in Unix microseconds (years 1 to 9999):
// every store can compare them.
var (
	minCursorTime = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).UnixMicro()
	maxCursorTime = time.Date(9999, 12, 31, 23, 59, 59, 999999000, time.UTC).UnixMicro()
)

func decodeKeyCursor(s string, order KeyOrder, desc bool) (keyCursor, error) {
	bad := fmt.Errorf("%w: the cursor is not one that a page of keys gave", ErrInvalid)
	var c keyCursor
	if len(s) > maxCursorLen {
		return c, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || json.Unmarshal(b, &c) != nil {
		return c, bad
	}
	if c.Order != order || c.Desc != desc {
		return c, fmt.Errorf("%w: the cursor is of another order of keys", ErrInvalid)
	}
	if c.ID == "" || CheckText(c.ID, c.Name) != nil || len(c.Name) > 4*MaxNameLen {
		return c, bad
	}
	switch {
	case order == ByCreated && c.At == nil, order == ByName && c.At != nil:
		return c, bad
	case c.At != nil && (*c.At < minCursorTime || *c.At > maxCursorTime):
		return c, bad
	}
	c.pos = KeyPosition{Name: c.Name, ID: c.ID}
	if c.At != nil {
		t := time.UnixMicro(*c.At).UTC()
		c.pos.Created, c.pos.LastUsed = t, &t
	}
	return c, nil
}

// AllKeys returns every key of the account, oldest first, reading a page
// of MaxKeyLimit at a time.
func AllKeys(ctx context.Context, st Store, accountID string) ([]Key, error) {
	var all []Key
	q := KeyQuery{Limit: MaxKeyLimit}
	for {
		p, err := st.ListKeys(ctx, accountID, q)
		if err != nil {
			return nil, err
		}
		all = append(all, p.Keys...)
		if p.Next == "" {
			return all, nil
		}
		q.Cursor = p.Next
	}
}
