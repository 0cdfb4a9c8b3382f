// Package pgtest gives each test its own empty Postgres schema, and tests
// that must stop, kill or promote a server their own throwaway clusters
// (Cluster) and free ports (FreePort).
//
// Tests that need Postgres fail, never skip, when it cannot be reached: a
// skipped store test reads as a passing one. Point them at a database with
// KEYGATE_TEST_DATABASE_URL.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// EnvVar names the variable holding the test database's URL.
const EnvVar = "KEYGATE_TEST_DATABASE_URL"

// DefaultURL is used when EnvVar is unset: a local Postgres with trust auth.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// DSN creates a fresh schema, drops it (with everything in it) when the test
// ends, and returns a DSN whose search_path is that schema. Tests may run in
// parallel: each has its own schema.
func DSN(t testing.TB) string {
	t.Helper()
	base := baseURL()

	var b [8]byte
	rand.Read(b[:])
	schema := "kgtest_" + hex.EncodeToString(b[:])
	create := "create schema " + pgx.Identifier{schema}.Sanitize()
	drop := "drop schema if exists " + pgx.Identifier{schema}.Sanitize() + " cascade"

	if err := exec(base, create); err != nil {
		t.Fatalf("pgtest: cannot use Postgres at %s (set %s to a reachable database): %v", redact(base), EnvVar, err)
	}
	t.Cleanup(func() {
		if err := exec(base, drop); err != nil {
			t.Errorf("pgtest: dropping schema %s: %v", schema, err)
		}
	})
	return withSearchPath(base, schema)
}

func baseURL() string {
	if u := os.Getenv(EnvVar); u != "" {
		return u
	}
	return DefaultURL
}

// exec runs one statement on a connection of its own.
func exec(dsn, sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	_, err = conn.Exec(ctx, sql)
	return err
}

// withSearchPath adds search_path to a URL or key=value DSN; pgx sends it as
// a run-time parameter when connecting.
func withSearchPath(dsn, schema string) string {
	if u, err := url.Parse(dsn); err == nil && (u.Scheme == "postgres" || u.Scheme == "postgresql") {
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		return u.String()
	}
	return dsn + " search_path=" + schema
}

// redact hides a password in a URL; a key=value DSN is not shown at all.
func redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && strings.HasPrefix(u.Scheme, "postgres") {
		return u.Redacted()
	}
	return "$" + EnvVar
}
