package scope

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// A Policy is a compiled route table. It is safe for concurrent use.
type Policy struct {
	routes []*Route
}

// New compiles routes; a route given later replaces an earlier one with
// the same method and path (how a Caddyfile overrides the built-in table).
func New(routes ...[]Route) (*Policy, error) {
	p := &Policy{}
	index := map[string]int{}
	for _, list := range routes {
		for _, r := range list {
			r := r
			if err := r.compile(); err != nil {
				return nil, err
			}
			key := r.Method + " " + strings.ToLower(r.Path)
			if i, ok := index[key]; ok {
				p.routes[i] = &r
				continue
			}
			index[key] = len(p.routes)
			p.routes = append(p.routes, &r)
		}
	}
	return p, nil
}

// Routes returns the compiled routes, for documentation and tests.
func (p *Policy) Routes() []*Route { return p.routes }

// maxSegments bounds the path depth of a route; deeper paths match none.
const maxSegments = 8

func (r *Route) compile() error {
	r.Method = strings.ToUpper(r.Method)
	if r.Method == "" || !strings.HasPrefix(r.Path, "/") || strings.Contains(r.Path, "//") {
		return fmt.Errorf("route %s %q: want a method and a path starting with /", r.Method, r.Path)
	}
	r.segments = strings.Split(strings.TrimSuffix(r.Path[1:], "/"), "/")
	if len(r.segments) > maxSegments {
		return fmt.Errorf("route %s %s: at most %d path segments", r.Method, r.Path, maxSegments)
	}
	r.param = -1
	for i, s := range r.segments {
		if !strings.HasPrefix(s, "{") {
			if strings.ContainsAny(s, "{}") {
				return fmt.Errorf("route %s %s: a parameter must be a whole segment", r.Method, r.Path)
			}
			continue
		}
		if r.param >= 0 {
			return fmt.Errorf("route %s %s: at most one parameter", r.Method, r.Path)
		}
		r.param = i
		switch s {
		case "{server}":
		case "{message}":
			r.object = Message
		case "{attachment}":
			r.object = Attachment
		case "{preview}":
			r.object = Preview
		case "{device}", "{id}":
		default:
			return fmt.Errorf("route %s %s: unknown parameter %s (use {server}, {message}, {attachment}, {preview}, {device} or {id})", r.Method, r.Path, s)
		}
	}
	hasServer := r.param >= 0 && r.segments[r.param] == "{server}"
	switch {
	case r.Restricted == OwnServer && !hasServer && !r.ServerInQuery:
		return fmt.Errorf("route %s %s: own_server needs {server} in the path or the server parameter", r.Method, r.Path)
	case (r.Restricted == OwnObject || r.Restricted == OwnObjectResponse) && r.object == NoObject:
		return fmt.Errorf("route %s %s: own_object needs {message}, {attachment} or {preview} in the path", r.Method, r.Path)
	case r.Restricted == OwnObjectResponse && r.object != Message:
		return fmt.Errorf("route %s %s: only a message is checked on the response", r.Method, r.Path)
	}
	return nil
}

func (r *Route) serverInPath() bool { return r.param >= 0 && r.segments[r.param] == "{server}" }

// Match is a request read against the table.
type Match struct {
	Route  *Route // nil when no route matches
	Server string // the server the request names in its path or server parameter
	Object string // the object id in the path, for an OBJ route
	// Head: a HEAD request, read as its GET route. Its answer has no body
	// to check or learn from.
	Head bool
}

// ErrAmbiguous is wrapped by every reading error: a request that the
// upstream could read differently from keygate, answered 400.
var ErrAmbiguous = errors.New("ambiguous request")

func ambiguous(why string) error { return fmt.Errorf("%w: %s", ErrAmbiguous, why) }

