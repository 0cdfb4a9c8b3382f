package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/keygate/keygate/caddymodule/store"
)

// RecordObjects upserts the objects in one transaction.
func (s *Store) RecordObjects(ctx context.Context, accountID string, objs []store.Object) error {
	const doing = "recording objects"
	if len(objs) == 0 {
		return nil
	}
	if err := store.ValidateObjects(accountID, objs); err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	const upsertSQL = `
		insert into objects (account_id, kind, id, server_id, seen_at)
		values (?, ?, ?, ?, ?)
		on conflict (account_id, kind, id) do update
		set server_id = excluded.server_id, seen_at = excluded.seen_at`
	at := micros(time.Now())
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		for _, o := range objs {
			if _, err := tx.ExecContext(ctx, upsertSQL, accountID, o.Kind, o.ID, o.ServerID, at); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return wrap(doing, "object", err)
	}
	return nil
}

// ObjectServer returns the server an object was recorded with.
func (s *Store) ObjectServer(ctx context.Context, accountID, kind, id string) (string, error) {
	const lookupSQL = `select server_id from objects where account_id = ? and kind = ? and id = ?`
	var server string
	if err := s.db.QueryRowContext(ctx, lookupSQL, accountID, kind, id).Scan(&server); err != nil {
		return "", wrap("looking up object", "object", err)
	}
	return server, nil
}

// PurgeObjects deletes objects last seen before seenBefore.
func (s *Store) PurgeObjects(ctx context.Context, seenBefore time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `delete from objects where seen_at < ?`, micros(seenBefore))
	if err != nil {
		return 0, wrap("purging objects", "object", err)
	}
	return res.RowsAffected()
}
