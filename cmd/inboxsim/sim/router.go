package sim

import (
	"net/http"
	"net/url"
	"strings"
)

// routeSpec is one of the 28 routes of the inbox API (docs/inbox-api.md).
type routeSpec struct {
	id     string
	method string
	segs   []string // literal segments, or "{name}" for a parameter
	lits   int      // number of literal segments: the more specific route wins
}

var routeTable = func() []routeSpec {
	lines := []string{
		"S1 GET /api/servers",
		"S2 POST /api/servers",
		"S3 GET /api/servers/{server}",
		"S4 GET /api/servers/{server}/password",
		"S5 PUT /api/servers/{server}",
		"S6 DELETE /api/servers/{server}",
		"M1 GET /api/messages",
		"M2 DELETE /api/messages",
		"M3 POST /api/messages/search",
		"M4 POST /api/messages",
		"M5 GET /api/messages/{message}",
		"M6 DELETE /api/messages/{message}",
		"M7 POST /api/messages/{message}/forward",
		"M8 POST /api/messages/{message}/reply",
		"M9 POST /api/messages/{message}/screenshots",
		"F1 GET /api/files/attachments/{attachment}",
		"F2 GET /api/files/email/{message}",
		"F3 GET /api/files/screenshots/{preview}",
		"A1 GET /api/analysis/spam/{message}",
		"A2 GET /api/analysis/deliverability/{message}",
		"P1 GET /api/screenshots/clients",
		"U1 GET /api/usage/limits",
		"U2 GET /api/usage/transactions",
		"D1 GET /api/devices",
		"D2 POST /api/devices",
		"D3 GET /api/devices/{device}/otp",
		"D4 POST /api/devices/otp",
		"D5 DELETE /api/devices/{device}",
	}
	out := make([]routeSpec, 0, len(lines))
	for _, l := range lines {
		f := strings.Fields(l)
		rs := routeSpec{id: f[0], method: f[1], segs: strings.Split(strings.TrimPrefix(f[2], "/"), "/")}
		for _, s := range rs.segs {
			if !strings.HasPrefix(s, "{") {
				rs.lits++
			}
		}
		out = append(out, rs)
	}
	return out
}()

// Routes lists the route ids of the inbox API, S1 to D5, in the order of
// docs/inbox-api.md.
func Routes() []string {
	ids := make([]string, len(routeTable))
	for i, r := range routeTable {
		ids[i] = r.id
	}
	return ids
}

// request is the simulator's one reading of an HTTP request. ServeHTTP and
// Touches both get it from parseRequest, so they can never disagree on
// which route and which ids a request names.
type request struct {
	route  string            // "S1".."D5", "" when nothing matched
	status int               // 0 when a route matched, else 404 or 405
	allow  []string          // the methods of the path, for a 405
	params map[string]string // path parameters, lower-cased
	query  map[string]string // lower-cased decoded name → first decoded value
	// server is the server the request names: the path parameter for
	// S3–S6, the first `server` query parameter for M1–M4 (lower-cased).
	server    string
	hasServer bool
}

// parseRequest is the one reading of a request (see the package
// documentation for its rules).
func parseRequest(r *http.Request) request {
	req := request{status: http.StatusNotFound}
	raw := r.URL.EscapedPath()
	p, err := url.PathUnescape(raw)
	if err != nil {
		p = unescape(raw, false)
	}
	segs := splitPath(p)
	method := strings.ToUpper(r.Method)

	var best *routeSpec
	var allow []string
	for i := range routeTable {
		rs := &routeTable[i]
		if !matchSegs(rs.segs, segs) {
			continue
		}
		if rs.method != method {
			allow = append(allow, rs.method)
			continue
		}
		if best == nil || rs.lits > best.lits {
			best = rs
		}
	}
	req.query = parseQuery(r.URL.RawQuery)
	if best == nil {
		if len(allow) > 0 {
			req.status = http.StatusMethodNotAllowed
			req.allow = allow
		}
		return req
	}
	req.status = 0
	req.route = best.id
	req.params = map[string]string{}
	for i, s := range best.segs {
		if strings.HasPrefix(s, "{") {
			req.params[strings.Trim(s, "{}")] = strings.ToLower(segs[i])
		}
	}
	switch req.route {
	case "S3", "S4", "S5", "S6":
		req.server, req.hasServer = req.params["server"], true
	case "M1", "M2", "M3", "M4":
		var v string
		v, req.hasServer = req.query["server"]
		req.server = strings.ToLower(v)
	}
	return req
}

// splitPath turns a decoded path into its segments: leading slash and one
// trailing slash dropped, dot segments resolved, empty segments kept.
func splitPath(p string) []string {
	p = strings.TrimPrefix(p, "/")
	if strings.HasSuffix(p, "/") {
		p = p[:len(p)-1]
	}
	var out []string
	for _, s := range strings.Split(p, "/") {
		switch s {
		case ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
		}
	}
	return out
}

func matchSegs(tmpl, segs []string) bool {
	if len(tmpl) != len(segs) {
		return false
	}
	for i, t := range tmpl {
		if strings.HasPrefix(t, "{") {
			if segs[i] == "" {
				return false
			}
		} else if !strings.EqualFold(t, segs[i]) {
			return false
		}
	}
	return true
}

// parseQuery splits a raw query on '&' and decodes each name and value
// leniently. Names are lower-cased; the first occurrence of a name wins.
// url.ParseQuery is not used: it refuses unencoded values and loses the
// order between names that differ only in letter case.
func parseQuery(raw string) map[string]string {
	q := map[string]string{}
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		name, value, _ := strings.Cut(part, "=")
		n := strings.ToLower(unescape(name, true))
		if _, seen := q[n]; seen {
			continue
		}
		q[n] = unescape(value, true)
	}
	return q
}

// unescape decodes %XX escapes (and '+' as a space when plus is set),
// keeping any invalid escape as it is.
func unescape(s string, plus bool) string {
	if !strings.ContainsAny(s, "%+") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '%' && i+2 < len(s) && ishex(s[i+1]) && ishex(s[i+2]):
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
		case c == '+' && plus:
			b.WriteByte(' ')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}
