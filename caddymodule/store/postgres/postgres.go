package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keygate/keygate/caddymodule/store"
)

// Store is a store.Store on a pgx pool. It is safe for concurrent use.
type Store struct {
	pool     *pgxpool.Pool
	ownsPool bool   // Open made the pool; New's caller keeps it
	session  string // DSN of a session connection, for a lock held across transactions; "": the pool's
}

// Option sets up a Store beyond its DSN.
type Option func(*Store)

// WithSessionDSN names a connection that is a session of its own (a direct
// one, not through a transaction pooler) for what must hold a session
// across transactions: the rotation lock (LockRotation). Without it, the
// pool's DSN must reach Postgres directly or through a session pooler.
func WithSessionDSN(dsn string) Option {
	return func(s *Store) { s.session = dsn }
}

var _ store.Store = (*Store)(nil)

// Open parses dsn (a postgres:// URL or key=value string) and creates a pool
// for it. It does not connect, so it succeeds while the database is down;
// the first query (or Ping) dials. Close closes the pool.
//
// Errors never contain dsn, which may hold a password.
func Open(ctx context.Context, dsn string, opts ...Option) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts passwords from parse errors only on a best-effort
		// basis, and url.Parse errors quote the whole URL: say nothing more.
		return nil, errors.New("parsing Postgres DSN: malformed connection string (details withheld: they may contain the password)")
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("creating Postgres pool: %w", err)
	}
	s := New(pool)
	s.ownsPool = true
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

// connect opens a connection of its own, outside the pool, to dsn, which
// may hold the pool's options (pool_max_conns…): parsed as pgx.Connect
// would, they would be sent to the server as settings it does not know.
func connect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, err // a *pgconn.ParseConfigError, whose text Diagnose withholds, as pgx.Connect's
	}
	return pgx.ConnectConfig(ctx, cfg.ConnConfig)
}

// New returns a Store on a pool the caller owns: Close leaves it open.
func New(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}

// Close closes the pool if Open created it.
func (s *Store) Close() error {
	if s.ownsPool {
		s.pool.Close()
	}
	return nil
}

// Ping checks that a connection can be had and answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return fmt.Errorf("pinging Postgres: %w", err)
	}
	return nil
}

// Ready checks, in one query, that the schema is migrated as far as this
// keygate needs and that the role may read the keys.
func (s *Store) Ready(ctx context.Context) error {
	migrations, err := loadMigrations()
	if err != nil {
		return fmt.Errorf("checking readiness: %w", err)
	}
	const readySQL = `
		select (select coalesce(max(version), 0) from keygate_schema_migrations),
		       (select count(*) from api_keys where false)`
	var version, none int
	if err := s.pool.QueryRow(ctx, readySQL).Scan(&version, &none); err != nil {
		return fmt.Errorf("checking readiness: %w", err)
	}
	return store.CheckSchema(version, migrations[len(migrations)-1].Version)
}

// SQLSTATE codes the store maps onto its own errors.
const (
	uniqueViolation     = "23505"
	foreignKeyViolation = "23503"
	checkViolation      = "23514"
	notNullViolation    = "23502"
	badCharacter        = "22021" // NUL or invalid UTF-8 in text
)

// wrap says what was being done and maps Postgres errors onto the store's
// sentinel errors. what names the thing a missing row or a missing
// referenced row would be, as in "account not found".
func wrap(doing, what string, err error) error {
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%s: %s %w", doing, what, store.ErrNotFound)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch pgErr.Code {
		case uniqueViolation:
			// Only the name constraints: an id or digest collision is not
			// something the caller can fix by renaming.
			switch pgErr.ConstraintName {
			case "accounts_name_key", "api_keys_name_key":
				return fmt.Errorf("%s: %w", doing, store.ErrNameTaken)
			}
		case foreignKeyViolation:
			return fmt.Errorf("%s: account %w", doing, store.ErrNotFound)
		case checkViolation, notNullViolation, badCharacter:
			return fmt.Errorf("%s: %w: %s", doing, store.ErrInvalid, pgErr.Message)
		}
	}
	return fmt.Errorf("%s: %w", doing, err)
}

// notFound reports an id that no row can have: Postgres text holds neither
// NUL nor invalid UTF-8 (store.CheckText), and would fail the query rather
// than match nothing. SQLite matches nothing by itself, so needs no such
// check.
func notFound(id string) bool {
	return id == "" || store.CheckText(id) != nil
}

// now is the store's clock: UTC at the microsecond precision of
// timestamptz, so that what CreateKey returns equals what GetKey reads.
func now() time.Time { return utc(time.Now()) }

func utc(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// utcPtr normalises a nullable time read from the database.
func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := utc(*t)
	return &u
}
