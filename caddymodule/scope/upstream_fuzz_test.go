package scope_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/keygate/keygate/caddymodule/scope"
	"github.com/keygate/keygate/cmd/inboxsim/sim"
)

// FuzzPolicyAgreesWithUpstream compares keygate's reading of a request with
// the inbox API simulator's, a deliberately lenient upstream (case-folding,
// percent-decoding, first-parameter-wins): whenever keygate would let a
// request of a key restricted to s1 through, the simulator's reading of
// that same request touches no server but s1.
func FuzzPolicyAgreesWithUpstream(f *testing.F) {
	const account, s1, s2 = "acct", "abcd1234", "efgh5678"
	up := sim.New(sim.Options{ScreenshotDelay: -1})
	seed := `{"accounts":{"acct":{"servers":[{"id":"abcd1234","name":"one"},{"id":"efgh5678","name":"two"}]}}}`
	if err := up.LoadSeed(strings.NewReader(seed)); err != nil {
		f.Fatal(err)
	}
	att := []sim.NewAttachment{{FileName: "a.txt", ContentType: "text/plain", Content: []byte("a")}}
	m1 := up.AddMessage(account, s1, sim.NewMessage{Subject: "one", Attachments: att})
	m2 := up.AddMessage(account, s2, sim.NewMessage{Subject: "two", Attachments: att})

	// What keygate would have recorded from responses: every attachment
	// and preview with its true server.
	known := map[string]string{m1.Attachments[0].ID: s1, m2.Attachments[0].ID: s2}
	for _, m := range []sim.Message{m1, m2} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("POST", "/api/messages/"+m.ID+"/screenshots", strings.NewReader(`{"emailClients":["gmail-chrome-lightmode"]}`))
		req.Header.Set(sim.AccountHeader, account)
		up.ServeHTTP(rec, req)
		if rec.Code != 200 {
			f.Fatalf("making a preview: %d %s", rec.Code, rec.Body)
		}
		for _, id := range strings.Split(rec.Body.String(), `"id":"`)[1:] {
			known[id[:strings.IndexByte(id, '"')]] = m.Server
		}
	}
	// The upstream's answer to keygate's own look-up of a message.
	messageServer := func(id string) string {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/api/messages/"+url.PathEscape(id), nil)
		req.Header.Set(sim.AccountHeader, account)
		up.ServeHTTP(rec, req)
		if rec.Code != 200 {
			return ""
		}
		s, _ := scope.MessageServer(rec.Body.Bytes())
		return s
	}

	policy, err := scope.New(scope.InboxAPI)
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][3]string{
		{"GET", "/api/messages", "server=" + s1},
		{"GET", "/api/messages", "server=" + s1 + "&Server=" + s2},
		{"GET", "/API/servers/" + s1 + "/password", ""},
		{"GET", "/api/servers/" + s1 + "/..%2f" + s2, ""},
		{"POST", "/api/messages/" + m2.ID + "/forward", ""},
		{"DELETE", "/api/messages/" + strings.ToUpper(m1.ID), ""},
		{"GET", "/api/files/attachments/" + m2.Attachments[0].ID, ""},
		{"GET", "/api/messages/search", "server=" + s1},
		{"get", "/api/messages/", "%73erver=" + s1},
		{"GET", "/api/messages", "server=" + s1 + ";server=" + s2},
		{"GET", "/api/messages", "x=1;server=" + s1},
		{"GET", "/api/messages", "server=" + s1 + ";x=1"},
		{"GET", "/api/messages", "server=abcd1234%00"},
	} {
		f.Add(s[0], s[1], s[2])
	}

	f.Fuzz(func(t *testing.T, method, path, query string) {
		u, err := url.ParseRequestURI(path + "?" + query)
		if err != nil || !validMethod(method) {
			return // net/http would not serve it
		}
		m, err := policy.Read(method, u.EscapedPath(), u.RawQuery)
		if err != nil {
			return // 400: never reaches the upstream
		}
		allowed := false
		switch scope.Decide(m, s1) {
		case scope.Pass:
			allowed = true
		case scope.CheckObject, scope.CheckResponse:
			switch m.Route.Object() {
			case scope.Message:
				allowed = messageServer(m.Object) == s1
			case scope.Attachment, scope.Preview:
				allowed = known[m.Object] == s1
			}
		}
		if !allowed {
			return
		}
		req := &http.Request{Method: method, URL: u, Header: http.Header{}, RequestURI: u.RequestURI()}
		route, servers := up.Touches(account, req)
		for _, s := range servers {
			if s != s1 {
				t.Fatalf("keygate let %s %s through for a key of %s (its route %v, server %q, object %q); the upstream reads it as %s touching %v",
					method, u.RequestURI(), s1, routeID(m.Route), m.Server, m.Object, route, servers)
			}
		}
		if route == "S1" && !slices.Equal(servers, []string{s1}) {
			t.Fatalf("keygate let %s %s (the inbox list) through", method, u.RequestURI())
		}
	})
}

func routeID(r *scope.Route) string {
	if r == nil {
		return "none"
	}
	return r.ID
}

func validMethod(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"(),/:;<=>?@[\]{}`, c) >= 0 {
			return false
		}
	}
	return true
}
