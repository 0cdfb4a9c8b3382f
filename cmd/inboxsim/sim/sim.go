// Package sim is an in-memory simulator of the inbox API that keygate
// guards (a Mailosaur-style API whose inboxes are called "servers"; see
// docs/inbox-api.md). It serves the 28 routes with their real JSON shapes
// and is the upstream of keygate's end-to-end tests and of the demo.
//
// The simulator sits behind keygate and trusts it: the account is the
// X-Keygate-Account request header (a request without it gets 401), and the
// key type and server headers are ignored, since scope is keygate's job.
// Accounts are isolated from each other: an object of another account is
// answered 404, exactly like one that does not exist.
//
// Requests are read the way a lenient real-world upstream (ASP.NET style)
// reads them, which makes the simulator a fair adversary for keygate's own
// request parsing:
//
//   - the method is matched case-insensitively;
//   - the path is percent-decoded once as a whole, then split on '/': an
//     encoded slash (%2F) inside a segment becomes a separator;
//   - dot segments are then resolved; empty segments (doubled slashes)
//     match nothing; one trailing slash is ignored;
//   - literal segments match case-insensitively, and ids are lower-cased
//     (every id the simulator mints is lower case);
//   - the query is split on '&' by hand, so unencoded values are tolerated;
//     names and values are decoded leniently (invalid escapes kept, '+' is
//     a space), names match case-insensitively, the first occurrence of a
//     name wins (so the first `server`, in any letter case or encoding);
//   - a path of a route with another method is 405, any other path 404.
//
// Touches exposes that reading (one parser for both), so a test can compare
// keygate's decision with what the upstream would actually have done, and
// Requests reports what each request actually touched.
//
// A Server is safe for concurrent use.
package sim

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// AccountHeader is the request header that names the caller's account.
const AccountHeader = "X-Keygate-Account"

// maxBody bounds a request body (attachments travel base64 in JSON).
const maxBody = 32 << 20

// maxSeen bounds the request log kept for Requests.
const maxSeen = 10000

// Options configures a Server. The zero value is usable.
type Options struct {
	// Gzip encodes JSON responses (never file downloads) with gzip when the
	// client sends Accept-Encoding: gzip.
	Gzip bool
	// Now is the clock (received times, one-time passwords); time.Now if nil.
	Now func() time.Time
	// ScreenshotDelay is the number of polls of GET
	// /api/files/screenshots/{id} answered 202 Accepted before the preview
	// is ready: 0 means the default of 1, a negative value means ready at
	// once.
	ScreenshotDelay int
}

// Server is the simulator: an http.Handler holding every account's state
// in memory.
type Server struct {
	opts Options

	mu          sync.Mutex
	seq         int64
	servers     map[string]*inbox
	messages    map[string]*message
	attachments map[string]*attachment
	previews    map[string]*preview
	devices     map[string]*device
	seen        []Seen
}

// New returns an empty simulator.
func New(opts Options) *Server {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	switch {
	case opts.ScreenshotDelay == 0:
		opts.ScreenshotDelay = 1
	case opts.ScreenshotDelay < 0:
		opts.ScreenshotDelay = 0
	}
	return &Server{
		opts:        opts,
		servers:     map[string]*inbox{},
		messages:    map[string]*message{},
		attachments: map[string]*attachment{},
		previews:    map[string]*preview{},
		devices:     map[string]*device{},
	}
}

// Seen is one request as the simulator received it.
type Seen struct {
	Method   string
	Path     string // as received, still percent-encoded
	RawQuery string
	Account  string // the X-Keygate-Account header
	Route    string // "S1".."D5", "" when no route matched
	Status   int
	// Servers are the server ids the request actually read or modified,
	// sorted (the same notion as Touches, recorded by the handlers).
	Servers []string
}

// Requests returns the requests served since New or the last Reset, oldest
// first (the last 10000 at most).
func (s *Server) Requests() []Seen {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.seen)
}

// Reset forgets the requests returned by Requests. The data stay.
func (s *Server) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seen = nil
}

