package admin

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/keygate/keygate/caddymodule/store"
)

// A key's page (GET key?account=…&key=…&days=7|30) and its JSON (GET
// api/accounts/{account}/keys/{key}): the key's facts, its requests per
// hour, the addresses, client libraries and inboxes it was used from, and
// its audit events. What an administrator needs to decide whether a key
// is safe to delete.

// keyAuditLimit is how many of a key's audit events its page shows; the
// page links to the audit log for the rest.
const keyAuditLimit = 20

const msgBadDays = "days is 7 or 30."

// keyDetail is what a key's page and its JSON show.
type keyDetail struct {
	key      store.Key
	activity store.KeyActivity // since activitySince(now)
	events   []store.AuditEvent
	more     bool              // the key has older events than these
	names    map[string]string // inbox names by server id; nil when unknown
	inboxErr string            // why names is nil, for a notice
	now      time.Time
}

// keyDetail reads a key of the account, its last 30 days of activity and
// its newest audit events.
func (d *Dashboard) keyDetail(ctx context.Context, s *session, acct account, keyID string) (keyDetail, error) {
	if keyID == "" {
		return keyDetail{}, fail(http.StatusNotFound, msgNoKey)
	}
	kd := keyDetail{now: d.cfg.Now()}
	var err error
	if kd.key, err = s.st.GetKey(ctx, acct.ID, keyID); err != nil {
		return kd, err
	}
	if kd.activity, err = s.st.KeyActivity(ctx, acct.ID, keyID, activitySince(kd.now)); err != nil {
		return kd, err
	}
	page, err := s.st.ListAudit(ctx, acct.ID, store.AuditQuery{KeyID: keyID, Limit: keyAuditLimit})
	if err != nil {
		return kd, err
	}
	kd.events, kd.more = page.Events, page.Older != 0
	if kd.key.ServerID != "" || len(kd.activity.Of(store.ActivityServer)) > 0 {
		kd.names, kd.inboxErr = d.allInboxNames(ctx, acct.ID)
	}
	return kd, nil
}

// evidence is the sentence the delete dialog shows.
func (kd keyDetail) evidence() string { return evidence(kd.key, kd.activity, kd.now) }

// seenRow is an address, a client library or an inbox on a key's page.
type seenRow struct {
	Value       string // what the list shows
	Detail      string // the whole User-Agent of a client library; an inbox's id
	Requests    string
	LastSeen    string // the last hour it was seen in: "this hour", "28 Nov 14:00–15:00 UTC"
	LastSeenISO string
}

type keyView struct {
	view
	Key        keyRow
	Evidence   string
	Chart      chart
	Periods    []periodLink
	Addresses  []seenRow
	Clients    []seenRow
	Inboxes    []seenRow // standard keys only
	Others     [store.NumActivityKinds]string
	Events     []eventRow
	MoreEvents string // the audit log searched for this key, when it has more events
	InboxError string
}

// periodLink switches the chart between 7 and 30 days.
type periodLink struct {
	Days    int
	Href    string
	Current bool
}

// keyPage shows a key's facts, activity and audit events.
func (d *Dashboard) keyPage(w http.ResponseWriter, r *http.Request, s *session) error {
	ctx := r.Context()
	q := r.URL.Query()
	acct, err := s.admin(ctx, q.Get("account"))
	if err != nil {
		return err
	}
	days, err := parseDays(q.Get("days"))
	if err != nil {
		return err
	}
	kd, err := d.keyDetail(ctx, s, acct, q.Get("key"))
	if err != nil {
		return err
	}
	accts, err := s.memberships(ctx)
	if err != nil {
		return err
	}
	v := keyView{
		view: d.base(s, accts, &acct, kd.key.Name, "keys"), Key: d.row(kd.key, kd.names),
		Evidence: kd.evidence(), Chart: newChart(kd.activity.Hours, days, kd.now), InboxError: kd.inboxErr,
	}
	for _, n := range chartDays {
		v.Periods = append(v.Periods, periodLink{Days: n, Current: n == days, Href: keyHref(acct.ID, kd.key.ID, n)})
	}
	rows := func(kind store.ActivityKind, show func(string) (string, string)) []seenRow {
		var out []seenRow
		for _, seen := range kd.activity.Of(kind) {
			value, detail := show(seen.Value)
			out = append(out, seenRow{
				Value: value, Detail: detail, Requests: humanize.Comma(seen.Requests),
				LastSeen:    hourLabel(seen.LastSeen, kd.now),
				LastSeenISO: seen.LastSeen.UTC().Format(time.RFC3339),
			})
		}
		return out
	}
	v.Addresses = rows(store.ActivityAddress, func(a string) (string, string) { return a, "" })
	v.Clients = rows(store.ActivityAgent, func(agent string) (string, string) {
		if agent == "" {
			return "No User-Agent", ""
		}
		return clientLibrary(agent), agent
	})
	if kd.key.Type == store.Standard {
		v.Inboxes = rows(store.ActivityServer, func(id string) (string, string) {
			if name := kd.names[id]; name != "" {
				return name, id
			}
			return id, ""
		})
	}
	for kind, n := range kd.activity.Others {
		if n > 0 {
			v.Others[kind] = humanize.Comma(n)
		}
	}
	for _, ev := range kd.events {
		v.Events = append(v.Events, toEventRow(ev))
	}
	if kd.more {
		v.MoreEvents = auditListing{Search: kd.key.Display}.href(acct.ID)
	}
	return d.render(w, http.StatusOK, "key", v)
}

