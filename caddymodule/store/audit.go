package store

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Page sizes of ListAudit: a page no bigger than MaxAuditLimit keeps one
// call from reading a whole busy account's history at once.
const (
	DefaultAuditLimit = 100  // the page size when the caller gives none
	MaxAuditLimit     = 1000 // the largest page, whatever the caller asks
)

// AuditQuery asks ListAudit for one page of an account's events. Pages
// are bounded by event ids: Before gives the events older than an id,
// After those newer than it; with neither, the newest.
type AuditQuery struct {
	// Search keeps the events about a key whose name holds it, ignoring
	// the case of ASCII letters, or whose display prefix starts with it,
	// as KeyQuery.Search does for keys. "" keeps every event.
	Search string
	// Action keeps the events of one action (ActionCreate, ...); "" keeps
	// every action.
	Action string
	// KeyID keeps the events about one key (a key's page); "" keeps the
	// events about every key and about none.
	KeyID  string
	Before int64 // the events older than this id (an AuditPage's Older); <= 0 for none
	After  int64 // the events newer than this id (an AuditPage's Newer); <= 0 for none
	Limit  int   // events per page: <= 0 is DefaultAuditLimit, none above MaxAuditLimit
}

// AuditPage is one page of an audit log, newest first.
type AuditPage struct {
	Events []AuditEvent
	Older  int64 // the Before of the page of older events; 0 when there are none
	Newer  int64 // the After of the page of newer events; 0 when this is the newest
}

// AuditScan is an AuditQuery as a store's SQL runs it (PlanAudit): read
// the account's events that Match and are of Action (any when ""), with
// ids below Bound newest first when Desc, else above Bound oldest first,
// at most Fetch of them.
type AuditScan struct {
	Match  Match
	Action string
	KeyID  string // "" for any
	Desc   bool
	Bound  int64 // math.MaxInt64 when the query gave none
	Fetch  int   // one more than the page, which tells whether more follow
	query  AuditQuery
}

// PlanAudit checks an AuditQuery and turns it into the scan a store runs,
// alike in every store: the search cleaned (CleanSearch), the action
// known, at most one bound, and the limit bounded. A query that breaks
// these is ErrInvalid.
func PlanAudit(q AuditQuery) (AuditScan, error) {
	search, err := CleanSearch(q.Search)
	if err != nil {
		return AuditScan{}, err
	}
	if q.Action != "" && !knownAction(q.Action) {
		return AuditScan{}, fmt.Errorf("%w: unknown audit action %q", ErrInvalid, q.Action)
	}
	if err := CheckText(q.KeyID); err != nil {
		return AuditScan{}, err
	}
	q.Before, q.After = max(q.Before, 0), max(q.After, 0)
	if q.Before > 0 && q.After > 0 {
		return AuditScan{}, fmt.Errorf("%w: a page of the audit log is before an event or after one, not both", ErrInvalid)
	}
	switch {
	case q.Limit <= 0:
		q.Limit = DefaultAuditLimit
	case q.Limit > MaxAuditLimit:
		q.Limit = MaxAuditLimit
	}
	scan := AuditScan{Match: match(search), Action: q.Action, KeyID: q.KeyID, Desc: true, Bound: math.MaxInt64, Fetch: q.Limit + 1, query: q}
	switch {
	case q.Before > 0:
		scan.Bound = q.Before
	case q.After > 0:
		scan.Desc, scan.Bound = false, q.After
	}
	return scan, nil
}

// Page makes the AuditPage of the events the scan read, in its order.
func (s AuditScan) Page(evs []AuditEvent) AuditPage {
	more := len(evs) >= s.Fetch
	if more {
		evs = evs[:s.Fetch-1]
	}
	if !s.Desc {
		slices.Reverse(evs)
	}
	p := AuditPage{Events: evs}
	if len(evs) == 0 {
		return p
	}
	newest, oldest := evs[0].ID, evs[len(evs)-1].ID
	if !s.Desc {
		// The event of the bound is older than this page; newer ones
		// follow it if the scan found more.
		p.Older = oldest
		if more {
			p.Newer = newest
		}
		return p
	}
	if more {
		p.Older = oldest
	}
	if s.query.Before > 0 {
		p.Newer = newest
	}
	return p
}

func knownAction(a string) bool {
	switch a {
	case ActionCreate, ActionReveal, ActionDelete, ActionRotate:
		return true
	}
	return false
}

// ValidateAuditEvent checks an event about to be written: a known action,
// an account and an actor, and text that every store can hold (CheckText).
// The log answers "who did what to which key" long after the fact, so an
// event that could not say it is refused as ErrInvalid before it is
// written, alike in every store, rather than kept or left to a database
// error.
func ValidateAuditEvent(ev AuditEvent) error {
	if !knownAction(ev.Action) {
		return fmt.Errorf("%w: unknown audit action %q", ErrInvalid, ev.Action)
	}
	if ev.AccountID == "" || ev.Actor == "" {
		return fmt.Errorf("%w: audit event is missing its account or actor", ErrInvalid)
	}
	return CheckText(ev.AccountID, ev.Actor, ev.KeyID, ev.KeyName, ev.KeyDisplay, ev.RemoteAddr, ev.Detail)
}

// PrepareAuditEvent makes the event AppendAudit writes: it is timed now
// unless the caller timed it, and it must pass ValidateAuditEvent.
func PrepareAuditEvent(ev AuditEvent, now time.Time) (AuditEvent, error) {
	if ev.At.IsZero() {
		ev.At = now
	}
	return ev, ValidateAuditEvent(ev)
}

// CheckKeyAuditEvent checks the part of the event of a CreateKey or
// DeleteKey (action) that its caller chose, before anything is written: a
// delete must say who did it, and neither may claim another action. The
// rest of the event comes from the key (PrepareKeyAuditEvent), which a
// delete reads only as it removes the row.
func CheckKeyAuditEvent(ev AuditEvent, action string) error {
	if ev.Action != "" && ev.Action != action {
		return fmt.Errorf("%w: audit event for %s has action %q", ErrInvalid, action, ev.Action)
	}
	if ev.Actor == "" && action != ActionCreate {
		return fmt.Errorf("%w: audit event has no actor", ErrInvalid)
	}
	return nil
}

// PrepareKeyAuditEvent completes ev as the event of action on k, timed at
// unless the caller timed it. What it says about the key (account, id,
// name, display prefix) comes from k, so that the audit log cannot
// disagree with the row it records. The actor of a creation defaults to
// the key's creator. The event must pass CheckKeyAuditEvent and
// ValidateAuditEvent.
func PrepareKeyAuditEvent(ev AuditEvent, action string, k Key, at time.Time) (AuditEvent, error) {
	if err := CheckKeyAuditEvent(ev, action); err != nil {
		return ev, err
	}
	ev.Action = action
	ev.AccountID, ev.KeyID, ev.KeyName, ev.KeyDisplay = k.AccountID, k.ID, k.Name, k.Display
	if ev.Actor == "" {
		ev.Actor = k.CreatedBy
	}
	if ev.At.IsZero() {
		ev.At = at
	}
	return ev, ValidateAuditEvent(ev)
}
