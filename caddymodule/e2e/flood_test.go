package e2e

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/keys"
)

// TestUnknownKeysNeverEvictKnownOnes floods a small cache with distinct,
// well-formed keys that do not exist: the valid key cached before the
// flood is still answered from the cache after it.
func TestUnknownKeysNeverEvictKnownOnes(t *testing.T) {
	t.Parallel()
	n := newNode(t, nodeConfig{global: "\t\tcache_size 10\n\t\tclient_refusals off\n\t\tunknown_key_lookups off", upstream: newUpstream(t).addr()})
	acct := n.account("acme")
	known := n.key(acct, "known", "")
	n.start()

	if r := n.do("GET", "/api/servers", "Authorization", bearer(known)); r.status != http.StatusOK {
		t.Fatalf("the known key: %d", r.status)
	}
	for i := range 200 {
		unknown, err := keys.New()
		if err != nil {
			t.Fatal(err)
		}
		if r := n.do("GET", "/api/servers", "Authorization", bearer(unknown.Secret())); r.status != http.StatusUnauthorized {
			t.Fatalf("unknown key %d: %d", i, r.status)
		}
	}
	before := lookups(t, n, "hit")
	if r := n.do("GET", "/api/servers", "Authorization", bearer(known)); r.status != http.StatusOK {
		t.Fatalf("the known key after the flood: %d", r.status)
	}
	if after := lookups(t, n, "hit"); after != before+1 {
		t.Fatalf("the known key after the flood was not a cache hit (hits %d → %d): unknown keys evicted it", before, after)
	}
}

// lookups reads caddy_keygate_cache_lookups_total for an outcome.
func lookups(t testing.TB, n *node, outcome string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^caddy_keygate_cache_lookups_total\{outcome="` + outcome + `"\} (\d+)$`).FindStringSubmatch(n.adminGet("/metrics"))
	if m == nil {
		return 0
	}
	v, _ := strconv.Atoi(m[1])
	return v
}

// TestFloodIsContained: a client that keeps sending keys that fail is
// throttled (429 with Retry-After) without touching other clients or its
// own cached valid key, and unknown keys from many clients cost the store
// no more lookups than unknown_key_lookups allows.
func TestFloodIsContained(t *testing.T) {
	t.Parallel()
	n := newNode(t, nodeConfig{
		// Clients are told apart by X-Forwarded-For, from this trusted proxy.
		options:  "\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32\n\t}\n",
		global:   "\t\tclient_refusals 5\n\t\tunknown_key_lookups 10",
		upstream: newUpstream(t).addr(),
	})
	acct := n.account("acme")
	valid := n.key(acct, "valid", "")
	n.start()
	from := func(client, key string) response {
		t.Helper()
		return n.do("GET", "/api/servers", "Authorization", bearer(key), "X-Forwarded-For", client)
	}
	unknown := func() string {
		k, err := keys.New()
		if err != nil {
			t.Fatal(err)
		}
		return k.Secret()
	}
	const flooder, bystander = "203.0.113.9", "198.51.100.7"
	if r := from(flooder, valid); r.status != http.StatusOK {
		t.Fatalf("valid key: %d", r.status)
	}

	statuses := map[int]int{}
	for range 8 {
		r := from(flooder, unknown())
		statuses[r.status]++
		if r.status == http.StatusTooManyRequests && (r.header.Get("Retry-After") == "" || !strings.Contains(r.body, `"status":429`)) {
			t.Fatalf("429 without Retry-After or the error shape: %v %s", r.header, r.body)
		}
	}
	if statuses[http.StatusUnauthorized] != 5 || statuses[http.StatusTooManyRequests] != 3 {
		t.Fatalf("a client sending 8 unknown keys with client_refusals 5: %v; want 5×401, then 429", statuses)
	}
	if r := from(flooder, "kg_malformed"); r.status != http.StatusTooManyRequests {
		t.Fatalf("the throttled client's malformed key: %d", r.status)
	}
	if r := from(flooder, valid); r.status != http.StatusOK {
		t.Fatalf("the throttled client's cached valid key: %d", r.status)
	}
	if r := from(bystander, unknown()); r.status != http.StatusUnauthorized {
		t.Fatalf("another client: %d", r.status)
	}

	// Many clients at once, each within its refusals: the store is asked
	// about no more unknown keys than the budget (10 at once, 10 more each
	// second), and the rest get 503, never 401.
	before := storeLookups(t, n)
	var mu sync.Mutex
	answered := map[int]int{}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range 20 {
		wg.Go(func() {
			for i := range 10 {
				r := from(fmt.Sprintf("192.0.%d.%d", w, i), unknown())
				mu.Lock()
				answered[r.status]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	budget := 10 + int(10*time.Since(start).Seconds()) + 1
	asked := storeLookups(t, n) - before
	if asked > budget || answered[http.StatusUnauthorized] > budget || answered[http.StatusUnauthorized]+answered[http.StatusServiceUnavailable] != 200 {
		t.Fatalf("200 unknown keys from 200 clients: %v, %d store lookups; want at most %d lookups and 401s, the rest 503", answered, asked, budget)
	}
	if r := from(bystander, valid); r.status != http.StatusOK {
		t.Fatalf("the cached valid key during the flood: %d", r.status)
	}
	if !strings.Contains(n.adminGet("/metrics"), `caddy_keygate_decisions_total{result="throttled"}`) {
		t.Fatal("no throttled decisions in the metrics")
	}
}

// storeLookups reads how many key lookups the store answered.
func storeLookups(t testing.TB, n *node) int {
	t.Helper()
	total := 0
	for _, m := range regexp.MustCompile(`(?m)^caddy_keygate_store_lookup_duration_seconds_count\{result="\w+"\} (\d+)$`).FindAllStringSubmatch(n.adminGet("/metrics"), -1) {
		v, _ := strconv.Atoi(m[1])
		total += v
	}
	return total
}
