package scope

import (
	"net/http"
	"strings"
)

// overrideHeaders ask a server to take a request as another method
// (Rails, Laravel, Symfony, Express's method-override, ASP.NET, …).
var overrideHeaders = []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"}

// cgiFold spells a header name as CGI-style upstreams (FastCGI, PHP, WSGI,
// Rack) read it: '_' and '.' are '-'. Caddy drops such names unless its
// server is told to expect them.
var cgiFold = strings.NewReplacer("_", "-", ".", "-")

// MethodOverride refuses a request that asks the upstream to take it as
// another method: an override header (any letter case, '_' or '.' for
// '-', which CGI-style upstreams read alike) or a _method query parameter (any letter
// case, its name percent-encoded, after '&' or ';'). An upstream that
// honours it would run a route keygate did not judge: GET of the key's own
// inbox as DELETE of it. Any override is refused, even one naming the
// request's own method: no official client sends one.
func MethodOverride(h http.Header, rawQuery string) error {
	for name := range h {
		if strings.ContainsAny(name, "_.") {
			name = cgiFold.Replace(name)
		}
		for _, o := range overrideHeaders {
			if strings.EqualFold(name, o) {
				return ambiguous("a method override header")
			}
		}
	}
	for q := rawQuery; q != ""; {
		var pair string
		pair, q = nextParam(q, "&;")
		name, _, _ := strings.Cut(pair, "=")
		if n, err := paramName(name); err == nil && strings.EqualFold(n, "_method") {
			return ambiguous("a _method parameter")
		}
	}
	return nil
}
