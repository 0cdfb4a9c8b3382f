package sqlite

import (
	"database/sql"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keygate/keygate/caddymodule/store"
)

func checkDiagnosis(t *testing.T, what string, err error, kind string, permanent bool, fix string) {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded; want a %s error", what, kind)
	}
	d := (*Store)(nil).Diagnose(err)
	t.Logf("%s: %v\n\t%+v", what, err, d)
	if d.Kind != kind || d.Permanent != permanent || d.Cause == "" || !strings.Contains(d.Fix, fix) {
		t.Errorf("%s: Diagnose = %+v; want kind %s, permanent %v, a cause and a fix naming %q", what, d, kind, permanent, fix)
	}
}

// Errors of real files that cannot serve keygate.
func TestDiagnose(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dir := t.TempDir()

	notes := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(notes, []byte("this is not an SQLite database, not even close to one"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctx, notes)
	checkDiagnosis(t, "a file that is not a database", err, store.KindCorrupt, true, "path")

	// A file this process may only read (the tests may run as root, whom
	// file modes do not stop, so the connection is opened read-only).
	path := filepath.Join(dir, "keygate.db")
	openMigrated(t, path)
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ro := &Store{db: db}
	if err := ro.Ready(ctx); err != nil {
		t.Fatalf("Ready on a read-only connection: %v", err)
	}
	_, err = ro.CreateAccount(ctx, "A")
	checkDiagnosis(t, "writing a read-only file", err, store.KindReadOnly, true, "write access")

	// A path whose directory cannot exist.
	_, err = Open(ctx, filepath.Join(notes, "keygate.db"))
	checkDiagnosis(t, "a path below a file", err, store.KindUnopenable, true, "path")
}