// Touches reads r exactly as ServeHTTP would (same parser) and reports the
// route id ("S1".."D5", "" when no route matches, including a known path
// with the wrong method) and the sorted set of server ids that the request
// would read or modify if it were executed now, for account, against the
// current state. S1 touches every server of the account; S3–S6 and M1–M4
// the server they name, if it exists; M5–M9, F2, A1, A2 the server of the
// message; F1 that of the attachment's message; F3 that of the preview's
// message; S2, P1, U* and D* none. The body is not read: a request that
// would be refused for its body still reports the servers it addresses.
func (s *Server) Touches(account string, r *http.Request) (route string, servers []string) {
	req := parseRequest(r)
	if req.route == "" {
		return "", nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return req.route, s.targets(account, req)
}

// targets is the prediction behind Touches.
func (s *Server) targets(account string, req request) []string {
	if account == "" {
		return nil // ServeHTTP answers 401
	}
	var out []string
	switch req.route {
	case "S1":
		for _, in := range s.inboxes(account) {
			out = append(out, in.id)
		}
	case "S3", "S4", "S5", "S6", "M1", "M2", "M3", "M4":
		if in := s.inbox(account, req.server); in != nil {
			out = append(out, in.id)
		}
	case "M5", "M6", "M7", "M8", "M9", "F2", "A1", "A2":
		if m := s.message(account, req.params["message"]); m != nil {
			out = append(out, m.server)
		}
	case "F1":
		if a := s.attachment(account, req.params["attachment"]); a != nil {
			out = append(out, a.msg.server)
		}
	case "F3":
		if p := s.preview(account, req.params["preview"]); p != nil {
			out = append(out, p.msg.server)
		}
	}
	sort.Strings(out)
	return out
}

// call is one request being served.
type call struct {
	account string
	req     request
	body    []byte
	touched map[string]bool
}

func (c *call) touch(server string) { c.touched[server] = true }

// response is what a handler decided, written after the lock is released.
type response struct {
	status      int
	json        any // a JSON body, or nil
	raw         []byte
	contentType string
	header      http.Header
}

// ServeHTTP serves the inbox API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := &call{account: r.Header.Get(AccountHeader), req: parseRequest(r), touched: map[string]bool{}}
	var res response
	switch {
	case c.account == "":
		res = errorResponse(http.StatusUnauthorized, "", "")
	case c.req.route == "":
		res = errorResponse(c.req.status, "", "")
		if c.req.status == http.StatusMethodNotAllowed {
			res.header = http.Header{"Allow": {strings.Join(c.req.allow, ", ")}}
		}
	case r.Body != nil && r.Body != http.NoBody:
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			res = response{status: http.StatusRequestEntityTooLarge, json: apiError{
				Type: "ValidationError", Status: http.StatusRequestEntityTooLarge,
				Errors: []errorItem{{Detail: []errorDetail{{Description: "Request body too large.", Code: "too_large"}}}},
			}}
		case err != nil:
			res = validation("", "Could not read the request body.", "invalid")
		default:
			c.body = b
		}
	}

	s.mu.Lock()
	if res.status == 0 {
		res = s.handle(c)
	}
	seen := Seen{
		Method: r.Method, Path: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery,
		Account: c.account, Route: c.req.route, Status: res.status,
	}
	for id := range c.touched {
		seen.Servers = append(seen.Servers, id)
	}
	sort.Strings(seen.Servers)
	if len(s.seen) >= maxSeen {
		s.seen = slices.Delete(s.seen, 0, len(s.seen)-maxSeen+1)
	}
	s.seen = append(s.seen, seen)
	s.mu.Unlock()

	s.write(w, r, res)
}

func (s *Server) write(w http.ResponseWriter, r *http.Request, res response) {
	h := w.Header()
	for k, v := range res.header {
		h[k] = v
	}
	body := res.raw
	if res.json != nil {
		b, err := json.Marshal(res.json)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		body = b
		h.Set("Content-Type", "application/json; charset=utf-8")
		if s.opts.Gzip {
			h.Add("Vary", "Accept-Encoding")
			if acceptsGzip(r.Header.Values("Accept-Encoding")) {
				var buf bytes.Buffer
				zw := gzip.NewWriter(&buf)
				zw.Write(b)
				zw.Close()
				body = buf.Bytes()
				h.Set("Content-Encoding", "gzip")
			}
		}
	} else if res.contentType != "" {
		h.Set("Content-Type", res.contentType)
	}
	if res.status != http.StatusNoContent {
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(res.status)
	if r.Method != http.MethodHead && res.status != http.StatusNoContent {
		w.Write(body)
	}
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip.
func acceptsGzip(values []string) bool {
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			name, params, _ := strings.Cut(part, ";")
			if !strings.EqualFold(strings.TrimSpace(name), "gzip") {
				continue
			}
			params = strings.ReplaceAll(strings.TrimSpace(params), " ", "")
			if q, ok := strings.CutPrefix(params, "q="); ok {
				if f, err := strconv.ParseFloat(q, 64); err == nil && f == 0 {
					return false
				}
			}
			return true
		}
	}
	return false
}

// The error shape of the API: `type` first, then status and errors.
type apiError struct {
	Type   string      `json:"type"`
	Status int         `json:"status"`
	Errors []errorItem `json:"errors"`
}

type errorItem struct {
	Field  string        `json:"field"`
	Detail []errorDetail `json:"detail"`
}

type errorDetail struct {
	Description string `json:"description"`
	Code        string `json:"code"`
}

// errorResponse is a 401, 403, 404 or 405 in the API's error shape.
func errorResponse(status int, field, description string) response {
	typ, desc, code := "Error", http.StatusText(status), "error"
	switch status {
	case http.StatusUnauthorized:
		typ, desc, code = "AuthenticationError", "Authentication failed, check your API key.", "unauthorized"
	case http.StatusForbidden:
		typ, desc, code = "PermissionError", "Insufficient permission to perform that task.", "forbidden"
	case http.StatusNotFound:
		typ, desc, code = "NotFoundError", "Not found, check input parameters.", "not_found"
	case http.StatusMethodNotAllowed:
		typ, desc, code = "MethodNotAllowedError", "Method not allowed on this path.", "method_not_allowed"
	}
	if description != "" {
		desc = description
	}
	return response{status: status, json: apiError{
		Type: typ, Status: status,
		Errors: []errorItem{{Field: field, Detail: []errorDetail{{Description: desc, Code: code}}}},
	}}
}

func notFound() response { return errorResponse(http.StatusNotFound, "", "") }

// validation is a 400 ValidationError about one field.
func validation(field, description, code string) response {
	return response{status: http.StatusBadRequest, json: apiError{
		Type: "ValidationError", Status: http.StatusBadRequest,
		Errors: []errorItem{{Field: field, Detail: []errorDetail{{Description: description, Code: code}}}},
	}}
}

func ok(v any) response { return response{status: http.StatusOK, json: v} }

func noContent() response { return response{status: http.StatusNoContent} }

// list is the API's list shape.
type list[T any] struct {
	Items []T `json:"items"`
}

func items[T any](v []T) list[T] {
	if v == nil {
		v = []T{}
	}
	return list[T]{Items: v}
}
