package admin

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/fleet"
	"github.com/keygate/keygate/caddymodule/inboxapi"
	"github.com/keygate/keygate/caddymodule/store"
)

// Backend is what the dashboard works with: the keygate app
// (*caddymodule.App). Both return nil until the app has started.
type Backend interface {
	Store() store.Store
	Manager() *auth.Manager
	// Receipt says on how many live instances a deletion (or creation)
	// has taken effect; ok is false for a store without a fleet.
	Receipt(ctx context.Context, k store.Key) (r fleet.Receipt, ok bool, err error)
	// Instances lists the fleet's live instances (nil without a fleet).
	Instances(ctx context.Context) ([]store.Instance, error)
}

// ErrAPIKey is returned by an Identify function for a request that was
// authenticated with an API key: the dashboard refuses it.
var ErrAPIKey = errors.New("the dashboard does not accept API keys")

// Config is what a Dashboard needs.
type Config struct {
	// Backend gives the store and the key manager.
	Backend Backend
	// Inboxes lists an account's inboxes, for server-restricted keys and
	// for showing inbox names. Nil: restricted keys cannot be created and
	// the list shows inbox ids.
	Inboxes inboxapi.Lister
	// Identify returns the signed-in user's id: "" when nobody is signed
	// in, ErrAPIKey when the request carried an API key.
	Identify func(*http.Request) (string, error)
	// Operators are the users, as Identify names them, who run keygate:
	// they alone see the fleet (the instances' hosts, process ids and
	// start times), whether or not they are members of an account.
	// Account Administrators are the inbox API's customers and never see
	// the infrastructure.
	Operators []string
	// ClientIP returns where a request came from, for the audit log.
	// Default: the host of the request's RemoteAddr.
	ClientIP func(*http.Request) string
	// Logger receives one line per action (never a key). Default: none.
	Logger *zap.Logger
	// Now is the clock, for "last used 3 minutes ago". Default: time.Now.
	Now func() time.Time
}

// Dashboard serves the pages, the JSON API and the static files, on
// whatever path it is mounted: its pages use relative links only.
type Dashboard struct {
	cfg       Config
	operators map[string]bool
	mux       *http.ServeMux
	cop       *http.CrossOriginProtection
	csrf      atomic.Pointer[csrfKeys]
}

// Messages that the product document and the issue fix.
const (
	msgNotAdmin   = "You must be an Account Administrator to manage API keys."
	msgNoAPIKeys  = "The dashboard does not accept API keys. Sign in to the dashboard instead."
	msgNoUser     = "You are not signed in. The dashboard needs an authentication handler in front of it (for example basic_auth, or your single sign-on), which sets {http.auth.user.id}."
	msgNoAccount  = "Account not found, or you are not one of its members."
	msgNoPage     = "There is no such page."
	msgNoMember   = "You are not a member of any account. " + msgNotAdmin
	msgCSRF       = "This request did not come from the dashboard's own page (the CSRF token is missing or does not match). Reload the page and try again."
	msgCrossSite  = "Cross-site requests are refused. Use the dashboard's own page."
	msgNoKey      = "API key not found. It may have been deleted."
	msgBadName    = "Names are 1–100 printable characters, with no space at the start or end."
	msgNameTaken  = "A key with this name already exists in this account."
	msgForeign    = "That inbox is not in this account."
	msgPickInbox  = "Select the inbox the key may use."
	msgNoInboxAPI = "Server-restricted keys cannot be created here: the dashboard has no inbox_api configured."
	msgMismatch   = "The name you typed does not match the key's name. The key was not deleted."
	msgStarting   = "keygate is starting. Try again in a moment."
	msgStoreDown  = "The key store is not answering. Try again in a moment."
	msgStoreLost  = "The key store stopped answering, so whether this change was made is not known. Reload the API Keys list to see, and try again if it was not."
	msgInternal   = "Something went wrong. The error was logged; try again."
)

