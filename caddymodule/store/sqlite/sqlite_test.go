package sqlite

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/store"
	"github.com/keygate/keygate/caddymodule/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		return openMigrated(t, filepath.Join(t.TempDir(), "keygate.db"))
	})
}

func TestConformanceEmpty(t *testing.T) {
	storetest.RunEmpty(t, func(t *testing.T) store.Store {
		return openStore(t, filepath.Join(t.TempDir(), "keygate.db"))
	})
}

func openStore(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(t.Context(), path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func openMigrated(t *testing.T, path string) *Store {
	t.Helper()
	s := openStore(t, path)
	if err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	return s
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestOpen(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	// Characters a URI or the driver's DSN parsing could misread.
	dir := filepath.Join(t.TempDir(), "new dir", "with?query#hash%20")
	path := filepath.Join(dir, "keygate.db")
	s := openStore(t, path)

	if m := mode(t, dir); m != 0o700 {
		t.Errorf("directory mode = %v, want 0700", m)
	}
	if m := mode(t, path); m != 0o600 {
		t.Errorf("database mode = %v, want 0600", m)
	}

	var journal string
	if err := s.db.QueryRowContext(ctx, `pragma journal_mode`).Scan(&journal); err != nil {
		t.Fatal(err)
	}
	if journal != "wal" {
		t.Errorf("journal_mode = %q, want wal", journal)
	}
	var fk, busy int
	if err := s.db.QueryRowContext(ctx, `pragma foreign_keys`).Scan(&fk); err != nil {
		t.Fatal(err)
	}
	if err := s.db.QueryRowContext(ctx, `pragma busy_timeout`).Scan(&busy); err != nil {
		t.Fatal(err)
	}
	if fk != 1 || busy != int(BusyTimeout.Milliseconds()) {
		t.Errorf("foreign_keys = %d, busy_timeout = %d; want 1, %d", fk, busy, BusyTimeout.Milliseconds())
	}

	// Open does not migrate.
	var tables int
	if err := s.db.QueryRowContext(ctx, `select count(*) from sqlite_schema where type = 'table'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Errorf("Open created %d tables; it must not migrate", tables)
	}

	// The files SQLite creates as it writes are as private as the database.
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if _, err := s.CreateAccount(ctx, "A"); err != nil {
		t.Fatal(err)
	}
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if m := mode(t, path+suffix); m != 0o600 {
			t.Errorf("%s mode = %v, want 0600", filepath.Base(path+suffix), m)
		}
	}
	if got := filepath.Join(dir, "keygate.db"); mode(t, got) != 0o600 {
		t.Errorf("the database is not at %s", got)
	}
}

func TestOpenNotADatabase(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(path, []byte("this is not an SQLite database, not even close to one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(t.Context(), path); err == nil {
		s.Close()
		t.Error("Open of a text file succeeded")
	}
}

type appliedMigration struct {
	version, appliedAt int64
}

func appliedMigrations(t *testing.T, s *Store) []appliedMigration {
	t.Helper()
	rows, err := s.db.QueryContext(t.Context(), `select version, applied_at from keygate_schema_migrations order by version`)
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

func TestMigrateAgain(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "keygate.db")
	s := openMigrated(t, path)
	first := appliedMigrations(t, s)
	checkAllApplied(t, first)
	a, err := s.CreateAccount(ctx, "A")
	if err != nil {
		t.Fatal(err)
	}

	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("Migrate again: %v", err)
	}
	// And from a new Store, as after a restart.
	s2 := openMigrated(t, path)
	again := appliedMigrations(t, s2)
	checkAllApplied(t, again)
	for i := range first {
		if again[i] != first[i] {
			t.Errorf("migration %d was applied again", first[i].version)
		}
	}
	if _, err := s2.GetAccount(ctx, a.ID); err != nil {
		t.Errorf("GetAccount after migrating again: %v", err)
	}
}

// Stores on one file (as two processes would have) migrating at once take
// turns on SQLite's write lock.
func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "keygate.db")
	const instances = 4
	stores := make([]*Store, instances)
	for i := range stores {
		stores[i] = openStore(t, path)
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
			t.Errorf("Migrate of store %d: %v", i, err)
		}
	}
	checkAllApplied(t, appliedMigrations(t, stores[0]))

	a, err := stores[1].CreateAccount(t.Context(), "A")
	if err != nil {
		t.Fatalf("CreateAccount: %v", err)
	}
	if _, err := stores[2].GetAccount(t.Context(), a.ID); err != nil {
		t.Errorf("GetAccount through another store: %v", err)
	}
}

// The schema's own checks back the store's validation.
func TestSchemaChecks(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := openMigrated(t, filepath.Join(t.TempDir(), "keygate.db"))
	a, err := s.CreateAccount(ctx, "A")
	if err != nil {
		t.Fatal(err)
	}
	const insertSQL = `
		insert into api_keys (id, account_id, name, type, server_id, display, digest, sealed, created_at, created_by)
		values (?, ?, ?, ?, ?, 'kg_abcde', ?, x'00', 0, 'test')`
	for _, tc := range []struct {
		what     string
		typ      string
		serverID any
		digest   any
	}{
		{"restricted without server", "restricted", nil, make([]byte, 32)},
		{"standard with server", "standard", "srv", make([]byte, 32)},
		{"unknown type", "admin", nil, make([]byte, 32)},
		{"empty server", "restricted", "", make([]byte, 32)},
		{"short digest", "standard", nil, make([]byte, 31)},
		{"text digest", "standard", nil, "0123456789abcdef0123456789abcdef"},
	} {
		_, err := s.db.ExecContext(ctx, insertSQL, "key_"+tc.what, a.ID, tc.what, tc.typ, tc.serverID, tc.digest)
		if err == nil {
			t.Errorf("the schema accepts a key of %s", tc.what)
		} else if err := wrap("inserting", "key", err); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("a key of %s: %v, want ErrInvalid", tc.what, err)
		}
	}
}

// Write transactions take the write lock when they begin (BEGIN IMMEDIATE),
// so one that reads first cannot fail later on upgrading its lock; others
// wait for it, up to the busy timeout or their context's end.
func TestTxLocksUpFront(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "keygate.db")
	s1 := openMigrated(t, path)
	s2 := openStore(t, path)

	tx, err := s1.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := s2.CreateAccount(short, "B"); err == nil {
		t.Error("a write went through while another transaction was open: BEGIN is not IMMEDIATE")
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.CreateAccount(ctx, "B"); err != nil {
		t.Errorf("CreateAccount once the transaction ended: %v", err)
	}
}

// TestDeleteKeyErases: after DeleteKey, no file of the database holds the
// key's sealed copy or digest, neither in the database's free space nor
// in older page versions in the WAL, though both were there before.
func TestDeleteKeyErases(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "keygate.db")
	s := openMigrated(t, path)
	var secure int
	if err := s.db.QueryRowContext(ctx, `pragma secure_delete`).Scan(&secure); err != nil || secure != 1 {
		t.Fatalf("secure_delete = %d, %v; want 1", secure, err)
	}
	a, err := s.CreateAccount(ctx, "A")
	if err != nil {
		t.Fatal(err)
	}
	k := store.Key{ID: "key_erased", AccountID: a.ID, Name: "erased", Type: store.Standard, Display: "kg_abcde", CreatedBy: "u",
		Sealed: []byte(rand.Text() + rand.Text())}
	copy(k.Digest[:], rand.Text()+rand.Text())
	if _, err := s.CreateKey(ctx, k, store.AuditEvent{Actor: "u", Action: store.ActionCreate}); err != nil {
		t.Fatal(err)
	}
	// SQLite's automatic checkpoint copies pages into the database and
	// leaves their frames in the WAL: both files hold the key.
	if _, err := s.db.ExecContext(ctx, `pragma wal_checkpoint(passive)`); err != nil {
		t.Fatal(err)
	}
	files := []string{path, path + "-wal", path + "-shm"}
	if got := holding(t, files, k.Sealed, k.Digest[:]); len(got) != 2 {
		t.Fatalf("before DeleteKey the key is in %v; want keygate.db and keygate.db-wal", got)
	}
	if _, err := s.DeleteKey(ctx, a.ID, k.ID, store.AuditEvent{Actor: "u", Action: store.ActionDelete}); err != nil {
		t.Fatal(err)
	}
	if got := holding(t, files, k.Sealed, k.Digest[:]); len(got) != 0 {
		t.Fatalf("after DeleteKey the key is still in %v", got)
	}
}

// holding names the files that hold any of the traces.
func holding(t *testing.T, files []string, traces ...[]byte) []string {
	t.Helper()
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
		for _, tr := range traces {
			if bytes.Contains(b, tr) {
				out = append(out, filepath.Base(f))
				break
			}
		}
	}
	return out
}
