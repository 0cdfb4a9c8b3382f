package admin

import (
	"bytes"
	"embed"
	"errors"
	"html/template"
	"net/http"
	"path"
	"strconv"
	"time"

	"github.com/dustin/go-humanize"
	"go.uber.org/zap"

	"github.com/keygate/keygate/caddymodule/inboxapi"
	"github.com/keygate/keygate/caddymodule/store"
)

//go:embed web
var webFS embed.FS

// funcs are the templates' helpers.
var funcs = template.FuncMap{
	// secret is the argument of the secret-field template.
	"secret": func(id, value string) map[string]string { return map[string]string{"ID": id, "Value": value} },
	// seen is the argument of the seen template: one list of a key's page.
	"seen": func(id, title, column string, rows []seenRow, others, othersLabel string) map[string]any {
		return map[string]any{"ID": id, "Title": title, "Column": column, "Rows": rows, "Others": others, "OthersLabel": othersLabel}
	},
}

// templates holds one template set per page: the layout, the icons and
// the page's content.
var templates = func() map[string]*template.Template {
	out := map[string]*template.Template{}
	for _, name := range []string{"keys", "key", "new", "secret", "delete", "deleted", "audit", "fleet", "error"} {
		out[name] = template.Must(template.New(name).Funcs(funcs).ParseFS(webFS,
			"web/templates/layout.html", "web/templates/icons.html", "web/templates/"+name+".html"))
	}
	return out
}()

// view is what every page shows around its content.
type view struct {
	Title    string
	User     string
	Accounts []account // the account switcher, when there are several
	Account  *account  // the current account; nil on some error pages
	Selected string    // the account the switcher shows: Account's, or the one an error page is about
	CSRF     string    // the current account's token
	Section  string    // "keys", "audit" or "fleet": the current navigation item
	Operator bool      // the user is an operator: the navigation offers the fleet
}

// keyRow is a key as the pages show it.
type keyRow struct {
	ID, Name, Display string
	Restricted        bool
	ServerID          string
	InboxName         string // "" when unknown
	InboxMissing      bool   // the inbox API answered, without this inbox
	Created           string
	CreatedISO        string
	CreatedBy         string
	LastUsed          string // "never", or "3 minutes ago"
	LastUsedTitle     string
}

const timeLayout = "2 Jan 2006, 15:04 UTC"

func (d *Dashboard) row(k store.Key, names map[string]string) keyRow {
	kr := keyRow{
		ID: k.ID, Name: k.Name, Display: k.Display,
		Restricted: k.Type == store.Restricted, ServerID: k.ServerID, InboxName: names[k.ServerID],
		Created: k.CreatedAt.UTC().Format(timeLayout), CreatedISO: k.CreatedAt.UTC().Format(time.RFC3339),
		CreatedBy: k.CreatedBy, LastUsed: "never",
	}
	kr.InboxMissing = names != nil && k.ServerID != "" && kr.InboxName == ""
	if k.LastUsed != nil {
		kr.LastUsed = humanize.RelTime(*k.LastUsed, d.cfg.Now(), "ago", "from now")
		kr.LastUsedTitle = k.LastUsed.UTC().Format(timeLayout)
	}
	return kr
}

func (d *Dashboard) base(s *session, accts []account, acct *account, title, section string) view {
	v := view{Title: title, User: s.user, Accounts: accts, Account: acct, Section: section, Operator: d.operators[s.user]}
	if acct != nil {
		v.Selected = acct.ID
		v.CSRF = s.token(acct.ID)
	}
	return v
}

// render writes a page; a template error is returned before anything is
// written.
func (d *Dashboard) render(w http.ResponseWriter, status int, name string, data any) error {
	var buf bytes.Buffer
	if err := templates[name].ExecuteTemplate(&buf, "layout", data); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	w.WriteHeader(status)
	_, err := buf.WriteTo(w)
	return err
}

type keysView struct {
	view
	Keys        []keyRow
	InboxError  string
	CanRestrict bool

	Search     string              // the search the list shows, cleaned
	Total      string              // how many keys match, as a number for people
	Hidden     map[string]string   // the search form's other parameters: sort, order, limit
	Sorts      map[string]sortLink // the sortable columns' links, by sort name
	Clear      string              // the list without the search
	First      string              // the first page, when this is not it
	Prev, Next string              // the neighbouring pages; "" for none
}

