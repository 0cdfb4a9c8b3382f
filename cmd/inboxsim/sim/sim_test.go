package sim

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	acct  = "acct_alpha"
	other = "acct_other"
)

var fixedNow = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

// client talks to a simulator over real HTTP, without transparent gzip.
type client struct {
	t  *testing.T
	ts *httptest.Server
	hc *http.Client
}

func newClient(t *testing.T, s *Server) *client {
	t.Helper()
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return &client{t: t, ts: ts, hc: &http.Client{Transport: &http.Transport{DisableCompression: true}}}
}

// do sends a request; body is nil, a string (sent as is) or a value sent as
// JSON; hdr are header name/value pairs.
func (c *client) do(method, path, account string, body any, hdr ...string) (int, http.Header, []byte) {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, c.ts.URL+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if account != "" {
		req.Header.Set(AccountHeader, account)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return res.StatusCode, res.Header, b
}

func obj(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("not a JSON object: %v: %s", err, b)
	}
	return m
}

func hasKeys(t *testing.T, m map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Fatalf("missing key %q in %v", k, m)
		}
	}
}

func itemsOf(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var l struct {
		Items []map[string]any `json:"items"`
	}
	if err := json.Unmarshal(b, &l); err != nil || l.Items == nil {
		t.Fatalf("not a list: %v: %s", err, b)
	}
	return l.Items
}

// errorField checks the error shape and returns errors[0].field.
func errorOf(t *testing.T, b []byte, status int, typ string) string {
	t.Helper()
	if !bytes.HasPrefix(b, []byte(`{"type":`)) {
		t.Fatalf("error body does not start with type: %s", b)
	}
	var e apiError
	if err := json.Unmarshal(b, &e); err != nil || e.Status != status || e.Type != typ ||
		len(e.Errors) != 1 || len(e.Errors[0].Detail) != 1 || e.Errors[0].Detail[0].Description == "" {
		t.Fatalf("want %d %s error, got %s", status, typ, b)
	}
	return e.Errors[0].Field
}

func sampleMessage(serverID string) NewMessage {
	return NewMessage{
		From: "Ann <ann@x.example>", To: "bob@" + serverID + ".mailosaur.net",
		Subject: "Hello there", Text: "Your code is 123456, see https://x.example/a",
		HTML: `<p>Code 123456</p><a href="https://x.example/a">open</a><img src="https://x.example/i.png" alt="logo">`,
		Attachments: []NewAttachment{
			{FileName: "a.txt", ContentType: "text/plain", Content: []byte("hello, attachment")},
			{FileName: "b.bin", Content: []byte{0, 1, 2, 3, 255}},
		},
	}
}

