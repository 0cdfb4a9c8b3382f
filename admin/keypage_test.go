package admin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/store"
)

// record writes an hour of activity of a key, as the sidecar's flush does.
func (f *fixture) record(h store.ActivityHour) {
	f.t.Helper()
	if err := f.app.Store().RecordActivity(context.Background(), []store.ActivityHour{h}); err != nil {
		f.t.Fatal(err)
	}
}

func TestKeyPage(t *testing.T) {
	f := newFixture(t)
	k, _ := f.key(f.acme, "ci pipeline", "")
	idle, _ := f.key(f.acme, "idle one", "")
	now := time.Now()
	hour := store.ActivityHourOf(now)
	f.record(store.ActivityHour{KeyID: k.ID, Hour: hour, Allowed: 1200, Refused: 12, Values: []store.ActivityValue{
		{Kind: store.ActivityAddress, Value: "203.0.113.9", Requests: 1212},
		{Kind: store.ActivityAgent, Value: "mailosaur-node/11.1.1", Requests: 1000},
		{Kind: store.ActivityAgent, Value: `<script>alert(1)</script>` + "\ufffd", Requests: 212},
		{Kind: store.ActivityServer, Value: "stag1234", Requests: 1212},
	}})
	f.record(store.ActivityHour{KeyID: k.ID, Hour: hour.Add(-20 * 24 * time.Hour), Allowed: 72, Others: [store.NumActivityKinds]int64{store.ActivityAddress: 5}})
	if err := f.app.Store().TouchKeys(context.Background(), map[string]time.Time{k.ID: now.Add(-2 * time.Minute)}); err != nil {
		t.Fatal(err)
	}
	f.post("/reveal", "alice", url.Values{"csrf_token": {f.token("alice", f.acme)}, "account": {f.acme}, "key": {k.ID}})

	page := "/key?account=" + f.acme + "&key=" + k.ID
	r := f.get(page, "alice")
	expect(t, "the key's page", r, http.StatusOK,
		"ci pipeline", k.Display, "All inboxes", "2 minutes ago",
		"Used 1,212 times in the last 7 days (12 refused by its scope), last 2 minutes ago from 203.0.113.9 by mailosaur-node 11.1.1.",
		"Last 7 days: <strong>1,200</strong> allowed, <strong>12</strong> refused",
		`class="bar-allowed"`, `class="bar-refused"`,
		"203.0.113.9", "and 5 requests from other addresses",
		"mailosaur-node 11.1.1", "Staging", "stag1234",
		"Created", "Revealed", "alice", // its audit events
	)
	if strings.Contains(r.body, "<script>alert") || !strings.Contains(r.body, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Errorf("a hostile User-Agent is not escaped on the key's page")
	}
	if strings.Contains(r.body, " style=") || strings.Contains(r.body, "<script>") {
		t.Errorf("the key's page has inline style or script, which the CSP refuses")
	}
	if n := strings.Count(r.body, "<g class=\"chart-bar\">"); n != 1 {
		t.Errorf("7-day chart has %d bars, want 1 (the 20-day-old hour is outside it)", n)
	}
	r = f.get(page+"&days=30", "alice")
	expect(t, "the key's page over 30 days", r, http.StatusOK, "Last 30 days: <strong>1,272</strong> allowed")
	if n := strings.Count(r.body, "<g class=\"chart-bar\">"); n != 2 {
		t.Errorf("30-day chart has %d bars, want 2", n)
	}

	expect(t, "an idle key's page", f.get("/key?account="+f.acme+"&key="+idle.ID, "alice"), http.StatusOK,
		"Never used since it was created", "No requests in the last 7 days", "None in the last 30 days.")

	// The JSON API returns the same.
	r = f.get("/api/accounts/"+f.acme+"/keys/"+k.ID, "alice")
	var got struct {
		ID       string `json:"id"`
		Evidence string `json:"evidence"`
		Activity struct {
			Last7Days struct{ Allowed, Refused int64 } `json:"last_7_days"`
			Last30    struct{ Allowed, Refused int64 } `json:"last_30_days"`
			Hours     []struct{ Allowed, Refused int64 }
			Agents    []struct{ Value, Client string }
			Servers   []struct{ Value, Name string }
			Others    map[string]int64
		}
		Audit []struct{ Action string }
	}
	if err := json.Unmarshal([]byte(r.body), &got); err != nil || r.status != http.StatusOK {
		t.Fatalf("GET the key's JSON: %d %s", r.status, r.body)
	}
	a := got.Activity
	if got.ID != k.ID || !strings.HasPrefix(got.Evidence, "Used 1,212 times") || a.Last7Days.Allowed != 1200 || a.Last7Days.Refused != 12 ||
		a.Last30.Allowed != 1272 || len(a.Hours) != 2 || a.Others["address"] != 5 || len(got.Audit) != 2 {
		t.Errorf("the key's JSON = %+v", got)
	}
	if len(a.Agents) != 2 || len(a.Servers) != 1 || a.Servers[0].Name != "Staging" {
		t.Errorf("agents %+v, servers %+v", a.Agents, a.Servers)
	}
	for _, ag := range a.Agents {
		if ag.Value == "mailosaur-node/11.1.1" && ag.Client != "mailosaur-node 11.1.1" {
			t.Errorf("agent %+v", ag)
		}
	}

	// The delete confirmation shows the evidence.
	expect(t, "the delete page", f.get("/delete?account="+f.acme+"&key="+k.ID, "alice"), http.StatusOK,
		"Used 1,212 times in the last 7 days")
	expect(t, "an idle key's delete page", f.get("/delete?account="+f.acme+"&key="+idle.ID, "alice"), http.StatusOK,
		"Never used since it was created")

	// The key list links to the page.
	expect(t, "the key list", f.get("/?account="+f.acme, "alice"), http.StatusOK, `href="key?account=`+f.acme+`&amp;key=`+k.ID+`"`)
}

