package postgres

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
	"github.com/keygate/keygate/caddymodule/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openMigrated(t, pgtest.DSN(t))
	})
}

func TestConformanceEmpty(t *testing.T) {
	storetest.RunEmpty(t, func(t *testing.T) store.Store {
		return openStore(t, pgtest.DSN(t))
	})
}

func openStore(t *testing.T, dsn string) *Store {
	t.Helper()
	s, err := Open(t.Context(), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openMigrated(t *testing.T, dsn string) *Store {
	t.Helper()
	s := openStore(t, dsn)
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s
}

type appliedMigration struct {
	version   int32
	appliedAt time.Time
}

func appliedMigrations(t *testing.T, s *Store) []appliedMigration {
	t.Helper()
	rows, err := s.pool.Query(t.Context(), `select version, applied_at from keygate_schema_migrations order by version`)
	if err != nil {
		t.Fatalf("reading migrations: %v", err)
	}
	defer rows.Close()
	var ms []appliedMigration
	for rows.Next() {
		var m appliedMigration
		if err := rows.Scan(&m.version, &m.appliedAt); err != nil {
			t.Fatal(err)
		}
		ms = append(ms, m)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ms
}

func checkAllApplied(t *testing.T, got []appliedMigration) {
	t.Helper()
	want, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("applied %d migrations, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if int(got[i].version) != want[i].Version {
			t.Errorf("applied version %d, want %d", got[i].version, want[i].Version)
		}
	}
}

func TestMigrateFromEmpty(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := openStore(t, pgtest.DSN(t))

	const tablesSQL = `select count(*) from information_schema.tables where table_schema = current_schema()`
	var n int
	if err := s.pool.QueryRow(ctx, tablesSQL).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("Open created %d tables; it must not migrate", n)
	}

	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	first := appliedMigrations(t, s)
	checkAllApplied(t, first)

	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	again := appliedMigrations(t, s)
	checkAllApplied(t, again)
	for i := range first {
		if !again[i].appliedAt.Equal(first[i].appliedAt) {
			t.Errorf("migration %d was applied again", first[i].version)
		}
	}

	if err := s.pool.QueryRow(ctx, tablesSQL).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 12 { // eleven tables and the migrations table
		t.Errorf("schema has %d tables, want 12", n)
	}
}

// Instances starting together all migrate; the advisory lock makes them
// take turns.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	const instances = 4
	stores := make([]*Store, instances)
	for i := range stores {
		stores[i] = openStore(t, dsn) // a pool each, as separate processes would have
	}

	var wg sync.WaitGroup
	errs := make([]error, instances)
	start := make(chan struct{})
	for i, s := range stores {
		wg.Go(func() {
			<-start
			errs[i] = s.Migrate(t.Context())
		})
	}
	close(start)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Migrate of instance %d: %v", i, err)
		}
	}
	checkAllApplied(t, appliedMigrations(t, stores[0]))

	// And the schema works for all of them.
	a, err := stores[1].CreateAccount(t.Context(), "A")
	if err != nil {
		t.Fatalf("CreateAccount: %v", err)
	}
	if _, err := stores[2].GetAccount(t.Context(), a.ID); err != nil {
		t.Errorf("GetAccount through another instance: %v", err)
	}
}

// Open must not dial, and nothing may print the DSN's password.
func TestUnreachable(t *testing.T) {
	t.Parallel()
	const password = "s3cretpw"
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	s, err := Open(ctx, "postgres://u:"+password+"@127.0.0.1:1/x?connect_timeout=5")
	if err != nil {
		t.Fatalf("Open of an unreachable database: %v", err)
	}
	defer s.Close()

	noPassword := func(what string, err error) {
		t.Helper()
		t.Logf("%s: %v", what, err)
		if err == nil {
			t.Errorf("%s of an unreachable database succeeded", what)
		} else if strings.Contains(err.Error(), password) {
			t.Errorf("%s error shows the password: %v", what, err)
		}
	}
	noPassword("Ping", s.Ping(ctx))
	_, err = s.LookupKey(ctx, keys.Digest{1})
	noPassword("LookupKey", err)
	noPassword("Migrate", s.Migrate(ctx))
	_, err = s.CreateAccount(ctx, "A")
	noPassword("CreateAccount", err)

	for _, dsn := range []string{
		"postgres://u:" + password + "@127.0.0.1:notaport/x",
		"postgres://u:" + password + "@[::1/x",
		"host=127.0.0.1 password=" + password + " port=notaport",
		"host=127.0.0.1 password='" + password,
	} {
		_, err := Open(ctx, dsn)
		noPassword("Open of a malformed DSN", err)
	}
}

// A Store made with New leaves the caller's pool open.
func TestNewKeepsPool(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool, err := pgxpool.New(ctx, pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()

	s := New(pool)
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := pool.Ping(ctx); err != nil {
		t.Errorf("the pool is unusable after Store.Close: %v", err)
	}
	if _, err := New(pool).ListAccounts(ctx); err != nil {
		t.Errorf("ListAccounts through the shared pool: %v", err)
	}
}

// The schema's own checks back the store's validation.
func TestSchemaChecks(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := openMigrated(t, pgtest.DSN(t))
	a, err := s.CreateAccount(ctx, "A")
	if err != nil {
		t.Fatal(err)
	}
	const insertSQL = `
		insert into api_keys (id, account_id, name, type, server_id, display, digest, sealed, created_at, created_by)
		values ($1, $2, $3, $4, $5, 'kg_abcde', $6, '\x00', now(), 'test')`
	for _, tc := range []struct {
		what     string
		typ      string
		serverID *string
	}{
		{"restricted without server", "restricted", nil},
		{"standard with server", "standard", new("srv")},
		{"unknown type", "admin", nil},
		{"empty server", "restricted", new("")},
	} {
		_, err := s.pool.Exec(ctx, insertSQL, "key_"+tc.what, a.ID, tc.what, tc.typ, tc.serverID, make([]byte, 32))
		if err == nil {
			t.Errorf("the schema accepts a key of %s", tc.what)
		} else if !errors.Is(wrap("inserting", "key", err), store.ErrInvalid) {
			t.Errorf("a key of %s: %v, want ErrInvalid", tc.what, err)
		}
	}
}
