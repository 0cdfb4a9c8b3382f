package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/internal/pgtest"
)

// TestFleetCacheTTLFollowing: a node with a short cache_ttl and the
// default-like cache_ttl_following keeps keys cached past the short TTL
// while it follows the key events, without asking the store; refuses a
// key deleted elsewhere as soon as the event comes; and once its listener
// is cut off, asks the store again about a key cached past the short TTL.
func TestFleetCacheTTLFollowing(t *testing.T) {
	t.Parallel()
	dsn := pgtest.DSN(t)
	proxy := newTCPProxy(t, "127.0.0.1:5432")
	const ttl = 300 * time.Millisecond
	f := newFleetWith(t, 1, dsn, func(int) (string, string) { return dsn, proxy.route(dsn) },
		"\n\t\tcache_ttl "+ttl.String()+"\n\t\tcache_ttl_following 1h")
	n := f.nodes[0]
	live, liveKey := f.mint("live")
	f.create(live)
	doomed, doomedKey := f.mint("doomed")
	doomed = f.create(doomed)
	// A creation's event drops the fills in flight: let both pass first.
	f.waitFor("the node to apply the creations", 10*time.Second, func() bool {
		ins, err := f.st.ListInstances(t.Context(), time.Now().Add(-time.Minute))
		return err == nil && len(ins) == 1 && ins[0].AppliedSeq >= doomed.Seq
	})
	cached := time.Now()
	for _, k := range []string{liveKey, doomedKey} {
		if s := probe(n, k); s != http.StatusOK {
			t.Fatalf("a live key answers %d", s)
		}
	}
	before := storeLookups(t, n)
	f.waitFor("the short TTL and the staleness bound to pass", 10*time.Second, func() bool { return time.Since(cached) > ttl+staleBound })
	for _, k := range []string{liveKey, doomedKey} {
		if s := probe(n, k); s != http.StatusOK {
			t.Fatalf("a live key cached past cache_ttl, following: %d", s)
		}
	}
	if after := storeLookups(t, n); after != before {
		t.Fatalf("following, keys cached %v ago (cache_ttl %v) were looked up again: %d store lookups, want %d", time.Since(cached), ttl, after, before)
	}

	f.delete(doomed)
	f.waitFor("the node to refuse the key deleted while it follows", 2*time.Second, func() bool { return probe(n, doomedKey) == http.StatusUnauthorized })

	proxy.setDown(true)
	f.waitFor("the listener to be reported down", 10*time.Second, func() bool {
		return strings.Contains(n.adminGet("/metrics"), "caddy_keygate_listener_up 0")
	})
	before = storeLookups(t, n)
	if s := probe(n, liveKey); s != http.StatusOK {
		t.Fatalf("a live key, listener down, store up: %d", s)
	}
	if after := storeLookups(t, n); after != before+1 {
		t.Fatalf("listener down, a key cached %v ago (cache_ttl %v) was not asked about again: %d store lookups, want %d", time.Since(cached), ttl, after, before+1)
	}
	proxy.setDown(false)
	f.waitFor("the listener to be back", 15*time.Second, func() bool {
		return strings.Contains(n.adminGet("/metrics"), "caddy_keygate_listener_up 1")
	})
}
