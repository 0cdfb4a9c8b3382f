package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/store"
)

const testPassword = "pw-s3cret-diag"

// withPassword puts the test password into a DSN: trust authentication
// ignores it, and no diagnosis may show it.
func withPassword(t *testing.T, dsn string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), testPassword)
	return u.String()
}

func checkDiagnosis(t *testing.T, what string, err error, kind string, permanent bool, fixes ...string) store.Diagnosis {
	t.Helper()
	if err == nil {
		t.Fatalf("%s succeeded; want a %s error", what, kind)
	}
	d := (*Store)(nil).Diagnose(err)
	t.Logf("%s: %v\n\t%+v", what, err, d)
	if d.Kind != kind || d.Permanent != permanent || d.Cause == "" {
		t.Errorf("%s: Diagnose = %+v; want kind %s, permanent %v, with a cause", what, d, kind, permanent)
	}
	for _, fix := range fixes {
		if !strings.Contains(d.Fix, fix) {
			t.Errorf("%s: fix %q does not mention %q", what, d.Fix, fix)
		}
	}
	for _, text := range []string{d.Cause, d.Fix, d.Detail} {
		if strings.Contains(text, testPassword) {
			t.Errorf("%s: the diagnosis shows the DSN's password: %+v", what, d)
		}
	}
	return d
}

func randomName(prefix string) string {
	var b [6]byte
	rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// Errors of a real server set up wrong, and of a server that is not there.
func TestDiagnoseServerErrors(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	base := withPassword(t, pgtest.BaseURL())
	ready := func(dsn string) error {
		s, err := Open(ctx, dsn)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		defer s.Close()
		return s.Ready(ctx)
	}
	with := func(dsn string, edit func(u *url.URL)) string {
		u, _ := url.Parse(dsn)
		edit(u)
		return u.String()
	}

	db := randomName("kg_missing_")
	d := checkDiagnosis(t, "a database that does not exist", ready(with(base, func(u *url.URL) { u.Path = "/" + db })),
		store.KindDatabaseMissing, true, "create the database", "keygate migrate")
	if !strings.Contains(d.Cause, db) {
		t.Errorf("the cause %q does not name the database %s", d.Cause, db)
	}

	role := randomName("kg_norole_")
	checkDiagnosis(t, "a role that does not exist", ready(with(base, func(u *url.URL) { u.User = url.UserPassword(role, testPassword) })),
		store.KindLoginRefused, true, "may log in", "pg_hba.conf")

	nologin := randomName("kg_nologin_")
	pgtest.Exec(t, "create role "+nologin+" nologin")
	t.Cleanup(func() { pgtest.Exec(t, "drop role "+nologin) })
	checkDiagnosis(t, "a role that may not log in", ready(with(base, func(u *url.URL) { u.User = url.UserPassword(nologin, testPassword) })),
		store.KindLoginRefused, true, "ALTER ROLE")

	// A role that may log in but was granted nothing on keygate's tables.
	dsn := pgtest.DSN(t)
	openMigrated(t, dsn)
	schema, _ := url.Parse(dsn)
	reader := randomName("kg_reader_")
	pgtest.Exec(t, "create role "+reader+" login")
	t.Cleanup(func() { pgtest.Exec(t, "drop owned by "+reader+"; drop role "+reader) })
	pgtest.Exec(t, "grant usage on schema "+schema.Query().Get("search_path")+" to "+reader)
	checkDiagnosis(t, "a role without privileges", ready(with(withPassword(t, dsn), func(u *url.URL) { u.User = url.UserPassword(reader, testPassword) })),
		store.KindPermissionDenied, true, "grant")

	// A search_path naming no schema: nothing is there to read, and
	// migrating says why.
	noSchema := with(base, func(u *url.URL) {
		q := u.Query()
		q.Set("search_path", randomName("kg_noschema_"))
		u.RawQuery = q.Encode()
	})
	checkDiagnosis(t, "a search_path naming no schema", ready(noSchema), store.KindNotMigrated, true, "keygate migrate", "search_path")
	s, err := Open(ctx, noSchema)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkDiagnosis(t, "migrating into no schema", s.Migrate(ctx), store.KindSchemaMissing, true, "create the schema")

	// Nothing listening: transient, with a fix.
	checkDiagnosis(t, "nothing listening", ready(with(base, func(u *url.URL) { u.Host = "127.0.0.1:1" })),
		store.KindUnreachable, false, "running")

	err = s.ListenKeyEvents(ctx, noSchema, time.Second, func() error { return nil }, func() {}, nil)
	checkDiagnosis(t, "listening in no schema", err, store.KindSchemaMissing, true, "search_path")

	// A listen DSN that does not parse: the listener's error may quote it.
	migrated := openMigrated(t, pgtest.DSN(t))
	err = migrated.ListenKeyEvents(ctx, "postgres://u:"+testPassword+"@[::1/x", time.Second, func() error { return nil }, func() {}, nil)
	d = checkDiagnosis(t, "a malformed listen DSN", err, store.KindBadDSN, true, "listen")
	if strings.Contains(d.Detail, "[::1") {
		t.Errorf("the detail of a malformed DSN quotes it: %q", d.Detail)
	}
}

// SQLSTATEs a trust-authenticated test server cannot produce, as pgx
// reports them: inside a ConnectError.
func TestDiagnoseSQLStates(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		code, message, kind string
		permanent           bool
		fix                 string
	}{
		{"28P01", `password authentication failed for user "keygate"`, store.KindAuthFailed, true, "password"},
		{"28000", `no pg_hba.conf entry for host "10.0.0.7", user "keygate", database "keygate", no encryption`, store.KindLoginRefused, true, "pg_hba.conf"},
		{"3F000", `schema "keygate" does not exist`, store.KindSchemaMissing, true, "search_path"},
		{"42703", `column "x" does not exist`, store.KindNotMigrated, true, "keygate migrate"},
		{"25006", `cannot execute INSERT in a read-only transaction`, store.KindReadOnly, true, "primary"},
		{"53300", `sorry, too many clients already`, store.KindTooManyConnections, false, "max_connections"},
		{"57P03", `the database system is starting up`, store.KindServerUnavailable, false, ""},
		{"08006", `connection failure`, store.KindConnectionLost, false, ""},
		{"40P01", `deadlock detected`, store.KindBusy, false, ""},
		{"40001", `could not serialize access due to concurrent update`, store.KindBusy, false, ""},
		{"26000", `prepared statement "stmtcache_1adc" does not exist`, store.KindPooler, true, "default_query_exec_mode=cache_describe"},
		{"08P01", `unsupported startup parameter: search_path`, store.KindPooler, true, "ALTER ROLE"},
	} {
		err := fmt.Errorf("looking up key: %w", &pgconn.PgError{Severity: "FATAL", Code: tc.code, Message: tc.message})
		d := checkDiagnosis(t, tc.code, err, tc.kind, tc.permanent, tc.fix)
		if !strings.Contains(d.Cause, tc.message) {
			t.Errorf("%s: the cause %q lacks the server's message", tc.code, d.Cause)
		}
	}
}

// TestDiagnoseClosedConnection: a statement on a connection the server
// closed (a failover, a restart) is a lost connection, not "other".
func TestDiagnoseClosedConnection(t *testing.T) {
	ctx := t.Context()
	conn, err := pgconn.Connect(ctx, pgtest.DSN(t))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	_, err = conn.Exec(ctx, "select 1").ReadAll()
	checkDiagnosis(t, "a statement on a closed connection", err, store.KindConnectionLost, false)
}
