package storetest

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/store"
)

// orderOf sorts keys as ListKeys must: by the order's value, then by id,
// text by code point with ASCII letters of names folded; keys never used
// before any used.
func orderOf(o store.KeyOrder, desc bool) func(a, b store.Key) int {
	fold := func(s string) string {
		return strings.Map(func(r rune) rune {
			if 'A' <= r && r <= 'Z' {
				return r + 'a' - 'A'
			}
			return r
		}, s)
	}
	used := func(k store.Key) int64 {
		if k.LastUsed == nil {
			return -1 << 63
		}
		return k.LastUsed.UnixMicro()
	}
	return func(a, b store.Key) int {
		var c int
		switch o {
		case store.ByName:
			c = strings.Compare(fold(a.Name), fold(b.Name))
		case store.ByCreated:
			c = a.CreatedAt.Compare(b.CreatedAt)
		case store.ByLastUsed:
			c = cmp.Compare(used(a), used(b))
		}
		if c == 0 {
			c = strings.Compare(a.ID, b.ID)
		}
		if desc {
			c = -c
		}
		return c
	}
}

// pageThrough reads every page of q forwards, then back from the last
// page to the first, checking that both ways give the same pages and
// that each page says how many keys match.
func pageThrough(t *testing.T, s store.Store, accountID string, q store.KeyQuery) [][]store.Key {
	t.Helper()
	ctx := t.Context()
	var pages [][]store.Key
	var last store.KeyPage
	total := -1
	for {
		p, err := s.ListKeys(ctx, accountID, q)
		if err != nil {
			t.Fatalf("ListKeys(%+v): %v", q, err)
		}
		if total >= 0 && p.Total != total {
			t.Fatalf("ListKeys(%+v): Total %d, then %d", q, total, p.Total)
		}
		total = p.Total
		if q.Cursor == "" && p.Prev != "" {
			t.Errorf("ListKeys(%+v): the first page has a previous page", q)
		}
		if len(p.Keys) > max(q.Limit, 1) || len(pages) > 1000 {
			t.Fatalf("ListKeys(%+v): %d keys on page %d", q, len(p.Keys), len(pages))
		}
		for _, k := range p.Keys {
			if k.Sealed != nil {
				t.Fatalf("ListKeys(%+v) returned a sealed copy", q)
			}
		}
		pages, last = append(pages, p.Keys), p
		if p.Next == "" {
			break
		}
		q.Cursor = p.Next
	}
	if n := len(slices.Concat(pages...)); n != total {
		t.Errorf("ListKeys(%+v): %d keys on the pages, Total %d", q, n, total)
	}
	for i := len(pages) - 2; i >= 0; i-- {
		if last.Prev == "" {
			t.Fatalf("ListKeys(%+v): page %d has no previous page", q, i+1)
		}
		q.Cursor = last.Prev
		p, err := s.ListKeys(ctx, accountID, q)
		if err != nil {
			t.Fatalf("ListKeys(%+v), back: %v", q, err)
		}
		if !slices.EqualFunc(p.Keys, pages[i], func(a, b store.Key) bool { return a.ID == b.ID }) {
			t.Fatalf("ListKeys(%+v): page %d backwards is %v, forwards %v", q, i, names(p.Keys), names(pages[i]))
		}
		if p.Next == "" {
			t.Fatalf("ListKeys(%+v): page %d, reached backwards, has no next page", q, i)
		}
		last = p
	}
	if len(pages) > 1 && last.Prev != "" {
		t.Errorf("ListKeys(%+v): the first page, reached backwards, has a previous page", q)
	}
	return pages
}

func names(ks []store.Key) []string {
	var out []string
	for _, k := range ks {
		out = append(out, k.Name)
	}
	return out
}

