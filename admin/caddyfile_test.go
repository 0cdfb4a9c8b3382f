package admin

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func TestUnmarshalCaddyfile(t *testing.T) {
	for _, c := range []struct {
		in, want, err string
	}{
		{in: `keygate_admin`, want: `{}`},
		{in: "keygate_admin {\n\tinbox_api http://127.0.0.1:8081\n\tinbox_timeout 3s\n\theader account X-Account\n}",
			want: `{"inbox_api":"http://127.0.0.1:8081","inbox_timeout":3000000000,"headers":{"account":"X-Account"}}`},
		{in: "keygate_admin {\n\tinbox_api {env.INBOX_API}\n}", want: `{"inbox_api":"{env.INBOX_API}"}`},
		{in: "keygate_admin {\n\toperators ops-alice ops-bob\n\toperators ops-carol\n}", want: `{"operators":["ops-alice","ops-bob","ops-carol"]}`},
		{in: "keygate_admin {\n\toperators\n}", err: "operators takes one or more user ids"},
		{in: "keygate_admin {\n\toperator ops-alice\n}", err: `unknown keygate_admin option "operator": did you mean operators? (options: inbox_api, inbox_timeout, header, operators), at Testfile:2`},
		{in: "keygate_admin http://x", err: "takes no arguments"},
		{in: "keygate_admin {\n\tinbox_api ftp://x\n}", err: "must be an http or https URL"},
		{in: "keygate_admin {\n\tinbox_api\n}", err: "inbox_api takes one URL"},
		{in: "keygate_admin {\n\tinbox_timeout -1s\n}", err: "positive duration"},
		{in: "keygate_admin {\n\theader server X-S\n}", err: "use account or key_type"},
		{in: "keygate_admin {\n\n\tinbox_apl http://x\n}", err: `unknown keygate_admin option "inbox_apl": did you mean inbox_api? (options: inbox_api, inbox_timeout, header, operators), at Testfile:3`},
		{in: "keygate_admin {\n\tstore sqlite\n}", err: `unknown keygate_admin option "store" (options:`},
	} {
		var h Handler
		err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.in))
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: error %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if got, _ := json.Marshal(&h); string(got) != c.want {
			t.Errorf("%q: %s, want %s", c.in, got, c.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, h := range []Handler{
		{Headers: map[string]string{"server": "X"}},
		{Headers: map[string]string{"account": "bad header"}},
		{InboxTimeout: -1},
		{Operators: []string{"ops-alice", ""}},
	} {
		if err := h.Validate(); err == nil {
			t.Errorf("%+v: no error", h)
		}
	}
	if err := (&Handler{Headers: map[string]string{"key_type": "X-Type"}}).Validate(); err != nil {
		t.Error(err)
	}
}

// TestIdentify: the user comes from {http.auth.user.id}; a request that
// keygate authenticated with an API key is refused.
func TestIdentify(t *testing.T) {
	req := func(vars map[string]string) (string, error) {
		r := httptest.NewRequest("GET", "/", nil)
		repl := caddy.NewReplacer()
		for k, v := range vars {
			repl.Set(k, v)
		}
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
		return identify(r)
	}
	if u, err := req(map[string]string{"http.auth.user.id": "alice"}); u != "alice" || err != nil {
		t.Errorf("basic_auth user: %q %v", u, err)
	}
	if u, err := req(nil); u != "" || err != nil {
		t.Errorf("nobody: %q %v", u, err)
	}
	if _, err := req(map[string]string{"http.auth.user.id": "key_abc", "keygate.key_id": "key_abc"}); !errors.Is(err, ErrAPIKey) {
		t.Errorf("API key: %v", err)
	}
	if u, err := identify(httptest.NewRequest("GET", "/", nil)); u != "" || err != nil {
		t.Errorf("no replacer: %q %v", u, err)
	}
}

func TestClientIP(t *testing.T) {
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "10.1.2.3:5555"
	if got := clientIP(r); got != "10.1.2.3" {
		t.Errorf("without Caddy: %q", got)
	}
	r = caddyhttp.PrepareRequest(r, caddy.NewReplacer(), nil, nil)
	caddyhttp.SetVar(r.Context(), caddyhttp.ClientIPVarKey, "203.0.113.9")
	if got := clientIP(r); got != "203.0.113.9" {
		t.Errorf("with Caddy's client_ip: %q", got)
	}
}