// defaultAccount is the account a user lands on: the first they
// administer, else the first they are a member of; nil for none.
func defaultAccount(accts []account) *account {
	for i := range accts {
		if accts[i].Role == store.Admin {
			return &accts[i]
		}
	}
	if len(accts) == 0 {
		return nil
	}
	return &accts[0]
}

// keysPage lists the account's keys: the account of ?account=, or the
// user's default account. An operator who is a member of no account
// lands on the fleet.
func (d *Dashboard) keysPage(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	accts, err := s.memberships(ctx)
	if err != nil {
		return err
	}
	id := r.URL.Query().Get("account")
	if id == "" {
		def := defaultAccount(accts)
		switch {
		case def == nil && d.operators[s.user]:
			return seeOther(w, "fleet")
		case def == nil:
			return fail(http.StatusForbidden, msgNoMember)
		}
		id = def.ID
	}
	acct, err := s.admin(ctx, id)
	if err != nil {
		return err
	}
	l, err := parseKeyListing(r.URL.Query())
	if err != nil {
		return err
	}
	page, err := listKeys(ctx, s, acct.ID, l)
	if err != nil {
		return err
	}
	names, inboxErr := d.inboxNames(ctx, acct.ID, page.Keys...)
	v := keysView{view: d.base(s, accts, &acct, "API Keys", "keys"), InboxError: inboxErr, CanRestrict: d.cfg.Inboxes != nil}
	for _, k := range page.Keys {
		v.Keys = append(v.Keys, d.row(k, names))
	}
	v.listing(acct.ID, l, page)
	return d.render(w, http.StatusOK, "keys", v)
}

// listing fills in the search form, the column links and the pager.
func (v *keysView) listing(accountID string, l keyListing, page store.KeyPage) {
	v.Search, v.Total = l.Search, humanize.Comma(int64(page.Total))
	v.Hidden = map[string]string{}
	if l.Order != store.ByCreated {
		v.Hidden["sort"] = string(l.Order)
	}
	if l.Desc {
		v.Hidden["order"] = "desc"
	}
	if l.Limit != 0 {
		v.Hidden["limit"] = strconv.Itoa(l.Limit)
	}
	v.Sorts = l.sortLinks(accountID)
	first := l.at("")
	if l.Search != "" {
		unsearched := first
		unsearched.Search = ""
		v.Clear = unsearched.href(accountID)
	}
	if l.Cursor != "" {
		v.First = first.href(accountID)
	}
	if page.Prev != "" {
		v.Prev = l.at(page.Prev).href(accountID)
	}
	if page.Next != "" {
		v.Next = l.at(page.Next).href(accountID)
	}
}

type newView struct {
	view
	Restricted bool
	Name       string
	Server     string
	Inboxes    []inboxapi.Inbox
	InboxError string
	Error      string
}

// newPage is the form of "Create standard key" and "Create
// server-restricted key".
func (d *Dashboard) newPage(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	q := r.URL.Query()
	acct, err := s.admin(ctx, q.Get("account"))
	if err != nil {
		return err
	}
	v := newView{}
	switch q.Get("type") {
	case "", string(store.Standard):
	case string(store.Restricted):
		v.Restricted = true
		if v.Inboxes, err = d.inboxes(ctx, acct.ID); err != nil {
			v.InboxError = err.Error()
		}
	default:
		return fail(http.StatusNotFound, "There is no such key type: keys are standard or server-restricted.")
	}
	return d.renderNew(w, r, s, acct, http.StatusOK, v)
}

func (d *Dashboard) renderNew(w http.ResponseWriter, r *http.Request, s *session, acct account, status int, v newView) error {
	accts, err := s.memberships(r.Context())
	if err != nil {
		return err
	}
	title := "Create standard key"
	if v.Restricted {
		title = "Create server-restricted key"
	}
	v.view = d.base(s, accts, &acct, title, "keys")
	return d.render(w, status, "new", v)
}

// formAccount checks the form's account and CSRF token.
func formAccount(r *http.Request, s *session) (account, error) {
	acct, err := s.admin(r.Context(), r.PostFormValue("account"))
	if err != nil {
		return acct, err
	}
	return acct, s.checkCSRF(acct.ID, r.PostFormValue("csrf_token"))
}

type secretView struct {
	view
	Created bool
	Key     keyRow
	Secret  string
}

