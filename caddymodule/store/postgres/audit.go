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

// ListAudit pages through the account's events, newest first.
func (s *Store) ListAudit(ctx context.Context, accountID string, beforeID int64, limit int) ([]store.AuditEvent, error) {
	if notFound(accountID) {
		return nil, nil
	}
	beforeID, limit = store.AuditPage(beforeID, limit)
	const listSQL = `
		select id, account_id, actor, action, key_id, key_name, key_display, remote_addr, detail, at
		from audit_events
		where account_id = $1 and id < $2
		order by id desc
		limit $3`
	rows, _ := s.pool.Query(ctx, listSQL, accountID, beforeID, limit)
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.AuditEvent, error) {
		var ev store.AuditEvent
		err := row.Scan(&ev.ID, &ev.AccountID, &ev.Actor, &ev.Action, &ev.KeyID, &ev.KeyName, &ev.KeyDisplay, &ev.RemoteAddr, &ev.Detail, &ev.At)
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
		insert into audit_events (account_id, actor, action, key_id, key_name, key_display, remote_addr, detail, at)
		values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
		returning id`
	var id int64
	err := q.QueryRow(ctx, insertSQL,
		ev.AccountID, ev.Actor, ev.Action, ev.KeyID, ev.KeyName, ev.KeyDisplay, ev.RemoteAddr, ev.Detail, utc(ev.At)).Scan(&id)
	return id, err
}
