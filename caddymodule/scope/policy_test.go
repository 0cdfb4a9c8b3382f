package scope

import (
	"errors"
	"strings"
	"testing"
)

func inboxPolicy(t testing.TB) *Policy {
	t.Helper()
	p, err := New(InboxAPI)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTableIsComplete(t *testing.T) {
	p := inboxPolicy(t)
	if len(p.Routes()) != 28 {
		t.Fatalf("%d routes, the inbox API has 28", len(p.Routes()))
	}
	seen := map[string]bool{}
	for _, r := range p.Routes() {
		if seen[r.ID] {
			t.Fatalf("route id %s twice", r.ID)
		}
		seen[r.ID] = true
	}
}

func TestRead(t *testing.T) {
	p := inboxPolicy(t)
	cases := []struct {
		method, path, query string
		route, server, obj  string
	}{
		{"GET", "/api/servers", "", "S1", "", ""},
		{"POST", "/api/servers/", "", "S2", "", ""}, // PHP's trailing slash
		{"GET", "/api/servers/abcd1234", "", "S3", "abcd1234", ""},
		{"GET", "/API/Servers/abcd1234/PASSWORD", "", "S4", "abcd1234", ""},
		{"PUT", "/api/servers/abcd1234", "", "S5", "abcd1234", ""},
		{"DELETE", "/api/servers/abcd1234", "server=abcd1234", "S6", "abcd1234", ""},
		{"GET", "/api/messages", "server=abcd1234&page=0&itemsPerPage=50", "M1", "abcd1234", ""},
		{"GET", "/api/messages", "page=0&SERVER=abcd1234", "M1", "abcd1234", ""},
		{"GET", "/api/messages", "%73erver=abcd1234", "M1", "abcd1234", ""},
		{"GET", "/api/messages", "server=abc%31", "M1", "abc1", ""},
		{"GET", "/api/messages", "receivedAfter=2024-01-01T00:00:00+00:00&server=abcd1234", "M1", "abcd1234", ""},
		{"GET", "/api/messages", "", "M1", "", ""},
		{"GET", "/api/messages", "x=1;y=2&server=abcd1234", "M1", "abcd1234", ""},
		{"GET", "/api/messages", "server=abc%3B", "M1", "abc;", ""},
		{"GET", "/api/messages", "server=", "M1", "", ""},
		{"DELETE", "/api/messages", "server=abcd1234", "M2", "abcd1234", ""},
		{"POST", "/api/messages/search", "server=abcd1234", "M3", "abcd1234", ""},
		{"POST", "/api/messages", "server=abcd1234", "M4", "abcd1234", ""},
		{"GET", "/api/messages/6b3f0c2e-1111", "", "M5", "", "6b3f0c2e-1111"},
		{"HEAD", "/api/messages/6b3f0c2e-1111", "", "M5", "", "6b3f0c2e-1111"},
		{"DELETE", "/api/messages/m1", "", "M6", "", "m1"},
		{"POST", "/api/messages/m1/forward", "", "M7", "", "m1"},
		{"POST", "/api/messages/m1/reply", "", "M8", "", "m1"},
		{"POST", "/api/messages/m1/screenshots", "", "M9", "", "m1"},
		{"GET", "/api/files/attachments/a1", "", "F1", "", "a1"},
		{"GET", "/api/files/email/m1", "", "F2", "", "m1"},
		{"GET", "/api/files/screenshots/p1", "", "F3", "", "p1"},
		{"GET", "/api/analysis/spam/m1", "", "A1", "", "m1"},
		{"GET", "/api/analysis/deliverability/m1", "", "A2", "", "m1"},
		{"GET", "/api/screenshots/clients", "", "P1", "", ""},
		{"GET", "/api/usage/limits", "", "U1", "", ""},
		{"GET", "/api/usage/transactions", "", "U2", "", ""},
		{"GET", "/api/devices", "", "D1", "", ""},
		{"POST", "/api/devices", "", "D2", "", ""},
		{"GET", "/api/devices/d1/otp", "", "D3", "", ""},
		{"POST", "/api/devices/otp", "", "D4", "", ""},
		{"DELETE", "/api/devices/d1", "", "D5", "", ""},
		{"GET", "/api/messages/m%31", "", "M5", "", "m1"},
		{"get", "/api/servers", "", "S1", "", ""},
		{"GET", "/api/other", "", "", "", ""},
		{"PATCH", "/api/servers/abcd1234", "", "", "", ""},
		{"GET", "/", "", "", "", ""},
		{"GET", "/a/b/c/d/e/f/g/h/i/j", "", "", "", ""},
	}
	for _, c := range cases {
		m, err := p.Read(c.method, c.path, c.query)
		if err != nil {
			t.Errorf("%s %s?%s: %v", c.method, c.path, c.query, err)
			continue
		}
		id := ""
		if m.Route != nil {
			id = m.Route.ID
		}
		if id != c.route || m.Server != c.server || m.Object != c.obj {
			t.Errorf("%s %s?%s = %s server %q object %q; want %s %q %q", c.method, c.path, c.query, id, m.Server, m.Object, c.route, c.server, c.obj)
		}
	}
}

func TestReadRefusesAmbiguity(t *testing.T) {
	p := inboxPolicy(t)
	cases := []struct{ path, query string }{
		{"/api/servers/../servers/abcd1234", ""},
		{"/api/servers/./abcd1234", ""},
		{"/api/servers/%2e%2e/x", ""},
		{"/api/servers/%2E/x", ""},
		{"/api/messages/m1%2fforward", ""},
		{"/api/messages/m1%2Fforward", ""},
		{"/api/messages/m1%5cforward", ""},
		{"/api/messages/m1\\forward", ""},
		{"/api//messages", "server=abcd1234"},
		{"//api/messages", "server=abcd1234"},
		{"/api/messages//", "server=abcd1234"},
		{"/api/messages/m1;x=y", ""},
		{"/api/messages/m%00", ""},
		{"/api/messages/m%zz", ""},
		{"api/messages", ""},
		{"", ""},
		{"/api/messages", "server=a&server=b"},
		{"/api/messages", "server=a&server=a"},
		{"/api/messages", "server=a&SERVER=b"},
		{"/api/messages", "server=a&%73erver=b"},
		{"/api/messages", "server=a&%53ERVER=b"},
		{"/api/messages", "server=a;server=b"},
		{"/api/messages", "x=1;server=a"},
		{"/api/messages", "server=a;x=1"},
		{"/api/messages", "server=a;"},
		{"/api/messages", "x;%73erver=a"},
		{"/api/servers/abcd1234", "x=1;server=abcd1234"},
		{"/api/messages/m1", "x;server=a"},
		{"/api/messages", "server=a&+server=b"},
		{"/api/messages", "server=%zz"},
		{"/api/messages", "%zz=1"},
		{"/api/servers/abcd1234", "server=efgh5678"},
	}
	for _, c := range cases {
		if _, err := p.Read("GET", c.path, c.query); !errors.Is(err, ErrAmbiguous) {
			t.Errorf("Read(%q, %q) = %v, want ErrAmbiguous", c.path, c.query, err)
		}
	}
}

func TestDecide(t *testing.T) {
	p := inboxPolicy(t)
	const own, other = "abcd1234", "efgh5678"
	cases := []struct {
		method, path, query string
		want                Verdict
	}{
		{"GET", "/api/servers", "", Forbidden},
		{"POST", "/api/servers", "", Forbidden},
		{"GET", "/api/servers/" + own, "", Pass},
		{"GET", "/api/servers/" + other, "", Forbidden},
		{"GET", "/api/servers/" + strings.ToUpper(own), "", Forbidden}, // another id to a case-sensitive upstream
		{"GET", "/api/servers/" + own + "/password", "", Pass},
		{"GET", "/api/servers/" + other + "/password", "", Forbidden},
		{"PUT", "/api/servers/" + own, "", Forbidden},
		{"DELETE", "/api/servers/" + own, "", Forbidden},
		{"GET", "/api/messages", "server=" + own, Pass},
		{"GET", "/api/messages", "server=" + other, Forbidden},
		{"GET", "/api/messages", "", Forbidden},
		{"GET", "/api/messages", "server=", Forbidden},
		{"DELETE", "/api/messages", "server=" + own, Pass},
		{"DELETE", "/api/messages", "server=" + other, Forbidden},
		{"POST", "/api/messages/search", "server=" + own, Pass},
		{"POST", "/api/messages/search", "server=" + other, Forbidden},
		{"POST", "/api/messages", "server=" + own, Pass},
		{"POST", "/api/messages", "server=" + other, Forbidden},
		{"GET", "/api/messages/m1", "", CheckResponse},
		{"HEAD", "/api/messages/m1", "", CheckObject}, // no body to check
		{"head", "/api/messages/m1", "", CheckObject},
		{"HEAD", "/api/files/attachments/a1", "", CheckObject},
		{"DELETE", "/api/messages/m1", "", CheckObject},
		{"POST", "/api/messages/m1/forward", "", CheckObject},
		{"POST", "/api/messages/m1/reply", "", CheckObject},
		{"POST", "/api/messages/m1/screenshots", "", CheckObject},
		{"GET", "/api/files/attachments/a1", "", CheckObject},
		{"GET", "/api/files/email/m1", "", CheckObject},
		{"GET", "/api/files/screenshots/p1", "", CheckObject},
		{"GET", "/api/analysis/spam/m1", "", CheckObject},
		{"GET", "/api/analysis/deliverability/m1", "", CheckObject},
		{"GET", "/api/screenshots/clients", "", Pass},
		{"GET", "/api/usage/limits", "", Forbidden},
		{"GET", "/api/usage/transactions", "", Forbidden},
		{"GET", "/api/devices", "", Forbidden},
		{"POST", "/api/devices", "", Forbidden},
		{"GET", "/api/devices/d1/otp", "", Forbidden},
		{"POST", "/api/devices/otp", "", Forbidden},
		{"DELETE", "/api/devices/d1", "", Forbidden},
		{"GET", "/api/unknown", "", Forbidden},
		{"GET", "/healthz", "", Forbidden},
	}
	for _, c := range cases {
		m, err := p.Read(c.method, c.path, c.query)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
		if got := Decide(m, own); got != c.want {
			t.Errorf("%s %s?%s = %v, want %v", c.method, c.path, c.query, got, c.want)
		}
	}
}

func TestCustomRoutes(t *testing.T) {
	p, err := New(InboxAPI, []Route{
		{Method: "GET", Path: "/api/servers/{server}/stats", Restricted: OwnServer},
		{Method: "GET", Path: "/api/usage/limits", Restricted: Allow}, // override the built-in route
		{Method: "GET", Path: "/status", Restricted: Allow},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		want Verdict
	}{
		{"/api/servers/abcd1234/stats", Pass},
		{"/api/servers/efgh5678/stats", Forbidden},
		{"/api/usage/limits", Pass},
		{"/status", Pass},
	} {
		m, _ := p.Read("GET", c.path, "")
		if got := Decide(m, "abcd1234"); got != c.want {
			t.Errorf("%s = %v, want %v", c.path, got, c.want)
		}
	}
	if len(p.Routes()) != 30 {
		t.Fatalf("%d routes; an override must replace, not add", len(p.Routes()))
	}
	for _, bad := range []Route{
		{Method: "GET", Path: "no-slash"},
		{Method: "", Path: "/x"},
		{Method: "GET", Path: "/x/{server}/{message}"},
		{Method: "GET", Path: "/x/{nope}"},
		{Method: "GET", Path: "/x/a{server}"},
		{Method: "GET", Path: "/x", Restricted: OwnServer},
		{Method: "GET", Path: "/x/{server}", Restricted: OwnObject},
		{Method: "GET", Path: "/x/{attachment}", Restricted: OwnObjectResponse},
	} {
		if _, err := New([]Route{bad}); err == nil {
			t.Errorf("New accepted %+v", bad)
		}
	}
}

// TestReadAllocs: `make test` runs it without -race too.
func TestReadAllocs(t *testing.T) {
	p := inboxPolicy(t)
	if a := testing.AllocsPerRun(100, func() {
		m, _ := p.Read("GET", "/api/messages", "server=abcd1234&page=0")
		Decide(m, "abcd1234")
	}); a != 0 {
		t.Fatalf("Read+Decide allocate %v times", a)
	}
}

func FuzzRead(f *testing.F) {
	p := inboxPolicy(f)
	f.Add("GET", "/api/messages", "server=abcd1234")
	f.Add("GET", "/api/servers/abcd1234", "server=abcd1234")
	f.Add("POST", "/api/messages/m1/forward", "")
	f.Fuzz(func(t *testing.T, method, path, query string) {
		m, err := p.Read(method, path, query)
		if err != nil {
			return
		}
		// A request read as addressing the key's server never carries a
		// second, different server parameter.
		if m.Route != nil && Decide(m, "abcd1234") == Pass && m.Route.Restricted == OwnServer {
			if m.Server != "abcd1234" {
				t.Fatalf("passed with server %q", m.Server)
			}
			if s, found, err := serverParam(query); err == nil && found && s != "abcd1234" {
				t.Fatalf("passed with a server parameter %q", s)
			}
		}
	})
}

func BenchmarkReadDecideServerRoute(b *testing.B) {
	p := inboxPolicy(b)
	b.ReportAllocs()
	for b.Loop() {
		m, _ := p.Read("GET", "/api/messages", "server=abcd1234&page=0&itemsPerPage=50")
		if Decide(m, "abcd1234") != Pass {
			b.Fatal("not passed")
		}
	}
}

func BenchmarkReadDecideServerPath(b *testing.B) {
	p := inboxPolicy(b)
	b.ReportAllocs()
	for b.Loop() {
		m, _ := p.Read("GET", "/api/servers/abcd1234/password", "")
		if Decide(m, "abcd1234") != Pass {
			b.Fatal("not passed")
		}
	}
}