// TestEveryRoute walks all 28 routes for one account, in an order where
// each can succeed, checking status and JSON shape.
func TestEveryRoute(t *testing.T) {
	s := New(Options{Now: func() time.Time { return fixedNow }})
	c := newClient(t, s)
	a := s.AddServer(acct, "Alpha")
	b := s.AddServer(acct, "Beta")
	m := s.AddMessage(acct, a.ID, sampleMessage(a.ID))
	s.AddMessage(acct, a.ID, NewMessage{From: "carl@x.example", To: "bob@" + a.ID + ".mailosaur.net", Subject: "Second", Text: "two"})
	if len(a.ID) != 8 || !isServerID(a.ID) || len(m.ID) != 36 || len(m.Attachments) != 2 {
		t.Fatalf("seeded: %+v %+v", a, m)
	}
	att := m.Attachments[0]

	var created, sent, preview, dev string
	type row struct {
		name   string
		method string
		path   func() string
		body   any
		status int
		check  func(t *testing.T, b []byte, h http.Header)
	}
	p := func(s string) func() string { return func() string { return s } }
	rows := []row{
		{"S1 list servers", "GET", p("/api/servers"), nil, 200, func(t *testing.T, body []byte, _ http.Header) {
			it := itemsOf(t, body)
			if len(it) != 2 || it[0]["id"] != a.ID || it[0]["messages"] != 2.0 || it[1]["name"] != "Beta" {
				t.Fatalf("%s", body)
			}
			hasKeys(t, it[0], "id", "name", "users", "messages")
		}},
		{"S2 create server", "POST", p("/api/servers"), map[string]any{"name": "Gamma"}, 200, func(t *testing.T, body []byte, _ http.Header) {
			o := obj(t, body)
			hasKeys(t, o, "id", "name", "users", "messages")
			created = o["id"].(string)
			if !isServerID(created) || o["name"] != "Gamma" || o["messages"] != 0.0 {
				t.Fatalf("%s", body)
			}
		}},
		{"S2 without name", "POST", p("/api/servers"), map[string]any{}, 400, func(t *testing.T, body []byte, _ http.Header) {
			if f := errorOf(t, body, 400, "ValidationError"); f != "name" {
				t.Fatalf("field %q", f)
			}
		}},
		{"S3 get server", "GET", p("/api/servers/" + a.ID), nil, 200, func(t *testing.T, body []byte, _ http.Header) {
			if o := obj(t, body); o["id"] != a.ID || o["messages"] != 2.0 {
				t.Fatalf("%s", body)
			}
		}},
		{"S4 password", "GET", p("/api/servers/" + a.ID + "/password"), nil, 200, func(t *testing.T, body []byte, _ http.Header) {
			if v, _ := obj(t, body)["value"].(string); len(v) < 8 {
				t.Fatalf("%s", body)
			}
		}},
		{"S5 update server", "PUT", p("/api/servers/" + a.ID), map[string]any{"id": a.ID, "name": "Alpha 2", "users": []string{}, "messages": 2}, 200, func(t *testing.T, body []byte, _ http.Header) {
			if o := obj(t, body); o["name"] != "Alpha 2" || o["id"] != a.ID {
				t.Fatalf("%s", body)
			}
		}},
		{"S5 id mismatch", "PUT", p("/api/servers/" + a.ID), map[string]any{"id": b.ID, "name": "x"}, 400, func(t *testing.T, body []byte, _ http.Header) {
			if f := errorOf(t, body, 400, "ValidationError"); f != "id" {
				t.Fatalf("field %q", f)
			}
		}},
		{"S6 delete server", "DELETE", func() string { return "/api/servers/" + created }, nil, 204, nil},
		{"S3 deleted server", "GET", func() string { return "/api/servers/" + created }, nil, 404, func(t *testing.T, body []byte, _ http.Header) {
			errorOf(t, body, 404, "NotFoundError")
		}},
		{"M1 list messages", "GET", p("/api/messages?server=" + a.ID + "&page=0&itemsPerPage=50"), nil, 200, func(t *testing.T, body []byte, _ http.Header) {
			it := itemsOf(t, body)
			if len(it) != 2 || it[1]["id"] != m.ID || it[1]["attachments"] != 2.0 || it[1]["server"] != a.ID || it[0]["subject"] != "Second" {
				t.Fatalf("%s", body)
			}
			hasKeys(t, it[1], "id", "type", "server", "from", "to", "cc", "bcc", "received", "subject", "summary", "attachments")
			from := it[1]["from"].([]any)[0].(map[string]any)
			if from["name"] != "Ann" || from["email"] != "ann@x.example" {
				t.Fatalf("from %v", from)
			}
			hasKeys(t, from, "name", "email", "phone")
		}},
		{"M1 page size", "GET", p("/api/messages?server=" + a.ID + "&itemsPerPage=1&page=1"), nil, 200, func(t *testing.T, body []byte, _ http.Header) {
			if it := itemsOf(t, body); len(it) != 1 || it[0]["id"] != m.ID {
				t.Fatalf("%s", body)
			}
		}},
		{"M1 receivedAfter", "GET", p("/api/messages?server=" + a.ID + "&receivedAfter=2030-01-01T00:00:00.000Z"), nil, 200, func(t *testing.T, body []byte, _ http.Header) {
			if it := itemsOf(t, body); len(it) != 0 {
				t.Fatalf("%s", body)
			}
		}},
		{"M1 without server", "GET", p("/api/messages"), nil, 400, func(t *testing.T, body []byte, _ http.Header) {
			if f := errorOf(t, body, 400, "ValidationError"); f != "server" {
				t.Fatalf("field %q", f)
			}
		}},
		{"M1 bad itemsPerPage", "GET", p("/api/messages?server=" + a.ID + "&itemsPerPage=x"), nil, 400, nil},
		{"M3 search", "POST", p("/api/messages/search?server=" + a.ID), map[string]any{"subject": "HELLO", "sentFrom": "ann@x.example", "match": "ALL"}, 200, func(t *testing.T, body []byte, h http.Header) {
			if it := itemsOf(t, body); len(it) != 1 || it[0]["id"] != m.ID {
				t.Fatalf("%s", body)
			}
			if h.Get("x-ms-delay") != "1000" {
				t.Fatalf("x-ms-delay %q", h.Get("x-ms-delay"))
			}
		}},
		{"M4 send", "POST", p("/api/messages?server=" + b.ID), map[string]any{
			"subject": "Sent", "from": "me@" + b.ID + ".mailosaur.net", "to": "you@example.com", "send": true, "text": "hi", "html": "<p>hi</p>",
			"attachments": []map[string]string{{"fileName": "x.csv", "contentType": "text/csv", "content": base64.StdEncoding.EncodeToString([]byte("a,b\n"))}},
		}, 200, func(t *testing.T, body []byte, _ http.Header) {
			o := obj(t, body)
			sent = o["id"].(string)
			if o["server"] != b.ID || o["subject"] != "Sent" || len(o["attachments"].([]any)) != 1 {
				t.Fatalf("%s", body)
			}
		}},
		{"M4 bad attachment", "POST", p("/api/messages?server=" + b.ID), map[string]any{"attachments": []map[string]string{{"content": "!!"}}}, 400, nil},
		{"M5 get message", "GET", p("/api/messages/" + m.ID), nil, 200, func(t *testing.T, body []byte, _ http.Header) {
			o := obj(t, body)
			hasKeys(t, o, "id", "type", "server", "from", "to", "cc", "bcc", "received", "subject", "html", "text", "attachments", "metadata")
			if o["server"] != a.ID || o["type"] != "Email" || o["received"] != "2025-03-04T05:06:07Z" {
				t.Fatalf("%s", body)
			}
			html := o["html"].(map[string]any)
			hasKeys(t, html, "body", "links", "images")
			if l := html["links"].([]any); len(l) != 1 || l[0].(map[string]any)["href"] != "https://x.example/a" {
				t.Fatalf("links %v", l)
			}
			hasKeys(t, o["text"].(map[string]any), "body")
			at := o["attachments"].([]any)[0].(map[string]any)
			hasKeys(t, at, "id", "contentType", "fileName", "length", "url")
			if at["id"] != att.ID || at["length"] != 17.0 || at["fileName"] != "a.txt" {
				t.Fatalf("attachment %v", at)
			}
		}},
		{"M7 forward", "POST", p("/api/messages/" + m.ID + "/forward"), map[string]any{"to": "z@example.com", "text": "fyi"}, 200, func(t *testing.T, body []byte, _ http.Header) {
			o := obj(t, body)
			if o["server"] != a.ID || o["subject"] != "FW: Hello there" || o["id"] == m.ID {
				t.Fatalf("%s", body)
			}
		}},
		{"M7 without to", "POST", p("/api/messages/" + m.ID + "/forward"), map[string]any{"text": "fyi"}, 400, nil},
		{"M8 reply", "POST", p("/api/messages/" + m.ID + "/reply"), map[string]any{"text": "thanks"}, 200, func(t *testing.T, body []byte, _ http.Header) {
			o := obj(t, body)
			to := o["to"].([]any)[0].(map[string]any)
			if o["server"] != a.ID || o["subject"] != "RE: Hello there" || to["email"] != "ann@x.example" {
				t.Fatalf("%s", body)
			}
		}},
		{"M9 screenshots", "POST", p("/api/messages/" + m.ID + "/screenshots"), map[string]any{"emailClients": []string{"gmail-chrome-lightmode"}}, 200, func(t *testing.T, body []byte, _ http.Header) {
			it := itemsOf(t, body)
			if len(it) != 1 || it[0]["emailClient"] != "gmail-chrome-lightmode" {
				t.Fatalf("%s", body)
			}
			hasKeys(t, it[0], "id", "emailClient", "disableImages")
			preview = it[0]["id"].(string)
		}},
		{"M9 unknown client", "POST", p("/api/messages/" + m.ID + "/screenshots"), map[string]any{"emailClients": []string{"nope"}}, 400, nil},
		{"F1 attachment", "GET", p("/api/files/attachments/" + att.ID), nil, 200, func(t *testing.T, body []byte, h http.Header) {
			if string(body) != "hello, attachment" || h.Get("Content-Type") != "text/plain" || h.Get("Content-Length") != "17" {
				t.Fatalf("%q %v", body, h)
			}
		}},
		{"F2 raw email", "GET", p("/api/files/email/" + m.ID), nil, 200, func(t *testing.T, body []byte, h http.Header) {
			if h.Get("Content-Type") != "message/rfc822" || !bytes.Contains(body, []byte("Subject: Hello there")) ||
				!bytes.Contains(body, []byte("filename=a.txt")) {
				t.Fatalf("%v %s", h, body)
			}
		}},
		{"F3 screenshot not ready", "GET", func() string { return "/api/files/screenshots/" + preview }, nil, 202, func(t *testing.T, body []byte, _ http.Header) {
			if len(body) != 0 {
				t.Fatalf("%q", body)
			}
		}},
		{"F3 screenshot ready", "GET", func() string { return "/api/files/screenshots/" + preview }, nil, 200, func(t *testing.T, body []byte, h http.Header) {
			if h.Get("Content-Type") != "image/png" {
				t.Fatal(h)
			}
			if _, err := png.Decode(bytes.NewReader(body)); err != nil {
				t.Fatal(err)
			}
		}},
		{"A1 spam", "GET", p("/api/analysis/spam/" + m.ID), nil, 200, func(t *testing.T, body []byte, _ http.Header) {
			hasKeys(t, obj(t, body), "spamFilterResults", "score")
		}},
		{"A2 deliverability", "GET", p("/api/analysis/deliverability/" + m.ID), nil, 200, func(t *testing.T, body []byte, _ http.Header) {
			hasKeys(t, obj(t, body), "spf", "dkim", "dmarc", "blockLists", "content", "dnsRecords", "spamAssassin")
		}},
		{"P1 clients", "GET", p("/api/screenshots/clients"), nil, 200, func(t *testing.T, body []byte, _ http.Header) {
			it := itemsOf(t, body)
			if len(it) < 3 {
				t.Fatalf("%s", body)
			}
			hasKeys(t, it[0], "id", "name", "platformGroup", "platformType", "canDisableImages")
		}},
		{"U1 limits", "GET", p("/api/usage/limits"), nil, 200, func(t *testing.T, body []byte, _ http.Header) {
			o := obj(t, body)
			hasKeys(t, o, "servers", "users", "email", "sms")
			if sv := o["servers"].(map[string]any); sv["current"] != 2.0 || sv["limit"] == nil {
				t.Fatalf("%s", body)
			}
		}},
		{"U2 transactions", "GET", p("/api/usage/transactions"), nil, 200, func(t *testing.T, body []byte, _ http.Header) {
			if it := itemsOf(t, body); len(it) != 1 || it[0]["email"] != 5.0 {
				t.Fatalf("%s", body)
			}
		}},
		{"D1 no devices", "GET", p("/api/devices"), nil, 200, func(t *testing.T, body []byte, _ http.Header) {
			if it := itemsOf(t, body); len(it) != 0 {
				t.Fatalf("%s", body)
			}
		}},
		{"D2 create device", "POST", p("/api/devices"), map[string]any{"name": "phone", "sharedSecret": "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"}, 200, func(t *testing.T, body []byte, _ http.Header) {
			o := obj(t, body)
			hasKeys(t, o, "id", "name")
			dev = o["id"].(string)
		}},
		{"D2 bad secret", "POST", p("/api/devices"), map[string]any{"name": "phone", "sharedSecret": "1!"}, 400, func(t *testing.T, body []byte, _ http.Header) {
			if f := errorOf(t, body, 400, "ValidationError"); f != "sharedSecret" {
				t.Fatalf("field %q", f)
			}
		}},
		{"D1 one device", "GET", p("/api/devices"), nil, 200, func(t *testing.T, body []byte, _ http.Header) {
			if it := itemsOf(t, body); len(it) != 1 || it[0]["name"] != "phone" {
				t.Fatalf("%s", body)
			}
		}},
		{"D3 device otp", "GET", func() string { return "/api/devices/" + dev + "/otp" }, nil, 200, func(t *testing.T, body []byte, _ http.Header) {
			o := obj(t, body)
			code, _ := o["code"].(string)
			if len(code) != 6 || o["expires"] != "2025-03-04T05:06:30Z" {
				t.Fatalf("%s", body)
			}
		}},
		{"D4 otp from secret", "POST", p("/api/devices/otp"), map[string]any{"sharedSecret": "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"}, 200, func(t *testing.T, body []byte, _ http.Header) {
			hasKeys(t, obj(t, body), "code", "expires")
		}},
		{"D5 delete device", "DELETE", func() string { return "/api/devices/" + dev }, nil, 204, nil},
		{"D5 again", "DELETE", func() string { return "/api/devices/" + dev }, nil, 404, nil},
		{"M6 delete message", "DELETE", p("/api/messages/" + m.ID), nil, 204, nil},
		{"M5 deleted", "GET", p("/api/messages/" + m.ID), nil, 404, nil},
		{"F1 of deleted message", "GET", p("/api/files/attachments/" + att.ID), nil, 404, nil},
		{"F3 of deleted message", "GET", func() string { return "/api/files/screenshots/" + preview }, nil, 404, nil},
		{"M2 delete all", "DELETE", p("/api/messages?server=" + a.ID), nil, 204, nil},
		{"M1 after delete all", "GET", p("/api/messages?server=" + a.ID), nil, 200, func(t *testing.T, body []byte, _ http.Header) {
			if it := itemsOf(t, body); len(it) != 0 {
				t.Fatalf("%s", body)
			}
		}},
		{"M5 sent message still there", "GET", func() string { return "/api/messages/" + sent }, nil, 200, nil},
		{"unknown route", "GET", p("/api/nothing"), nil, 404, func(t *testing.T, body []byte, _ http.Header) {
			errorOf(t, body, 404, "NotFoundError")
		}},
		{"wrong method", "PATCH", p("/api/servers"), nil, 405, func(t *testing.T, body []byte, h http.Header) {
			errorOf(t, body, 405, "MethodNotAllowedError")
			if h.Get("Allow") != "GET, POST" {
				t.Fatalf("Allow %q", h.Get("Allow"))
			}
		}},
	}
	for _, r := range rows {
		status, h, body := c.do(r.method, r.path(), acct, r.body)
		if status != r.status {
			t.Fatalf("%s: status %d, want %d: %s", r.name, status, r.status, body)
		}
		if r.check != nil {
			t.Run(r.name, func(t *testing.T) { r.check(t, body, h) })
		}
	}

	hit := map[string]bool{}
	for _, seen := range s.Requests() {
		if seen.Status < 300 {
			hit[seen.Route] = true
		}
	}
	for _, id := range Routes() {
		if !hit[id] {
			t.Errorf("route %s never succeeded", id)
		}
	}
	if len(Routes()) != 28 {
		t.Fatalf("%d routes", len(Routes()))
	}
}

