package caddymodule

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/caddyconf"
	"github.com/keygate/keygate/caddymodule/scope"
)

func init() {
	caddy.RegisterModule((*Handler)(nil))
}

// Default identity header names.
const (
	DefaultAccountHeader = "X-Keygate-Account"
	DefaultKeyIDHeader   = "X-Keygate-Key-Id"
	DefaultKeyTypeHeader = "X-Keygate-Key-Type"
	DefaultServerHeader  = "X-Keygate-Server"
)

// Handler lets a request through only with a live API key of the inbox
// API, sent as the official clients send it: `Authorization: Basic` with
// the key as user name (or as password), or `Authorization: Bearer`.
//
// On success it removes the Authorization header and every client-sent
// identity header, adds the identity headers the upstream trusts, sets
// {http.auth.user.id} to the key id and the {keygate.*} placeholders
// (account_id, key_id, key_type, server_id, key_prefix), and calls the next
// handler. A missing, malformed, unknown or deleted key gets one and the
// same 401; a key that is not cached while the store cannot answer gets 503
// with Retry-After, never 401.
type Handler struct {
	// Headers names the identity headers sent upstream, by field: account,
	// key_id, key_type and server (set for server-restricted keys only).
	// Client-sent headers of these names are always removed. Defaults:
	// X-Keygate-Account, X-Keygate-Key-Id, X-Keygate-Key-Type,
	// X-Keygate-Server.
	Headers map[string]string `json:"headers,omitempty"`

	// Realm is the realm of the WWW-Authenticate challenge. Default: keygate.
	Realm string `json:"realm,omitempty"`

	// RetryAfter is the Retry-After of a 503 answered while the store is
	// unreachable. Default: 2s.
	RetryAfter caddy.Duration `json:"retry_after,omitempty"`

	// Routes adds routes to the inbox API's table, or replaces one of its
	// routes (same method and path), for endpoints of your own. A
	// server-restricted key is refused (403) every route the table does
	// not know; a standard key is passed through.
	Routes []RouteConfig `json:"routes,omitempty"`

	// InspectLimit is the largest response body, in bytes, that keygate
	// reads: a message checked for a server-restricted key, or a response
	// that tells which server messages, attachments and previews belong
	// to. A message over it is answered 502 to a restricted key. Other
	// responses (attachments, raw emails, screenshots) always stream
	// untouched. Default: 8 MiB.
	InspectLimit int `json:"inspect_limit,omitempty"`

	// InspectMemory bounds the memory, in bytes, that reading responses
	// takes across all of this handler's requests. Responses are read as
	// they stream by, keeping only the fields keygate learns from, and a
	// held message past 64 KiB waits in an unlinked temporary file; each
	// reading is charged about 64 KiB (192 KiB when held). A request that
	// finds the budget spent waits up to store_timeout, then gets 503 with
	// Retry-After. Default: 64 MiB.
	InspectMemory int64 `json:"inspect_memory,omitempty"`

	app          *App
	policy       *scope.Policy
	inspectLimit int
	budget       *inspectBudget
	logger       *zap.Logger
	fields       [4]identityHeader
	challenge    []string
	retryAfter   []string

	lastNotStartedLog atomic.Int64 // unix nanoseconds
}

type identityHeader struct {
	field auth.Field
	name  string // canonical
}

// RouteConfig is a route of the scope policy.
type RouteConfig struct {
	// Method is the HTTP method.
	Method string `json:"method"`
	// Path with at most one parameter: {server} for the server the route
	// addresses, {message}, {attachment} or {preview} for an object, or
	// {device} and {id} for anything else. Matched case-insensitively.
	Path string `json:"path"`
	// Restricted is what a server-restricted key may do: "deny", "allow",
	// "own_server" (the server in the path, or else in the server query
	// parameter, must be the key's) or "own_object" (the message,
	// attachment or preview must be of the key's server).
	Restricted string `json:"restricted"`
}

func (rc RouteConfig) route() (scope.Route, error) {
	r := scope.Route{ID: rc.Method + " " + rc.Path, Method: rc.Method, Path: rc.Path, Class: scope.ACCT}
	switch rc.Restricted {
	case "deny":
		r.Restricted = scope.Deny
	case "allow":
		r.Restricted = scope.Allow
	case "own_server":
		r.Restricted, r.Class = scope.OwnServer, scope.SRV
		r.ServerInQuery = !strings.Contains(rc.Path, "{server}")
	case "own_object":
		r.Restricted, r.Class = scope.OwnObject, scope.OBJ
	default:
		return r, fmt.Errorf("route %s %s: restricted must be deny, allow, own_server or own_object, not %q", rc.Method, rc.Path, rc.Restricted)
	}
	return r, nil
}

// identityFields maps config names to identity fields, in header order.
var identityFields = []struct {
	name  string
	field auth.Field
	def   string
}{
	{"account", auth.FieldAccountID, DefaultAccountHeader},
	{"key_id", auth.FieldKeyID, DefaultKeyIDHeader},
	{"key_type", auth.FieldKeyType, DefaultKeyTypeHeader},
	{"server", auth.FieldServerID, DefaultServerHeader},
}

// Indexes of Handler.fields.
const (
	fieldAccount = iota
	fieldKeyID
	fieldKeyType
	fieldServer
)

// Placeholders set for every allowed request, as {keygate.<name>}.
var placeholders = []struct {
	name  string
	field auth.Field
}{
	{"keygate.account_id", auth.FieldAccountID},
	{"keygate.key_id", auth.FieldKeyID},
	{"keygate.key_type", auth.FieldKeyType},
	{"keygate.server_id", auth.FieldServerID},
	{"keygate.key_prefix", auth.FieldKeyPrefix},
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.keygate", New: func() caddy.Module { return new(Handler) }}
}

// Provision connects the handler to the keygate app.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	app, err := ctx.App("keygate")
	if err != nil {
		return fmt.Errorf("loading keygate app: %w", err)
	}
	h.app = app.(*App)
	return h.setup()
}

// setup resolves the defaults; Provision's part that needs no Caddy context.
func (h *Handler) setup() error {
	for i, f := range identityFields {
		name := f.def
		if v, ok := h.Headers[f.name]; ok {
			name = v
		}
		h.fields[i] = identityHeader{field: f.field, name: textproto.CanonicalMIMEHeaderKey(name)}
	}
	if h.Realm == "" {
		h.Realm = "keygate"
	}
	if h.RetryAfter == 0 {
		h.RetryAfter = caddy.Duration(2 * time.Second)
	}
	h.challenge = []string{
		fmt.Sprintf("Basic realm=%q", h.Realm),
		fmt.Sprintf("Bearer realm=%q", h.Realm),
	}
	secs := int((time.Duration(h.RetryAfter) + time.Second - 1) / time.Second)
	h.retryAfter = []string{strconv.Itoa(max(secs, 1))}

	custom := make([]scope.Route, 0, len(h.Routes))
	for _, rc := range h.Routes {
		r, err := rc.route()
		if err != nil {
			return fmt.Errorf("keygate: %w", err)
		}
		custom = append(custom, r)
	}
	policy, err := scope.New(scope.InboxAPI, custom)
	if err != nil {
		return fmt.Errorf("keygate: %w", err)
	}
	h.policy = policy
	h.inspectLimit = h.InspectLimit
	if h.inspectLimit == 0 {
		h.inspectLimit = DefaultInspectLimit
	}
	mem := h.InspectMemory
	if mem == 0 {
		mem = DefaultInspectMemory
	}
	h.budget = newInspectBudget(mem)
	return nil
}

// Defaults of InspectLimit and InspectMemory.
const (
	DefaultInspectLimit  = 8 << 20
	DefaultInspectMemory = 64 << 20
)

