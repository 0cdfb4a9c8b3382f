package sqlite

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/keygate/keygate/caddymodule/store"
)

// AppendAudit writes one event, such as a reveal.
func (s *Store) AppendAudit(ctx context.Context, ev store.AuditEvent) error {
	const doing = "writing audit event"
	ev, err := store.PrepareAuditEvent(ev, now())
	if err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	if err := insertEvent(ctx, s.db, ev); err != nil {
		return wrap(doing, "account", err)
	}
	return nil
}

// ListAudit reads a page of the account's events: the scan of
// store.PlanAudit, from the index on account and id, on account,
// action and id, or on account, key and id.
func (s *Store) ListAudit(ctx context.Context, accountID string, q store.AuditQuery) (store.AuditPage, error) {
	const doing = "listing audit events"
	scan, err := store.PlanAudit(q)
	if err != nil {
		return store.AuditPage{}, fmt.Errorf("%s: %w", doing, err)
	}
	var p params
	op, dir := store.Direction(scan.Desc)
	where := "account_id = " + p.add(accountID) + " and id " + op + " " + p.add(scan.Bound)
	if scan.Action != "" {
		where += " and action = " + p.add(scan.Action)
	}
	if scan.KeyID != "" {
		where += " and key_id = " + p.add(scan.KeyID)
	}
	where += matchSQL(&p, scan.Match, "key_name", "key_display")
	listSQL := `
		select id, account_id, actor, action, key_id, key_name, key_display, remote_addr, detail, at
		from audit_events
		where ` + where + `
		order by id ` + dir + `
		limit ` + p.add(scan.Fetch)
	rows, err := s.db.QueryContext(ctx, listSQL, p...)
	if err != nil {
		return store.AuditPage{}, wrap(doing, "account", err)
	}
	defer rows.Close()
	var evs []store.AuditEvent
	for rows.Next() {
		var (
			ev store.AuditEvent
			at int64
		)
		err := rows.Scan(&ev.ID, &ev.AccountID, &ev.Actor, &ev.Action, &ev.KeyID, &ev.KeyName, &ev.KeyDisplay, &ev.RemoteAddr, &ev.Detail, &at)
		if err != nil {
			return store.AuditPage{}, wrap(doing, "account", err)
		}
		ev.At = fromMicros(at)
		evs = append(evs, ev)
	}
	if err := rows.Err(); err != nil {
		return store.AuditPage{}, wrap(doing, "account", err)
	}
	return scan.Page(evs), nil
}

// execer is a database or a transaction.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

func insertEvent(ctx context.Context, db execer, ev store.AuditEvent) error {
	const insertSQL = `
		insert into audit_events (account_id, actor, action, key_id, key_name, key_display, remote_addr, detail, at)
		values (?, ?, ?, ?, ?, ?, ?, ?, ?)`
	_, err := db.ExecContext(ctx, insertSQL,
		ev.AccountID, ev.Actor, ev.Action, ev.KeyID, ev.KeyName, ev.KeyDisplay, ev.RemoteAddr, ev.Detail, micros(utc(ev.At)))
	return err
}