// createPage creates a key from the form and shows it once; on a refusal
// it shows the form again with the reason.
func (d *Dashboard) createPage(w http.ResponseWriter, r *http.Request, s *session) error {
	acct, err := formAccount(r, s)
	if err != nil {
		return err
	}
	in := createInput{Name: r.PostFormValue("name"), Type: r.PostFormValue("type"), Server: r.PostFormValue("server")}
	k, secret, inboxes, err := d.create(r, s, acct, in)
	if err != nil {
		var p *problem
		if !errors.As(err, &p) {
			return err
		}
		v := newView{Restricted: in.Type == string(store.Restricted), Name: in.Name, Server: in.Server, Inboxes: inboxes, Error: p.msg}
		if v.Restricted && inboxes == nil {
			if v.Inboxes, err = d.inboxes(r.Context(), acct.ID); err != nil {
				v.InboxError = err.Error()
			}
		}
		return d.renderNew(w, r, s, acct, p.status, v)
	}
	names := map[string]string{}
	for _, in := range inboxes {
		names[in.ID] = in.Name
	}
	return d.renderSecret(w, r, s, acct, true, d.row(k, names), secret)
}

// revealPage shows a key again (the page without JavaScript; the list's
// script uses the JSON API).
func (d *Dashboard) revealPage(w http.ResponseWriter, r *http.Request, s *session) error {
	acct, err := formAccount(r, s)
	if err != nil {
		return err
	}
	k, secret, err := d.reveal(r, s, acct, r.PostFormValue("key"))
	if err != nil {
		return err
	}
	names, _ := d.inboxNames(r.Context(), acct.ID, k)
	return d.renderSecret(w, r, s, acct, false, d.row(k, names), secret)
}

func (d *Dashboard) renderSecret(w http.ResponseWriter, r *http.Request, s *session, acct account, created bool, k keyRow, secret string) error {
	accts, err := s.memberships(r.Context())
	if err != nil {
		return err
	}
	title := "API key"
	if created {
		title = "API key created"
	}
	return d.render(w, http.StatusOK, "secret", secretView{view: d.base(s, accts, &acct, title, "keys"), Created: created, Key: k, Secret: secret})
}

type deleteView struct {
	view
	Key      keyRow
	Evidence string // how the key was used lately
	Typed    string
	Error    string
}

// deleteConfirmPage is the confirmation for browsers without JavaScript
// (the list's script opens the same form in a dialog). It changes nothing.
func (d *Dashboard) deleteConfirmPage(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	q := r.URL.Query()
	acct, err := s.admin(ctx, q.Get("account"))
	if err != nil {
		return err
	}
	if q.Get("key") == "" {
		return fail(http.StatusNotFound, msgNoKey)
	}
	k, err := s.st.GetKey(ctx, acct.ID, q.Get("key"))
	if err != nil {
		return err
	}
	return d.renderDelete(w, r, s, acct, http.StatusOK, k, deleteView{})
}

// renderDelete shows the confirmation of k's deletion, with the evidence
// of its use.
func (d *Dashboard) renderDelete(w http.ResponseWriter, r *http.Request, s *session, acct account, status int, k store.Key, v deleteView) error {
	ctx := r.Context()
	now := d.cfg.Now()
	act, err := s.st.KeyActivity(ctx, acct.ID, k.ID, activitySince(now))
	if err != nil {
		return err
	}
	v.Key, v.Evidence = d.row(k, nil), evidence(k, act, now)
	accts, err := s.memberships(ctx)
	if err != nil {
		return err
	}
	v.view = d.base(s, accts, &acct, "Delete API key", "keys")
	return d.render(w, status, "delete", v)
}

type deletedView struct {
	view
	Key        keyRow
	Revocation string
}

// deletePage deletes the key if confirm_name is exactly its name.
func (d *Dashboard) deletePage(w http.ResponseWriter, r *http.Request, s *session) error {
	acct, err := formAccount(r, s)
	if err != nil {
		return err
	}
	typed := r.PostFormValue("confirm_name")
	k, rv, err := d.remove(r, s, acct, r.PostFormValue("key"), typed)
	if err != nil {
		var p *problem
		if errors.As(err, &p) && p.msg == msgMismatch {
			return d.renderDelete(w, r, s, acct, p.status, k, deleteView{Typed: typed, Error: p.msg})
		}
		return err
	}
	accts, err := s.memberships(r.Context())
	if err != nil {
		return err
	}
	return d.render(w, http.StatusOK, "deleted", deletedView{view: d.base(s, accts, &acct, "API key deleted", "keys"), Key: d.row(k, nil), Revocation: rv.String()})
}

type eventRow struct {
	ID                         int64
	When, WhenISO              string
	Actor, Action, ActionClass string
	KeyID, KeyName, KeyDisplay string
	Detail                     string // of an event about no one key
	From                       string
}

type auditView struct {
	view
	Events  []eventRow
	Search  string         // the search the log shows, cleaned
	Action  string         // the action it shows; "" for all
	Actions []actionOption // the action filter's choices
	Limit   string         // the limit the request gave; "" for the page's size
	Clear   string         // the log without the search and action
	Newest  string         // the newest page, when this is not it
	Newer   string         // the page of newer events; "" for none
	Older   string         // the page of older events; "" for none
}

type actionOption struct {
	Value, Label string
	Selected     bool
}

var actionLabels = map[string][2]string{
	store.ActionCreate: {"Created", "create"},
	store.ActionReveal: {"Revealed", "reveal"},
	store.ActionDelete: {"Deleted", "delete"},
	store.ActionRotate: {"Secret rotated", "other"},
}

// auditPage lists the account's audit log, newest first.
func (d *Dashboard) auditPage(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	q := r.URL.Query()
	acct, err := s.admin(ctx, q.Get("account"))
	if err != nil {
		return err
	}
	l, err := parseAuditListing(q)
	if err != nil {
		return err
	}
	page, err := listAudit(ctx, s, acct.ID, l)
	if err != nil {
		return err
	}
	accts, err := s.memberships(ctx)
	if err != nil {
		return err
	}
	v := auditView{view: d.base(s, accts, &acct, "Audit log", "audit")}
	v.listing(acct.ID, l, page)
	for _, ev := range page.Events {
		v.Events = append(v.Events, toEventRow(ev))
	}
	return d.render(w, http.StatusOK, "audit", v)
}

// toEventRow is an audit event as the pages show it.
func toEventRow(ev store.AuditEvent) eventRow {
	label, ok := actionLabels[ev.Action]
	if !ok {
		label = [2]string{ev.Action, "other"}
	}
	from := ev.RemoteAddr
	if from == "" {
		from = "command line"
	}
	return eventRow{
		ID: ev.ID, When: ev.At.UTC().Format(timeLayout), WhenISO: ev.At.UTC().Format(time.RFC3339),
		Actor: ev.Actor, Action: label[0], ActionClass: label[1],
		KeyID: ev.KeyID, KeyName: ev.KeyName, KeyDisplay: ev.KeyDisplay, Detail: ev.Detail, From: from,
	}
}

// auditActions are the audit log's action filter's choices, in order.
var auditActions = []string{store.ActionCreate, store.ActionReveal, store.ActionDelete, store.ActionRotate}

// listing fills in the search form and the pager.
func (v *auditView) listing(accountID string, l auditListing, page store.AuditPage) {
	v.Search, v.Action = l.Search, l.Action
	for _, a := range auditActions {
		v.Actions = append(v.Actions, actionOption{Value: a, Label: actionLabels[a][0], Selected: a == l.Action})
	}
	if l.Limit != 0 {
		v.Limit = strconv.Itoa(l.Limit)
	}
	if l.Search != "" || l.Action != "" {
		v.Clear = auditListing{Limit: l.Limit}.href(accountID)
	}
	if l.Before > 0 || l.After > 0 {
		v.Newest = l.at(0, 0).href(accountID)
	}
	if page.Newer > 0 {
		v.Newer = l.at(0, page.Newer).href(accountID)
	}
	if page.Older > 0 {
		v.Older = l.at(page.Older, 0).href(accountID)
	}
}

type errorView struct {
	view
	Status  int
	Message string
}

var errorTitles = map[int]string{
	http.StatusUnauthorized:        "Sign-in required",
	http.StatusForbidden:           "Not allowed",
	http.StatusNotFound:            "Not found",
	http.StatusMethodNotAllowed:    "Method not allowed",
	http.StatusBadGateway:          "Inbox API unavailable",
	http.StatusServiceUnavailable:  "Unavailable",
	http.StatusInternalServerError: "Something went wrong",
}

