package e2e

import (
	"bytes"
	"database/sql"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	_ "modernc.org/sqlite"
)

// TestDeletedKeyLeavesNoCopyOnDisk: once the dashboard has deleted a key
// on the embedded store, neither the database file nor its WAL (nor the
// shared-memory index) holds the key's sealed copy or its digest any
// more, so a copy of the files taken later cannot reveal it, even with
// the secret.
func TestDeletedKeyLeavesNoCopyOnDisk(t *testing.T) {
	t.Parallel()
	d := newDashboard(t, "/")
	key := d.n.key(d.acct, "short-lived", "")
	if s := d.call(key, "/api/servers"); s != http.StatusOK {
		t.Fatalf("the new key: %d", s)
	}
	db := filepath.Join(d.n.dir, "data", "caddy", "keygate", "keygate.db")
	id, traces := keyTraces(t, db, d.acct, "short-lived")
	files := []string{db, db + "-wal", db + "-shm"}
	// The test reads the files as they are: before the deletion it must
	// find both traces in both places the deletion has to clean.
	before := findTraces(t, files, traces)
	for _, want := range []string{"sealed copy in keygate.db", "sealed copy in keygate.db-wal", "digest in keygate.db", "digest in keygate.db-wal"} {
		if !slices.Contains(before, want) {
			t.Fatalf("before deletion: no %s (found: %v)", want, before)
		}
	}

	tok := d.token("alice", d.acct)
	r := d.do("POST", "api/accounts/"+d.acct+"/keys/"+id+"/delete", "alice", strings.NewReader(`{"name":"short-lived"}`),
		"Content-Type", "application/json", "X-CSRF-Token", tok)
	wantReply(t, "delete", r, http.StatusOK, `"deleted":true`, "Revoked on this instance.")
	if s := d.call(key, "/api/servers"); s != http.StatusUnauthorized {
		t.Fatalf("the deleted key: %d, want 401", s)
	}
	if where := findTraces(t, files, traces); len(where) > 0 {
		t.Fatalf("after deletion the key is still on disk: %v", where)
	}
}

// keyTraces reads, over a connection of its own, the key's id and the
// bytes that must not outlive it: its sealed copy and its digest. It then
// checkpoints the WAL into the database file without emptying the WAL,
// as SQLite's automatic checkpoint does once the WAL has grown, so that
// both files hold the copy.
func keyTraces(t *testing.T, path, account, name string) (string, map[string][]byte) {
	t.Helper()
	conn, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var id string
	var sealed, digest []byte
	err = conn.QueryRow(`select id, sealed, digest from api_keys where account_id = ? and name = ?`, account, name).Scan(&id, &sealed, &digest)
	if err != nil {
		t.Fatalf("reading the key's row: %v", err)
	}
	if _, err := conn.Exec(`pragma wal_checkpoint(passive)`); err != nil {
		t.Fatalf("checkpointing: %v", err)
	}
	return id, map[string][]byte{"sealed copy": sealed, "digest": digest}
}

// findTraces says which of the traces each file holds.
func findTraces(t *testing.T, files []string, traces map[string][]byte) []string {
	t.Helper()
	var where []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for what, trace := range traces {
			if bytes.Contains(b, trace) {
				where = append(where, what+" in "+filepath.Base(f))
			}
		}
	}
	return where
}
