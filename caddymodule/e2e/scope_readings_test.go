package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"

	"github.com/keygate/keygate/cmd/inboxsim/sim"
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

// objectRoute is an OBJ route, with %s for its object's id.
type objectRoute struct {
	id, method, path string
	kind             string // message, attachment or preview
}

var objectRoutes = []objectRoute{
	{"M5", "GET", "/api/messages/%s", "message"},
	{"M6", "DELETE", "/api/messages/%s", "message"},
	{"M7", "POST", "/api/messages/%s/forward", "message"},
	{"M8", "POST", "/api/messages/%s/reply", "message"},
	{"M9", "POST", "/api/messages/%s/screenshots", "message"},
	{"F1", "GET", "/api/files/attachments/%s", "attachment"},
	{"F2", "GET", "/api/files/email/%s", "message"},
	{"F3", "GET", "/api/files/screenshots/%s", "preview"},
	{"A1", "GET", "/api/analysis/spam/%s", "message"},
	{"A2", "GET", "/api/analysis/deliverability/%s", "message"},
}

// TestScopeObjectAnswersAreIdentical: on every object route and for every
// method, a restricted key gets the same answer (status, headers, body) for
// an object of another inbox, seen by keygate or not, as for one that does
// not exist, so it cannot probe which objects exist elsewhere. The
// upstream answers HEAD as GET, as many servers do.
func TestScopeObjectAnswersAreIdentical(t *testing.T) {
	t.Parallel()
	w := newScopeWorld(t)
	w.reset()
	seen := w.otherObjects(true)
	missing := map[string]string{
		"message":    "00000000-0000-4000-8000-000000000000",
		"attachment": "00000000-0000-4000-8000-000000000001",
		"preview":    "00000000-0000-4000-8000-000000000002",
	}
	for _, rt := range objectRoutes {
		for _, method := range []string{"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS"} {
			body := ""
			if method == "POST" || method == "PUT" {
				body = `{"to":"x@example.com","text":"t","emailClients":["gmail-chrome-lightmode"]}`
			}
			want := w.send(w.own, method, fmt.Sprintf(rt.path, missing[rt.kind]), body)
			for name, id := range map[string]string{"seen": seen[rt.kind], "unseen": w.otherObjects(false)[rt.kind]} {
				got := w.send(w.own, method, fmt.Sprintf(rt.path, id), body)
				if diff := answerDiff(want, got); diff != "" {
					t.Errorf("%s: %s of another inbox's %s (%s) differs from one that does not exist: %s", rt.id, method, rt.kind, name, diff)
				}
			}
		}
	}
	// The key's own message, never seen, still answers HEAD.
	mine := w.up.Load().AddMessage(w.acctA, s1, sim.NewMessage{Subject: "mine", Text: "t"})
	if r := w.send(w.own, "HEAD", "/api/messages/"+mine.ID, ""); r.status != http.StatusOK {
		t.Errorf("HEAD of the key's own unseen message: %d", r.status)
	}
}

// otherObjects makes a message of s2 with an attachment and a preview, and
// lets keygate see them (through a standard key) when learn is set.
func (w *scopeWorld) otherObjects(learn bool) map[string]string {
	w.t.Helper()
	s := w.up.Load()
	att := []sim.NewAttachment{{FileName: "a.txt", ContentType: "text/plain", Content: []byte("a")}}
	m := s.AddMessage(w.acctA, s2, sim.NewMessage{Subject: "other", Text: "t", Attachments: att})
	objs := map[string]string{"message": m.ID, "attachment": m.Attachments[0].ID}
	path, body := "/api/messages/"+m.ID+"/screenshots", `{"emailClients":["gmail-chrome-lightmode"]}`
	var out string
	if learn {
		if r := w.send(w.standard, "GET", "/api/messages/"+m.ID, ""); r.status != http.StatusOK {
			w.t.Fatalf("learning the other message: %d", r.status)
		}
		out = w.send(w.standard, "POST", path, body).body
	} else { // straight to the upstream, past keygate
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", path, strings.NewReader(body))
		req.Header.Set(sim.AccountHeader, w.acctA)
		s.ServeHTTP(rec, req)
		out = rec.Body.String()
	}
	var previews struct{ Items []struct{ ID string } }
	if err := json.Unmarshal([]byte(out), &previews); err != nil || len(previews.Items) != 1 {
		w.t.Fatalf("making a preview: %v %s", err, out)
	}
	objs["preview"] = previews.Items[0].ID
	return objs
}

// answerDiff describes how two answers differ, Date aside.
func answerDiff(a, b response) string {
	var diffs []string
	if a.status != b.status {
		diffs = append(diffs, fmt.Sprintf("status %d, not %d", b.status, a.status))
	}
	if a.body != b.body {
		diffs = append(diffs, fmt.Sprintf("body %q, not %q", b.body, a.body))
	}
	names := map[string]bool{}
	for k := range a.header {
		names[k] = true
	}
	for k := range b.header {
		names[k] = true
	}
	var keys []string
	for k := range names {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k != "Date" && strings.Join(a.header[k], ",") != strings.Join(b.header[k], ",") {
			diffs = append(diffs, fmt.Sprintf("%s %q, not %q", k, b.header[k], a.header[k]))
		}
	}
	return strings.Join(diffs, "; ")
}
