package store

import (
	"fmt"
	"math"
	"time"
)

// Paging bounds of ListAudit: a page no bigger than MaxAuditLimit keeps one
// call from reading a whole busy account's history at once.
const (
	DefaultAuditLimit = 100  // the page size when the caller gives none
	MaxAuditLimit     = 1000 // the largest page, whatever the caller asks
)

// AuditPage turns ListAudit's paging arguments into bounds a query can use
// as they are, so that every store pages alike: an id that the events
// returned are below (beforeID, or the largest id when beforeID <= 0 asks
// for the newest), and a row count from 1 to MaxAuditLimit
// (DefaultAuditLimit when limit <= 0).
func AuditPage(beforeID int64, limit int) (before int64, n int) {
	before = beforeID
	if before <= 0 {
		before = math.MaxInt64
	}
	switch {
	case limit <= 0:
		n = DefaultAuditLimit
	case limit > MaxAuditLimit:
		n = MaxAuditLimit
	default:
		n = limit
	}
	return before, n
}

// ValidateAuditEvent checks an event about to be written: a known action,
// an account and an actor, and text that every store can hold (CheckText).
// The log answers "who did what to which key" long after the fact, so an
// event that could not say it is refused as ErrInvalid before it is
// written, alike in every store, rather than kept or left to a database
// error.
func ValidateAuditEvent(ev AuditEvent) error {
	switch ev.Action {
	case ActionCreate, ActionReveal, ActionDelete, ActionRotate:
	default:
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
