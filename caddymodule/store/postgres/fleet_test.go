package postgres

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/internal/keytest"
	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

// testKey builds a storable key of the account.
func testKey(t *testing.T, kr *keys.Keyring, accountID, name string) store.Key {
	t.Helper()
	k, _ := keytest.Mint(t, kr, accountID, name)
	return k
}

func TestKeyEvents(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dsn := pgtest.DSN(t)
	s := openMigrated(t, dsn)
	kr, _ := keys.NewKeyring([]byte("fleet test secret 0123456789abcdef"))
	acct, err := s.CreateAccount(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if seq, err := s.LastKeyEvent(ctx); err != nil || seq != 0 {
		t.Fatalf("LastKeyEvent before any = %d, %v", seq, err)
	}

	// A listener on its own connection, as an instance has, given the
	// pool's DSN, pool options included, as it is by default.
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	connected := make(chan struct{})
	events := make(chan store.KeyEvent, 10)
	done := make(chan error, 1)
	go func() {
		done <- s.ListenKeyEvents(lctx, dsn+"&pool_max_conns=3", 100*time.Millisecond, func() error { close(connected); return nil }, func() {}, func(ev store.KeyEvent) error { events <- ev; return nil })
	}()
	select {
	case <-connected:
	case err := <-done:
		t.Fatalf("listener: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("listener did not connect")
	}

	k := testKey(t, kr, acct.ID, "one")
	created, err := s.CreateKey(ctx, k, store.AuditEvent{Actor: "user-1"})
	if err != nil || created.Seq != 1 {
		t.Fatalf("CreateKey seq = %d, %v", created.Seq, err)
	}
	// A create that fails uses no number: the sequence has no gaps.
	if _, err := s.CreateKey(ctx, testKey(t, kr, acct.ID, "one"), store.AuditEvent{Actor: "user-1"}); !errors.Is(err, store.ErrNameTaken) {
		t.Fatalf("duplicate name: %v", err)
	}
	deleted, err := s.DeleteKey(ctx, acct.ID, k.ID, store.AuditEvent{Actor: "user-2", Action: store.ActionDelete})
	if err != nil || deleted.Seq != 2 {
		t.Fatalf("DeleteKey seq = %d, %v", deleted.Seq, err)
	}

	want := []store.KeyEvent{{Seq: 1, Op: store.OpCreate, Digest: k.Digest, KeyID: k.ID}, {Seq: 2, Op: store.OpDelete, Digest: k.Digest, KeyID: k.ID}}
	for _, w := range want {
		select {
		case ev := <-events:
			if ev.Seq != w.Seq || ev.Op != w.Op || ev.Digest != w.Digest || ev.KeyID != w.KeyID || time.Since(ev.At) > time.Minute {
				t.Fatalf("notified %+v, want %+v", ev, w)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no notification for seq %d", w.Seq)
		}
	}
	got, err := s.KeyEventsSince(ctx, 0, 0)
	if err != nil || len(got) != 2 || got[0].Seq != 1 || got[1].Op != store.OpDelete || got[1].Digest != k.Digest || got[1].KeyID != k.ID {
		t.Fatalf("KeyEventsSince(0) = %+v, %v", got, err)
	}
	if got, _ := s.KeyEventsSince(ctx, 1, 0); len(got) != 1 || got[0].Seq != 2 {
		t.Fatalf("KeyEventsSince(1) = %+v", got)
	}
	if seq, _ := s.LastKeyEvent(ctx); seq != 2 {
		t.Fatalf("LastKeyEvent = %d", seq)
	}

	// Pruning keeps the counter: numbers never repeat.
	if n, err := s.PruneKeyEvents(ctx, time.Now().Add(time.Minute)); err != nil || n != 2 {
		t.Fatalf("PruneKeyEvents = %d, %v", n, err)
	}
	again, err := s.CreateKey(ctx, testKey(t, kr, acct.ID, "two"), store.AuditEvent{Actor: "user-1"})
	if err != nil || again.Seq != 3 {
		t.Fatalf("seq after pruning = %d, %v", again.Seq, err)
	}

	stop()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("ListenKeyEvents returned nil")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("listener did not stop with its context")
	}
}

func TestParsePayload(t *testing.T) {
	var d keys.Digest
	d[0] = 0xab
	ev, err := parsePayload("7 delete ab00000000000000000000000000000000000000000000000000000000000000 1795750000000000 key_abc")
	if err != nil || ev.Seq != 7 || ev.Op != store.OpDelete || ev.Digest != d || ev.At.Unix() != 1795750000 || ev.KeyID != "key_abc" {
		t.Fatalf("parsePayload = %+v, %v", ev, err)
	}
	// A keygate from before key ids announces four fields: read as a gap,
	// which the follower repairs from key_events.
	for _, bad := range []string{"", "1 create", "7 delete ab00000000000000000000000000000000000000000000000000000000000000 1795750000000000", "x create ab 1", "0 create " + strconv.Itoa(1) + " 1", "1 rename ab00000000000000000000000000000000000000000000000000000000000000 1", "1 create abzz 1", "1 create ab00000000000000000000000000000000000000000000000000000000000000 soon"} {
		if _, err := parsePayload(bad); err == nil {
			t.Errorf("parsePayload(%q) succeeded", bad)
		}
	}
}

func TestInstances(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := openMigrated(t, pgtest.DSN(t))
	start := time.Now().Add(-time.Minute)
	a := store.Instance{ID: "inst-a", Address: "host-a:1", ListenerUp: true, AppliedSeq: 4, AppliedAt: time.Now(), StartedAt: start}
	b := store.Instance{ID: "inst-b", Address: "host-b:1", StartedAt: start.Add(time.Second)}
	for _, in := range []store.Instance{a, b} {
		if err := s.Heartbeat(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	b.ListenerUp, b.AppliedSeq = true, 9
	if err := s.Heartbeat(ctx, b); err != nil {
		t.Fatal(err)
	}
	got, err := s.ListInstances(ctx, time.Now().Add(-time.Minute))
	if err != nil || len(got) != 2 || got[0].ID != "inst-a" || got[1].AppliedSeq != 9 || !got[1].ListenerUp || !got[1].AppliedAt.IsZero() {
		t.Fatalf("ListInstances = %+v, %v", got, err)
	}
	if got, _ := s.ListInstances(ctx, time.Now().Add(time.Minute)); len(got) != 0 {
		t.Fatalf("instances heard from in the future: %+v", got)
	}
	if err := s.RemoveInstance(ctx, "inst-a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ListInstances(ctx, time.Time{}); len(got) != 1 || got[0].ID != "inst-b" {
		t.Fatalf("after RemoveInstance: %+v", got)
	}
}

// TestKeyEventsStayInTheirSchema: NOTIFY reaches every listener of the
// database, so two deployments in two schemas of one database must not
// hear each other's key events.
func TestKeyEventsStayInTheirSchema(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	dsnA, dsnB := pgtest.DSN(t), pgtest.DSN(t)
	a, b := openMigrated(t, dsnA), openMigrated(t, dsnB)
	kr, _ := keys.NewKeyring([]byte("fleet test secret 0123456789abcdef"))

	lctx, stop := context.WithCancel(ctx)
	defer stop()
	connected := make(chan struct{})
	events := make(chan store.KeyEvent, 10)
	go a.ListenKeyEvents(lctx, dsnA, time.Second, func() error { close(connected); return nil }, func() {}, func(ev store.KeyEvent) error { events <- ev; return nil })
	<-connected

	acctB, _ := b.CreateAccount(ctx, "b")
	if _, err := b.CreateKey(ctx, testKey(t, kr, acctB.ID, "in b"), store.AuditEvent{Actor: "u"}); err != nil {
		t.Fatal(err)
	}
	acctA, _ := a.CreateAccount(ctx, "a")
	ka := testKey(t, kr, acctA.ID, "in a")
	if _, err := a.CreateKey(ctx, ka, store.AuditEvent{Actor: "u"}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-events:
		if ev.Digest != ka.Digest {
			t.Fatalf("schema a's listener heard another schema's event %+v", ev)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event for schema a")
	}
	select {
	case ev := <-events:
		t.Fatalf("an extra event reached schema a's listener: %+v", ev)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestStandbys: on a throwaway primary, a deletion's LSN is counted as
// replicated once its standby has flushed it, and not while the standby
// is cut off, which the primary still knows of through its slot.
func TestStandbys(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	primary := pgtest.StartCluster(t)
	s := openMigrated(t, primary.DSN)
	kr, _ := keys.NewKeyring([]byte("fleet test secret 0123456789abcdef"))
	acct, err := s.CreateAccount(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	del := func(name string) store.Key {
		t.Helper()
		k, err := s.CreateKey(ctx, testKey(t, kr, acct.ID, name), store.AuditEvent{Actor: "user-1"})
		if err == nil {
			k, err = s.DeleteKey(ctx, acct.ID, k.ID, store.AuditEvent{Actor: "user-1", Action: store.ActionDelete})
		}
		if err != nil || k.LSN <= 0 {
			t.Fatalf("deleting %s: LSN %d, %v", name, k.LSN, err)
		}
		return k
	}
	standbys := func(lsn int64) string {
		known, flushed, err := s.Standbys(ctx, lsn)
		if err != nil {
			t.Fatal(err)
		}
		return strconv.Itoa(flushed) + " of " + strconv.Itoa(known)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}

	first := del("alone")
	if got := standbys(first.LSN); got != "0 of 0" {
		t.Fatalf("without a standby: %s", got)
	}
	standby := primary.StartStandby(t, "kg_standby")
	waitFor("the standby to flush the deletion", func() bool { return standbys(first.LSN) == "1 of 1" })
	if got := standbys(0); got != "0 of 1" {
		t.Fatalf("an unknown LSN (0) counted as replicated: %s", got)
	}

	// Cut off: the walreceiver stops; the slot stays, inactive.
	sconn, err := pgx.Connect(ctx, standby.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer sconn.Close(context.Background())
	var conninfo string
	if err := sconn.QueryRow(ctx, `show primary_conninfo`).Scan(&conninfo); err != nil {
		t.Fatal(err)
	}
	setConninfo := func(v string) {
		t.Helper()
		if _, err := sconn.Exec(ctx, `alter system set primary_conninfo = `+quote(v)); err != nil {
			t.Fatal(err)
		}
		if _, err := sconn.Exec(ctx, `select pg_reload_conf()`); err != nil {
			t.Fatal(err)
		}
	}
	setConninfo("")
	waitFor("the walsender to go", func() bool {
		var n int
		return s.pool.QueryRow(ctx, `select count(*) from pg_stat_replication`).Scan(&n) == nil && n == 0
	})
	second := del("while cut off")
	if got := standbys(second.LSN); got != "0 of 1" {
		t.Fatalf("with the standby cut off: %s", got)
	}
	setConninfo(conninfo)
	waitFor("the standby to flush the second deletion", func() bool { return standbys(second.LSN) == "1 of 1" })
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
