package caddymodule

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddytest"
)

// TestCaddyfileAdapt compares each testdata/caddyfile_adapt/*.caddyfiletest
// (a Caddyfile, a line of dashes, the JSON it must adapt to).
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/caddyfile_adapt/*.caddyfiletest")
	if err != nil || len(files) == 0 {
		t.Fatalf("no adapt tests found: %v", err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		in, want, ok := strings.Cut(string(b), "----------")
		if !ok {
			t.Fatalf("%s: no ---------- separator", f)
		}
		if !caddytest.CompareAdapt(t, f, in, "caddyfile", strings.TrimSpace(want)) {
			t.Errorf("%s: adapted JSON differs", f)
		}
	}
}

func TestUnmarshalErrors(t *testing.T) {
	cases := []struct {
		input string
		want  string
	}{
		{"keygate extra", "takes no arguments"},
		{"keygate {\n\trealm\n}", "realm takes one value"},
		{"keygate {\n\tretry_after -1s\n}", "positive duration"},
		{"keygate {\n\theader server\n}", "header takes a field and a name"},
		{"keygate {\n\tretry_afer 1s\n}", "did you mean retry_after?"},
		{"keygate {\n\troute GET /x\n}", "route takes a method, a path and a rule"},
		{"keygate {\n\troute GET /x maybe\n}", "restricted must be deny, allow, own_server or own_object"},
		{"keygate {\n\troute GET /x/{nope} allow\n}", "unknown parameter {nope}"},
		{"keygate {\n\troute GET /x own_object\n}", "own_object needs"},
		{"keygate {\n\tinspect_limit lots\n}", "inspect_limit must be a size"},
		{"keygate {\n\tfoo\n}", `unknown keygate directive "foo" (options: header, realm, retry_after, route, inspect_limit, inspect_memory)`},
		{"keygate {\n\tinspect_memory 1KiB\n}", "inspect_memory must be a size between 64KiB"},
		{"keygate {\n\tinspect_memroy 1MiB\n}", "did you mean inspect_memory?"},
	}
	for _, c := range cases {
		err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.input))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want it to contain %q", c.input, err, c.want)
		}
	}

	for _, c := range []struct {
		input string
		want  string
	}{
		{"keygate_ready extra", "takes no arguments"},
		{"keygate_ready {\n\tcache 1s\n}", "takes no block"},
	} {
		err := new(ReadyHandler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.input))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want it to contain %q", c.input, err, c.want)
		}
	}

	appCases := []struct {
		input string
		want  string
	}{
		{"keygate arg", "takes no arguments"},
		{"keygate {\n\tstore\n}", "store needs a kind"},
		{"keygate {\n\tstore redis\n}", `unknown store "redis"`},
		{"keygate {\n\tstore postgres\n}", "postgres store needs a DSN"},
		{"keygate {\n\tstore postgres a b\n}", `unexpected "b"`},
		{"keygate {\n\tstore postgres {\n\t\tdns x\n\t}\n}", "did you mean dsn?"},
		{"keygate {\n\tstore sqlite {\n\t\tpaht x\n\t}\n}", "did you mean path?"},
		{"keygate {\n\tcache_size many\n}", "positive number"},
		{"keygate {\n\tcache_size 0\n}", "positive number"},
		{"keygate {\n\tnegative_ttl\n}", "takes one duration"},
		{"keygate {\n\tmigrate maybe\n}", "auto or off"},
		{"keygate {\n\tsecret a b\n}", "secret takes one value"},
		{"keygate {\n\tprevious_secrets\n}", "previous_secrets takes one or more secrets"},
		{"keygate {\n\tprevious_secret x\n}", "did you mean previous_secrets?"},
		{"keygate {\n\tactivity_retention forever\n}", "activity_retention must be a positive duration"},
		{"keygate {\n\tactivity_retention 0s\n}", "activity_retention must be a positive duration"},
		{"keygate {\n\tactivity_retension 30d\n}", "did you mean activity_retention?"},
		{"keygate {\n\tusage_interval often\n}", "usage_interval must be a positive duration"},
		{"keygate {\n\tusage_intervall 1s\n}", "did you mean usage_interval?"},
	}
	for _, c := range appCases {
		err := new(App).UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.input))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want it to contain %q", c.input, err, c.want)
		}
	}
}