func TestUnauthenticated(t *testing.T) {
	s := New(Options{})
	c := newClient(t, s)
	for _, path := range []string{"/api/servers", "/api/nothing"} {
		status, _, body := c.do("GET", path, "", nil)
		if status != 401 {
			t.Fatalf("%s: %d", path, status)
		}
		errorOf(t, body, 401, "AuthenticationError")
	}
	if seen := s.Requests(); len(seen) != 2 || seen[0].Account != "" || seen[0].Status != 401 {
		t.Fatalf("%+v", seen)
	}
	s.Reset()
	if len(s.Requests()) != 0 {
		t.Fatal("Reset kept requests")
	}
}

func TestAccountIsolation(t *testing.T) {
	s := New(Options{ScreenshotDelay: -1})
	c := newClient(t, s)
	a := s.AddServer(acct, "Mine")
	m := s.AddMessage(acct, a.ID, sampleMessage(a.ID))
	_, _, body := c.do("POST", "/api/messages/"+m.ID+"/screenshots", acct, map[string]any{"emailClients": []string{"gmail-chrome-lightmode"}})
	preview := itemsOf(t, body)[0]["id"].(string)
	_, _, body = c.do("POST", "/api/devices", acct, map[string]any{"name": "d", "sharedSecret": "JBSWY3DPEHPK3PXP"})
	dev := obj(t, body)["id"].(string)
	s.AddServer(other, "Theirs")

	for _, r := range []struct{ method, path string }{
		{"GET", "/api/servers/" + a.ID},
		{"GET", "/api/servers/" + a.ID + "/password"},
		{"PUT", "/api/servers/" + a.ID},
		{"DELETE", "/api/servers/" + a.ID},
		{"GET", "/api/messages?server=" + a.ID},
		{"DELETE", "/api/messages?server=" + a.ID},
		{"POST", "/api/messages/search?server=" + a.ID},
		{"POST", "/api/messages?server=" + a.ID},
		{"GET", "/api/messages/" + m.ID},
		{"DELETE", "/api/messages/" + m.ID},
		{"POST", "/api/messages/" + m.ID + "/forward"},
		{"POST", "/api/messages/" + m.ID + "/reply"},
		{"POST", "/api/messages/" + m.ID + "/screenshots"},
		{"GET", "/api/files/attachments/" + m.Attachments[0].ID},
		{"GET", "/api/files/email/" + m.ID},
		{"GET", "/api/files/screenshots/" + preview},
		{"GET", "/api/analysis/spam/" + m.ID},
		{"GET", "/api/analysis/deliverability/" + m.ID},
		{"GET", "/api/devices/" + dev + "/otp"},
		{"DELETE", "/api/devices/" + dev},
	} {
		status, _, body := c.do(r.method, r.path, other, `{"name":"x","to":"a@b.c","emailClients":["gmail-chrome-lightmode"]}`)
		if status != 404 {
			t.Fatalf("%s %s as other: %d %s", r.method, r.path, status, body)
		}
		errorOf(t, body, 404, "NotFoundError")
	}
	_, _, body = c.do("GET", "/api/servers", other, nil)
	if it := itemsOf(t, body); len(it) != 1 || it[0]["name"] != "Theirs" {
		t.Fatalf("%s", body)
	}
	_, _, body = c.do("GET", "/api/devices", other, nil)
	if it := itemsOf(t, body); len(it) != 0 {
		t.Fatalf("%s", body)
	}
	// Everything is still there for its owner.
	for _, path := range []string{"/api/servers/" + a.ID, "/api/messages/" + m.ID, "/api/files/screenshots/" + preview, "/api/devices/" + dev + "/otp"} {
		if status, _, body := c.do("GET", path, acct, nil); status != 200 {
			t.Fatalf("%s: %d %s", path, status, body)
		}
	}
}