// writeError answers an error as a page or as JSON.
func (d *Dashboard) writeError(w http.ResponseWriter, r *http.Request, s *session, api bool, err error) {
	status, msg := d.statusOf(r, s, err)
	if status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", "5")
	}
	if api {
		writeJSON(w, status, map[string]string{"error": msg})
		return
	}
	title := errorTitles[status]
	if title == "" {
		title = http.StatusText(status)
	}
	v := errorView{view: view{Title: title}, Status: status, Message: msg}
	// The navigation needs the store: not after a 500, nor when the
	// store is what failed.
	if s != nil && status != http.StatusInternalServerError && status != http.StatusServiceUnavailable {
		v.User, v.Operator = s.user, d.operators[s.user]
		v.Accounts, _ = s.memberships(r.Context())
		v.about(r)
	}
	if err := d.render(w, status, "error", v); err != nil {
		d.cfg.Logger.Error("rendering error page", zap.Error(err))
		http.Error(w, msg, status)
	}
}

// about points the switcher of an error page at the account the request
// named (in its query, or in a form the handler read), if the user is one
// of its members, else at the user's default account; the navigation
// follows when the user administers that account. A body that the handler
// did not read, as that of a cross-site request, is not read here.
func (v *errorView) about(r *http.Request) {
	want := r.URL.Query().Get("account")
	if r.Form != nil {
		want = r.Form.Get("account")
	}
	acct := defaultAccount(v.Accounts)
	for i := range v.Accounts {
		if v.Accounts[i].ID == want {
			acct = &v.Accounts[i]
		}
	}
	if acct == nil {
		return
	}
	v.Selected = acct.ID
	if acct.Role == store.Admin {
		v.Account = acct
	}
}

// staticTypes are the content types of the static files.
var staticTypes = map[string]string{
	".css": "text/css; charset=utf-8",
	".js":  "text/javascript; charset=utf-8",
	".svg": "image/svg+xml",
}

// static serves the stylesheet, the script and the icon.
func (d *Dashboard) static(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("file")
	typ, ok := staticTypes[path.Ext(name)]
	b, err := webFS.ReadFile("web/static/" + name)
	if !ok || err != nil {
		d.writeError(w, r, nil, false, fail(http.StatusNotFound, "There is no such file."))
		return
	}
	w.Header().Set("Content-Type", typ)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(b)
	}
}

type instanceRow struct {
	ID, Address  string
	ListenerUp   bool
	AppliedSeq   int64
	Secret       string   // fingerprint of its current secret
	Previous     []string // fingerprints of its previous secrets
	Heartbeat    string
	HeartbeatISO string
	Started      string
}

type fleetView struct {
	view
	Fleet     bool
	Instances []instanceRow
}

// fleetPage lists the instances of the fleet: who is live, following key
// events, and how far. Operators only (see operatorsOnly); the navigation
// keeps the account the operator administers, if any.
func (d *Dashboard) fleetPage(w http.ResponseWriter, r *http.Request, s *session) error {
	accts, err := s.memberships(r.Context())
	if err != nil {
		return err
	}
	ins, err := d.cfg.Backend.Instances(r.Context())
	if err != nil {
		return err
	}
	v := fleetView{view: d.base(s, accts, administered(accts, r.URL.Query().Get("account")), "Fleet", "fleet"), Fleet: ins != nil}
	for _, in := range ins {
		row := instanceRow{
			ID: in.ID, Address: in.Address, ListenerUp: in.ListenerUp, AppliedSeq: in.AppliedSeq,
			Heartbeat:    humanize.RelTime(in.Heartbeat, d.cfg.Now(), "ago", "from now"),
			HeartbeatISO: in.Heartbeat.UTC().Format(time.RFC3339),
			Started:      in.StartedAt.UTC().Format(timeLayout),
		}
		if len(in.Secrets) > 0 {
			row.Secret, row.Previous = in.Secrets[0], in.Secrets[1:]
		}
		v.Instances = append(v.Instances, row)
	}
	return d.render(w, http.StatusOK, "fleet", v)
}

// administered returns the account of want if the user administers it,
// else the first they administer; nil for none.
func administered(accts []account, want string) *account {
	var first *account
	for i := range accts {
		if accts[i].Role != store.Admin {
			continue
		}
		if accts[i].ID == want {
			return &accts[i]
		}
		if first == nil {
			first = &accts[i]
		}
	}
	return first
}

// seeOther redirects to a path relative to the page, so that it holds
// wherever the dashboard is mounted (http.Redirect would resolve it
// against the path that handle_path stripped).
func seeOther(w http.ResponseWriter, to string) error {
	w.Header().Set("Location", to)
	w.WriteHeader(http.StatusSeeOther)
	return nil
}
