package admin

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"time"

	"github.com/keygate/keygate/caddymodule/inboxapi"
	"github.com/keygate/keygate/caddymodule/store"
)

// The JSON API: the same actions and checks as the pages, for the page's
// own script and for administrators' automation. POSTs carry the
// account's CSRF token in the X-CSRF-Token header; GET /api/accounts gives
// the tokens.

// keyJSON is a key as the JSON API shows it: never the key itself, except
// in the "key" field of a create or reveal answer.
type keyJSON struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Type       string     `json:"type"`
	Server     string     `json:"server,omitempty"`
	Prefix     string     `json:"prefix"`
	CreatedAt  time.Time  `json:"created_at"`
	CreatedBy  string     `json:"created_by"`
	LastUsedAt *time.Time `json:"last_used_at"`
}

func toJSON(k store.Key) keyJSON {
	return keyJSON{
		ID: k.ID, Name: k.Name, Type: string(k.Type), Server: k.ServerID, Prefix: k.Display,
		CreatedAt: k.CreatedAt.UTC(), CreatedBy: k.CreatedBy, LastUsedAt: k.LastUsed,
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"`+msgInternal+`"}`)
	}
	b = append(b, '\n')
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(status)
	w.Write(b)
}

// apiAccount checks the path's account, and for a POST its CSRF token.
func apiAccount(r *http.Request, s *session) (account, error) {
	acct, err := s.admin(r.Context(), r.PathValue("account"))
	if err != nil || r.Method != http.MethodPost {
		return acct, err
	}
	return acct, s.checkCSRF(acct.ID, r.Header.Get("X-CSRF-Token"))
}

// decodeBody reads a JSON body with no unknown fields.
func decodeBody(r *http.Request, v any) error {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		return fail(http.StatusUnsupportedMediaType, "Send the body as JSON, with Content-Type: application/json.")
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return fail(http.StatusBadRequest, "The body is not valid JSON for this request: "+err.Error())
	}
	if _, err := dec.Token(); err != io.EOF {
		return fail(http.StatusBadRequest, "The body must hold one JSON object.")
	}
	return nil
}

type accountJSON struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Role      string `json:"role"`
	CSRFToken string `json:"csrf_token,omitempty"` // administrators only
}

func (d *Dashboard) apiAccounts(w http.ResponseWriter, r *http.Request, s *session) error {
	accts, err := s.memberships(r.Context())
	if err != nil {
		return err
	}
	items := make([]accountJSON, 0, len(accts))
	for _, a := range accts {
		aj := accountJSON{ID: a.ID, Name: a.Name, Role: string(a.Role)}
		if a.Role == store.Admin {
			aj.CSRFToken = s.token(a.ID)
		}
		items = append(items, aj)
	}
	writeJSON(w, http.StatusOK, map[string]any{"user": s.user, "items": items})
	return nil
}

func (d *Dashboard) apiKeys(w http.ResponseWriter, r *http.Request, s *session) error {
	acct, err := apiAccount(r, s)
	if err != nil {
		return err
	}
	l, err := parseKeyListing(r.URL.Query())
	if err != nil {
		return err
	}
	page, err := listKeys(r.Context(), s, acct.ID, l)
	if err != nil {
		return err
	}
	items := make([]keyJSON, 0, len(page.Keys))
	for _, k := range page.Keys {
		items = append(items, toJSON(k))
	}
	out := map[string]any{"items": items, "total": page.Total}
	if page.Next != "" {
		out["next_cursor"] = page.Next
	}
	if page.Prev != "" {
		out["prev_cursor"] = page.Prev
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// secretJSON is a key with its value: the answer of create and reveal.
type secretJSON struct {
	keyJSON
	Key string `json:"key"`
}

func (d *Dashboard) apiCreate(w http.ResponseWriter, r *http.Request, s *session) error {
	acct, err := apiAccount(r, s)
	if err != nil {
		return err
	}
	var in createInput
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	k, secret, _, err := d.create(r, s, acct, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, secretJSON{keyJSON: toJSON(k), Key: secret})
	return nil
}

func (d *Dashboard) apiReveal(w http.ResponseWriter, r *http.Request, s *session) error {
	acct, err := apiAccount(r, s)
	if err != nil {
		return err
	}
	k, secret, err := d.reveal(r, s, acct, r.PathValue("key"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, secretJSON{keyJSON: toJSON(k), Key: secret})
	return nil
}

func (d *Dashboard) apiDelete(w http.ResponseWriter, r *http.Request, s *session) error {
	acct, err := apiAccount(r, s)
	if err != nil {
		return err
	}
	var in struct {
		Name string `json:"name"`
	}
	if err := decodeBody(r, &in); err != nil {
		return err
	}
	k, rv, err := d.remove(r, s, acct, r.PathValue("key"), in.Name)
	if err != nil {
		return err
	}
	out := map[string]any{"id": k.ID, "name": k.Name, "deleted": true, "revocation": rv.String()}
	if rv.Fleet {
		out["revoked_on"], out["instances"], out["lag_ms"] = rv.Applied, rv.Live, float64(rv.Lag.Microseconds())/1000
		out["standbys"], out["replicated_to"] = rv.Standbys, rv.Replicated
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// apiFleet lists the fleet's live instances, for operators only (see
// operatorsOnly).
func (d *Dashboard) apiFleet(w http.ResponseWriter, r *http.Request, _ *session) error {
	ins, err := d.cfg.Backend.Instances(r.Context())
	if err != nil {
		return err
	}
	type instance struct {
		ID         string    `json:"id"`
		Address    string    `json:"address"`
		ListenerUp bool      `json:"listener_up"`
		AppliedSeq int64     `json:"applied_seq"`
		Heartbeat  time.Time `json:"heartbeat"`
		StartedAt  time.Time `json:"started_at"`
	}
	out := []instance{}
	for _, in := range ins {
		out = append(out, instance{in.ID, in.Address, in.ListenerUp, in.AppliedSeq, in.Heartbeat, in.StartedAt})
	}
	writeJSON(w, http.StatusOK, map[string]any{"fleet": ins != nil, "items": out})
	return nil
}

func (d *Dashboard) apiInboxes(w http.ResponseWriter, r *http.Request, s *session) error {
	acct, err := apiAccount(r, s)
	if err != nil {
		return err
	}
	list, err := d.inboxes(r.Context(), acct.ID)
	if err != nil {
		return err
	}
	if list == nil {
		list = []inboxapi.Inbox{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": list})
	return nil
}

type eventJSON struct {
	ID         int64     `json:"id"`
	At         time.Time `json:"at"`
	Actor      string    `json:"actor"`
	Action     string    `json:"action"`
	KeyID      string    `json:"key_id"`
	KeyName    string    `json:"key_name"`
	KeyPrefix  string    `json:"key_prefix"`
	RemoteAddr string    `json:"remote_addr"`
	Detail     string    `json:"detail,omitempty"`
}

func (d *Dashboard) apiAudit(w http.ResponseWriter, r *http.Request, s *session) error {
	acct, err := apiAccount(r, s)
	if err != nil {
		return err
	}
	l, err := parseAuditListing(r.URL.Query())
	if err != nil {
		return err
	}
	page, err := listAudit(r.Context(), s, acct.ID, l)
	if err != nil {
		return err
	}
	out := map[string]any{}
	if page.Older > 0 {
		out["next_before"] = page.Older
	}
	if page.Newer > 0 {
		out["prev_after"] = page.Newer
	}
	out["items"] = toEventsJSON(page.Events)
	writeJSON(w, http.StatusOK, out)
	return nil
}

func toEventsJSON(evs []store.AuditEvent) []eventJSON {
	items := make([]eventJSON, 0, len(evs))
	for _, ev := range evs {
		items = append(items, eventJSON{ID: ev.ID, At: ev.At.UTC(), Actor: ev.Actor, Action: ev.Action,
			KeyID: ev.KeyID, KeyName: ev.KeyName, KeyPrefix: ev.KeyDisplay, RemoteAddr: ev.RemoteAddr, Detail: ev.Detail})
	}
	return items
}
