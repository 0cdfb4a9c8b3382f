package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/store"
)

// RecordObjects upserts the objects in one batch.
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
		values ($1, $2, $3, $4, $5)
		on conflict (account_id, kind, id) do update
		set server_id = excluded.server_id, seen_at = excluded.seen_at`
	at := now()
	var b pgx.Batch
	for _, o := range objs {
		b.Queue(upsertSQL, accountID, o.Kind, o.ID, o.ServerID, at)
	}
	if err := s.pool.SendBatch(ctx, &b).Close(); err != nil {
		return wrap(doing, "object", err)
	}
	return nil
}

// ObjectServer returns the server an object was recorded with.
func (s *Store) ObjectServer(ctx context.Context, accountID, kind, id string) (string, error) {
	const doing = "looking up object"
	if notFound(accountID) || notFound(id) {
		return "", fmt.Errorf("%s: object %w", doing, store.ErrNotFound)
	}
	const lookupSQL = `select server_id from objects where account_id = $1 and kind = $2 and id = $3`
	var server string
	if err := s.pool.QueryRow(ctx, lookupSQL, accountID, kind, id).Scan(&server); err != nil {
		return "", wrap(doing, "object", err)
	}
	return server, nil
}

// PurgeObjects deletes objects last seen before seenBefore.
func (s *Store) PurgeObjects(ctx context.Context, seenBefore time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `delete from objects where seen_at < $1`, utc(seenBefore))
	if err != nil {
		return 0, wrap("purging objects", "object", err)
	}
	return tag.RowsAffected(), nil
}