func TestKeyPageRefusals(t *testing.T) {
	f := newFixture(t)
	k, _ := f.key(f.acme, "ci pipeline", "")
	theirs, _ := f.key(f.other, "not yours", "")
	for _, tc := range []struct {
		target, user string
		status       int
		contains     string
	}{
		{"/key?account=" + f.acme + "&key=" + k.ID, "bob", http.StatusForbidden, msgNotAdmin},
		{"/key?account=" + f.acme + "&key=" + k.ID, "carol", http.StatusNotFound, msgNoAcct},
		{"/key?account=" + f.acme + "&key=" + theirs.ID, "alice", http.StatusNotFound, "API key not found"},
		{"/key?account=" + f.acme, "alice", http.StatusNotFound, "API key not found"},
		{"/key?account=" + f.acme + "&key=%00%ff", "alice", http.StatusNotFound, "API key not found"},
		{"/key?account=" + f.acme + "&key=" + url.QueryEscape("' or 1=1 --"), "alice", http.StatusNotFound, "API key not found"},
		{"/key?account=" + f.acme + "&key=" + k.ID + "&days=8", "alice", http.StatusBadRequest, "days is 7 or 30"},
		{"/key?account=" + f.acme + "&key=" + k.ID, "", http.StatusUnauthorized, "not signed in"},
		{"/api/accounts/" + f.acme + "/keys/" + theirs.ID, "alice", http.StatusNotFound, "API key not found"},
		{"/api/accounts/" + f.acme + "/keys/" + k.ID, "bob", http.StatusForbidden, msgNotAdmin},
	} {
		expect(t, "GET "+tc.target+" as "+tc.user, f.get(tc.target, tc.user), tc.status, tc.contains)
	}
	r := f.do(f.dash, "POST", "/api/accounts/"+f.acme+"/keys/"+k.ID, "alice", nil, "Sec-Fetch-Site", "same-origin")
	expect(t, "POST to a key's JSON", r, http.StatusMethodNotAllowed)
	if r.header.Get("Allow") != "GET, HEAD" {
		t.Errorf("Allow = %q", r.header.Get("Allow"))
	}
}