// testKeyPaging pages through keys whose names, creation and last-use
// times tie, in every order, both ways, at several page sizes: every key
// exactly once, in order, and the same pages backwards.
func testKeyPaging(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	b := f.account("B")

	var all []store.Key
	for _, name := range []string{"ci", "CI", "Ci", "cI", "alpha", "Alpha", "ALPHA", "beta", "zeta", "Zeta", "éclair", "_under", "~tilde"} {
		k, _ := f.createKey(a.ID, name)
		all = append(all, k)
		f.createKey(b.ID, name)
	}
	// Two groups of keys last used at one time each; the rest never.
	t1, t2 := time.Now().Add(-time.Hour).UTC().Truncate(time.Microsecond), time.Now().UTC().Truncate(time.Microsecond)
	used := map[string]time.Time{}
	for i, k := range all {
		switch i % 3 {
		case 0:
			used[k.ID] = t1
		case 1:
			used[k.ID] = t2
		}
	}
	if err := s.TouchKeys(ctx, used); err != nil {
		t.Fatalf("TouchKeys: %v", err)
	}
	for i := range all {
		if at, ok := used[all[i].ID]; ok {
			all[i].LastUsed = &at
		}
	}

	for _, order := range []store.KeyOrder{store.ByCreated, store.ByName, store.ByLastUsed} {
		for _, desc := range []bool{false, true} {
			want := slices.Clone(all)
			slices.SortFunc(want, orderOf(order, desc))
			for _, limit := range []int{1, 4, 5, len(all), 100} {
				q := store.KeyQuery{Order: order, Desc: desc, Limit: limit}
				pages := pageThrough(t, s, a.ID, q)
				got := slices.Concat(pages...)
				if len(got) != len(want) {
					t.Fatalf("%+v: %d keys, want %d: %v", q, len(got), len(want), names(got))
				}
				for i := range want {
					if got[i].ID != want[i].ID {
						t.Fatalf("%+v: keys in order\n%v\nwant\n%v", q, names(got), names(want))
					}
					sameKey(t, fmt.Sprintf("%+v: key %d", q, i), got[i], want[i])
				}
				if wantPages := (len(all) + limit - 1) / limit; len(pages) != wantPages {
					t.Errorf("%+v: %d pages, want %d", q, len(pages), wantPages)
				}
			}
		}
	}

	// The default page, and an account without keys.
	p, err := s.ListKeys(ctx, a.ID, store.KeyQuery{})
	if err != nil || len(p.Keys) != len(all) || p.Total != len(all) || p.Next != "" || p.Prev != "" {
		t.Errorf("ListKeys with no query = %d keys of %d, next %q, prev %q, %v", len(p.Keys), p.Total, p.Next, p.Prev, err)
	}
	for _, acct := range []string{f.account("C").ID, "acct_unknown", "acct_\x00\xff"} {
		p, err := s.ListKeys(ctx, acct, store.KeyQuery{Search: "ci"})
		if err != nil || len(p.Keys) != 0 || p.Total != 0 || p.Next != "" || p.Prev != "" {
			t.Errorf("ListKeys(%q) = %+v, %v; want an empty page", acct, p, err)
		}
	}
}

// testKeyPagingChanges pages on while keys are created and deleted: a
// cursor holds a position, not a key, so none is skipped or repeated.
func testKeyPagingChanges(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	for _, name := range []string{"a", "b", "c", "d", "e", "f"} {
		f.createKey(a.ID, name)
	}
	q := store.KeyQuery{Order: store.ByName, Limit: 2}
	p, err := s.ListKeys(ctx, a.ID, q)
	if err != nil || len(p.Keys) != 2 {
		t.Fatalf("ListKeys = %+v, %v", p, err)
	}
	// The key the cursor is at goes; one is added on each side of it.
	if _, err := s.DeleteKey(ctx, a.ID, p.Keys[1].ID, deleteEvent()); err != nil {
		t.Fatal(err)
	}
	f.createKey(a.ID, "a0")
	f.createKey(a.ID, "b0")
	q.Cursor = p.Next
	var got []string
	for {
		p, err := s.ListKeys(ctx, a.ID, q)
		if err != nil {
			t.Fatalf("ListKeys: %v", err)
		}
		got = append(got, names(p.Keys)...)
		if p.Total != 7 {
			t.Errorf("Total = %d, want 7", p.Total)
		}
		if p.Next == "" {
			break
		}
		q.Cursor = p.Next
	}
	if want := []string{"b0", "c", "d", "e", "f"}; !slices.Equal(got, want) {
		t.Errorf("after the first page: %v, want %v", got, want)
	}
}

