package e2e

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/cmd/inboxsim/sim"
)

// The servers of the scope tests: s1 and s2 in account A, s3 in account B.
const (
	s1 = "abcd1234"
	s2 = "efgh5678"
	s3 = "ijkl9012"
)

// scopeWorld is keygate in front of the inbox API simulator, with a key of
// each kind. The simulator's state is replaced for every case; HEAD reaches
// it as GET.
type scopeWorld struct {
	t        testing.TB
	n        *node
	cfg      nodeConfig // the node's config, for a test that reloads it
	up       atomic.Pointer[sim.Server]
	acctA    string
	acctB    string
	standard string // account A, standard
	own      string // account A, restricted to s1
	other    string // account A, restricted to s2
	foreign  string // account B, standard
}

func newScopeWorld(t *testing.T) *scopeWorld { return newScopeWorldSite(t, "") }

// newScopeWorldSite is newScopeWorld with the guarded site's Caddyfile
// body (empty: a plain keygate directive).
func newScopeWorldSite(t testing.TB, site string) *scopeWorld {
	w := &scopeWorld{t: t}
	upstream := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodHead {
			// Answered as GET, as many servers do (the simulator says
			// 405); net/http drops the body of a HEAD's answer.
			r = r.Clone(r.Context())
			r.Method = http.MethodGet
		}
		w.up.Load().ServeHTTP(rw, r)
	}))
	t.Cleanup(upstream.Close)
	w.cfg = nodeConfig{
		global:   "\t\tstore postgres " + strconv.Quote(pgtest.DSN(t)) + "\n\t\tsecret {env.KEYGATE_SECRET}",
		upstream: strings.TrimPrefix(upstream.URL, "http://"),
		site:     site,
	}
	w.n = newNode(t, w.cfg)
	w.acctA = w.n.account("acme")
	w.acctB = w.n.account("bravo")
	w.standard = w.n.key(w.acctA, "standard", "")
	w.own = w.n.key(w.acctA, "own inbox", s1)
	w.other = w.n.key(w.acctA, "other inbox", s2)
	w.foreign = w.n.key(w.acctB, "other account", "")
	w.reset()
	w.n.start()
	return w
}

// fixture names the objects of one case, all in s1 unless said otherwise.
type fixture struct {
	message, attachment, preview, device string
	otherMessage, otherAttachment        string // in s2, never seen by keygate
}

// reset gives the simulator a fresh state and lets keygate see s1's message,
// attachment and preview the way a client's standard key would.
func (w *scopeWorld) reset() fixture { return w.resetWith(-1) }

// resetWith makes previews ready after screenshotDelay polls (-1: at once).
func (w *scopeWorld) resetWith(screenshotDelay int) fixture {
	s := sim.New(sim.Options{Gzip: true, ScreenshotDelay: screenshotDelay})
	seed := `{"accounts":{
		"` + w.acctA + `":{"servers":[{"id":"` + s1 + `","name":"Staging"},{"id":"` + s2 + `","name":"Production"}],
		                   "devices":[{"name":"phone","sharedSecret":"JBSWY3DPEHPK3PXP"}]},
		"` + w.acctB + `":{"servers":[{"id":"` + s3 + `","name":"Theirs"}]}}}`
	if err := s.LoadSeed(strings.NewReader(seed)); err != nil {
		w.t.Fatal(err)
	}
	att := []sim.NewAttachment{{FileName: "invoice.pdf", ContentType: "application/pdf", Content: []byte("%PDF-1.4 test")}}
	m := s.AddMessage(w.acctA, s1, sim.NewMessage{Subject: "hello", Text: "hi", Attachments: att})
	om := s.AddMessage(w.acctA, s2, sim.NewMessage{Subject: "secret", Text: "other inbox", Attachments: att})
	w.up.Store(s)
	f := fixture{message: m.ID, attachment: m.Attachments[0].ID, otherMessage: om.ID, otherAttachment: om.Attachments[0].ID}
	if w.n.cmd == nil {
		return f // not started yet
	}
	// What keygate learns by watching a standard key's traffic.
	if r := w.send(w.standard, "GET", "/api/messages/"+f.message, ""); r.status != 200 {
		w.t.Fatalf("learning the message: %d %s", r.status, r.body)
	}
	r := w.send(w.standard, "POST", "/api/messages/"+f.message+"/screenshots", `{"emailClients":["gmail-chrome-lightmode"]}`)
	var previews struct{ Items []struct{ ID string } }
	if json.Unmarshal([]byte(r.body), &previews); r.status != 200 || len(previews.Items) != 1 {
		w.t.Fatalf("making a preview: %d %s", r.status, r.body)
	}
	f.preview = previews.Items[0].ID
	r = w.send(w.standard, "GET", "/api/devices", "")
	var devices struct{ Items []struct{ ID string } }
	if json.Unmarshal([]byte(r.body), &devices); len(devices.Items) != 1 {
		w.t.Fatalf("listing devices: %d %s", r.status, r.body)
	}
	f.device = devices.Items[0].ID
	s.Reset()
	return f
}

