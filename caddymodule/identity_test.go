package caddymodule

import (
	"net/http"
	"slices"
	"testing"
)

func identityHandler(t *testing.T) *Handler {
	h := &Handler{Headers: map[string]string{"account": "X-Tenant"}}
	if err := h.setup(); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestConnectionKeepsOtherTokens(t *testing.T) {
	h := identityHandler(t)
	cases := []struct{ in, want []string }{
		{nil, nil},
		{[]string{"keep-alive"}, []string{"keep-alive"}},
		{[]string{"X-Keygate-Server, X-Keygate-Key-Type"}, nil},
		{[]string{"x-tenant,  Upgrade ,X_KEYGATE_KEY_ID"}, []string{"Upgrade"}},
		{[]string{"keep-alive", "X-Keygate-Server\t,X-Other"}, []string{"keep-alive", "X-Other"}},
		{[]string{"X-Account"}, []string{"X-Account"}}, // the default name of nothing here
	}
	for _, c := range cases {
		hdr := http.Header{}
		if c.in != nil {
			hdr["Connection"] = slices.Clone(c.in)
		}
		h.dropIdentityConnectionTokens(hdr)
		if got := hdr["Connection"]; !slices.Equal(got, c.want) {
			t.Errorf("Connection %q → %q, want %q", c.in, got, c.want)
		}
	}
}