func TestAttachmentDownload(t *testing.T) {
	s := New(Options{Gzip: true})
	c := newClient(t, s)
	a := s.AddServer(acct, "A")
	content := bytes.Repeat([]byte("binary\x00\xff"), 1000)
	m := s.AddMessage(acct, a.ID, NewMessage{Subject: "file", Attachments: []NewAttachment{{FileName: "big.bin", ContentType: "application/zip", Content: content}}})
	status, h, body := c.do("GET", "/api/files/attachments/"+m.Attachments[0].ID, acct, nil, "Accept-Encoding", "gzip")
	if status != 200 || !bytes.Equal(body, content) || h.Get("Content-Type") != "application/zip" ||
		h.Get("Content-Length") != fmt.Sprint(len(content)) || h.Get("Content-Encoding") != "" {
		t.Fatalf("%d %v", status, h)
	}
	status, h, body = c.do("GET", "/api/files/email/"+m.ID, acct, nil, "Accept-Encoding", "gzip")
	if status != 200 || h.Get("Content-Encoding") != "" || !bytes.Contains(body, []byte("Content-Type: application/zip")) {
		t.Fatalf("%d %v %s", status, h, body)
	}
}

func TestScreenshotPolling(t *testing.T) {
	for _, tc := range []struct{ delay, accepted int }{{0, 1}, {3, 3}, {-1, 0}} {
		t.Run(fmt.Sprint(tc.delay), func(t *testing.T) {
			s := New(Options{ScreenshotDelay: tc.delay})
			c := newClient(t, s)
			a := s.AddServer(acct, "A")
			m := s.AddMessage(acct, a.ID, sampleMessage(a.ID))
			_, _, body := c.do("POST", "/api/messages/"+m.ID+"/screenshots", acct, map[string]any{
				"previews": []map[string]any{{"emailClient": "outlook-2021-windows-lightmode", "disableImages": true}}})
			it := itemsOf(t, body)
			if it[0]["disableImages"] != true {
				t.Fatalf("%s", body)
			}
			path := "/api/files/screenshots/" + it[0]["id"].(string)
			for i := 0; i < tc.accepted; i++ {
				if status, _, body := c.do("GET", path, acct, nil); status != 202 || len(body) != 0 {
					t.Fatalf("poll %d: %d %q", i, status, body)
				}
			}
			for i := 0; i < 2; i++ {
				status, h, body := c.do("GET", path, acct, nil)
				if status != 200 || h.Get("Content-Type") != "image/png" || !bytes.HasPrefix(body, []byte("\x89PNG")) {
					t.Fatalf("ready: %d %v", status, h)
				}
			}
		})
	}
}

