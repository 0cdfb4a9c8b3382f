package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// Migrations are NNNN_description.sql files, applied in version order, each
// once. A released file is never edited: changes go in a new file.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

type migration struct {
	version int
	name    string
	sql     string
}

var loadMigrations = sync.OnceValues(func() ([]migration, error) {
	return parseMigrations(migrationFiles, "migrations")
})

func parseMigrations(fsys fs.FS, dir string) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("reading migrations: %w", err)
	}
	var ms []migration
	seen := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		prefix, _, ok := strings.Cut(name, "_")
		version, err := strconv.Atoi(prefix)
		if !ok || err != nil || version <= 0 || path.Ext(name) != ".sql" {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", name)
		}
		if other, dup := seen[version]; dup {
			return nil, fmt.Errorf("migrations %s and %s have the same version", other, name)
		}
		seen[version] = name
		b, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", name, err)
		}
		ms = append(ms, migration{version: version, name: name, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

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
			if err := tx.QueryRowContext(ctx, appliedSQL, m.version).Scan(&applied); err != nil {
				return err
			}
			if applied {
				return nil
			}
			// Without arguments the driver runs every statement of the file.
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, recordSQL, m.version, micros(now()))
			return err
		})
		if err != nil {
			return fmt.Errorf("migrating: applying %s: %w", m.name, err)
		}
	}
	return nil
}
