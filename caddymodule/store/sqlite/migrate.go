package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"sync"

	"github.com/keygate/keygate/caddymodule/store"
)

// migrationFiles holds this store's migrations, in SQLite's dialect; see
// store.Migration for how they are named, numbered and kept.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

var loadMigrations = sync.OnceValues(func() ([]store.Migration, error) {
	return store.ParseMigrations(migrationFiles, "migrations")
})

// Migrate applies the migrations not yet recorded in
// keygate_schema_migrations, each in its own transaction. The transactions
// are IMMEDIATE, so SQLite's write lock serialises concurrent migrators
// (other Stores or processes on the file): each checks, under the lock,
// whether the version it is about to apply is still missing.
func (s *Store) Migrate(ctx context.Context) error {
	migrations, err := loadMigrations()
	if err != nil {
		return fmt.Errorf("migrating: %w", err)
	}

	const createSQL = `
		create table if not exists keygate_schema_migrations (
			version    integer primary key,
			applied_at integer not null
		) strict`
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, createSQL)
		return err
	})
	if err != nil {
		return fmt.Errorf("migrating: creating keygate_schema_migrations: %w", err)
	}

	const appliedSQL = `select exists (select 1 from keygate_schema_migrations where version = ?)`
	const recordSQL = `insert into keygate_schema_migrations (version, applied_at) values (?, ?)`
	for _, m := range migrations {
		err := s.inTx(ctx, func(tx *sql.Tx) error {
			var applied bool
			if err := tx.QueryRowContext(ctx, appliedSQL, m.Version).Scan(&applied); err != nil {
				return err
			}
			if applied {
				return nil
			}
			// Without arguments the driver runs every statement of the file.
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, recordSQL, m.Version, micros(now()))
			return err
		})
		if err != nil {
			return fmt.Errorf("migrating: applying %s: %w", m.Name, err)
		}
	}
	return nil
}
