package storetest

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/store"
)

// testConcurrentKeys has many goroutines create keys and look them up at
// once, while others list and record use: run it under -race.
func testConcurrentKeys(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")

	const workers, perWorker = 12, 6
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker*2)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				k, secret := f.newKey(a.ID, fmt.Sprintf("w%d-%d", w, i), store.Standard, "")
				if _, err := s.CreateKey(ctx, k, createEvent()); err != nil {
					errs <- fmt.Errorf("CreateKey: %w", err)
					continue
				}
				id, err := s.LookupKey(ctx, f.kr.Digest([]byte(secret)))
				if err != nil || id.KeyID != k.ID {
					errs <- fmt.Errorf("LookupKey of %s = %+v, %v", k.ID, id, err)
				}
				if err := s.TouchKeys(ctx, map[string]time.Time{k.ID: time.Now()}); err != nil {
					errs <- fmt.Errorf("TouchKeys: %w", err)
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for range perWorker {
				if _, err := store.AllKeys(ctx, s, a.ID); err != nil {
					errs <- fmt.Errorf("ListKeys: %w", err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	ks, err := store.AllKeys(ctx, s, a.ID)
	if err != nil || len(ks) != workers*perWorker {
		t.Fatalf("ListKeys = %d keys, %v; want %d", len(ks), err, workers*perWorker)
	}
	evs, err := auditEvents(ctx, s, a.ID, 0, 1000)
	if err != nil || len(evs) != workers*perWorker {
		t.Errorf("ListAudit = %d events, %v; want %d", len(evs), err, workers*perWorker)
	}
}

// testConcurrentSameName races goroutines for one name: exactly one wins.
func testConcurrentSameName(t *testing.T, s store.Store) {
	ctx := t.Context()
	f := newFixture(t, s)
	a := f.account("A")

	const racers = 8
	var (
		wg         sync.WaitGroup
		mu         sync.Mutex
		won, taken int
	)
	for range racers {
		wg.Go(func() {
			k, _ := f.newKey(a.ID, "contested", store.Standard, "")
			_, err := s.CreateKey(ctx, k, createEvent())
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				won++
			case errors.Is(err, store.ErrNameTaken):
				taken++
			default:
				t.Errorf("CreateKey: %v", err)
			}
		})
	}
	wg.Wait()
	if won != 1 || taken != racers-1 {
		t.Errorf("%d won and %d found the name taken; want 1 and %d", won, taken, racers-1)
	}
	if evs, err := auditEvents(ctx, s, a.ID, 0, 0); err != nil || len(evs) != 1 {
		t.Errorf("ListAudit = %d events, %v; want 1", len(evs), err)
	}
}
