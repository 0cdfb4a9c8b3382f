package postgres

import (
	"context"
	"embed"
	"fmt"
	"sync"

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
// different schemas do not wait for each other. It is a transaction lock:
// a session lock taken through a transaction pooler (PgBouncer in
// transaction mode) would stay with whichever server connection ran it,
// and another instance landing on that connection would take it again.
const migrateLockSQL = `select pg_advisory_xact_lock(hashtext('keygate.migrate.' || current_schema()))`

// Migrate applies the migrations not yet recorded in
// keygate_schema_migrations, each in its own transaction, which first
// takes the schema's migration lock and then checks that no one applied
// the migration meanwhile: instances starting together take turns and all
// but the first find nothing to do, with or without a transaction pooler
// between them and Postgres.
func (s *Store) Migrate(ctx context.Context) error {
	migrations, err := loadMigrations()
	if err != nil {
		return fmt.Errorf("migrating: %w", err)
	}
	// With no existing schema on the search_path, current_schema() is null,
	// the lock would be taken on nothing and the tables would have nowhere
	// to go.
	var schema *string
	if err := s.pool.QueryRow(ctx, `select current_schema()`).Scan(&schema); err != nil {
		return fmt.Errorf("migrating: reading current schema: %w", err)
	}
	if schema == nil {
		return fmt.Errorf("migrating: %w", errNoSchema)
	}

	var applied map[int]bool
	err = s.locked(ctx, func(tx pgx.Tx) error {
		const createSQL = `
			create table if not exists keygate_schema_migrations (
				version    integer primary key,
				applied_at timestamptz not null
			)`
		if _, err := tx.Exec(ctx, createSQL); err != nil {
			return fmt.Errorf("creating keygate_schema_migrations: %w", err)
		}
		rows, _ := tx.Query(ctx, `select version from keygate_schema_migrations`)
		versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
		if err != nil {
			return fmt.Errorf("reading applied versions: %w", err)
		}
		applied = make(map[int]bool, len(versions))
		for _, v := range versions {
			applied[int(v)] = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("migrating: %w", err)
	}

	for _, m := range migrations {
		if applied[m.Version] {
			continue
		}
		err := s.locked(ctx, func(tx pgx.Tx) error {
			var done bool
			if err := tx.QueryRow(ctx, `select exists (select 1 from keygate_schema_migrations where version = $1)`, m.Version).Scan(&done); err != nil || done {
				return err // another instance applied it while this one waited
			}
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

// locked runs fn in a transaction that holds the schema's migration lock.
func (s *Store) locked(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, migrateLockSQL); err != nil {
			return fmt.Errorf("taking the migration lock: %w", err)
		}
		return fn(tx)
	})
}