// testKeySearch searches by name and by display prefix: LIKE's
// wildcards and SQL in the search are text, case is ignored for ASCII
// letters, and the result pages like any listing.
func testKeySearch(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	b := f.account("B")
	names := []string{
		"100%", "100_x", "1000", "a_b", "aXb", `back\slash`, `x'); DROP TABLE api_keys;--`,
		"Prod EU", "production", "PRODUCTION 2", "Zürich", "zürich", "[a-z]*",
	}
	byName := map[string]store.Key{}
	for _, name := range names {
		byName[name], _ = f.createKey(a.ID, name)
	}
	f.createKey(b.ID, "production B")
	other, otherSecret := f.createKey(a.ID, "other")

	search := func(q string) []string {
		t.Helper()
		var got []string
		for _, page := range pageThrough(t, s, a.ID, store.KeyQuery{Search: q, Order: store.ByName, Limit: 2}) {
			for _, k := range page {
				got = append(got, k.Name)
			}
		}
		slices.Sort(got)
		return got
	}
	for _, tc := range []struct {
		search string
		want   []string
	}{
		{"%", []string{"100%"}},
		{"_", []string{"100_x", "a_b", `x'); DROP TABLE api_keys;--`}},
		{"a_b", []string{"a_b"}},
		{"100", []string{"100%", "1000", "100_x"}},
		{"100%", []string{"100%"}},
		{`\`, []string{`back\slash`}},
		{`\s`, []string{`back\slash`}},
		{"'", []string{`x'); DROP TABLE api_keys;--`}},
		{"'); DROP TABLE api_keys;--", []string{`x'); DROP TABLE api_keys;--`}},
		{"' or '1'='1", nil},
		{"[a-z]", []string{"[a-z]*"}},
		{"*", []string{"[a-z]*"}},
		{"prod", []string{"PRODUCTION 2", "Prod EU", "production"}},
		{"  PROD  ", []string{"PRODUCTION 2", "Prod EU", "production"}},
		{"zür", []string{"Zürich", "zürich"}},
		// Only ASCII letters are folded, in every store.
		{"ZÜR", nil},
		{"no such key", nil},
	} {
		if got := search(tc.search); !slices.Equal(got, tc.want) {
			t.Errorf("search %q = %q, want %q", tc.search, got, tc.want)
		}
	}

	// By display prefix, as the list shows it, or by the whole key.
	for _, q := range []string{other.Display, other.Display + "…", otherSecret.Secret(), other.Display[:5]} {
		got := search(q)
		if !slices.Contains(got, "other") {
			t.Errorf("search %q = %q, want the key %q", q, got, "other")
		}
	}
	// A display prefix matches with its case, from its start.
	swapped := strings.Map(func(r rune) rune {
		switch {
		case 'a' <= r && r <= 'z':
			return r - 'a' + 'A'
		case 'A' <= r && r <= 'Z':
			return r - 'A' + 'a'
		}
		return r
	}, other.Display)
	if swapped != other.Display && slices.Contains(search(swapped), "other") {
		t.Errorf("search %q found the key of display prefix %q", swapped, other.Display)
	}
	if got := search(other.Display[1:]); slices.Contains(got, "other") {
		t.Errorf("search %q found the key of display prefix %q", other.Display[1:], other.Display)
	}

	// The table survived the searches.
	if ks, err := store.AllKeys(ctx, s, a.ID); err != nil || len(ks) != len(names)+1 {
		t.Errorf("AllKeys after searching = %d keys, %v", len(ks), err)
	}

	// Searches that cannot be run.
	for what, q := range map[string]string{
		"a NUL byte":    "a\x00b",
		"invalid UTF-8": "\xff\xfe",
		"101 letters":   strings.Repeat("a", store.MaxSearchLen+1),
		"1 MB":          strings.Repeat("%_", 1<<19),
	} {
		_, err := s.ListKeys(ctx, a.ID, store.KeyQuery{Search: q})
		wantErr(t, "ListKeys with a search of "+what, err, store.ErrInvalid)
	}
	// The longest search runs, and finds the longest name.
	long := strings.Repeat("é", store.MaxNameLen)
	f.createKey(a.ID, long)
	if got := search(long); !slices.Equal(got, []string{long}) {
		t.Errorf("search of the longest name = %q", got)
	}
}

// testKeyListBadQuery: an order or a cursor ListKeys did not make is
// ErrInvalid, never a database error.
func testKeyListBadQuery(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")
	for i := range 3 {
		f.createKey(a.ID, fmt.Sprintf("k%d", i))
	}
	p, err := s.ListKeys(ctx, a.ID, store.KeyQuery{Order: store.ByName, Limit: 1})
	if err != nil || p.Next == "" {
		t.Fatalf("ListKeys = %+v, %v", p, err)
	}
	for what, q := range map[string]store.KeyQuery{
		"an unknown order":       {Order: "digest"},
		"an order of SQL":        {Order: "name; drop table api_keys"},
		"a cursor of another":    {Order: store.ByCreated, Cursor: p.Next},
		"a cursor the other way": {Order: store.ByName, Desc: true, Cursor: p.Next},
		"a garbage cursor":       {Cursor: "'; drop table api_keys;--"},
		"a huge cursor":          {Cursor: strings.Repeat("x", 1<<20)},
	} {
		_, err := s.ListKeys(ctx, a.ID, q)
		wantErr(t, "ListKeys with "+what, err, store.ErrInvalid)
	}
	if ks, err := store.AllKeys(ctx, s, a.ID); err != nil || len(ks) != 3 {
		t.Errorf("AllKeys = %d keys, %v", len(ks), err)
	}
}
