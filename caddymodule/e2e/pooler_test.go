package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/keygate/keygate/caddymodule/internal/pgtest"
)

// TestFleetBehindPgBouncer: two keygate nodes whose pools go through a
// real PgBouncer in transaction mode, configured as the README says
// (default_query_exec_mode=cache_describe in the DSN, a direct listen
// DSN). A key created on one node's dashboard works on both, cold and
// warm; deleted on the other's, it is refused on both at once; no valid
// key is told 401 meanwhile, and no store lookup fails.
func TestFleetBehindPgBouncer(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	pooled := pgtest.Bouncer(t, dsn, pgtest.BouncerConfig{PoolSize: 2}) + "&default_query_exec_mode=cache_describe"
	f := newFleet(t, 2, dsn, func(i int) (string, string) {
		return pooled, dsn + "&application_name=kg-pooler-listener-" + strconv.Itoa(i)
	})
	live, liveKey := f.mint("live")
	f.create(live)
	w := f.watch(liveKey)
	w.waitRound()

	var created struct {
		ID  string `json:"id"`
		Key string `json:"key"`
	}
	accounts := f.dashboard(1, "alice", "GET", "/api/accounts", "", "").body
	token := regexp.MustCompile(`"csrf_token":"([^"]+)"`).FindStringSubmatch(accounts)
	if token == nil {
		t.Fatalf("no CSRF token in %s", accounts)
	}
	r := f.dashboard(1, "alice", "POST", "/api/accounts/"+f.account+"/keys", `{"name":"through the pooler","type":"standard"}`, token[1])
	if err := json.Unmarshal([]byte(r.body), &created); r.status != http.StatusCreated || err != nil || created.Key == "" {
		t.Fatalf("creating a key on node 1's dashboard: %d", r.status)
	}
	rememberKey(created.Key)
	for round := range 2 { // a store lookup, then the cache
		for _, n := range f.nodes {
			if s := probe(n, created.Key); s != http.StatusOK {
				t.Fatalf("round %d: a key created on node 1's dashboard answers %d on %s", round, s, n.addr)
			}
		}
	}

	var receipt struct {
		Deleted    bool   `json:"deleted"`
		Revocation string `json:"revocation"`
	}
	f.dashboardJSON(0, "POST", "/api/accounts/"+f.account+"/keys/"+created.ID+"/delete", `{"name":"through the pooler"}`, &receipt)
	if !receipt.Deleted || !strings.HasPrefix(receipt.Revocation, "Revoked on 2 of 2 instances in ") {
		t.Fatalf("the dashboard's receipt through PgBouncer: %+v", receipt)
	}
	for _, n := range f.nodes {
		if s := probe(n, created.Key); s != http.StatusUnauthorized {
			t.Fatalf("a key deleted on node 0's dashboard, every node's receipt in, answers %d on %s", s, n.addr)
		}
	}
	w.finish()

	lookups := regexp.MustCompile(`(?m)^caddy_keygate_store_lookup_duration_seconds_count\{result="(\w+)"\} (\d+)$`)
	for _, n := range f.nodes {
		counts := map[string]string{}
		for _, m := range lookups.FindAllStringSubmatch(n.adminGet("/metrics"), -1) {
			counts[m[1]] = m[2]
		}
		if counts["ok"] == "" || counts["ok"] == "0" || (counts["error"] != "" && counts["error"] != "0") {
			t.Fatalf("store lookups of %s through PgBouncer: %v, want some, none failed", n.addr, counts)
		}
		t.Logf("%s: store lookups %s", n.addr, fmt.Sprint(counts))
	}
}
