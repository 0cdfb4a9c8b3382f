package postgres

import (
	"context"
	"embed"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/store"
)

// migrationFiles holds this store's migrations, in Postgres's dialect; see
// store.Migration for how they are named, numbered and kept.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

var loadMigrations = sync.OnceValues(func() ([]store.Migration, error) {
	return store.ParseMigrations(migrationFiles, "migrations")
})

// The lock is per schema, so that deployments sharing a database in
// different schemas do not wait for each other.
const (
	migrateLockSQL   = `select pg_advisory_lock(hashtext('keygate.migrate.' || current_schema()))`
	migrateUnlockSQL = `select pg_advisory_unlock(hashtext('keygate.migrate.' || current_schema()))`
)

// Migrate applies the migrations not yet recorded in
// keygate_schema_migrations, each in its own transaction. It holds a
// session-level advisory lock throughout, so instances starting together
// take turns and all but the first find nothing to do.
func (s *Store) Migrate(ctx context.Context) error {
	migrations, err := loadMigrations()
	if err != nil {
		return fmt.Errorf("migrating: %w", err)
	}

	// A session lock belongs to one connection: hold on to it.
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrating: connecting: %w", err)
	}
	defer conn.Release()

	// With no existing schema on the search_path, current_schema() is null,
	// the lock would be taken on nothing and the tables would have nowhere
	// to go.
	var schema *string
	if err := conn.QueryRow(ctx, `select current_schema()`).Scan(&schema); err != nil {
		return fmt.Errorf("migrating: reading current schema: %w", err)
	}
	if schema == nil {
		return fmt.Errorf("migrating: %w", errNoSchema)
	}

	if _, err := conn.Exec(ctx, migrateLockSQL); err != nil {
		return fmt.Errorf("migrating: taking advisory lock: %w", err)
	}
	defer func() {
		// Unlock even when ctx is done. Should that fail, closing the
		// connection ends the session and with it the lock; the pool
		// discards a closed connection on release.
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, migrateUnlockSQL); err != nil {
			conn.Conn().Close(uctx)
		}
	}()

	const createSQL = `
		create table if not exists keygate_schema_migrations (
			version    integer primary key,
			applied_at timestamptz not null
		)`
	if _, err := conn.Exec(ctx, createSQL); err != nil {
		return fmt.Errorf("migrating: creating keygate_schema_migrations: %w", err)
	}

	rows, _ := conn.Query(ctx, `select version from keygate_schema_migrations`)
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return fmt.Errorf("migrating: reading applied versions: %w", err)
	}
	applied := make(map[int]bool, len(versions))
	for _, v := range versions {
		applied[int(v)] = true
	}

	for _, m := range migrations {
		if applied[m.Version] {
			continue
		}
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			// No arguments: pgx sends the file with the simple protocol,
			// which runs every statement in it.
			if _, err := tx.Exec(ctx, m.SQL); err != nil {
				return err
			}
			const recordSQL = `insert into keygate_schema_migrations (version, applied_at) values ($1, $2)`
			_, err := tx.Exec(ctx, recordSQL, m.Version, now())
			return err
		})
		if err != nil {
			return fmt.Errorf("migrating: applying %s: %w", m.Name, err)
		}
	}
	return nil
}
