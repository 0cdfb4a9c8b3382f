package storetest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

// testReady: a migrated store is ready; a check that cannot finish in
// time fails, and is told apart from a store set up wrong.
func testReady(t *testing.T, s store.Store) {
	if err := s.Ready(t.Context()); err != nil {
		t.Fatalf("Ready on a migrated store: %v (%+v)", err, s.Diagnose(err))
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := s.Ready(ctx)
	if err == nil {
		t.Fatal("Ready with a canceled context succeeded")
	}
	if d := s.Diagnose(err); d.Permanent || d.Kind != store.KindCanceled {
		t.Errorf("Diagnose(Ready with a canceled context) = %+v; want transient %s", d, store.KindCanceled)
	}
}

// testDiagnose: what every store explains alike.
func testDiagnose(t *testing.T, s store.Store) {
	for _, tc := range []struct {
		err       error
		kind      string
		permanent bool
		fix       string
	}{
		{fmt.Errorf("checking readiness: %w: schema version 1", store.ErrNotMigrated), store.KindNotMigrated, true, "keygate migrate"},
		{fmt.Errorf("looking up key: %w", context.DeadlineExceeded), store.KindTimeout, false, "store_timeout"},
		{errors.New("something nobody foresaw"), store.KindOther, false, ""},
	} {
		d := s.Diagnose(tc.err)
		if d.Kind != tc.kind || d.Permanent != tc.permanent || !strings.Contains(d.Fix, tc.fix) || d.Cause == "" {
			t.Errorf("Diagnose(%v) = %+v; want kind %s, permanent %v, a cause and a fix naming %q", tc.err, d, tc.kind, tc.permanent, tc.fix)
		}
		if d.Detail != tc.err.Error() {
			t.Errorf("Diagnose(%v).Detail = %q; want the error's text", tc.err, d.Detail)
		}
	}
}

// RunEmpty checks a store on a database where keygate's migrations were
// never applied: it answers Ping but is not Ready, and says that it needs
// migrating, until it is migrated. open must return such a store and
// arrange (with t.Cleanup) for it to be closed.
func RunEmpty(t *testing.T, open func(t *testing.T) store.Store) {
	t.Run("ReadyAfterMigrate", func(t *testing.T) {
		t.Parallel()
		s := open(t)
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		if err := s.Ping(ctx); err != nil {
			t.Fatalf("Ping on an empty database: %v", err)
		}
		err := s.Ready(ctx)
		if err == nil {
			t.Fatal("Ready on a store never migrated succeeded")
		}
		d := s.Diagnose(err)
		if d.Kind != store.KindNotMigrated || !d.Permanent || !strings.Contains(d.Fix, "keygate migrate") {
			t.Errorf("Diagnose(%v) = %+v; want permanent %s with a fix naming keygate migrate", err, d, store.KindNotMigrated)
		}
		if _, err := s.LookupKey(ctx, keys.Digest{1}); err == nil {
			t.Error("LookupKey on a store never migrated succeeded")
		} else if d := s.Diagnose(err); d.Kind != store.KindNotMigrated {
			t.Errorf("Diagnose(LookupKey's %v) = %+v; want %s", err, d, store.KindNotMigrated)
		}
		if err := s.Migrate(ctx); err != nil {
			t.Fatalf("Migrate: %v", err)
		}
		if err := s.Ready(ctx); err != nil {
			t.Fatalf("Ready after Migrate: %v", err)
		}
	})
}
