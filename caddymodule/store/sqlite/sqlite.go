package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/keygate/keygate/caddymodule/store"
)

// Store is a store.Store on one SQLite file. It is safe for concurrent use,
// and several Stores (or processes) may share the file.
type Store struct {
	db   *sql.DB
	path string // absolute
}

var _ store.Store = (*Store)(nil)

// BusyTimeout is how long a statement waits for another connection's write
// lock before failing with "database is locked".
const BusyTimeout = 10 * time.Second

// maxConns bounds the pool. WAL lets readers run alongside the one writer;
// more connections than this only queue on the write lock.
const maxConns = 8

// Open opens (creating if needed, with mode 0600 in a directory created
// with mode 0700) the database at path. It does not migrate.
func Open(ctx context.Context, path string) (*Store, error) {
	if path == "" {
		return nil, errors.New("opening SQLite database: no path given")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("opening SQLite database %s: %w", path, err)
	}
	if err := os.MkdirAll(filepath.Dir(abs), 0o700); err != nil {
		return nil, fmt.Errorf("opening SQLite database: creating its directory: %w", err)
	}
	// SQLite would create the file 0644: create it first, as the digests and
	// sealed keys are for this user alone. The -wal and -shm files SQLite
	// creates later copy the database's mode. An existing file is left as is.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening SQLite database: %w", err)
	}
	f.Close()

	db, err := sql.Open("sqlite", dsn(abs))
	if err != nil {
		return nil, fmt.Errorf("opening SQLite database %s: %w", abs, err)
	}
	db.SetMaxOpenConns(maxConns)
	db.SetMaxIdleConns(maxConns)
	s := &Store{db: db, path: abs}
	// Connecting applies the pragmas: a file that is not a database, or
	// cannot be switched to WAL, fails here rather than on first use.
	if err := s.Ping(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening SQLite database %s: %w", abs, err)
	}
	return s, nil
}

// dsn builds a file: URI, so that any character in the path (even '?' or
// '#') is taken literally, with the parameters every connection needs.
// modernc.org/sqlite applies busy_timeout first, then the other pragmas.
func dsn(abs string) string {
	p := filepath.ToSlash(abs)
	if !strings.HasPrefix(p, "/") {
		p = "/" + p // a Windows drive letter
	}
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", BusyTimeout.Milliseconds()))
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "foreign_keys(1)")
	// Deleted rows (a key's sealed copy and digest) are overwritten with
	// zeros instead of lingering in free space; see erase for the WAL.
	q.Add("_pragma", "secure_delete(1)")
	q.Set("_txlock", "immediate")
	return "file:" + (&url.URL{Path: p}).EscapedPath() + "?" + q.Encode()
}

// Close closes the database.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("closing SQLite database: %w", err)
	}
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	var one int
	if err := s.db.QueryRowContext(ctx, `select 1`).Scan(&one); err != nil {
		return fmt.Errorf("pinging SQLite: %w", err)
	}
	return nil
}

// Ready checks, in one query, that the schema is migrated as far as this
// keygate needs and that the keys table can be read.
func (s *Store) Ready(ctx context.Context) error {
	migrations, err := loadMigrations()
	if err != nil {
		return fmt.Errorf("checking readiness: %w", err)
	}
	const readySQL = `
		select (select coalesce(max(version), 0) from keygate_schema_migrations),
		       (select count(*) from api_keys where 0)`
	var version, none int
	if err := s.db.QueryRowContext(ctx, readySQL).Scan(&version, &none); err != nil {
		return fmt.Errorf("checking readiness: %w", err)
	}
	return store.CheckSchema(version, migrations[len(migrations)-1].Version)
}

// inTx runs fn in a transaction, which _txlock makes BEGIN IMMEDIATE: it
// waits for the write lock up front, so it never fails on upgrading a read
// lock the way a deferred transaction can.
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// wrap says what was being done and maps SQLite errors onto the store's
// sentinel errors. what names the thing a missing row would be.
func wrap(doing, what string, err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%s: %s %w", doing, what, store.ErrNotFound)
	}
	var e *sqlite.Error
	if errors.As(err, &e) {
		switch e.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE:
			// The message names the columns: "UNIQUE constraint failed:
			// api_keys.account_id, api_keys.name".
			if msg := e.Error(); strings.Contains(msg, "accounts.name") || strings.Contains(msg, "api_keys.name") {
				return fmt.Errorf("%s: %w", doing, store.ErrNameTaken)
			}
			// An id or digest collision: not something renaming fixes.
			return fmt.Errorf("%s: %w", doing, err)
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return fmt.Errorf("%s: account %w", doing, store.ErrNotFound)
		case sqlite3.SQLITE_CONSTRAINT_CHECK, sqlite3.SQLITE_CONSTRAINT_NOTNULL, sqlite3.SQLITE_CONSTRAINT_DATATYPE:
			return fmt.Errorf("%s: %w: %s", doing, store.ErrInvalid, e.Error())
		}
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// now is the store's clock, at the microsecond precision it keeps.
func now() time.Time { return utc(time.Now()) }

func utc(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// micros and fromMicros convert times to and from their stored form.
func micros(t time.Time) int64 { return t.UnixMicro() }

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }
