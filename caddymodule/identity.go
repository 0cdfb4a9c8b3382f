package caddymodule

import (
	"io"
	"net/http"
	"net/textproto"
	"strings"
)

// The identity headers reach the upstream as keygate set them, whatever
// the client sends: a client's own headers of those names are removed
// (ServeHTTP), and so are the other ways a client could make a proxy drop
// or shadow them — spellings with underscores or dots, Connection tokens and
// trailers.

// isIdentity reports whether name, as a client may spell it, names an
// identity header: in any letter case, and with '_' or '.' for '-', since
// CGI-style upstreams (FastCGI, PHP, WSGI, Rack) read X_Keygate_Account
// and X.Keygate.Account as X-Keygate-Account.
func (h *Handler) isIdentity(name string) bool {
	if strings.ContainsAny(name, "_.") {
		name = cgiFold.Replace(name)
	}
	for _, f := range h.fields {
		if strings.EqualFold(name, f.name) {
			return true
		}
	}
	return false
}

// cgiFold spells a header name as CGI-style upstreams read it.
var cgiFold = strings.NewReplacer("_", "-", ".", "-")

// dropForgedAliases removes client headers that spell an identity header
// with underscores or dots. net/http leaves such names as sent
// (X_keygate_account); Caddy drops them unless its server is told to
// expect them (expected_underscore_headers, expected_dot_headers).
// Ordinary header names hold neither, so this costs a byte scan per header
// name.
func (h *Handler) dropForgedAliases(hdr http.Header) {
	for name := range hdr {
		if strings.ContainsAny(name, "_.") && h.isIdentity(name) {
			delete(hdr, name)
		}
	}
}

// dropIdentityConnectionTokens removes from Connection every token that
// names an identity header. reverse_proxy deletes the headers Connection
// names, as hop-by-hop, after keygate has set its own: a client could have
// a restricted key's request reach the upstream without its key type and
// server. The other tokens keep their meaning.
func (h *Handler) dropIdentityConnectionTokens(hdr http.Header) {
	vals := hdr["Connection"]
	if !h.namesIdentity(vals) {
		return
	}
	kept := make([]string, 0, len(vals))
	for _, v := range vals {
		var tokens []string
		for tok := range strings.SplitSeq(v, ",") {
			if t := textproto.TrimString(tok); t != "" && !h.isIdentity(t) {
				tokens = append(tokens, t)
			}
		}
		if len(tokens) > 0 {
			kept = append(kept, strings.Join(tokens, ", "))
		}
	}
	if len(kept) == 0 {
		delete(hdr, "Connection")
		return
	}
	hdr["Connection"] = kept
}

// namesIdentity reports whether a Connection header names an identity
// header; it allocates nothing, so that the common case costs nothing.
func (h *Handler) namesIdentity(connection []string) bool {
	for _, v := range connection {
		for tok := range strings.SplitSeq(v, ",") {
			if h.isIdentity(textproto.TrimString(tok)) {
				return true
			}
		}
	}
	return false
}

// dropIdentityTrailers keeps identity headers out of the request's
// trailers, which reverse_proxy forwards (and declares upstream) after
// keygate has set the headers. net/http fills r.Trailer in only when the
// body is read to its end, with every trailer the client sent, declared or
// not: the declared names are removed now, the rest at the end of the body.
func (h *Handler) dropIdentityTrailers(r *http.Request) {
	if r.Body == nil || r.Body == http.NoBody || (r.Trailer == nil && r.ContentLength >= 0) {
		return // a body of known length carries no trailers
	}
	h.dropIdentityNames(r.Trailer)
	r.Body = &trailerFilter{ReadCloser: r.Body, r: r, h: h}
}

func (h *Handler) dropIdentityNames(hdr http.Header) {
	for name := range hdr {
		if h.isIdentity(name) {
			delete(hdr, name)
		}
	}
}

// trailerFilter removes identity headers from the request's trailers as
// soon as net/http has read them, before reverse_proxy, which wraps this
// body, copies them for the upstream.
type trailerFilter struct {
	io.ReadCloser
	r *http.Request
	h *Handler
}

func (b *trailerFilter) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.h.dropIdentityNames(b.r.Trailer)
	}
	return n, err
}