// New builds a dashboard.
func New(cfg Config) *Dashboard {
	if cfg.ClientIP == nil {
		cfg.ClientIP = remoteHost
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d := &Dashboard{cfg: cfg, operators: map[string]bool{}, cop: http.NewCrossOriginProtection()}
	for _, u := range cfg.Operators {
		if u != "" { // "" is nobody signed in
			d.operators[u] = true
		}
	}
	d.routes()
	return d
}

// ServeHTTP sets the security headers, then serves the request.
func (d *Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-store")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	d.mux.ServeHTTP(w, r)
}

// handlerFunc serves one route for a signed-in user.
type handlerFunc func(w http.ResponseWriter, r *http.Request, s *session) error

// routes builds the mux. A path served for some methods answers others
// with 405 and an Allow header. The operators' paths exist for operators
// only: see operatorsOnly.
func (d *Dashboard) routes() {
	d.mux = http.NewServeMux()
	allow := map[string][]string{}
	hidden := map[string]bool{}
	var order []string
	add := func(method, path string, h http.HandlerFunc) {
		if hidden[path] {
			h = d.operatorsOnly(h)
		}
		d.mux.HandleFunc(method+" "+path, h)
		if _, ok := allow[path]; !ok {
			order = append(order, path)
		}
		allow[path] = append(allow[path], method)
	}
	page := func(method, path string, fn handlerFunc) { add(method, path, d.handle(false, fn)) }
	api := func(method, path string, fn handlerFunc) { add(method, path, d.handle(true, fn)) }
	hidden["/fleet"], hidden["/api/fleet"] = true, true

	page("GET", "/{$}", d.keysPage)
	page("GET", "/key", d.keyPage)
	page("GET", "/new", d.newPage)
	page("POST", "/create", d.createPage)
	page("POST", "/reveal", d.revealPage)
	page("GET", "/delete", d.deleteConfirmPage)
	page("POST", "/delete", d.deletePage)
	page("GET", "/audit", d.auditPage)
	page("GET", "/fleet", d.fleetPage)
	add("GET", "/static/{file}", d.static)

	api("GET", "/api/accounts", d.apiAccounts)
	api("GET", "/api/accounts/{account}/keys", d.apiKeys)
	api("POST", "/api/accounts/{account}/keys", d.apiCreate)
	api("GET", "/api/accounts/{account}/keys/{key}", d.apiKey)
	api("POST", "/api/accounts/{account}/keys/{key}/reveal", d.apiReveal)
	api("POST", "/api/accounts/{account}/keys/{key}/delete", d.apiDelete)
	api("GET", "/api/accounts/{account}/inboxes", d.apiInboxes)
	api("GET", "/api/accounts/{account}/audit", d.apiAudit)
	api("GET", "/api/fleet", d.apiFleet)

	for _, path := range order {
		methods := allow[path]
		if slices.Contains(methods, "GET") {
			methods = append(methods, "HEAD")
		}
		allowed := strings.Join(methods, ", ")
		var h http.HandlerFunc = func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", allowed)
			d.writeError(w, r, nil, isAPI(r), fail(http.StatusMethodNotAllowed, "This address takes "+allowed+" only."))
		}
		if hidden[path] {
			h = d.operatorsOnly(h)
		}
		d.mux.HandleFunc(path, h)
	}
	d.mux.HandleFunc("/", d.notFound)
}

// notFound is the answer for a page that does not exist.
func (d *Dashboard) notFound(w http.ResponseWriter, r *http.Request) {
	d.writeError(w, r, nil, isAPI(r), fail(http.StatusNotFound, msgNoPage))
}

// operatorsOnly serves h to operators. Anyone else, signed in or not,
// gets exactly the answer of a page that does not exist, whatever the
// method: not a 403, so that an account's users learn nothing of the
// infrastructure, not even that the page exists.
func (d *Dashboard) operatorsOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		user, err := d.cfg.Identify(r)
		if err != nil || !d.operators[user] {
			d.notFound(w, r)
			return
		}
		h(w, r)
	}
}

func isAPI(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/api/") }

// session is one request of a signed-in user.
type session struct {
	user     string
	st       store.Store
	mgr      *auth.Manager
	csrfKeys [][]byte           // the current secret's first
	members  []store.Membership // nil until loaded
	loaded   bool
}

// handle identifies the user, refuses cross-site unsafe requests, and
// renders what fn returns as an error.
func (d *Dashboard) handle(api bool, fn handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := d.begin(w, r)
		if err == nil {
			err = fn(w, r, s)
		}
		if err != nil {
			d.writeError(w, r, s, api, err)
		}
	}
}

func (d *Dashboard) begin(w http.ResponseWriter, r *http.Request) (*session, error) {
	user, err := d.cfg.Identify(r)
	switch {
	case errors.Is(err, ErrAPIKey):
		return nil, fail(http.StatusForbidden, msgNoAPIKeys)
	case err != nil:
		return nil, err
	case user == "":
		return nil, fail(http.StatusUnauthorized, msgNoUser)
	}
	st, mgr := d.cfg.Backend.Store(), d.cfg.Backend.Manager()
	if st == nil || mgr == nil {
		return nil, fail(http.StatusServiceUnavailable, msgStarting)
	}
	s := &session{user: user, st: st, mgr: mgr, csrfKeys: d.csrfKeysOf(mgr)}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		if err := d.cop.Check(r); err != nil {
			return s, fail(http.StatusForbidden, msgCrossSite)
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
	}
	return s, nil
}