func TestSearch(t *testing.T) {
	s := New(Options{})
	c := newClient(t, s)
	a := s.AddServer(acct, "A")
	s.AddMessage(acct, a.ID, NewMessage{From: "x@a.example", To: "one@" + a.ID + ".mailosaur.net", Subject: "Alpha", Text: "apple"})
	s.AddMessage(acct, a.ID, NewMessage{From: "y@a.example", To: "two@" + a.ID + ".mailosaur.net", Subject: "Beta", HTML: "<b>banana</b>"})
	s.AddMessage(acct, a.ID, NewMessage{Type: "SMS", From: "+15550001", To: "+15550002", Text: "code 4444"})
	for _, tc := range []struct {
		crit map[string]any
		want []string // subjects, newest first
	}{
		{map[string]any{"sentTo": "ONE@" + a.ID + ".mailosaur.net"}, []string{"Alpha"}},
		{map[string]any{"sentTo": "+15550002"}, []string{""}},
		{map[string]any{"body": "BANANA"}, []string{"Beta"}},
		{map[string]any{"subject": "alpha", "body": "banana"}, []string{}},
		{map[string]any{"subject": "alpha", "body": "banana", "match": "ANY"}, []string{"Beta", "Alpha"}},
		{map[string]any{"subject": "nothing"}, []string{}},
	} {
		status, h, body := c.do("POST", "/api/messages/search?server="+a.ID, acct, tc.crit)
		if status != 200 || h.Get("X-Ms-Delay") != "1000" {
			t.Fatalf("%v: %d %v", tc.crit, status, h)
		}
		got := []string{}
		for _, it := range itemsOf(t, body) {
			got = append(got, it["subject"].(string))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%v: got %q, want %q", tc.crit, got, tc.want)
		}
	}
	status, h, body := c.do("POST", "/api/messages/search?server="+a.ID, acct, map[string]any{"match": "SOME"})
	if status != 400 || errorOf(t, body, 400, "ValidationError") != "match" {
		t.Fatalf("%d %s", status, body)
	}
	_ = h
}

func TestGzip(t *testing.T) {
	for _, tc := range []struct {
		name   string
		opt    bool
		accept string
		want   bool
	}{
		{"on, accepted", true, "gzip, deflate, br", true},
		{"on, q=0", true, "gzip;q=0, identity", false},
		{"on, not accepted", true, "", false},
		{"off", false, "gzip", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := New(Options{Gzip: tc.opt})
			c := newClient(t, s)
			s.AddServer(acct, "Zipped")
			var hdr []string
			if tc.accept != "" {
				hdr = []string{"Accept-Encoding", tc.accept}
			}
			for _, path := range []string{"/api/servers", "/api/nothing"} {
				_, h, body := c.do("GET", path, acct, nil, hdr...)
				if got := h.Get("Content-Encoding") == "gzip"; got != tc.want {
					t.Fatalf("%s: Content-Encoding %q", path, h.Get("Content-Encoding"))
				}
				if tc.want {
					if h.Get("Content-Length") != fmt.Sprint(len(body)) {
						t.Fatalf("Content-Length %s for %d bytes", h.Get("Content-Length"), len(body))
					}
					zr, err := gzip.NewReader(bytes.NewReader(body))
					if err != nil {
						t.Fatal(err)
					}
					if body, err = io.ReadAll(zr); err != nil {
						t.Fatal(err)
					}
				}
				if !json.Valid(body) {
					t.Fatalf("%s: %q", path, body)
				}
			}
		})
	}
}