func (w *scopeWorld) send(key, method, target, body string, header ...string) response {
	w.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+w.n.addr+target, rd)
	if err != nil {
		w.t.Fatal(err)
	}
	req.Header.Set("Authorization", basicUser(key))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		w.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// reached reports whether the simulator received the request.
func (w *scopeWorld) reached(method, target string) bool {
	path, query, _ := strings.Cut(target, "?")
	for _, s := range w.up.Load().Requests() {
		if strings.EqualFold(s.Method, method) && s.Path == path && s.RawQuery == query {
			return true
		}
	}
	return false
}

// outcome is what a case must get.
type want int

const (
	forwarded want = iota // keygate let it through
	deny403
	deny404
)

func (v want) String() string { return [...]string{"forwarded", "403", "404"}[v] }

type matrixRoute struct {
	id, method, target, body string
	// own is what the key restricted to s1 gets; the key restricted to
	// s2 gets 403 where own is forwarded on a SRV route and 404 on an OBJ
	// route (it names an object of s1).
	own   want
	class string
}

func matrixRoutes(f fixture) []matrixRoute {
	return []matrixRoute{
		{"S1", "GET", "/api/servers", "", deny403, "ACCT"},
		{"S2", "POST", "/api/servers", `{"name":"new inbox"}`, deny403, "MGMT"},
		{"S3", "GET", "/api/servers/" + s1, "", forwarded, "SRV"},
		{"S4", "GET", "/api/servers/" + s1 + "/password", "", forwarded, "SRV"},
		{"S5", "PUT", "/api/servers/" + s1, `{"id":"` + s1 + `","name":"renamed"}`, deny403, "MGMT"},
		{"S6", "DELETE", "/api/servers/" + s1, "", deny403, "MGMT"},
		{"M1", "GET", "/api/messages?server=" + s1, "", forwarded, "SRV"},
		{"M2", "DELETE", "/api/messages?server=" + s1, "", forwarded, "SRV"},
		{"M3", "POST", "/api/messages/search?server=" + s1, `{"subject":"hello"}`, forwarded, "SRV"},
		{"M4", "POST", "/api/messages?server=" + s1, `{"subject":"new","text":"t"}`, forwarded, "SRV"},
		{"M5", "GET", "/api/messages/" + f.message, "", forwarded, "OBJ"},
		{"M6", "DELETE", "/api/messages/" + f.message, "", forwarded, "OBJ"},
		{"M7", "POST", "/api/messages/" + f.message + "/forward", `{"to":"someone@example.com","text":"fwd"}`, forwarded, "OBJ"},
		{"M8", "POST", "/api/messages/" + f.message + "/reply", `{"text":"re"}`, forwarded, "OBJ"},
		{"M9", "POST", "/api/messages/" + f.message + "/screenshots", `{"emailClients":["gmail-chrome-lightmode"]}`, forwarded, "OBJ"},
		{"F1", "GET", "/api/files/attachments/" + f.attachment, "", forwarded, "OBJ"},
		{"F2", "GET", "/api/files/email/" + f.message, "", forwarded, "OBJ"},
		{"F3", "GET", "/api/files/screenshots/" + f.preview, "", forwarded, "OBJ"},
		{"A1", "GET", "/api/analysis/spam/" + f.message, "", forwarded, "OBJ"},
		{"A2", "GET", "/api/analysis/deliverability/" + f.message, "", forwarded, "OBJ"},
		{"P1", "GET", "/api/screenshots/clients", "", forwarded, "ACCT"},
		{"U1", "GET", "/api/usage/limits", "", deny403, "ACCT"},
		{"U2", "GET", "/api/usage/transactions", "", deny403, "ACCT"},
		{"D1", "GET", "/api/devices", "", deny403, "ACCT"},
		{"D2", "POST", "/api/devices", `{"name":"tablet","sharedSecret":"JBSWY3DPEHPK3PXP"}`, deny403, "ACCT"},
		{"D3", "GET", "/api/devices/" + f.device + "/otp", "", deny403, "ACCT"},
		{"D4", "POST", "/api/devices/otp", `{"sharedSecret":"JBSWY3DPEHPK3PXP"}`, deny403, "ACCT"},
		{"D5", "DELETE", "/api/devices/" + f.device, "", deny403, "ACCT"},
	}
}

