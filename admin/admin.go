package admin

import (
	"fmt"
	"net/http"
	"net/textproto"
	"net/url"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/keygate/keygate/caddymodule"
	"github.com/keygate/keygate/caddymodule/caddyconf"
	"github.com/keygate/keygate/caddymodule/inboxapi"
)

func init() {
	caddy.RegisterModule((*Handler)(nil))
}

// DefaultInboxTimeout is the default of Handler.InboxTimeout.
const DefaultInboxTimeout = 5 * time.Second

// Handler is the dashboard where Account Administrators create, reveal
// and delete their account's API keys: HTML pages, the JSON API behind
// them, and the audit log; and where operators see the fleet. Mount it on
// any site or path (with handle_path) behind the authentication you use:
// the user is {http.auth.user.id}, and their role in each account comes
// from keygate's members table. A request authenticated with an API key
// is refused. It answers every request it gets; it never calls the next
// handler.
type Handler struct {
	// InboxAPI is the base URL of the inbox API, such as
	// http://inbox-api.internal:8080. The dashboard lists an account's
	// inboxes with GET <inbox_api>/api/servers, sent on the account's
	// behalf with keygate's identity headers, to offer them for
	// server-restricted keys and to show inbox names. Placeholders such as
	// {env.INBOX_API} are resolved. Without it, server-restricted keys
	// cannot be created here.
	InboxAPI string `json:"inbox_api,omitempty"`

	// InboxTimeout bounds one listing of the inboxes. Default: 5s.
	InboxTimeout caddy.Duration `json:"inbox_timeout,omitempty"`

	// Headers names the identity headers sent to the inbox API, by field:
	// account and key_type. Give the same names as to the keygate
	// directive. Defaults: X-Keygate-Account, X-Keygate-Key-Type.
	Headers map[string]string `json:"headers,omitempty"`

	// Operators are the user ids ({http.auth.user.id}) of the people who
	// run keygate. They alone see the Fleet page and GET /api/fleet (the
	// instances' hosts, process ids and start times), whether or not they
	// are members of an account; to anyone else these answer 404, as a
	// page that does not exist. Account Administrators are the inbox
	// API's customers: they see their deletions' receipts ("Revoked on 3
	// of 3 instances"), never the infrastructure.
	Operators []string `json:"operators,omitempty"`

	dash      *Dashboard
	transport *http.Transport
}

// CaddyModule returns the Caddy module information.
func (*Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.keygate_admin", New: func() caddy.Module { return new(Handler) }}
}

// Provision connects the dashboard to the keygate app. It opens nothing.
func (h *Handler) Provision(ctx caddy.Context) error {
	app, err := ctx.App("keygate")
	if err != nil {
		return fmt.Errorf("loading keygate app: %w", err)
	}
	if h.InboxTimeout == 0 {
		h.InboxTimeout = caddy.Duration(DefaultInboxTimeout)
	}
	cfg := Config{
		Backend:   app.(*caddymodule.App),
		Identify:  identify,
		Operators: h.Operators,
		ClientIP:  clientIP,
		Logger:    ctx.Logger(),
	}
	if h.InboxAPI != "" {
		base := caddy.NewReplacer().ReplaceKnown(h.InboxAPI, "")
		if err := checkInboxAPI(base); err != nil {
			return err
		}
		h.transport = http.DefaultTransport.(*http.Transport).Clone()
		cfg.Inboxes = &inboxapi.Client{
			BaseURL:       base,
			AccountHeader: h.header("account", caddymodule.DefaultAccountHeader),
			KeyTypeHeader: h.header("key_type", caddymodule.DefaultKeyTypeHeader),
			Timeout:       time.Duration(h.InboxTimeout),
			Client:        &http.Client{Transport: h.transport},
		}
	}
	h.dash = New(cfg)
	return nil
}

func (h *Handler) header(field, def string) string {
	if v := h.Headers[field]; v != "" {
		return textproto.CanonicalMIMEHeaderKey(v)
	}
	return def
}

func checkInboxAPI(base string) error {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("keygate_admin: inbox_api must be an http or https URL such as http://inbox-api.internal:8080, not %q", base)
	}
	return nil
}

// Validate checks the settings.
func (h *Handler) Validate() error {
	for field, name := range h.Headers {
		if field != "account" && field != "key_type" {
			return fmt.Errorf("keygate_admin: unknown header field %q; use account or key_type", field)
		}
		if !caddyconf.ValidHeaderName(name) {
			return fmt.Errorf("keygate_admin: %q is not a valid header name", name)
		}
	}
	if h.InboxTimeout < 0 {
		return fmt.Errorf("keygate_admin: inbox_timeout must be positive")
	}
	if slices.Contains(h.Operators, "") {
		return fmt.Errorf("keygate_admin: an operator's user id is empty")
	}
	return nil
}

// Cleanup closes the idle connections to the inbox API.
func (h *Handler) Cleanup() error {
	if h.transport != nil {
		h.transport.CloseIdleConnections()
	}
	return nil
}

// ServeHTTP serves the dashboard. It never calls next.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	h.dash.ServeHTTP(w, r)
	return nil
}

// identify reads the user that Caddy's authentication set. keygate's own
// handler sets {keygate.key_id} (and the user id to the key id) for a
// request with an API key: such a request is refused.
func identify(r *http.Request) (string, error) {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return "", nil
	}
	if id, _ := repl.GetString("keygate.key_id"); id != "" {
		return "", ErrAPIKey
	}
	user, _ := repl.GetString("http.auth.user.id")
	return user, nil
}

// clientIP is Caddy's idea of the client address, which honours the
// server's trusted_proxies.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	return remoteHost(r)
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