// TestLenientParsing checks that the simulator reads requests like a
// lenient upstream: what each odd request actually reached.
func TestLenientParsing(t *testing.T) {
	s := New(Options{})
	c := newClient(t, s)
	a := s.AddServer(acct, "A")
	b := s.AddServer(acct, "B")
	ma := s.AddMessage(acct, a.ID, NewMessage{Subject: "in A"})
	s.AddMessage(acct, b.ID, NewMessage{Subject: "in B"})
	up := strings.ToUpper

	for _, tc := range []struct {
		method, path string
		status       int
		route        string
		servers      []string
	}{
		{"GET", "/API/Servers", 200, "S1", []string{a.ID, b.ID}},
		{"GET", "/api/servers/", 200, "S1", []string{a.ID, b.ID}},
		{"get", "/api/servers", 200, "S1", []string{a.ID, b.ID}},
		{"GET", "/api/servers//", 404, "", nil},
		{"GET", "/api//servers", 404, "", nil},
		{"GET", "/api/servers/" + up(a.ID), 200, "S3", []string{a.ID}},
		{"GET", "/api/servers/" + a.ID + "%2Fpassword", 200, "S4", []string{a.ID}},
		{"GET", "/api/servers/" + a.ID + "%2fPASSWORD/", 200, "S4", []string{a.ID}},
		{"GET", "/api/servers/zzzz/../" + b.ID, 200, "S3", []string{b.ID}},
		{"GET", "/api/servers/zzzz/%2E%2E/" + b.ID, 200, "S3", []string{b.ID}},
		{"GET", "/api/messages?server=" + a.ID + "&server=" + b.ID, 200, "M1", []string{a.ID}},
		{"GET", "/api/messages?SERVER=" + b.ID + "&server=" + a.ID, 200, "M1", []string{b.ID}},
		{"GET", "/api/messages?%73erver=" + b.ID + "&server=" + a.ID, 200, "M1", []string{b.ID}},
		{"GET", "/api/messages?itemsPerPage=5&Server=" + up(a.ID), 200, "M1", []string{a.ID}},
		{"GET", "/API/MESSAGES/" + up(ma.ID), 200, "M5", []string{a.ID}},
		{"GET", "/api/messages?", 400, "M1", nil},
		{"GET", "/api/messages?server=", 400, "M1", nil},
		{"GET", "/api/messages/search", 404, "M5", nil}, // GET on the search path reads "search" as a message id
		{"POST", "/api/servers/" + a.ID, 405, "", nil},
		{"DELETE", "/api/devices/otp", 404, "D5", nil},
		{"GET", "/api/devices/otp", 405, "", nil},
		{"HEAD", "/api/servers", 405, "", nil},
	} {
		slices.Sort(tc.servers)
		s.Reset()
		status, h, body := c.do(tc.method, tc.path, acct, nil)
		if status != tc.status {
			t.Fatalf("%s %s: %d, want %d: %s", tc.method, tc.path, status, tc.status, body)
		}
		seen := s.Requests()
		if len(seen) != 1 || seen[0].Route != tc.route || !slices.Equal(seen[0].Servers, tc.servers) {
			t.Fatalf("%s %s: seen %+v, want %s %v", tc.method, tc.path, seen, tc.route, tc.servers)
		}
		if tc.status == 200 && tc.route == "M1" {
			want := "in A"
			if seen[0].Servers[0] == b.ID {
				want = "in B"
			}
			if it := itemsOf(t, body); len(it) != 1 || it[0]["subject"] != want {
				t.Fatalf("%s: %s", tc.path, body)
			}
		}
		_ = h
	}

	// Raw, unencoded query values (as Node sends them) and invalid escapes
	// cannot travel through net/http's client: serve them directly.
	for _, tc := range []struct {
		rawQuery string
		status   int
		servers  []string
	}{
		{"server=abc 1", 404, nil},
		{"x=%zz&server=" + a.ID, 200, []string{a.ID}},
		{"server=" + a.ID + "&receivedAfter=2020-01-01T00:00:00+00:00", 200, []string{a.ID}},
		{"server=" + b.ID + "%", 404, nil},
		{"Server+=" + b.ID + "&server=" + a.ID, 200, []string{a.ID}},
	} {
		r := httptest.NewRequest("GET", "/api/messages", nil)
		r.URL.RawQuery = tc.rawQuery
		r.Header.Set(AccountHeader, acct)
		route, predicted := s.Touches(acct, r)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		seen := s.Requests()
		last := seen[len(seen)-1]
		if w.Code != tc.status || route != "M1" || !slices.Equal(last.Servers, tc.servers) || !slices.Equal(predicted, tc.servers) {
			t.Fatalf("%q: %d, touched %v, predicted %v: %s", tc.rawQuery, w.Code, last.Servers, predicted, w.Body)
		}
	}
}

