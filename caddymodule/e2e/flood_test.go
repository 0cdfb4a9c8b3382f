package e2e

import (
	"net/http"
	"regexp"
	"strconv"
	"testing"

	"github.com/keygate/keygate/caddymodule/keys"
)

// TestUnknownKeysNeverEvictKnownOnes floods a small cache with distinct,
// well-formed keys that do not exist: the valid key cached before the
// flood is still answered from the cache after it.
func TestUnknownKeysNeverEvictKnownOnes(t *testing.T) {
	t.Parallel()
	n := newNode(t, nodeConfig{global: "\t\tcache_size 10", upstream: newUpstream(t).addr()})
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
