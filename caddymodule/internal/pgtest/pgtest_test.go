package pgtest

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func currentSchema(t *testing.T, dsn string) string {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connecting with the returned DSN: %v", err)
	}
	defer conn.Close(context.Background())
	var schema *string
	if err := conn.QueryRow(t.Context(), `select current_schema()`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	if schema == nil {
		t.Fatal("the returned DSN's search_path names no existing schema")
	}
	return *schema
}

func schemaExists(t *testing.T, schema string) bool {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), baseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var exists bool
	const existsSQL = `select exists (select 1 from pg_namespace where nspname = $1)`
	if err := conn.QueryRow(t.Context(), existsSQL, schema).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	return exists
}

func TestDSN(t *testing.T) {
	var a, b string
	t.Run("a", func(t *testing.T) {
		a = currentSchema(t, DSN(t))
		if !schemaExists(t, a) {
			t.Fatalf("schema %s does not exist during the test", a)
		}
	})
	t.Run("b", func(t *testing.T) { b = currentSchema(t, DSN(t)) })
	if !strings.HasPrefix(a, "kgtest_") || a == b {
		t.Errorf("schemas %q and %q: want two distinct kgtest_ schemas", a, b)
	}
	for _, schema := range []string{a, b} {
		if schemaExists(t, schema) {
			t.Errorf("schema %s outlived its test", schema)
		}
	}
}

func TestWithSearchPath(t *testing.T) {
	for _, tc := range []struct{ dsn, want string }{
		{"postgres://u@h/db", "postgres://u@h/db?search_path=s"},
		{"postgresql://u@h/db?sslmode=disable", "postgresql://u@h/db?search_path=s&sslmode=disable"},
		{"host=h dbname=db", "host=h dbname=db search_path=s"},
	} {
		if got := withSearchPath(tc.dsn, "s"); got != tc.want {
			t.Errorf("withSearchPath(%q) = %q, want %q", tc.dsn, got, tc.want)
		}
	}
}

// fatalTB records the first Fatalf and ends the goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper()        {}
func (f *fatalTB) Cleanup(func()) {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// Without Postgres, tests fail (never skip), saying which variable to set
// and not showing the password.
func TestUnreachableFails(t *testing.T) {
	t.Setenv(EnvVar, "postgres://u:s3cretpw@127.0.0.1:1/x?connect_timeout=5")
	tb := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		DSN(tb)
	}()
	<-done
	if tb.msg == "" {
		t.Fatal("DSN returned without failing the test")
	}
	if !strings.Contains(tb.msg, EnvVar) || strings.Contains(tb.msg, "s3cretpw") {
		t.Errorf("Fatalf message %q: want one naming %s and hiding the password", tb.msg, EnvVar)
	}
}

// Without the Postgres server's programs, cluster tests fail (never
// skip), saying which package is needed.
func TestMissingProgramFails(t *testing.T) {
	tb := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		bin(tb, "kg-no-such-program")
	}()
	<-done
	if !strings.Contains(tb.msg, "kg-no-such-program not found") || !strings.Contains(tb.msg, "server package") {
		t.Fatalf("Fatalf message %q: want one naming the program and the package", tb.msg)
	}
}
