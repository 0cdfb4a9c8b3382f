package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/store"
)

// AppendAudit writes one event, such as a reveal.
func (s *Store) AppendAudit(ctx context.Context, ev store.AuditEvent) error {
	const doing = "writing audit event"
	ev, err := store.PrepareAuditEvent(ev, now())
	if err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	if _, err := insertEvent(ctx, s.pool, ev); err != nil {
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
	if notFound(accountID) {
		return scan.Page(nil), nil
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
	rows, _ := s.pool.Query(ctx, listSQL, p...)
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.AuditEvent, error) {
		var ev store.AuditEvent
		err := row.Scan(&ev.ID, &ev.AccountID, &ev.Actor, &ev.Action, &ev.KeyID, &ev.KeyName, &ev.KeyDisplay, &ev.RemoteAddr, &ev.Detail, &ev.At)
		ev.At = utc(ev.At)
		return ev, err
	})
	if err != nil {
		return store.AuditPage{}, wrap(doing, "account", err)
	}
	return scan.Page(evs), nil
}

// querier is a pool or a transaction.
type querier interface {
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

func insertEvent(ctx context.Context, q querier, ev store.AuditEvent) (int64, error) {
	const insertSQL = `
		insert into audit_events (account_id, actor, action, key_id, key_name, key_display, remote_addr, detail, at)
		values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		returning id`
	var id int64
	err := q.QueryRow(ctx, insertSQL,
		ev.AccountID, ev.Actor, ev.Action, ev.KeyID, ev.KeyName, ev.KeyDisplay, ev.RemoteAddr, ev.Detail, utc(ev.At)).Scan(&id)
	return id, err
}
