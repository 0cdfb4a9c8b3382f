package e2e

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/store"
)

// multiHost is the DSN keygate is given for a primary and its standby:
// pgx tries the hosts in order and keeps the first that accepts writes.
func multiHost(addrs ...string) string {
	return "postgres://postgres@" + strings.Join(addrs, ",") + "/postgres?sslmode=disable&target_session_attrs=read-write&connect_timeout=2"
}

func addrOf(c *pgtest.Cluster) string { return "127.0.0.1:" + strconv.Itoa(c.Port) }

// deleteReceipt is the dashboard's JSON answer to a deletion.
type deleteReceipt struct {
	Deleted      bool   `json:"deleted"`
	RevokedOn    int    `json:"revoked_on"`
	Instances    int    `json:"instances"`
	Standbys     int    `json:"standbys"`
	ReplicatedTo int    `json:"replicated_to"`
	Revocation   string `json:"revocation"`
}

// dashboardDelete deletes a key through node i's dashboard, as alice.
func (f *fleet) dashboardDelete(i int, k store.Key) deleteReceipt {
	f.t.Helper()
	var r deleteReceipt
	f.dashboardJSON(i, "POST", "/api/accounts/"+f.account+"/keys/"+k.ID+"/delete", `{"name":"`+k.Name+`"}`, &r)
	if !r.Deleted {
		f.t.Fatalf("deleting %s through the dashboard: %+v", k.Name, r)
	}
	return r
}

// markDeleted moves a key from live to deleted, from now, for a deletion
// the test makes itself (through a dashboard).
func (w *watch) markDeleted(key string) {
	w.mu.Lock()
	delete(w.live, key)
	w.deleted[key] = time.Now()
	w.mu.Unlock()
}

// rowLocked reports whether a transaction holds the key's row on the
// cluster: a deletion that has not finished committing.
func rowLocked(t testing.TB, c *pgtest.Cluster, keyID string) bool {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), c.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	_, err = tx.Exec(t.Context(), `select 1 from api_keys where id = $1 for update nowait`, keyID)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55P03" { // lock_not_available
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	return false
}

