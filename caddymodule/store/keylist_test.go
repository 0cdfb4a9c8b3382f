package store

import (
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/keys"
)

func TestCleanSearch(t *testing.T) {
	k, err := keys.New()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"  ci pipeline \t", "ci pipeline"},
		{"100%_done", "100%_done"},
		{k.Secret(), k.Display()}, // never more of a key than its display prefix
		{k.Display() + "…", k.Display()},
		{k.Display() + "...", k.Display()},
		{"kg_Ab", "kg_Ab"},
		{"kg_AbC12345678", "kg_AbC12"},
		{"kg_migration_keys", "kg_migration_keys"}, // a name, not a key
		{"kg_Ab 12345678", "kg_Ab 12345678"},
		{"kg_", "kg_"},
		{strings.Repeat("é", MaxSearchLen), strings.Repeat("é", MaxSearchLen)},
	} {
		if got, err := CleanSearch(tc.in); got != tc.want || err != nil {
			t.Errorf("CleanSearch(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"a\x00b", "bad \xff", strings.Repeat("x", MaxSearchLen+1), strings.Repeat("x", 1<<20)} {
		if _, err := CleanSearch(in); !errors.Is(err, ErrInvalid) {
			t.Errorf("CleanSearch(%.20q) = %v; want ErrInvalid", in, err)
		}
	}
}

func TestMatch(t *testing.T) {
	for _, tc := range []struct {
		search string
		want   Match
	}{
		{"", Match{}},
		{"CI", Match{Name: "%ci%"}},
		{"Zürich", Match{Name: "%zürich%"}}, // ASCII letters only, as the stores' SQL folds names
		{`100%_\`, Match{Name: `%100\%\_\\%`}},
		{"kg_AbC12", Match{Name: `%kg\_abc12%`, Display: "kg_AbC12"}},
		{"x'); drop table api_keys;--", Match{Name: "%x'); drop table api\\_keys;--%"}},
	} {
		if got := match(tc.search); got != tc.want {
			t.Errorf("match(%q) = %+v, want %+v", tc.search, got, tc.want)
		}
	}
}

func TestPlanKeys(t *testing.T) {
	for _, tc := range []struct {
		q     KeyQuery
		order KeyOrder
		fetch int
	}{
		{KeyQuery{}, ByCreated, DefaultKeyLimit + 1},
		{KeyQuery{Order: ByName, Limit: -3}, ByName, DefaultKeyLimit + 1},
		{KeyQuery{Order: ByLastUsed, Limit: 1}, ByLastUsed, 2},
		{KeyQuery{Limit: MaxKeyLimit + 1}, ByCreated, MaxKeyLimit + 1},
		{KeyQuery{Limit: math.MaxInt}, ByCreated, MaxKeyLimit + 1},
	} {
		s, err := PlanKeys(tc.q)
		if err != nil || s.Order != tc.order || s.Fetch != tc.fetch || s.From != nil {
			t.Errorf("PlanKeys(%+v) = %+v, %v; want order %s, fetch %d", tc.q, s, err, tc.order, tc.fetch)
		}
	}

	good, err := PlanKeys(KeyQuery{Order: ByName})
	if err != nil {
		t.Fatal(err)
	}
	cursor := good.cursor(KeyPosition{Name: "n", ID: "key_1"}, false)
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for what, q := range map[string]KeyQuery{
		"an unknown order":         {Order: "digest"},
		"an order in SQL":          {Order: "name; drop table api_keys"},
		"a NUL in the search":      {Search: "\x00"},
		"a huge search":            {Search: strings.Repeat("%", 10000)},
		"a cursor of another sort": {Order: ByCreated, Cursor: cursor},
		"a cursor of another way":  {Order: ByName, Desc: true, Cursor: cursor},
		"garbage":                  {Cursor: "garbage!"},
		"base64 of garbage":        {Cursor: b64("garbage")},
		"a cursor without an id":   {Order: ByName, Cursor: b64(`{"o":"name","n":"x"}`)},
		"a cursor without a time":  {Cursor: b64(`{"o":"created","i":"key_1"}`)},
		"a cursor of year 10000":   {Cursor: b64(fmt.Sprintf(`{"o":"created","i":"k","t":%d}`, int64(math.MaxInt64)))},
		"a cursor before year 1":   {Cursor: b64(fmt.Sprintf(`{"o":"created","i":"k","t":%d}`, int64(math.MinInt64)))},
		"a cursor with a bad id":   {Order: ByName, Cursor: b64(`{"o":"name","i":"k\u0000"}`)},
		"a huge cursor":            {Cursor: strings.Repeat("A", 100000)},
	} {
		if _, err := PlanKeys(q); !errors.Is(err, ErrInvalid) {
			t.Errorf("PlanKeys with %s = %v; want ErrInvalid", what, err)
		}
	}
	s, err := PlanKeys(KeyQuery{Order: ByName, Cursor: cursor})
	if err != nil || s.From == nil || s.From.Name != "n" || s.From.ID != "key_1" || s.Desc {
		t.Errorf("PlanKeys with a good cursor = %+v, %v", s, err)
	}
}

// TestKeyScanPage pages through ten keys of one order forwards and back,
// as the store would read them.
func TestKeyScanPage(t *testing.T) {
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var all []Key
	for i := range 10 {
		all = append(all, Key{ID: fmt.Sprintf("key_%d", i), Name: "same", CreatedAt: base.Add(time.Duration(i/3) * time.Second)})
	}
	// read is what a store reads for a scan: the keys after From in the
	// scan's direction, Fetch of them.
	read := func(s KeyScan) []Key {
		ks := slices.Clone(all)
		if s.Desc {
			slices.Reverse(ks)
		}
		if s.From != nil {
			i := slices.IndexFunc(ks, func(k Key) bool { return k.ID == s.From.ID })
			ks = ks[i+1:]
		}
		return ks[:min(len(ks), s.Fetch)]
	}
	ids := func(ks []Key) string {
		var out []string
		for _, k := range ks {
			out = append(out, strings.TrimPrefix(k.ID, "key_"))
		}
		return strings.Join(out, "")
	}
	get := func(q KeyQuery) KeyPage {
		t.Helper()
		s, err := PlanKeys(q)
		if err != nil {
			t.Fatal(err)
		}
		return s.Page(read(s), len(all))
	}

	q := KeyQuery{Limit: 4}
	var pages []string
	p := get(q)
	if p.Prev != "" {
		t.Error("the first page has a previous page")
	}
	for {
		pages = append(pages, ids(p.Keys))
		if p.Next == "" {
			break
		}
		q.Cursor = p.Next
		p = get(q)
	}
	if got := strings.Join(pages, "|"); got != "0123|4567|89" {
		t.Fatalf("forwards: %s", got)
	}
	pages = nil
	for p.Prev != "" {
		q.Cursor = p.Prev
		p = get(q)
		pages = append(pages, ids(p.Keys))
		if p.Next == "" {
			t.Fatal("a page before another has no next page")
		}
	}
	if got := strings.Join(pages, "|"); got != "4567|0123" {
		t.Fatalf("backwards: %s", got)
	}

	q = KeyQuery{Limit: 4, Desc: true}
	p = get(q)
	q.Cursor = p.Next
	if p = get(q); ids(p.Keys) != "5432" {
		t.Fatalf("descending, page 2: %s", ids(p.Keys))
	}
	if p := get(KeyQuery{Limit: 4, Desc: true, Cursor: p.Prev}); ids(p.Keys) != "9876" || p.Prev != "" {
		t.Fatalf("descending, back to page 1: %s (prev %q)", ids(p.Keys), p.Prev)
	}
}