// TestScopeMatrix: every route of the inbox API × every kind of key, with
// the status each gets and proof that refused requests never reached the
// upstream.
func TestScopeMatrix(t *testing.T) {
	t.Parallel()
	w := newScopeWorld(t)
	var report strings.Builder
	report.WriteString("route  standard  own-server  other-server  other-account\n")
	for i := range matrixRoutes(fixture{}) {
		f := w.reset()
		rt := matrixRoutes(f)[i]
		otherWant := rt.own
		if rt.own == forwarded && rt.class == "SRV" {
			otherWant = deny403
		} else if rt.own == forwarded && rt.class == "OBJ" {
			otherWant = deny404
		}
		cols := []string{rt.id}
		for _, k := range []struct {
			name, key string
			want      want
		}{
			{"restricted, another server", w.other, otherWant},
			{"restricted, own server", w.own, rt.own},
			{"another account", w.foreign, forwarded},
			{"standard", w.standard, forwarded},
		} {
			if k.key == w.standard || k.key == w.own {
				f = w.reset() // mutations by the previous key must not change this one's answer
				rt = matrixRoutes(f)[i]
			}
			r := w.send(k.key, rt.method, rt.target, rt.body)
			reached := w.reached(rt.method, rt.target)
			switch k.want {
			case forwarded:
				if !reached || (k.key != w.foreign && r.status >= 400) {
					t.Errorf("%s %s %s with %s key: %d (reached upstream: %v), want forwarded and answered\n%s", rt.id, rt.method, rt.target, k.name, r.status, reached, r.body)
				}
				if k.key == w.foreign && (strings.Contains(r.body, s1) || strings.Contains(r.body, s2) || strings.Contains(r.body, f.message)) {
					t.Errorf("%s with another account's key leaked account A's data: %s", rt.id, r.body)
				}
			case deny403, deny404:
				wantStatus := map[want]int{deny403: 403, deny404: 404}[k.want]
				if r.status != wantStatus || reached {
					t.Errorf("%s %s %s with %s key: %d (reached upstream: %v), want %d before the upstream\n%s", rt.id, rt.method, rt.target, k.name, r.status, reached, wantStatus, r.body)
				}
				if !strings.HasPrefix(r.body, `{"type":`) {
					t.Errorf("%s: refusal body not in the inbox API's error shape: %s", rt.id, r.body)
				}
			}
			cols = append(cols, strconv.Itoa(r.status))
		}
		report.WriteString(strings.Join([]string{cols[0], cols[4], cols[2], cols[1], cols[3]}, "  ") + "\n")
	}
	t.Logf("status by route and key (restricted keys scoped to %s):\n%s", s1, report.String())
}

