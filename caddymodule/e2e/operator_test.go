package e2e

import (
	"context"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/internal/pgtest"
)

// TestOperatorCommands drives the command line against Postgres: odd input
// gets a clear error and changes nothing, and what is created is audited
// with the operator as the actor.
func TestOperatorCommands(t *testing.T) {
	t.Parallel()
	// A password in the DSN (trust auth ignores it) must never be echoed.
	dsn := strings.Replace(pgtest.DSN(t), "postgres@", "postgres:dsn-pw-s3cret@", 1)
	n := newNode(t, nodeConfig{
		global:   "\t\tstore postgres " + strconv.Quote(dsn) + "\n\t\tsecret {env.KEYGATE_SECRET}",
		upstream: "127.0.0.1:1",
	})
	if out := n.cli("migrate"); !strings.Contains(out, "up to date") {
		t.Fatalf("migrate: %q", out)
	}
	n.cli("migrate") // again: a no-op
	acct := n.cli("account", "create", "acme")

	odd := []string{`x'); drop table api_keys;--`, "Ünïcødé 名前 🔑", strings.Repeat("n", 100)}
	for _, name := range odd {
		n.key(acct, name, "")
	}
	restricted := n.key(acct, "one inbox", "abcd1234")

	refusals := []struct {
		args []string
		want string
	}{
		{[]string{"account", "create", "acme"}, "already in use"},
		{[]string{"account", "create", ""}, "name is empty"},
		{[]string{"member", "add", acct, "alice", "--role", "owner"}, `role must be "admin" or "member"`},
		{[]string{"member", "add", "acct_missing", "alice"}, "not found"},
		{[]string{"member", "remove", acct, "nobody"}, "not found"},
		{[]string{"key", "create", acct, odd[0]}, "already in use"},
		{[]string{"key", "create", acct, strings.Repeat("n", 101)}, "at most 100"},
		{[]string{"key", "create", acct, "tab\tname"}, "non-printable"},
		{[]string{"key", "create", acct, " padded"}, "starts or ends with a space"},
		{[]string{"key", "create", acct, "bad server", "--server", "../abcd"}, "server id may hold only"},
		{[]string{"key", "create", "acct_missing", "k"}, "not found"},
		{[]string{"key", "create", acct}, "accepts 2 arg"},
	}
	for _, r := range refusals {
		out, err := n.cliErr(r.args...)
		if err == nil || !strings.Contains(out, r.want) {
			t.Errorf("keygate %q: %v, output lacks %q:\n%s", r.args, err, r.want, out)
		}
		if strings.Contains(out, "dsn-pw-s3cret") {
			t.Errorf("keygate %q echoed the DSN's password", r.args)
		}
	}

	n.cli("member", "add", acct, "alice", "--role", "admin")
	n.cli("member", "add", acct, "alice") // demoted to member
	if out := n.cli("member", "list", acct); !strings.Contains(out, "alice") || !strings.Contains(out, "member") || strings.Contains(out, "admin") {
		t.Fatalf("member list: %q", out)
	}
	n.cli("member", "remove", acct, "alice")

	list := n.cli("key", "list", acct)
	for _, name := range append(odd, "one inbox") {
		if !strings.Contains(list, strconv.Quote(name)) {
			t.Errorf("key list lacks %q:\n%s", name, list)
		}
	}
	if !strings.Contains(list, "abcd1234") || strings.Contains(list, restricted[10:]) {
		t.Fatalf("key list shows no server, or a key:\n%s", list)
	}

	// Each create was audited once, by the operator, without the key.
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var creates, byOperator int
	var dump string
	err = conn.QueryRow(ctx, `
		select count(*) filter (where action = 'key.create'),
		       count(*) filter (where actor like 'operator:%'),
		       coalesce(string_agg(e::text, ' '), '')
		from audit_events e`).Scan(&creates, &byOperator, &dump)
	if err != nil {
		t.Fatal(err)
	}
	if creates != len(odd)+1 || byOperator != creates {
		t.Fatalf("audit: %d creates, %d by the operator; want %d each", creates, byOperator, len(odd)+1)
	}
	if strings.Contains(dump, restricted[10:]) {
		t.Fatal("the audit log holds a key")
	}

	// With the database unreachable the command fails clearly and does
	// not echo the DSN's password.
	down := strings.Replace(dsn, "127.0.0.1:5432", "127.0.0.1:1", 1)
	n.writeConfig(nodeConfig{global: "\t\tstore postgres " + strconv.Quote(down) + "\n\t\tsecret {env.KEYGATE_SECRET}", upstream: "127.0.0.1:1"})
	out, err := n.cliErr("account", "list")
	if err == nil || strings.Contains(out, "dsn-pw-s3cret") || !strings.Contains(out, "connection refused") {
		t.Fatalf("account list with the database down: %v\n%s", err, out)
	}
}