// queryInt runs a query returning one integer on a cluster.
func queryInt(t testing.TB, c *pgtest.Cluster, sql string) int {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), c.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var n int
	if err := conn.QueryRow(t.Context(), sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// cutStream stops the standby's WAL receiver and waits for the primary to
// see it gone; the primary still knows of the standby by its slot.
func cutStream(t *testing.T, primary, standby *pgtest.Cluster) {
	t.Helper()
	standby.Exec(t, `alter system set primary_conninfo = ''`)
	standby.Exec(t, `select pg_reload_conf()`)
	waitFor(t, "the standby's walsender to go", 30*time.Second, func() bool {
		return queryInt(t, primary, `select count(*) from pg_stat_replication`) == 0
	}, nil)
}

// TestFailover: a primary and an asynchronous streaming standby; two
// nodes given both hosts. The standby stops receiving WAL, a key is
// deleted on the primary (the receipt says the standby does not have it),
// the primary dies, and while no primary answers the nodes serve cached
// keys within the bound and 503 otherwise, never 401. The standby is
// promoted and, before the nodes can reach it, another key is deleted
// there: its key event takes the number of the lost deletion's. Back in
// touch, the nodes must see that history changed: the renumbered deletion
// is refused, and the lost one is named in their logs, its key working
// again, as the dashboard's list shows.
func TestFailover(t *testing.T) {
	t.Parallel()
	primary := pgtest.StartCluster(t)
	standby := primary.StartStandby(t, "kg_standby")
	// The nodes reach the standby through a proxy, to keep them from the
	// new primary until the test has written there.
	proxy := newTCPProxy(t, addrOf(standby))
	nodesDSN := multiHost(addrOf(primary), proxy.addr)
	f := newFleet(t, 2, multiHost(addrOf(primary), addrOf(standby)), func(int) (string, string) { return nodesDSN, nodesDSN })
	ctx := t.Context()

	live, liveKey := f.mint("live")
	f.create(live)
	renumbered, renumberedKey := f.mint("deleted on the new primary")
	renumbered = f.create(renumbered)
	lost, lostKey := f.mint("deleted, then lost")
	lost = f.create(lost)
	replicated, replicatedKey := f.mint("deleted while streaming")
	replicated = f.create(replicated)
	for _, n := range f.nodes {
		if s := probe(n, replicatedKey); s != http.StatusOK {
			t.Fatalf("before deletion %s answered %d", n.addr, s)
		}
	}
	r := f.dashboardDelete(0, replicated)
	if r.RevokedOn != 2 || r.Standbys != 1 || r.ReplicatedTo != 1 || !strings.HasSuffix(r.Revocation, "; replicated to the standby.") {
		t.Fatalf("the receipt of a deletion the standby has: %+v", r)
	}
	t.Logf("dashboard, streaming: %s", r.Revocation)

	// The standby stops receiving WAL; the primary still knows of it by
	// its slot.
	cutStream(t, primary, standby)

	streamed, err := f.st.LastKeyEvent(ctx) // the standby has every event to here
	if err != nil {
		t.Fatal(err)
	}
	// The watch probes the live key throughout. The other two are probed
	// only at set times: a request between a node's pool reaching the new
	// primary and its listener doing so would refresh their cache entries,
	// and the test is of what the listener's catch-up does with them.
	w := f.watch(liveKey)
	for _, n := range f.nodes {
		for _, k := range []string{renumberedKey, lostKey} {
			if s := probe(n, k); s != http.StatusOK {
				t.Fatalf("before the failover %s answered %d", n.addr, s)
			}
		}
	}
	w.waitRound()
	r = f.dashboardDelete(1, lost)
	if r.RevokedOn != 2 || r.Standbys != 1 || r.ReplicatedTo != 0 ||
		!strings.HasSuffix(r.Revocation, "; not yet confirmed on the standby: a failover now could undo it.") {
		t.Fatalf("the receipt of a deletion the standby lacks: %+v", r)
	}
	t.Logf("dashboard, standby cut off: %s", r.Revocation)
	for _, n := range f.nodes {
		if s := probe(n, lostKey); s != http.StatusUnauthorized {
			t.Fatalf("after its deletion %s answered %d", n.addr, s)
		}
	}

	// The primary dies. No host accepts writes: past the bound, 503.
	proxy.setDown(true)
	primary.Ctl("stop", "-m", "immediate")
	time.Sleep(staleBound + 300*time.Millisecond)
	for _, n := range f.nodes {
		for _, k := range []string{liveKey, renumberedKey} {
			if s := probe(n, k); s != http.StatusServiceUnavailable {
				t.Errorf("with no primary, past the bound, %s answered %d; want 503", n.addr, s)
			}
		}
	}
	listening := func(up string) func() bool {
		return func() bool {
			for _, n := range f.nodes {
				if !strings.Contains(n.adminGet("/metrics"), "\ncaddy_keygate_listener_up "+up+"\n") {
					return false
				}
			}
			return true
		}
	}
	f.waitFor("every node's listener to be down", 30*time.Second, listening("0"))

	standby.Ctl("promote")
	f.waitFor("the test's pool to reach the new primary", 30*time.Second, func() bool { return f.st.Ping(ctx) == nil })
	if last, err := f.st.LastKeyEvent(ctx); err != nil || last != streamed {
		t.Fatalf("the new primary's last key event: %d, %v; want %d, the lost deletion's predecessor", last, err, streamed)
	}
	f.delete(renumbered)
	if last, err := f.st.LastKeyEvent(ctx); err != nil || last != streamed+1 {
		t.Fatalf("the renumbered deletion's key event: %d, %v; want %d, the lost deletion's", last, err, streamed+1)
	}

	proxy.setDown(false)
	f.waitFor("every node to follow the new primary", 30*time.Second, listening("1"))
	// Following again, each node has caught up: at once, the deletion
	// made on the new primary holds, and the lost one is undone.
	for _, n := range f.nodes {
		if s := probe(n, renumberedKey); s != http.StatusUnauthorized {
			t.Errorf("following the new primary, %s answers %d for the key deleted there", n.addr, s)
		}
		if s := probe(n, lostKey); s != http.StatusOK {
			t.Errorf("following the new primary, %s answers %d for the key whose deletion was lost", n.addr, s)
		}
	}
	w.finish()
	for i, n := range f.nodes {
		var line string
		waitFor(t, "node "+strconv.Itoa(i)+" to name the lost deletion", 10*time.Second, func() bool {
			for l := range strings.Lines(n.out.String()) {
				if strings.Contains(l, "these keys work again until deleted anew") {
					line = l
				}
			}
			return line != ""
		}, nil)
		if !strings.Contains(line, lost.ID) || strings.Contains(line, replicated.ID) {
			t.Fatalf("node %d names, as lost, other deletions than %s: %s", i, lost.ID, line)
		}
	}
	// The dashboard lists the key again: the new primary never deleted it.
	var list struct {
		Items []struct {
			ID string `json:"id"`
		} `json:"items"`
	}
	f.dashboardJSON(0, "GET", "/api/accounts/"+f.account+"/keys", "", &list)
	listed := false
	for _, it := range list.Items {
		listed = listed || it.ID == lost.ID
	}
	if !listed {
		t.Fatalf("the key whose deletion was lost is not listed: %+v", list.Items)
	}
}

// TestFailoverSynchronous: with synchronous replication a deletion that
// the dashboard reported commits on the standby too, so it survives the
// primary's death and the standby's promotion at once. It measures the
// time from the primary's death to the first request that needed the
// store (a key no node had cached) served through the new primary.
func TestFailoverSynchronous(t *testing.T) {
	t.Parallel()
	primary := pgtest.StartCluster(t)
	standby := primary.StartStandby(t, "kg_standby")
	// Set after the base backup: the standby, once promoted, has no
	// standby of its own to wait for.
	primary.Exec(t, `alter system set synchronous_standby_names = '*'`)
	primary.Exec(t, `select pg_reload_conf()`)
	waitFor(t, "the standby to be synchronous", 30*time.Second, func() bool {
		return queryInt(t, primary, `select count(*) from pg_stat_replication where sync_state = 'sync'`) == 1
	}, nil)
	dsn := multiHost(addrOf(primary), addrOf(standby))
	f := newFleet(t, 2, dsn, func(int) (string, string) { return dsn, dsn })
	ctx := t.Context()

	live, liveKey := f.mint("live")
	f.create(live)
	doomed, doomedKey := f.mint("doomed")
	doomed = f.create(doomed)
	cold, coldKey := f.mint("never cached")
	f.create(cold)
	w := f.watch(liveKey, doomedKey)
	w.waitRound()

	w.markDeleted(doomedKey)
	r := f.dashboardDelete(0, doomed)
	if r.RevokedOn != 2 || r.Standbys != 1 || r.ReplicatedTo != 1 || !strings.HasSuffix(r.Revocation, "; replicated to the standby.") {
		t.Fatalf("the receipt of a synchronously replicated deletion: %+v", r)
	}
	t.Logf("dashboard: %s", r.Revocation)

	// The hard case of the asynchronous test: the standby stops receiving
	// WAL and a key is deleted. Here the deletion cannot commit without
	// the standby: it waits, invisible, announced to no node, and the
	// dashboard claims nothing.
	pending, pendingKey := f.mint("pending")
	pending = f.create(pending)
	for _, n := range f.nodes {
		if s := probe(n, pendingKey); s != http.StatusOK {
			t.Fatalf("before its deletion %s answered %d", n.addr, s)
		}
	}
	cutStream(t, primary, standby)
	token := f.csrfToken(1)
	answered := make(chan response, 1)
	go func() {
		answered <- dashboardRequest(t, f.dashboards[1], "alice", f.password, "POST",
			"/api/accounts/"+f.account+"/keys/"+pending.ID+"/delete", `{"name":"pending"}`, token)
	}()
	waitFor(t, "the deletion to wait for the standby", 30*time.Second, func() bool {
		return rowLocked(t, primary, pending.ID)
	}, nil)
	for _, n := range f.nodes {
		if s := probe(n, pendingKey); s != http.StatusOK {
			t.Fatalf("while its deletion waits for the standby %s answered %d", n.addr, s)
		}
	}

	died := time.Now()
	primary.Ctl("stop", "-m", "immediate")
	standby.Ctl("promote")
	promoted := time.Since(died)
	served := make([]time.Duration, len(f.nodes))
	var wg sync.WaitGroup
	for i, n := range f.nodes {
		wg.Go(func() {
			for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
				switch probe(n, coldKey) {
				case http.StatusOK:
					served[i] = time.Since(died)
					return
				case http.StatusUnauthorized:
					t.Errorf("a valid key no node had cached was told 401 by %s during the failover", n.addr)
					return
				}
			}
			t.Errorf("%s served no request through the new primary within a minute", n.addr)
		})
	}
	wg.Wait()
	t.Logf("failover: from the primary's death to the first uncached key served through the new primary: %v on node 0, %v on node 1 (pg_ctl stop -m immediate + promote -w took %v)",
		served[0].Round(time.Millisecond), served[1].Round(time.Millisecond), promoted.Round(time.Millisecond))

	f.waitFor("every node to follow the new primary", 30*time.Second, func() bool {
		for _, n := range f.nodes {
			if !strings.Contains(n.adminGet("/metrics"), "\ncaddy_keygate_listener_up 1\n") {
				return false
			}
		}
		return true
	})
	w.finish()
	// The commit's answer was lost with the primary: the dashboard says
	// the outcome is not known, to be retried, and claims nothing.
	if r := <-answered; r.status != http.StatusServiceUnavailable || strings.Contains(r.body, "Revoked") || !strings.Contains(r.body, "whether this change was made is not known") {
		t.Errorf("the dashboard's answer to a deletion the standby never had: %d %s\n%s", r.status, r.body, f.nodes[1].out.String())
	} else {
		t.Logf("dashboard, deletion waiting for the standby when the primary died: %d %s", r.status, strings.TrimSpace(r.body))
	}
	for _, n := range f.nodes {
		if s := probe(n, pendingKey); s != http.StatusOK {
			t.Errorf("after the failover %s answers %d for the key whose deletion never committed", n.addr, s)
		}
	}
	for _, n := range f.nodes {
		if s := probe(n, doomedKey); s != http.StatusUnauthorized {
			t.Errorf("after the failover %s answers %d for the deleted key", n.addr, s)
		}
		if s := probe(n, liveKey); s != http.StatusOK {
			t.Errorf("after the failover %s answers %d for the live key", n.addr, s)
		}
	}
	f.waitFor("the test's pool to reach the new primary", 30*time.Second, func() bool { return f.st.Ping(ctx) == nil })
	if _, err := f.st.GetKey(ctx, f.account, doomed.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the new primary has the deleted key: %v", err)
	}
}