// Validate checks the header names and the realm.
func (h *Handler) Validate() error {
	for name := range h.Headers {
		if !knownField(name) {
			return fmt.Errorf("keygate: unknown identity header field %q; use account, key_id, key_type or server", name)
		}
	}
	seen := map[string]bool{}
	for _, f := range h.fields {
		switch {
		case !caddyconf.ValidHeaderName(f.name):
			return fmt.Errorf("keygate: %q is not a valid header name", f.name)
		case f.name == "Authorization" || f.name == "Proxy-Authorization" || f.name == "Cookie" || f.name == "Host":
			return fmt.Errorf("keygate: identity header may not be %s", f.name)
		case seen[f.name]:
			return fmt.Errorf("keygate: identity header %s is used for two fields", f.name)
		}
		seen[f.name] = true
	}
	if strings.ContainsAny(h.Realm, "\"\\\r\n") {
		return fmt.Errorf("keygate: realm may not contain quotes, backslashes or line breaks")
	}
	if h.RetryAfter < 0 {
		return fmt.Errorf("keygate: retry_after must be positive")
	}
	if h.InspectLimit < 0 {
		return fmt.Errorf("keygate: inspect_limit must be positive")
	}
	if h.InspectMemory < 0 {
		return fmt.Errorf("keygate: inspect_memory must be positive")
	}
	return nil
}

// ServeHTTP checks the request's key, then its scope. Each step answers
// the request, or lets it go on with outAllowed, and returns its outcome:
// counted here, once, and before a request that passes untouched streams.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	client := clientIP(r)
	rt, id, o, err := h.authenticate(w, r, client)
	if o != outAllowed {
		decisionCounters[o].Inc()
		return err
	}
	h.setIdentity(r, id)
	server, o, forward, err := h.enforce(w, r, next, rt, id)
	if o != outUncounted {
		decisionCounters[o].Inc()
	}
	recordActivity(rt, r, id, o, client, server)
	if forward {
		return next.ServeHTTP(w, r) // streams untouched
	}
	return err
}

// recordActivity notes the request in its key's activity, when it was let
// through or refused by the key's scope: the other outcomes (502, 503)
// are keygate's or the upstream's, not the key's doing. Never the key:
// its id, the client's address, its User-Agent and the server the
// request names.
func recordActivity(rt *runtime, r *http.Request, id *auth.Identity, o outcome, client, server string) {
	u := auth.Use{Client: client, Server: server}
	switch o {
	case outAllowed, outUncounted: // outUncounted: let through, the upstream failed
	case outForbidden, outNotFound, outBadRequest:
		u.Refused = true
	default:
		return
	}
	if ua := r.Header["User-Agent"]; len(ua) > 0 {
		u.Agent = ua[0]
	}
	rt.activity.Record(id, u)
}

// authenticate checks the request's key, sent by client (an address),
// and returns its identity, or answers the request when the key is
// refused or cannot be checked.
func (h *Handler) authenticate(w http.ResponseWriter, r *http.Request, client string) (*runtime, *auth.Identity, outcome, error) {
	rt := h.app.runtimeFor(r.Context())
	if rt == nil { // the app has not started yet
		return nil, nil, outUnavailable, h.unavailable(w, nil, errNotStarted)
	}
	d := rt.verifier.VerifyFrom(r.Context(), r.Header["Authorization"], client)
	if d.Cached {
		cacheCounters[d.Cache].Inc()
	}
	switch d.Result {
	case auth.Unauthorized:
		return rt, nil, outUnauthorized, h.unauthorized(w, r)
	case auth.Unavailable:
		return rt, nil, outUnavailable, h.unavailable(w, rt, d.Err)
	case auth.Throttled:
		return rt, nil, outThrottled, throttled(w, d.RetryAfter)
	}
	return rt, d.Identity, outAllowed, nil
}