// TestTouchesAgrees checks that Touches predicts, for many requests, the
// route and the servers that ServeHTTP then actually reads or modifies.
// Each request runs against a fresh state (requests delete things), with
// ids substituted for the placeholders {0}..{15} of its generated form.
func TestTouchesAgrees(t *testing.T) {
	// setup builds the state and returns the ids a request may name.
	setup := func() (*Server, []string, string) {
		s := New(Options{ScreenshotDelay: -1})
		a := s.AddServer(acct, "A")
		b := s.AddServer(acct, "B")
		x := s.AddServer(other, "X")
		ma := s.AddMessage(acct, a.ID, sampleMessage(a.ID))
		mb := s.AddMessage(acct, b.ID, sampleMessage(b.ID))
		mx := s.AddMessage(other, x.ID, sampleMessage(x.ID))
		mint := func(account string, m Message) string {
			w := httptest.NewRecorder()
			r := httptest.NewRequest("POST", "/api/messages/"+m.ID+"/screenshots", strings.NewReader(`{"emailClients":["gmail-chrome-lightmode"]}`))
			r.Header.Set(AccountHeader, account)
			s.ServeHTTP(w, r)
			var l list[map[string]any]
			json.Unmarshal(w.Body.Bytes(), &l)
			return l.Items[0]["id"].(string)
		}
		pa, px := mint(acct, ma), mint(other, mx)
		s.Reset()
		return s, []string{a.ID, b.ID, x.ID, strings.ToUpper(a.ID), ma.ID, mb.ID, mx.ID, ma.Attachments[0].ID,
			mb.Attachments[1].ID, mx.Attachments[0].ID, pa, px, "zzzzzzzz", "otp", "search", ""}, x.ID
	}
	const nIDs = 16
	literals := []string{"api", "API", "servers", "Servers", "messages", "MESSAGES", "files", "attachments", "email",
		"screenshots", "analysis", "spam", "deliverability", "devices", "otp", "password", "forward", "reply",
		"search", "usage", "limits", "transactions", "clients", "..", ".", "%2F", "%2f"}
	methods := []string{"GET", "POST", "PUT", "DELETE", "get", "Delete", "PATCH"}
	rnd := rand.New(rand.NewSource(1))
	pick := func(l []string) string { return l[rnd.Intn(len(l))] }
	id := func() string { return fmt.Sprintf("{%d}", rnd.Intn(nIDs)) }
	// kindID mostly picks an id of the kind a parameter expects.
	kinds := map[string][]int{
		"{server}": {0, 1, 2, 3, 12}, "{message}": {4, 5, 6, 13, 14}, "{attachment}": {7, 8, 9},
		"{preview}": {10, 11}, "{device}": {13, 12},
	}
	kindID := func(param string) string {
		if rnd.Intn(4) == 0 {
			return id()
		}
		k := kinds[param]
		return fmt.Sprintf("{%d}", k[rnd.Intn(len(k))])
	}
	query := func() string {
		var q []string
		for j := rnd.Intn(4); j > 0; j-- {
			q = append(q, pick([]string{"server", "Server", "SERVER", "%73erver", "server%20", "page", "itemsPerPage"})+"="+kindID("{server}"))
		}
		return strings.Join(q, "&")
	}
	fill := func(tmpl routeSpec, ids func(string) string) string {
		var segs []string
		for _, sg := range tmpl.segs {
			if strings.HasPrefix(sg, "{") {
				sg = ids(sg)
			}
			segs = append(segs, sg)
		}
		return "/" + strings.Join(segs, "/")
	}

	type gen struct{ method, path, query string }
	var gens []gen
	// Every route with every id.
	for _, tmpl := range routeTable {
		for i := 0; i < nIDs; i++ {
			ph := fmt.Sprintf("{%d}", i)
			q := ""
			if strings.HasPrefix(tmpl.id, "M") && len(tmpl.segs) <= 3 {
				q = "server=" + ph
			}
			gens = append(gens, gen{tmpl.method, fill(tmpl, func(string) string { return ph }), q})
		}
	}
	// Routes mangled the ways a lenient upstream forgives or misreads.
	for i := 0; i < 2000; i++ {
		tmpl := routeTable[rnd.Intn(len(routeTable))]
		path := fill(tmpl, kindID)
		for k := rnd.Intn(4); k > 0; k-- {
			switch rnd.Intn(6) {
			case 0:
				path = strings.ToUpper(path)
			case 1:
				path = strings.Replace(path, "/", "%2F", 1+rnd.Intn(3))
				path = "/" + strings.TrimPrefix(strings.TrimPrefix(path, "%2F"), "/")
			case 2:
				j := strings.LastIndex(path, "/")
				path = path[:j] + "/" + pick(literals) + "/.." + path[j:]
			case 3:
				path += "/"
			case 4:
				path = strings.Replace(path, "/", "//", 1)
			case 5:
				path = strings.Replace(path, "/", "/"+id()+"/", 1)
			}
		}
		m := tmpl.method
		if rnd.Intn(5) == 0 {
			m = pick(methods)
		}
		gens = append(gens, gen{m, path, query()})
	}
	// Random segment soup.
	for i := 0; i < 1000; i++ {
		var segs []string
		for j := 1 + rnd.Intn(5); j > 0; j-- {
			if rnd.Intn(3) == 0 {
				segs = append(segs, id())
			} else {
				segs = append(segs, pick(literals))
			}
		}
		path := "/" + strings.Join(segs, pick([]string{"/", "/", "/", "%2F", "//"}))
		gens = append(gens, gen{pick(methods), path, query()})
	}

	routes := map[string]int{}
	touching := 0
	for _, g := range gens {
		s, ids, foreign := setup()
		sub := func(v string) string {
			for i := nIDs - 1; i >= 0; i-- {
				v = strings.ReplaceAll(v, fmt.Sprintf("{%d}", i), ids[i])
			}
			return v
		}
		u, err := url.Parse(sub(g.path))
		if err != nil || u.Host != "" {
			continue
		}
		u.RawQuery = sub(g.query)
		r := httptest.NewRequest("GET", "/", strings.NewReader(
			`{"name":"n","to":"t@example.com","emailClients":["gmail-chrome-lightmode"],"sharedSecret":"JBSWY3DPEHPK3PXP"}`))
		r.Method, r.URL = g.method, u
		r.Header.Set(AccountHeader, acct)

		route, predicted := s.Touches(acct, r)
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		seen := s.Requests()
		if len(seen) != 1 || seen[0].Route != route || !slices.Equal(seen[0].Servers, predicted) {
			t.Fatalf("%s %s?%s: predicted %s %v, ServeHTTP did %+v (status %d)",
				r.Method, r.URL.EscapedPath(), r.URL.RawQuery, route, predicted, seen, w.Code)
		}
		if slices.Contains(predicted, foreign) {
			t.Fatalf("%s %s touched another account's server", r.Method, r.URL)
		}
		routes[route]++
		if len(predicted) > 0 {
			touching++
		}
	}
	t.Logf("%d requests, %d touched a server, per route: %v", len(gens), touching, routes)
	if touching < len(gens)/10 {
		t.Errorf("only %d of %d requests touched a server", touching, len(gens))
	}
	for _, id := range Routes() {
		if routes[id] == 0 {
			t.Errorf("route %s never exercised", id)
		}
	}
}

