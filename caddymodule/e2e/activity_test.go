package e2e

import (
	"fmt"
	"html"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/store"
)

// TestFleetKeyActivity: two instances on one Postgres gather what each
// key did and write it every usage_interval; the counts the dashboard
// shows add up exactly over a known number of requests, whichever
// instance served them. A flood of distinct User-Agents is capped per key
// and hour, its requests still counted; an agent of HTML and bytes that
// are not UTF-8 is shown as text on the key's page.
func TestFleetKeyActivity(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	f := newFleet(t, 2, dsn, sameDSN(dsn))
	stdKey, std := f.mint("ci pipeline")
	stdKey = f.create(stdKey)
	floodKey, flood := f.mint("flooded")
	floodKey = f.create(floodKey)
	rKey, restricted := f.mint("staging only")
	rKey.Type, rKey.ServerID = store.Restricted, "stag1234"
	rKey = f.create(rKey)

	hostile := "<img src=x onerror=alert(1)>\xff"
	send := func(n *node, key, path, agent string, times, want int) {
		t.Helper()
		for range times {
			if r := n.do("GET", path, "Authorization", bearer(key), "User-Agent", agent); r.status != want {
				t.Fatalf("GET %s on %s: %d, want %d", path, n.addr, r.status, want)
			}
		}
	}
	a, b := f.nodes[0], f.nodes[1]
	send(a, std, "/api/servers", "mailosaur-node/11.1.1", 30, http.StatusOK)
	send(a, std, "/api/messages?server=abcd1234", "mailosaur-node/11.1.1", 10, http.StatusOK)
	send(b, std, "/api/servers", "mailosaur-python/7.4.0", 25, http.StatusOK)
	for i := range 150 { // distinct agents from both: at most 10 kept per key and hour
		send(f.nodes[i%2], flood, "/api/servers", fmt.Sprintf("flood/%d", i), 1, http.StatusOK)
	}
	send(a, restricted, "/api/messages?server=stag1234", "mailosaur-java/8.0.0", 6, http.StatusOK)
	send(a, restricted, "/api/messages?server=stag1234", hostile, 1, http.StatusOK)
	send(a, restricted, "/api/messages?server=prod5678", "mailosaur-java/8.0.0", 4, http.StatusForbidden)
	send(b, restricted, "/api/servers", "mailosaur-java/8.0.0", 3, http.StatusForbidden)

	type seen struct {
		Value    string `json:"value"`
		Client   string `json:"client"`
		Requests int64  `json:"requests"`
	}
	type detail struct {
		Evidence string `json:"evidence"`
		Activity struct {
			Last7Days struct{ Allowed, Refused int64 } `json:"last_7_days"`
			Addresses []seen                           `json:"addresses"`
			Agents    []seen                           `json:"agents"`
			Servers   []seen                           `json:"servers"`
			Others    map[string]int64                 `json:"others"`
		} `json:"activity"`
	}
	read := func(node int, k store.Key) detail {
		var d detail
		f.dashboardJSON(node, "GET", "/api/accounts/"+f.account+"/keys/"+k.ID, "", &d)
		return d
	}
	const stdTotal, floodTotal, rAllowed, rRefused = 30 + 10 + 25, 150, 7, 7
	var s, fl, r detail
	f.waitFor("both instances to write their activity", 30*time.Second, func() bool {
		s, fl, r = read(0, stdKey), read(1, floodKey), read(1, rKey)
		return s.Activity.Last7Days.Allowed >= stdTotal && fl.Activity.Last7Days.Allowed >= floodTotal &&
			r.Activity.Last7Days.Allowed+r.Activity.Last7Days.Refused >= rAllowed+rRefused
	})
	if got := s.Activity.Last7Days; got.Allowed != stdTotal || got.Refused != 0 {
		t.Errorf("standard key: %+v, want %d allowed", got, stdTotal)
	}
	if got := r.Activity.Last7Days; got.Allowed != rAllowed || got.Refused != rRefused {
		t.Errorf("restricted key: %+v, want %d allowed, %d refused", got, rAllowed, rRefused)
	}
	// Every request is counted under one agent, kept or other, and one
	// address; at most 10 agents per hour are kept.
	sum := func(vs []seen) (n int64) {
		for _, v := range vs {
			n += v.Requests
		}
		return n
	}
	if fl.Activity.Last7Days.Allowed != floodTotal {
		t.Errorf("flooded key: %+v, want %d allowed", fl.Activity.Last7Days, floodTotal)
	}
	if got := sum(fl.Activity.Agents) + fl.Activity.Others["agent"]; got != floodTotal {
		t.Errorf("the flood's agents account for %d requests, want %d: %+v, others %d", got, floodTotal, fl.Activity.Agents, fl.Activity.Others["agent"])
	}
	if len(fl.Activity.Agents) > 2*10 || fl.Activity.Others["agent"] < floodTotal-2*10 { // the flood may straddle an hour
		t.Errorf("the flood of agents was not capped: %d kept, %d others", len(fl.Activity.Agents), fl.Activity.Others["agent"])
	}
	if len(s.Activity.Addresses) != 1 || s.Activity.Addresses[0].Value != "127.0.0.1" || s.Activity.Addresses[0].Requests != stdTotal {
		t.Errorf("addresses %+v", s.Activity.Addresses)
	}
	clients := map[string]int64{}
	for _, v := range s.Activity.Agents {
		clients[v.Client] += v.Requests
	}
	if len(clients) != 2 || clients["mailosaur-node 11.1.1"] != 40 || clients["mailosaur-python 7.4.0"] != 25 || s.Activity.Others["agent"] != 0 {
		t.Errorf("client libraries %v", clients)
	}
	if len(s.Activity.Servers) != 1 || s.Activity.Servers[0].Value != "abcd1234" || s.Activity.Servers[0].Requests != 10 {
		t.Errorf("servers %+v", s.Activity.Servers)
	}
	if !strings.HasPrefix(s.Evidence, fmt.Sprintf("Used %d times in the last 7 days, last ", stdTotal)) || !strings.Contains(s.Evidence, "from 127.0.0.1") {
		t.Errorf("evidence %q", s.Evidence)
	}
	if want := fmt.Sprintf("Used %d times in the last 7 days (%d refused by its scope)", rAllowed+rRefused, rRefused); !strings.HasPrefix(r.Evidence, want) {
		t.Errorf("evidence %q, want it to start %q", r.Evidence, want)
	}

	// The key's page: the hostile agent as text, never as markup.
	page := f.dashboard(0, "alice", "GET", "/key?account="+f.account+"&key="+rKey.ID, "", "")
	if page.status != http.StatusOK {
		t.Fatalf("the key's page: %d %s", page.status, page.body)
	}
	if strings.Contains(page.body, "<img src=x") || !strings.Contains(page.body, html.EscapeString("<img src=x onerror=alert(1)>\ufffd")) {
		t.Errorf("the hostile agent is not shown escaped:\n%s", page.body)
	}
	for _, want := range []string{"mailosaur-java 8.0.0", "127.0.0.1", `class="bar-refused"`} {
		if !strings.Contains(page.body, want) {
			t.Errorf("the key's page lacks %q", want)
		}
	}
}
