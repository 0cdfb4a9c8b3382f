package caddymodule

import (
	"io"
	"net/http"
	"slices"
	"strings"
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

func TestForgedAliasesAreDropped(t *testing.T) {
	h := identityHandler(t)
	hdr := http.Header{"X_tenant": {"f"}, "X.keygate.server": {"f"}, "X_keygate.key_type": {"f"}, "X_request_id": {"kept"}, "X.Other": {"kept"}}
	h.dropForgedAliases(hdr)
	if len(hdr) != 2 || hdr["X_request_id"] == nil || hdr["X.Other"] == nil {
		t.Fatalf("after dropping aliases: %v", hdr)
	}
}

func TestTrailersLoseIdentityHeadersAtEOF(t *testing.T) {
	h := identityHandler(t)
	r, _ := http.NewRequest("POST", "/", strings.NewReader("{}"))
	r.ContentLength = -1
	r.Trailer = http.Header{"X-Tenant": nil, "X-Checksum": nil}
	h.dropIdentityTrailers(r)
	if _, ok := r.Trailer["X-Tenant"]; ok {
		t.Fatal("a declared identity trailer was kept")
	}
	// What net/http does at the end of the body: every trailer sent.
	f := r.Body.(*trailerFilter)
	inner := f.ReadCloser
	f.ReadCloser = readCloser(func(p []byte) (int, error) {
		n, err := inner.Read(p)
		if err == io.EOF {
			r.Trailer["X_keygate_server"] = []string{"zzzz9999"}
			r.Trailer["X-Checksum"] = []string{"kept"}
		}
		return n, err
	})
	io.ReadAll(r.Body)
	if len(r.Trailer) != 1 || r.Trailer.Get("X-Checksum") != "kept" {
		t.Fatalf("trailers after the body: %v", r.Trailer)
	}
}

type readCloser func([]byte) (int, error)

func (f readCloser) Read(p []byte) (int, error) { return f(p) }
func (f readCloser) Close() error               { return nil }