func TestSeedRoundTrip(t *testing.T) {
	seed := `{"accounts": {
	  "acct_alpha": {
	    "servers": [
	      {"id": "abcd1234", "name": "Staging", "password": "s3cret", "messages": [
	        {"from": "Ann <ann@x.example>", "to": "bob@abcd1234.mailosaur.net", "subject": "Hi", "text": "hello",
	         "received": "2025-01-02T03:04:05Z",
	         "attachments": [{"fileName": "a.txt", "contentType": "text/plain", "content": "aGVsbG8="}]},
	        {"type": "SMS", "from": "+15550001", "to": "+15550002", "text": "code 1234", "received": "2025-01-02T04:00:00Z"}
	      ]},
	      {"name": "Production"}
	    ],
	    "devices": [{"name": "phone", "sharedSecret": "JBSWY3DPEHPK3PXP"}]
	  },
	  "acct_other": {"servers": [{"name": "Elsewhere", "users": ["u1"]}]}
	}}`
	s := New(Options{})
	if err := s.LoadSeed(strings.NewReader(seed)); err != nil {
		t.Fatal(err)
	}
	c := newClient(t, s)
	_, _, body := c.do("GET", "/api/servers/abcd1234/password", acct, nil)
	if obj(t, body)["value"] != "s3cret" {
		t.Fatalf("%s", body)
	}
	_, _, body = c.do("GET", "/api/messages?server=abcd1234", acct, nil)
	it := itemsOf(t, body)
	if len(it) != 2 || it[0]["type"] != "SMS" || it[1]["subject"] != "Hi" || it[1]["attachments"] != 1.0 {
		t.Fatalf("%s", body)
	}
	_, _, body = c.do("GET", "/api/messages/"+it[1]["id"].(string), acct, nil)
	attID := obj(t, body)["attachments"].([]any)[0].(map[string]any)["id"].(string)
	if _, _, body = c.do("GET", "/api/files/attachments/"+attID, acct, nil); string(body) != "hello" {
		t.Fatalf("%q", body)
	}

	// Dump, reload into a fresh simulator, dump again: the same file.
	var first bytes.Buffer
	if err := s.WriteSeed(&first); err != nil {
		t.Fatal(err)
	}
	s2 := New(Options{})
	if err := s2.LoadSeed(bytes.NewReader(first.Bytes())); err != nil {
		t.Fatalf("%v\n%s", err, first.String())
	}
	var second bytes.Buffer
	s2.WriteSeed(&second)
	if first.String() != second.String() {
		t.Fatalf("round trip differs:\n%s\n----\n%s", first.String(), second.String())
	}
	var parsed Seed
	json.Unmarshal(first.Bytes(), &parsed)
	if len(parsed.Accounts) != 2 || len(parsed.Accounts[acct].Servers) != 2 || parsed.Accounts[acct].Servers[0].ID != "abcd1234" ||
		len(parsed.Accounts[acct].Devices) != 1 || !reflect.DeepEqual(parsed.Accounts[other].Servers[0].Users, []string{"u1"}) {
		t.Fatalf("%s", first.String())
	}

	// Invalid seeds are refused whole.
	for _, bad := range []string{
		`{"accounts":{"a":{"servers":[{"id":"ABCD1234","name":"x"}]}}}`,
		`{"accounts":{"a":{"servers":[{"id":"abcd1234","name":"x"}]}}}`, // already used
		`{"accounts":{"a":{"servers":[{"id":"aaaa1111","name":"x"},{"id":"aaaa1111","name":"y"}]}}}`,
		`{"accounts":{"a":{"servers":[{"name":"x","messages":[{"type":"Fax"}]}]}}}`,
		`{"accounts":{"a":{"devices":[{"name":"x","sharedSecret":"1!"}]}}}`,
		`{"accounts":{"a":{"servers":[{"name":"x","colour":"red"}]}}}`,
		`{"accounts":{"":{}}}`,
		`not json`,
	} {
		if err := s.LoadSeed(strings.NewReader(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	var after bytes.Buffer
	s.WriteSeed(&after)
	if after.String() != first.String() {
		t.Fatal("a refused seed changed the state")
	}
}

func TestSeedDemo(t *testing.T) {
	s := New(Options{})
	s.SeedDemo("acct_demo")
	c := newClient(t, s)
	_, _, body := c.do("GET", "/api/servers", "acct_demo", nil)
	servers := itemsOf(t, body)
	if len(servers) != 2 || servers[0]["name"] != "Staging" || servers[1]["name"] != "Production" {
		t.Fatalf("%s", body)
	}
	for _, sv := range servers {
		_, _, body = c.do("GET", "/api/messages?server="+sv["id"].(string), "acct_demo", nil)
		msgs := itemsOf(t, body)
		withAtt := 0
		for _, m := range msgs {
			if m["attachments"].(float64) > 0 {
				withAtt++
				_, _, body = c.do("GET", "/api/messages/"+m["id"].(string), "acct_demo", nil)
				at := obj(t, body)["attachments"].([]any)[0].(map[string]any)
				status, h, raw := c.do("GET", "/api/files/attachments/"+at["id"].(string), "acct_demo", nil)
				if status != 200 || len(raw) != int(at["length"].(float64)) || h.Get("Content-Type") != at["contentType"] {
					t.Fatalf("attachment %v: %d %v", at, status, h)
				}
			}
		}
		if len(msgs) < 3 || withAtt < 2 {
			t.Fatalf("%s: %d messages, %d with attachments", sv["name"], len(msgs), withAtt)
		}
	}
	_, _, body = c.do("GET", "/api/devices", "acct_demo", nil)
	if len(itemsOf(t, body)) != 1 {
		t.Fatalf("%s", body)
	}
	if _, _, body = c.do("GET", "/api/servers", "someone_else", nil); len(itemsOf(t, body)) != 0 {
		t.Fatalf("%s", body)
	}
}

// TestOTP checks D3 and D4 against RFC 6238's SHA-1 test vector (T=59 s).
func TestOTP(t *testing.T) {
	s := New(Options{Now: func() time.Time { return time.Unix(59, 0) }})
	c := newClient(t, s)
	secret := "gezdgnbvgy3tqojqgezdgnbvgy3tqojq" // "12345678901234567890", lower case
	_, _, body := c.do("POST", "/api/devices/otp", acct, map[string]string{"sharedSecret": secret})
	if o := obj(t, body); o["code"] != "287082" || o["expires"] != "1970-01-01T00:01:00Z" {
		t.Fatalf("%s", body)
	}
	_, _, body = c.do("POST", "/api/devices", acct, map[string]string{"name": "p", "sharedSecret": secret})
	_, _, body = c.do("GET", "/api/devices/"+obj(t, body)["id"].(string)+"/otp", acct, nil)
	if obj(t, body)["code"] != "287082" {
		t.Fatalf("%s", body)
	}
}

func TestAddMessagePanicsOnUnknownServer(t *testing.T) {
	s := New(Options{})
	a := s.AddServer(acct, "A")
	defer func() {
		if recover() == nil {
			t.Fatal("no panic")
		}
	}()
	s.AddMessage(other, a.ID, NewMessage{})
}

func TestConcurrentUse(t *testing.T) {
	s := New(Options{Gzip: true})
	c := newClient(t, s)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			account := fmt.Sprintf("acct_%d", g%3)
			for i := 0; i < 20; i++ {
				in := s.AddServer(account, "s")
				m := s.AddMessage(account, in.ID, sampleMessage(in.ID))
				r := httptest.NewRequest("GET", "/api/messages/"+m.ID, nil)
				r.Header.Set(AccountHeader, account)
				w := httptest.NewRecorder()
				s.ServeHTTP(w, r)
				if w.Code != 200 {
					t.Errorf("%d", w.Code)
					return
				}
				s.Touches(account, r)
				s.Requests()
				req, _ := http.NewRequest("DELETE", c.ts.URL+"/api/servers/"+in.ID, nil)
				req.Header.Set(AccountHeader, account)
				if res, err := c.hc.Do(req); err != nil || res.StatusCode != 204 {
					t.Errorf("%v %v", res, err)
					return
				} else {
					res.Body.Close()
				}
			}
		}()
	}
	wg.Wait()
	var buf bytes.Buffer
	if err := s.WriteSeed(&buf); err != nil {
		t.Fatal(err)
	}
}

func TestSeedDemoIDsAreStable(t *testing.T) {
	ids := func() []string {
		s := New(Options{})
		s.SeedDemo("acct_demo")
		var out []string
		for _, in := range s.inboxes("acct_demo") {
			out = append(out, in.id)
		}
		return out
	}
	a, b := ids(), ids()
	if len(a) != 2 || a[0] != b[0] || a[1] != b[1] || a[0] == a[1] {
		t.Fatalf("demo inbox ids %v then %v; want the same two", a, b)
	}
}
