package admin

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strconv"

	"github.com/keygate/keygate/caddymodule/store"
)

// The query parameters of the key list and the audit log, shared by the
// pages and the JSON API, and the links that keep them from page to page.
//
//	key list:  q (name or key prefix), sort (name, created, last_used),
//	           order (asc, desc), cursor (from a page's links), limit
//	audit log: q (key name or prefix), action (key.create, ...),
//	           before or after (event ids, from a page's links), limit

// Bounds of the limit parameter, and the pages' sizes.
const (
	maxPageLimit  = 500
	keysPageSize  = store.DefaultKeyLimit
	auditPageSize = 50
)

const (
	msgBadSearch = "A search is a key name or prefix of at most 100 characters."
	msgBadSort   = "Keys sort by name, created or last_used, in asc or desc order."
	msgBadLimit  = "The limit is a whole number from 1 to 500."
	msgBadCursor = "This page link is damaged, or belongs to another sort order. Start again from the first page."
	msgBadAction = "The action is one of key.create, key.reveal, key.delete and secret.rotate."
	msgBadBound  = "before and after are event ids from the audit log's own links, and only one of them at a time."
)

// keyListing is a request for a page of the key list.
type keyListing struct {
	Search string
	Order  store.KeyOrder
	Desc   bool
	Cursor string
	Limit  int // 0: the page's size
}

// parseKeyListing reads the key list's parameters; anything it cannot
// use is a 400 that says what is expected.
func parseKeyListing(q url.Values) (keyListing, error) {
	var l keyListing
	var err error
	if l.Search, err = parseSearch(q); err != nil {
		return l, err
	}
	if l.Order, err = store.ParseKeyOrder(q.Get("sort")); err != nil {
		return l, fail(http.StatusBadRequest, msgBadSort)
	}
	switch q.Get("order") {
	case "", "asc":
	case "desc":
		l.Desc = true
	default:
		return l, fail(http.StatusBadRequest, msgBadSort)
	}
	l.Cursor = q.Get("cursor")
	l.Limit, err = parseLimit(q.Get("limit"))
	return l, err
}

func parseSearch(q url.Values) (string, error) {
	s, err := store.CleanSearch(q.Get("q"))
	if err != nil {
		return "", fail(http.StatusBadRequest, msgBadSearch)
	}
	return s, nil
}

func parseLimit(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > maxPageLimit {
		return 0, fail(http.StatusBadRequest, msgBadLimit)
	}
	return n, nil
}

// listKeys reads the page the listing asks for; a cursor that the store
// refuses is the caller's 400.
func listKeys(ctx context.Context, s *session, accountID string, l keyListing) (store.KeyPage, error) {
	limit := l.Limit
	if limit == 0 {
		limit = keysPageSize
	}
	p, err := s.st.ListKeys(ctx, accountID, store.KeyQuery{Search: l.Search, Order: l.Order, Desc: l.Desc, Cursor: l.Cursor, Limit: limit})
	if errors.Is(err, store.ErrInvalid) {
		return p, fail(http.StatusBadRequest, msgBadCursor)
	}
	return p, err
}

// href is the link to the key list of the account with the listing's
// parameters (those that are not the defaults).
func (l keyListing) href(accountID string) string {
	v := url.Values{"account": {accountID}}
	if l.Search != "" {
		v.Set("q", l.Search)
	}
	if l.Order != store.ByCreated {
		v.Set("sort", string(l.Order))
	}
	if l.Desc {
		v.Set("order", "desc")
	}
	if l.Cursor != "" {
		v.Set("cursor", l.Cursor)
	}
	if l.Limit != 0 {
		v.Set("limit", strconv.Itoa(l.Limit))
	}
	return "./?" + v.Encode()
}

// at is the listing at another page.
func (l keyListing) at(cursor string) keyListing {
	l.Cursor = cursor
	return l
}

// sortLink is a column header's link: to sort by the column, or, if the
// list is sorted by it, the other way.
type sortLink struct {
	Href string
	Aria string // aria-sort: "ascending", "descending", or "" for another column
}

// sortLinks are the links of the sortable columns, by order. The first
// page of a new sort keeps the search.
func (l keyListing) sortLinks(accountID string) map[string]sortLink {
	links := map[string]sortLink{}
	for _, o := range []store.KeyOrder{store.ByName, store.ByCreated, store.ByLastUsed} {
		next := keyListing{Search: l.Search, Order: o, Limit: l.Limit, Desc: o == store.ByLastUsed}
		var aria string
		if o == l.Order {
			next.Desc = !l.Desc
			aria = "ascending"
			if l.Desc {
				aria = "descending"
			}
		}
		links[string(o)] = sortLink{Href: next.href(accountID), Aria: aria}
	}
	return links
}

// auditListing is a request for a page of the audit log.
type auditListing struct {
	Search string
	Action string
	Before int64
	After  int64
	Limit  int // 0: the page's size
}

// parseAuditListing reads the audit log's parameters; anything it cannot
// use is a 400 that says what is expected.
func parseAuditListing(q url.Values) (auditListing, error) {
	var l auditListing
	var err error
	if l.Search, err = parseSearch(q); err != nil {
		return l, err
	}
	l.Action = q.Get("action")
	if _, known := actionLabels[l.Action]; l.Action != "" && !known {
		return l, fail(http.StatusBadRequest, msgBadAction)
	}
	bound := func(name string) (int64, error) {
		s := q.Get(name)
		if s == "" {
			return 0, nil
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 1 {
			return 0, fail(http.StatusBadRequest, msgBadBound)
		}
		return n, nil
	}
	if l.Before, err = bound("before"); err != nil {
		return l, err
	}
	if l.After, err = bound("after"); err != nil {
		return l, err
	}
	if l.Before > 0 && l.After > 0 {
		return l, fail(http.StatusBadRequest, msgBadBound)
	}
	l.Limit, err = parseLimit(q.Get("limit"))
	return l, err
}

// listAudit reads the page the listing asks for.
func listAudit(ctx context.Context, s *session, accountID string, l auditListing) (store.AuditPage, error) {
	limit := l.Limit
	if limit == 0 {
		limit = auditPageSize
	}
	return s.st.ListAudit(ctx, accountID, store.AuditQuery{Search: l.Search, Action: l.Action, Before: l.Before, After: l.After, Limit: limit})
}

// href is the link to the audit log of the account with the listing's
// parameters.
func (l auditListing) href(accountID string) string {
	v := url.Values{"account": {accountID}}
	if l.Search != "" {
		v.Set("q", l.Search)
	}
	if l.Action != "" {
		v.Set("action", l.Action)
	}
	if l.Before > 0 {
		v.Set("before", strconv.FormatInt(l.Before, 10))
	}
	if l.After > 0 {
		v.Set("after", strconv.FormatInt(l.After, 10))
	}
	if l.Limit != 0 {
		v.Set("limit", strconv.Itoa(l.Limit))
	}
	return "audit?" + v.Encode()
}

// at is the listing at another page: before an event, after one, or the
// newest (both 0).
func (l auditListing) at(before, after int64) auditListing {
	l.Before, l.After = before, after
	return l
}
