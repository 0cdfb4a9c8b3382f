package postgres

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/store"
)

// AppendAudit writes one event, such as a reveal.
func (s *Store) AppendAudit(ctx context.Context, ev store.AuditEvent) error {
	const doing = "writing audit event"
	if ev.At.IsZero() {
		ev.At = now()
	}
	if err := validateEvent(ev); err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	if _, err := insertEvent(ctx, s.pool, ev); err != nil {
		return wrap(doing, "account", err)
	}
	return nil
}

// ListAudit pages through the account's events, newest first.
func (s *Store) ListAudit(ctx context.Context, accountID string, beforeID int64, limit int) ([]store.AuditEvent, error) {
	if notFound(accountID) {
		return nil, nil
	}
	if beforeID <= 0 {
		beforeID = math.MaxInt64
	}
	limit = auditLimit(limit)
	const listSQL = `
		select id, account_id, actor, action, key_id, key_name, key_display, remote_addr, at
		from audit_events
		where account_id = $1 and id < $2
		order by id desc
		limit $3`
	rows, _ := s.pool.Query(ctx, listSQL, accountID, beforeID, limit)
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.AuditEvent, error) {
		var ev store.AuditEvent
		err := row.Scan(&ev.ID, &ev.AccountID, &ev.Actor, &ev.Action, &ev.KeyID, &ev.KeyName, &ev.KeyDisplay, &ev.RemoteAddr, &ev.At)
		ev.At = utc(ev.At)
		return ev, err
	})
	if err != nil {
		return nil, wrap("listing audit events", "account", err)
	}
	return evs, nil
}

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func insertEvent(ctx context.Context, q querier, ev store.AuditEvent) (int64, error) {
	const insertSQL = `
		insert into audit_events (account_id, actor, action, key_id, key_name, key_display, remote_addr, at)
		values ($1, $2, $3, $4, $5, $6, $7, $8)
		returning id`
	var id int64
	err := q.QueryRow(ctx, insertSQL,
		ev.AccountID, ev.Actor, ev.Action, ev.KeyID, ev.KeyName, ev.KeyDisplay, ev.RemoteAddr, utc(ev.At)).Scan(&id)
	return id, err
}

// Paging bounds for ListAudit.
const (
	defaultAuditLimit = 100
	maxAuditLimit     = 1000
)

func auditLimit(limit int) int {
	switch {
	case limit <= 0:
		return defaultAuditLimit
	case limit > maxAuditLimit:
		return maxAuditLimit
	}
	return limit
}

// checkEvent checks what the caller of CreateKey or DeleteKey (action)
// chose of the event, before anything is written.
func checkEvent(ev store.AuditEvent, action string) error {
	if ev.Action != "" && ev.Action != action {
		return fmt.Errorf("%w: audit event for %s has action %q", store.ErrInvalid, action, ev.Action)
	}
	if ev.Actor == "" && action != store.ActionCreate {
		return fmt.Errorf("%w: audit event has no actor", store.ErrInvalid)
	}
	return nil
}

// keyEvent completes ev as the event of action on k: what it says about
// the key comes from k, so that it cannot disagree with the row. The actor
// of a creation defaults to the key's creator.
func keyEvent(ev store.AuditEvent, action string, k store.Key, at time.Time) (store.AuditEvent, error) {
	if err := checkEvent(ev, action); err != nil {
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
	return ev, validateEvent(ev)
}

func validateEvent(ev store.AuditEvent) error {
	switch ev.Action {
	case store.ActionCreate, store.ActionReveal, store.ActionDelete:
	default:
		return fmt.Errorf("%w: unknown audit action %q", store.ErrInvalid, ev.Action)
	}
	if ev.AccountID == "" || ev.Actor == "" {
		return fmt.Errorf("%w: audit event is missing its account or actor", store.ErrInvalid)
	}
	return checkText(ev.AccountID, ev.Actor, ev.KeyID, ev.KeyName, ev.KeyDisplay, ev.RemoteAddr)
}
