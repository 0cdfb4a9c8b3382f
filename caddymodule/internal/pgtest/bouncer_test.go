package pgtest

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestBouncer: the PgBouncer it starts reaches the test's own schema.
func TestBouncer(t *testing.T) {
	dsn := DSN(t)
	via := Bouncer(t, dsn, BouncerConfig{})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, via+"&default_query_exec_mode=simple_protocol")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var schema string
	if err := conn.QueryRow(ctx, "select current_schema()").Scan(&schema); err != nil {
		t.Fatal(err)
	}
	want, _ := pgx.ParseConfig(dsn)
	if schema != want.RuntimeParams["search_path"] {
		t.Fatalf("through PgBouncer the schema is %q, want %q", schema, want.RuntimeParams["search_path"])
	}
	t.Logf("PgBouncer %s", BouncerVersion(t))
}
