package e2e

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/cmd/inboxsim/sim"
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

// run runs the keygate binary with exactly these arguments in the node's
// environment and returns its standard output and standard error apart.
func (n *node) run(args ...string) (stdout, stderr string, err error) {
	cmd := osexec.Command(keygateBin, args...)
	cmd.Env = n.env()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return strings.TrimSpace(o.String()), e.String(), err
}

// runConfig runs an operator command against the node's Caddyfile.
func (n *node) runConfig(args ...string) (stdout, stderr string, err error) {
	return n.run(append(args, "--config", n.config, "--adapter", "caddyfile")...)
}

// TestOperatorKeyServer: a server-restricted key is made only for an inbox
// of its account, checked against the inbox API the dashboard uses, and an
// empty --server (an unset shell variable) never makes a standard key.
func TestOperatorKeyServer(t *testing.T) {
	t.Parallel()
	const mine, theirs = "mine1234", "their123"
	inboxes := sim.New(sim.Options{})
	api := httptest.NewServer(inboxes)
	t.Cleanup(api.Close)
	n := newNode(t, nodeConfig{
		upstream: "127.0.0.1:1",
		extra:    "http://" + freeAddr(t) + " {\n\tkeygate_admin {\n\t\tinbox_api " + api.URL + "\n\t}\n}\n",
	})
	acct := n.account("acme")
	other := n.account("other")
	seed := `{"accounts":{"` + acct + `":{"servers":[{"id":"` + mine + `","name":"Staging"}]},
		"` + other + `":{"servers":[{"id":"` + theirs + `","name":"Theirs"}]}}}`
	if err := inboxes.LoadSeed(strings.NewReader(seed)); err != nil {
		t.Fatal(err)
	}

	refused := []struct {
		args []string
		want string
	}{
		{[]string{"key", "create", acct, "unset var", "--server", ""}, "--server is empty"},
		{[]string{"key", "create", acct, "unset var", "--server="}, "--server is empty"},
		{[]string{"key", "create", acct, "theirs", "--server", theirs}, `inbox "` + theirs + `" is not an inbox of account ` + acct + " (its inboxes: " + mine + ")"},
		{[]string{"key", "create", acct, "nowhere", "--server", "zzzz9999"}, `inbox "zzzz9999" is not an inbox of account`},
		{[]string{"key", "create", other, "none", "--server", mine}, "is not an inbox of account " + other},
		{[]string{"key", "create", acct, "api down", "--server", mine, "--inbox-api", "http://127.0.0.1:1"}, "could not be reached"},
		{[]string{"key", "create", acct, "bad api", "--server", mine, "--inbox-api", "ftp://x"}, "--inbox-api must be"},
	}
	for _, r := range refused {
		out, errOut, err := n.runConfig(r.args...)
		if err == nil || !strings.Contains(errOut, r.want) {
			t.Errorf("keygate %q: %v, stderr lacks %q:\n%s", r.args, err, r.want, errOut)
		}
		if out != "" {
			t.Errorf("keygate %q printed a key although it failed", r.args)
		}
	}
	for _, a := range []string{acct, other} {
		if list := n.cli("key", "list", a); strings.Count(list, "\n") != 0 {
			t.Fatalf("a refused key was created:\n%s", list)
		}
	}

	k, errOut, err := n.runConfig("key", "create", acct, "staging", "--server", mine)
	if err != nil || !strings.HasPrefix(k, "kg_") || strings.Contains(errOut, "could not check") {
		t.Fatalf("key for the account's own inbox: %v %q\n%s", err, k[:min(len(k), 3)], errOut)
	}
	rememberKey(k)
	// Told plainly when the check is skipped, or cannot be made.
	k, errOut, err = n.runConfig("key", "create", acct, "unchecked", "--server", "abcd1234", "--inbox-api", "off")
	if err != nil || !strings.Contains(errOut, "could not check that inbox abcd1234 belongs to account "+acct) {
		t.Fatalf("--inbox-api off: %v\n%s", err, errOut)
	}
	rememberKey(k)
	bare := newNode(t, nodeConfig{upstream: "127.0.0.1:1"})
	bareAcct := bare.account("acme")
	k, errOut, err = bare.runConfig("key", "create", bareAcct, "unchecked", "--server", "abcd1234")
	if err != nil || !strings.Contains(errOut, "no inbox API is configured") {
		t.Fatalf("no inbox API: %v\n%s", err, errOut)
	}
	rememberKey(k)
}