// TestScopeCannotBeTalkedAround tries every way around the policy with the
// key restricted to s1.
func TestScopeCannotBeTalkedAround(t *testing.T) {
	t.Parallel()
	w := newScopeWorld(t)
	f := w.reset()

	cases := []struct {
		method, target string
		status         int
	}{
		{"GET", "/API/MESSAGES?server=" + s2, 403},
		{"GET", "/Api/Servers/" + s2, 403},
		{"GET", "/api/messages/?server=" + s1, 200},
		{"GET", "/api/messages?server=" + s1 + "&", 200},
		{"GET", "/api/servers/" + s1 + "?", 200},
		{"GET", "/api/messages//?server=" + s1, 400},
		{"GET", "/api//messages?server=" + s1, 400},
		{"GET", "/api/servers/" + s1 + "/../" + s2, 400},
		{"GET", "/api/servers/" + s1 + "/%2e%2e/" + s2, 400},
		{"GET", "/api/servers/./" + s2, 400},
		{"GET", "/api/servers/" + s2 + "%2fpassword", 400},
		{"GET", "/api/servers/" + s2 + "%2Fpassword", 400},
		{"GET", "/api/messages?server=" + s1 + "&server=" + s2, 400},
		{"GET", "/api/messages?server=" + s2 + "&server=" + s1, 400},
		{"GET", "/api/messages?server=" + s1 + "&SERVER=" + s2, 400},
		{"GET", "/api/messages?Server=" + s2 + "&server=" + s1, 400},
		{"GET", "/api/messages?server=" + s1 + "&%73erver=" + s2, 400},
		{"GET", "/api/messages?server=" + s1 + "&%53%45RVER=" + s2, 400},
		{"GET", "/api/messages?server=" + s1 + ";server=" + s2, 400},
		{"GET", "/api/messages?%73erver=" + s2, 403},
		{"GET", "/api/messages?server=%65fgh5678", 403}, // s2, percent-encoded
		{"GET", "/api/messages?server=" + strings.ToUpper(s2), 403},
		{"GET", "/api/messages", 403},
		{"GET", "/api/messages?server=", 403},
		{"GET", "/api/messages?servers=" + s1, 403},
		{"GET", "/api/servers/" + s1 + "?server=" + s2, 400},
		{"POST", "/api/messages/search?server=" + s2, 403},
		{"DELETE", "/api/messages?server=" + s2, 403},
		{"GET", "/api/servers", 403},
		{"GET", "/api/unknown", 403},
		{"OPTIONS", "/api/messages?server=" + s1, 403},
		{"get", "/api/messages?server=" + s2, 403},
	}
	for _, c := range cases {
		r := w.send(w.own, c.method, c.target, "")
		if r.status != c.status {
			t.Errorf("%s %s = %d, want %d\n%s", c.method, c.target, r.status, c.status, r.body)
		}
		if c.status >= 400 && w.reached(c.method, c.target) {
			t.Errorf("%s %s was refused but reached the upstream", c.method, c.target)
		}
		if c.status == 400 && !strings.Contains(r.body, `"code":"ambiguous_request"`) {
			t.Errorf("%s %s: 400 without the ambiguity explained: %s", c.method, c.target, r.body)
		}
	}

	// A message, attachment or preview of another inbox, on every object
	// route: 404, and no mutation reaches the upstream.
	objectRoutes := []struct{ method, target, body string }{
		{"GET", "/api/messages/" + f.otherMessage, ""},
		{"DELETE", "/api/messages/" + f.otherMessage, ""},
		{"POST", "/api/messages/" + f.otherMessage + "/forward", `{"to":"x@example.com"}`},
		{"POST", "/api/messages/" + f.otherMessage + "/reply", `{"text":"re"}`},
		{"POST", "/api/messages/" + f.otherMessage + "/screenshots", `{"emailClients":["gmail-chrome-lightmode"]}`},
		{"GET", "/api/files/attachments/" + f.otherAttachment, ""},
		{"GET", "/api/files/email/" + f.otherMessage, ""},
		{"GET", "/api/analysis/spam/" + f.otherMessage, ""},
		{"GET", "/api/analysis/deliverability/" + f.otherMessage, ""},
		{"GET", "/api/files/screenshots/never-seen-preview", ""},
		{"GET", "/api/messages/00000000-0000-4000-8000-000000000000", ""},
	}
	for _, o := range objectRoutes {
		r := w.send(w.own, o.method, o.target, o.body)
		if r.status != 404 || r.body != notFoundBodyText {
			t.Errorf("%s %s (another inbox) = %d %s, want keygate's 404", o.method, o.target, r.status, r.body)
		}
		if o.method != "GET" && w.reached(o.method, o.target) {
			t.Errorf("%s %s (another inbox) reached the upstream", o.method, o.target)
		}
		if strings.HasPrefix(o.target, "/api/files/") && w.reached(o.method, o.target) {
			t.Errorf("%s %s (another inbox) reached the upstream", o.method, o.target)
		}
	}
	// The other message is still there: nothing was deleted or sent.
	if r := w.send(w.standard, "GET", "/api/messages/"+f.otherMessage, ""); r.status != 200 {
		t.Fatalf("the other inbox's message is gone: %d", r.status)
	}
}