// csrfKeysOf derives the CSRF keys from the manager's keyring once.
func (d *Dashboard) csrfKeysOf(mgr *auth.Manager) [][]byte {
	if k := d.csrf.Load(); k != nil && k.kr == mgr.Keyring {
		return k.keys
	}
	k := &csrfKeys{kr: mgr.Keyring, keys: mgr.Keyring.DeriveKeys(csrfPurpose)}
	d.csrf.Store(k)
	return k.keys
}

// account is an account the user may manage.
type account struct {
	ID   string
	Name string
	Role store.Role
}

// memberships returns the user's accounts with their names, sorted by name.
func (s *session) memberships(ctx context.Context) ([]account, error) {
	if !s.loaded {
		ms, err := s.st.MembershipsOf(ctx, s.user)
		if err != nil {
			return nil, err
		}
		s.members, s.loaded = ms, true
	}
	out := make([]account, 0, len(s.members))
	for _, m := range s.members {
		a, err := s.st.GetAccount(ctx, m.AccountID)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, account{ID: a.ID, Name: a.Name, Role: m.Role})
	}
	slices.SortFunc(out, func(a, b account) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// admin returns the account if the user administers it: the check every
// request that names an account goes through.
func (s *session) admin(ctx context.Context, accountID string) (account, error) {
	accts, err := s.memberships(ctx)
	if err != nil {
		return account{}, err
	}
	for _, a := range accts {
		if a.ID == accountID && accountID != "" {
			if a.Role != store.Admin {
				return a, fail(http.StatusForbidden, msgNotAdmin)
			}
			return a, nil
		}
	}
	return account{}, fail(http.StatusNotFound, msgNoAccount)
}

// checkCSRF compares the request's token with the user's token for the
// account.
func (s *session) checkCSRF(accountID, got string) error {
	if !validCSRF(s.csrfKeys, s.user, accountID, got) {
		return fail(http.StatusForbidden, msgCSRF)
	}
	return nil
}

func (s *session) token(accountID string) string { return csrfToken(s.csrfKeys[0], s.user, accountID) }

// actor is the audit log's who and from where.
func (d *Dashboard) actor(r *http.Request, s *session) auth.Actor {
	return auth.Actor{UserID: s.user, RemoteAddr: d.cfg.ClientIP(r)}
}

// problem is an error with a status and a message fit for the user.
type problem struct {
	status int
	msg    string
}

func (p *problem) Error() string { return p.msg }

func fail(status int, msg string) error { return &problem{status: status, msg: msg} }

// statusOf maps an error to its status and a message for the user,
// logging what the user is not told. A store that does not answer (down,
// failing over, out of connections) is a 503 to retry, not a 500; for a
// change, the user is told that its outcome is not known, since the
// commit may have happened before the answer was lost.
func (d *Dashboard) statusOf(r *http.Request, s *session, err error) (int, string) {
	var p *problem
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &p):
		return p.status, p.msg
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, "The request is too large."
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, msgNoKey
	}
	if diag, ok := storeDown(s, err); ok {
		d.cfg.Logger.Warn("dashboard request failed: the store is not answering", zap.String("method", r.Method), zap.String("path", r.URL.Path),
			zap.String("store", diag.Kind), zap.String("cause", diag.Cause), zap.String("detail", diag.Detail))
		if r.Method == http.MethodPost {
			return http.StatusServiceUnavailable, msgStoreLost
		}
		return http.StatusServiceUnavailable, msgStoreDown
	}
	d.cfg.Logger.Error("dashboard request failed", zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
	return http.StatusInternalServerError, msgInternal
}

// storeDown says whether err is the session's store not answering, a
// problem that clears by itself, with the store's diagnosis.
func storeDown(s *session, err error) (store.Diagnosis, bool) {
	if s == nil || s.st == nil {
		return store.Diagnosis{}, false
	}
	diag := s.st.Diagnose(err)
	switch diag.Kind {
	case store.KindUnreachable, store.KindConnectionLost, store.KindServerUnavailable,
		store.KindTooManyConnections, store.KindTimeout, store.KindBusy:
		return diag, !diag.Permanent
	}
	return diag, false
}

func remoteHost(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}