// hourLabel names the hour that began at h: activity is kept per hour,
// so "59 minutes ago" would claim more than is known.
func hourLabel(h, now time.Time) string {
	h = h.UTC()
	switch start := store.ActivityHourOf(now); {
	case h.Equal(start):
		return "this hour"
	case h.Equal(start.Add(-time.Hour)):
		return "last hour"
	case h.Truncate(24 * time.Hour).Equal(start.Truncate(24 * time.Hour)):
		return "today " + h.Format("15:00") + "–" + h.Add(time.Hour).Format("15:00") + " UTC"
	}
	return h.Format("2 Jan 15:00") + "–" + h.Add(time.Hour).Format("15:00") + " UTC"
}

// keyHref is the address of a key's page.
func keyHref(accountID, keyID string, days int) string {
	q := url.Values{"account": {accountID}, "key": {keyID}}
	if days != chartDays[0] {
		q.Set("days", strconv.Itoa(days))
	}
	return "key?" + q.Encode()
}

func parseDays(s string) (int, error) {
	if s == "" {
		return chartDays[0], nil
	}
	for _, n := range chartDays {
		if s == strconv.Itoa(n) {
			return n, nil
		}
	}
	return 0, fail(http.StatusBadRequest, msgBadDays)
}

// keyDetailJSON is GET api/accounts/{account}/keys/{key}: the key, the
// evidence the delete dialog shows, its last 30 days of activity and its
// newest audit events.
type keyDetailJSON struct {
	keyJSON
	Evidence string       `json:"evidence"`
	Activity activityJSON `json:"activity"`
	Audit    []eventJSON  `json:"audit"`
	// AuditMore says the key has older events: page the audit log.
	AuditMore bool `json:"audit_more"`
}

type activityJSON struct {
	Since      time.Time  `json:"since"` // the start of the first hour read
	Last7Days  countsJSON `json:"last_7_days"`
	Last30Days countsJSON `json:"last_30_days"`
	Hours      []hourJSON `json:"hours"` // hours with requests, oldest first
	Addresses  []seenJSON `json:"addresses"`
	Agents     []seenJSON `json:"agents"`
	Servers    []seenJSON `json:"servers"`
	// Others counts, by kind, the requests whose value is not listed.
	Others map[string]int64 `json:"others"`
}

type countsJSON struct {
	Allowed int64 `json:"allowed"`
	Refused int64 `json:"refused"`
}

type hourJSON struct {
	Hour    time.Time `json:"hour"`
	Allowed int64     `json:"allowed"`
	Refused int64     `json:"refused"`
}

type seenJSON struct {
	Value    string    `json:"value"`
	Client   string    `json:"client,omitempty"` // agents: the client library
	Name     string    `json:"name,omitempty"`   // servers: the inbox's name, when known
	Requests int64     `json:"requests"`
	LastSeen time.Time `json:"last_seen"` // the start of the last hour it was seen in
}

func (d *Dashboard) apiKey(w http.ResponseWriter, r *http.Request, s *session) error {
	acct, err := apiAccount(r, s)
	if err != nil {
		return err
	}
	kd, err := d.keyDetail(r.Context(), s, acct, r.PathValue("key"))
	if err != nil {
		return err
	}
	u := summarize(kd.key, kd.activity, kd.now)
	act := activityJSON{
		Since: activitySince(kd.now), Hours: []hourJSON{}, Others: map[string]int64{},
		Last7Days: countsJSON(u.Week), Last30Days: countsJSON(u.Month),
	}
	for _, h := range kd.activity.Hours {
		act.Hours = append(act.Hours, hourJSON{Hour: h.Hour.UTC(), Allowed: h.Allowed, Refused: h.Refused})
	}
	seen := func(kind store.ActivityKind) []seenJSON {
		out := []seenJSON{}
		for _, v := range kd.activity.Of(kind) {
			sj := seenJSON{Value: v.Value, Requests: v.Requests, LastSeen: v.LastSeen.UTC()}
			switch kind {
			case store.ActivityAgent:
				sj.Client = clientLibrary(v.Value)
			case store.ActivityServer:
				sj.Name = kd.names[v.Value]
			}
			out = append(out, sj)
		}
		return out
	}
	act.Addresses, act.Agents, act.Servers = seen(store.ActivityAddress), seen(store.ActivityAgent), seen(store.ActivityServer)
	for kind, n := range kd.activity.Others {
		act.Others[store.ActivityKind(kind).String()] = n
	}
	writeJSON(w, http.StatusOK, keyDetailJSON{
		keyJSON: toJSON(kd.key), Evidence: kd.evidence(), Activity: act,
		Audit: toEventsJSON(kd.events), AuditMore: kd.more,
	})
	return nil
}
