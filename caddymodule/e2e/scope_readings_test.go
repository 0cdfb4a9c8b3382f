package e2e

import (
	"net/http"
	"strings"
	"testing"
)

// wantAmbiguous checks that a request was refused with keygate's 400
// before it reached the upstream.
func (w *scopeWorld) wantAmbiguous(key, method, target string, header ...string) {
	w.t.Helper()
	w.up.Load().Reset()
	r := w.send(key, method, target, "", header...)
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, `"code":"ambiguous_request"`) {
		w.t.Errorf("%s %s %q = %d %s, want keygate's 400", method, target, header, r.status, r.body)
	}
	if w.reached(method, target) {
		w.t.Errorf("%s %s %q was refused but reached the upstream", method, target, header)
	}
}

// TestScopeMethodOverride: an upstream that honours a method override
// would execute another route than the one keygate judged (GET of the own
// inbox as DELETE of it). A restricted key's request carrying any override
// is refused; a standard key's is judged as it is, since that key may do
// anything in its account.
func TestScopeMethodOverride(t *testing.T) {
	t.Parallel()
	w := newScopeWorld(t)
	w.reset()
	target := "/api/servers/" + s1
	for _, h := range [][]string{
		{"X-HTTP-Method-Override", "DELETE"},
		{"x-http-method-override", "delete"},
		{"X-HTTP-Method", "DELETE"},
		{"X-METHOD-OVERRIDE", "DELETE"},
		{"X-Http-Method-Override", "GET"}, // even naming the request's own method
		// X_HTTP_Method_Override never gets this far: Caddy drops header
		// names with '_' or '.' unless its server allows them
		// (expected_underscore_headers); scope's unit test covers them.
	} {
		w.wantAmbiguous(w.own, "GET", target, h...)
	}
	for _, q := range []string{"?_method=DELETE", "?_METHOD=delete", "?%5Fmethod=DELETE", "?x=1;_method=DELETE", "?a=b&_Method=PUT"} {
		w.wantAmbiguous(w.own, "GET", target+q)
	}
	w.wantAmbiguous(w.own, "GET", "/api/messages?server="+s1+"&_method=DELETE")
	w.wantAmbiguous(w.own, "POST", "/api/messages?server="+s1, "X-HTTP-Method-Override", "DELETE")

	if r := w.send(w.standard, "GET", target, "", "X-HTTP-Method-Override", "DELETE"); r.status != http.StatusOK || !w.reached("GET", target) {
		t.Errorf("standard key with an override: %d, want it judged as is and forwarded", r.status)
	}
	if r := w.send(w.own, "GET", target, ""); r.status != http.StatusOK {
		t.Errorf("the restricted key's own inbox without an override: %d", r.status)
	}
}

// TestScopeSemicolonQuery: keygate and the upstream must agree on the
// server parameter whether or not ';' separates parameters. Where the
// two readings differ, the request is refused for every key.
func TestScopeSemicolonQuery(t *testing.T) {
	t.Parallel()
	w := newScopeWorld(t)
	w.reset()
	for _, c := range []struct{ method, target string }{
		{"GET", "/api/messages?x=1;server=" + s1},
		{"GET", "/api/messages?server=" + s1 + ";x=1"},
		{"GET", "/api/messages?server=" + s1 + ";"},
		{"GET", "/api/messages?x;Server=" + s1},
		{"GET", "/api/messages?x=1;%73erver=" + s1},
		{"DELETE", "/api/messages?x=1;server=" + s1},
		{"POST", "/api/messages/search?a;server=" + s1},
		{"GET", "/api/servers/" + s1 + "?x=1;server=" + s1},
	} {
		w.wantAmbiguous(w.own, c.method, c.target)
		w.wantAmbiguous(w.standard, c.method, c.target)
	}
	// A ';' that changes no reading of the server is nobody's concern.
	target := "/api/messages?x=1;y=2&server=" + s1
	if r := w.send(w.own, "GET", target, ""); r.status != http.StatusOK || !w.reached("GET", target) {
		t.Errorf("GET %s = %d %s, want forwarded", target, r.status, r.body)
	}
}