// setIdentity replaces the request's credentials and every client-sent
// identity header by the key's identity headers, and sets the
// placeholders.
func (h *Handler) setIdentity(r *http.Request, id *auth.Identity) {
	if c := h.logger.Check(zapcore.DebugLevel, "API key accepted"); c != nil {
		c.Write(zap.String("key_id", id.KeyID), zap.String("key_prefix", id.Display))
	}
	delete(r.Header, "Authorization")
	h.dropForgedAliases(r.Header)
	h.dropIdentityConnectionTokens(r.Header)
	h.dropIdentityTrailers(r)
	// One allocation for all the values: they must be the request's own,
	// since a later handler (request_header) may edit them in place.
	vals := make([]string, len(h.fields))
	for i, f := range h.fields {
		if v := id.Field(f.field); v != "" {
			vals[i] = v
			r.Header[f.name] = vals[i : i+1 : i+1]
		} else {
			delete(r.Header, f.name) // also drops a forged one
		}
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("http.auth.user.id", id.Value(auth.FieldKeyID))
		for _, p := range placeholders {
			if v := id.Value(p.field); v != nil {
				repl.Set(p.name, v)
			}
		}
	}
}

// Error bodies in the inbox API's error shape. They are the same for every
// kind of refused key, so a client learns nothing about why.
const (
	unauthorizedBody = `{"type":"AuthenticationError","status":401,"errors":[{"field":"authorization","detail":[{"description":"Authentication failed, check your API key.","code":"invalid_api_key"}]}]}` + "\n"
	unavailableBody  = `{"type":"ServiceUnavailable","status":503,"errors":[{"field":"authorization","detail":[{"description":"The API key could not be checked right now. Retry shortly.","code":"key_store_unavailable"}]}]}` + "\n"
	throttledBody    = `{"type":"TooManyRequests","status":429,"errors":[{"field":"authorization","detail":[{"description":"Too many requests with API keys that failed. Retry later with a valid key.","code":"too_many_failed_keys"}]}]}` + "\n"
)

// clientIP is Caddy's idea of the client address, which honours the
// server's trusted_proxies.
func clientIP(r *http.Request) string {
	ip, _ := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string)
	return ip
}

// throttled answers 429 to a client that sent too many keys that failed.
func throttled(w http.ResponseWriter, wait time.Duration) error {
	w.Header().Set("Retry-After", strconv.Itoa(int((wait+time.Second-1)/time.Second)))
	return writeError(w, http.StatusTooManyRequests, throttledBody)
}

func (h *Handler) unauthorized(w http.ResponseWriter, r *http.Request) error {
	if c := h.logger.Check(zapcore.DebugLevel, "API key refused"); c != nil {
		c.Write(zap.String("remote_ip", r.RemoteAddr))
	}
	w.Header()["Www-Authenticate"] = h.challenge
	return writeError(w, http.StatusUnauthorized, unauthorizedBody)
}

var errNotStarted = errors.New("keygate app has not started")

// unavailable answers 503 (fail closed) to a request whose key the store
// could not check. An outage fails every uncached request: the runtime's
// reporter logs its cause and fix once a minute, not once a request.
func (h *Handler) unavailable(w http.ResponseWriter, rt *runtime, err error) error {
	if rt != nil {
		rt.report.Report("key lookup", err)
	} else {
		now := time.Now().UnixNano()
		if last := h.lastNotStartedLog.Load(); now-last >= int64(time.Minute) && h.lastNotStartedLog.CompareAndSwap(last, now) {
			h.logger.Warn("API key could not be checked", zap.Error(err))
		}
	}
	w.Header()["Retry-After"] = h.retryAfter
	return writeError(w, http.StatusServiceUnavailable, unavailableBody)
}

func writeError(w http.ResponseWriter, status int, body string) error {
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, err := w.Write([]byte(body))
	return err
}

func knownField(name string) bool {
	for _, f := range identityFields {
		if f.name == name {
			return true
		}
	}
	return false
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