// TestOperatorAccountNotFound: every command that takes an account says
// when it does not exist, and hints at the id when given a name.
func TestOperatorAccountNotFound(t *testing.T) {
	t.Parallel()
	n := newNode(t, nodeConfig{upstream: "127.0.0.1:1"})
	acct := n.account("acme")
	for _, cmd := range [][]string{
		{"key", "list"}, {"member", "list"}, {"key", "create", "%s", "k"},
		{"member", "add", "%s", "bob"}, {"member", "remove", "%s", "bob"},
	} {
		for arg, want := range map[string]string{
			"acct_missing": `account "acct_missing" not found`,
			"acme":         `"acme" is the name of account ` + acct + "; give its id",
		} {
			args := append([]string(nil), cmd...)
			if len(args) == 2 {
				args = append(args, arg)
			} else {
				args[2] = arg
			}
			out, errOut, err := n.runConfig(args...)
			if err == nil || out != "" || !strings.Contains(errOut, want) {
				t.Errorf("keygate %q: %v, stdout %q, stderr lacks %q:\n%s", args, err, out, want, errOut)
			}
		}
	}
}

// TestOperatorSaysWhichStore: each command names the store it opened on
// standard error, once, without a password, and nothing of Caddy's own
// logging unless asked.
func TestOperatorSaysWhichStore(t *testing.T) {
	t.Parallel()
	n := newNode(t, nodeConfig{upstream: "127.0.0.1:1"})
	_, errOut, err := n.runConfig("account", "list")
	want := "keygate store: sqlite " + filepath.Join(n.dir, "data", "caddy", "keygate", "keygate.db") + "\n"
	if err != nil || errOut != want {
		t.Fatalf("account list on the default store: %v, stderr %q; want exactly %q", err, errOut, want)
	}
	_, errOut, err = n.runConfig("account", "list", "--verbose")
	if err != nil || !strings.Contains(errOut, "using config from file") || strings.Count(errOut, "keygate store:") != 1 {
		t.Fatalf("--verbose: %v, stderr:\n%s", err, errOut)
	}

	dsn := strings.Replace(pgtest.DSN(t), "postgres@", "postgres:dsn-pw-s3cret@", 1)
	pg := newNode(t, nodeConfig{
		global:   "\t\tstore postgres " + strconv.Quote(dsn) + "\n\t\tsecret {env.KEYGATE_SECRET}",
		upstream: "127.0.0.1:1",
	})
	_, errOut, err = pg.runConfig("migrate")
	schema := regexp.MustCompile(`search_path=(kgtest_[0-9a-f]+)`).FindStringSubmatch(dsn)[1]
	want = `keygate store: postgres database "test" on 127.0.0.1:5432 as postgres, search_path ` + schema + "\n"
	if err != nil || errOut != want {
		t.Fatalf("migrate on Postgres: %v, stderr %q; want exactly %q", err, errOut, want)
	}
}

// TestOperatorReadsConfigStrictly: a typo that Caddy refuses must not send
// the operator commands to a fresh default store.
func TestOperatorReadsConfigStrictly(t *testing.T) {
	t.Parallel()
	n := newNode(t, nodeConfig{upstream: "127.0.0.1:1"})
	for name, cfg := range map[string]string{
		"store typo":     `{"apps":{"keygate":{"stores":{"module":"postgres","dsn":"postgres://127.0.0.1/x"},"secret":"{env.KEYGATE_SECRET}"}}}`,
		"top-level typo": `{"app":{"keygate":{"store":{"module":"postgres","dsn":"postgres://127.0.0.1/x"}}}}`,
		"store field":    `{"apps":{"keygate":{"store":{"module":"sqlite","paht":"/tmp/x.db"}}}}`,
	} {
		file := filepath.Join(n.dir, strings.ReplaceAll(name, " ", "-")+".json")
		if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		_, caddyErr, err := n.run("validate", "--config", file)
		if err == nil {
			t.Errorf("%s: caddy validate accepted it", name)
		}
		out, errOut, err := n.run("account", "list", "--config", file)
		if err == nil || !strings.Contains(errOut, "unknown field") {
			t.Errorf("%s: account list: %v, stdout %q, stderr:\n%s\n(caddy validate said: %s)", name, err, out, errOut, caddyErr)
		}
	}
	if out, _ := exec(t, "find", n.dir+"/data"); strings.Contains(out, "keygate") {
		t.Fatalf("a config with a typo created a store:\n%s", out)
	}
}