// TestScopeResponses: a message fetched by id, never seen before, is
// checked on its (gzip) response; and what must pass through does.
func TestScopeResponses(t *testing.T) {
	t.Parallel()
	w := newScopeWorld(t)
	f := w.reset()
	s := w.up.Load()
	fresh := s.AddMessage(w.acctA, s2, sim.NewMessage{Subject: "unseen", Text: "in s2"})
	mine := s.AddMessage(w.acctA, s1, sim.NewMessage{Subject: "mine", Text: "in s1"})

	r := w.send(w.own, "GET", "/api/messages/"+fresh.ID, "", "Accept-Encoding", "gzip")
	if r.status != 404 || r.body != notFoundBodyText {
		t.Fatalf("gzip response carrying another server: %d %s", r.status, r.body)
	}
	if !w.reached("GET", "/api/messages/"+fresh.ID) {
		t.Fatal("an unseen message was refused without asking the upstream")
	}
	r = w.send(w.own, "GET", "/api/messages/"+mine.ID, "", "Accept-Encoding", "gzip, br")
	if r.status != 200 || r.header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("own unseen message: %d %v", r.status, r.header)
	}
	zr, err := gzip.NewReader(strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if !bytes.Contains(plain, []byte(`"server":"`+s1+`"`)) {
		t.Fatalf("own message body: %s", plain)
	}

	// Search answers carry x-ms-delay, which clients poll with.
	r = w.send(w.own, "POST", "/api/messages/search?server="+s1, `{"subject":"hello"}`)
	if r.status != 200 || r.header.Get("X-Ms-Delay") != "1000" {
		t.Fatalf("search: %d, x-ms-delay %q", r.status, r.header.Get("X-Ms-Delay"))
	}
	// Attachments stream through with their headers.
	r = w.send(w.own, "GET", "/api/files/attachments/"+f.attachment, "")
	if r.status != 200 || r.header.Get("Content-Type") != "application/pdf" || r.header.Get("Content-Length") != strconv.Itoa(len("%PDF-1.4 test")) || r.body != "%PDF-1.4 test" {
		t.Fatalf("attachment: %d %v %q", r.status, r.header, r.body)
	}
	// A preview that is not ready answers 202, passed on for polling.
	f = w.resetWith(1)
	for i, want := range []int{202, 200} {
		r = w.send(w.own, "GET", "/api/files/screenshots/"+f.preview, "")
		if r.status != want {
			t.Fatalf("screenshot poll %d: %d, want %d", i, r.status, want)
		}
	}
	if r.header.Get("Content-Type") != "image/png" {
		t.Fatalf("screenshot: %v", r.header)
	}
}

const notFoundBodyText = `{"type":"NotFoundError","status":404,"errors":[{"field":"","detail":[{"description":"Not found, check input parameters.","code":"not_found"}]}]}` + "\n"