// Read reads a request the way the upstream will, refusing what could be
// read two ways: dot segments, encoded slashes or backslashes, doubled
// slashes, a repeated server parameter (in any letter case, or with its
// name percent-encoded), a ';' in the query that changes which server it
// names, and a server in the path with another in the query. Paths match case-insensitively, with one trailing slash and an
// empty query tolerated. escapedPath is the request's path as sent
// (url.URL.EscapedPath), rawQuery its query as sent.
//
// Read allocates only when the request percent-encodes its path or its
// server parameter.
func (p *Policy) Read(method, escapedPath, rawQuery string) (Match, error) {
	var segs [maxSegments]string
	n, err := splitPath(escapedPath, &segs)
	if err != nil {
		return Match{}, err
	}
	qServer, qFound, err := serverParam(rawQuery)
	if err != nil {
		return Match{}, err
	}

	head := strings.EqualFold(method, "HEAD")
	if head {
		method = "GET" // many servers answer HEAD with their GET route
	}
	var best *Route
	bestLiterals := -1
	for _, r := range p.routes {
		if n != len(r.segments) || !strings.EqualFold(r.Method, method) {
			continue
		}
		literals, ok := 0, true
		for i, s := range r.segments {
			if i == r.param {
				continue
			}
			if !strings.EqualFold(s, segs[i]) {
				ok = false
				break
			}
			literals++
		}
		if ok && literals > bestLiterals { // a literal beats a parameter: /devices/otp over /devices/{device}
			best, bestLiterals = r, literals
		}
	}

	m := Match{Route: best, Head: head}
	if best == nil {
		return m, nil
	}
	switch {
	case best.serverInPath():
		m.Server = segs[best.param]
		if qFound && qServer != m.Server {
			return Match{}, ambiguous("the path and the server parameter name different servers")
		}
	case best.ServerInQuery:
		m.Server = qServer
	}
	if best.object != NoObject {
		m.Object = segs[best.param]
	}
	return m, nil
}

// splitPath splits an escaped path into its decoded segments.
func splitPath(p string, segs *[maxSegments]string) (int, error) {
	if p == "" || p[0] != '/' {
		return 0, ambiguous("the path must start with /")
	}
	p = p[1:]
	if strings.HasSuffix(p, "/") {
		p = p[:len(p)-1] // one trailing slash: the PHP client sends POST /api/servers/
	}
	n := 0
	for {
		seg, rest, more := strings.Cut(p, "/")
		if seg == "" && (more || n > 0) {
			return 0, ambiguous("doubled slash in the path")
		}
		if n == maxSegments {
			return maxSegments + 1, nil // deeper than any route
		}
		if strings.IndexByte(seg, '%') >= 0 {
			if containsFold(seg, "%2f") || containsFold(seg, "%5c") {
				return 0, ambiguous("encoded slash in the path")
			}
			dec, err := url.PathUnescape(seg)
			if err != nil {
				return 0, ambiguous("bad percent-encoding in the path")
			}
			seg = dec
		}
		if seg == "." || seg == ".." {
			return 0, ambiguous("dot segment in the path")
		}
		for i := 0; i < len(seg); i++ {
			if c := seg[i]; c < 0x20 || c == 0x7f || c == '\\' || c == ';' {
				return 0, ambiguous("control character, backslash or semicolon in the path")
			}
		}
		segs[n] = seg
		n++
		if !more {
			return n, nil
		}
		p = rest
	}
}

// serverParam finds the server parameter; a name is compared after
// percent-decoding and in any letter case. Servers split a query on '&'
// (Go, the simulator) or on '&' and ';' (some frameworks): a query whose
// server parameter the two readings see differently is refused. Where they
// agree, no pair naming the server holds a ';', so Go's reading (which
// drops such pairs) agrees too.
func serverParam(q string) (server string, found bool, err error) {
	server, found, err = serverParamSplit(q, "&")
	if err != nil || strings.IndexByte(q, ';') < 0 {
		return server, found, err
	}
	s, f, err := serverParamSplit(q, "&;")
	if err != nil {
		return "", false, err
	}
	if s != server || f != found {
		return "", false, ambiguous("a semicolon in the query changes the server parameter")
	}
	return server, found, nil
}

// serverParamSplit finds the server parameter of a query split on any
// byte of seps.
func serverParamSplit(q, seps string) (server string, found bool, err error) {
	for q != "" {
		var pair string
		pair, q = nextParam(q, seps)
		name, value, _ := strings.Cut(pair, "=")
		if name, err = paramName(name); err != nil {
			return "", false, err
		}
		if !strings.EqualFold(name, "server") {
			continue
		}
		if found {
			return "", false, ambiguous("the server parameter is given more than once")
		}
		found = true
		server = value
		if strings.ContainsAny(value, "%+") {
			dec, derr := url.QueryUnescape(value)
			if derr != nil {
				return "", false, ambiguous("bad percent-encoding in the server parameter")
			}
			server = dec
		}
	}
	return server, found, nil
}

// nextParam cuts the first parameter off a query split on any byte of seps.
func nextParam(q, seps string) (pair, rest string) {
	if i := strings.IndexAny(q, seps); i >= 0 {
		return q[:i], q[i+1:]
	}
	return q, ""
}

// paramName is a parameter's name as a lenient server reads it:
// percent-decoded, '+' as a space, spaces trimmed.
func paramName(name string) (string, error) {
	if strings.ContainsAny(name, "%+") {
		dec, err := url.QueryUnescape(name)
		if err != nil {
			return "", ambiguous("bad percent-encoding in a parameter name")
		}
		name = dec
	}
	return strings.TrimSpace(name), nil
}

func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}
