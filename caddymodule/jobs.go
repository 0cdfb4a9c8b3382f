package caddymodule

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/store"
)

// LastUsedInterval is how often the times keys were last used are written
// to the store: "last used" is accurate to within this much.
const LastUsedInterval = 30 * time.Second

// writeLastUsed writes the gathered last-used times in batches, and once
// more when the app stops.
func (a *App) writeLastUsed(ctx context.Context, rt *runtime) {
	defer a.bg.Done()
	t := time.NewTicker(LastUsedInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.flushLastUsed(context.Background(), rt)
			return
		case <-t.C:
			a.flushLastUsed(ctx, rt)
		}
	}
}

func (a *App) flushLastUsed(ctx context.Context, rt *runtime) {
	used := rt.usage.Drain()
	if len(used) == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rt.store.TouchKeys(wctx, used); err != nil {
		rt.usage.Restore(used) // next time
		a.logger.Warn("recording when keys were last used failed; will retry", zap.Error(err), zap.Int("keys", len(used)))
	}
}

// purgeObjects forgets, hourly, the objects not seen within the retention.
// Every instance of a fleet does it; the deletes are idempotent.
func (a *App) purgeObjects(ctx context.Context, st store.Store) {
	defer a.bg.Done()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		n, err := st.PurgeObjects(pctx, time.Now().Add(-time.Duration(a.ObjectRetention)))
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			a.logger.Warn("purging expired objects failed", zap.Error(err))
		case n > 0:
			a.logger.Info("purged expired objects", zap.Int64("count", n))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func migrateOnce(ctx context.Context, st store.Store) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return st.Migrate(ctx)
}

// retryPrepare retries migrating and checking the secrets until both are
// done, or the secret is found wrong (which only a new config can fix).
func (a *App) retryPrepare(ctx context.Context, rt *runtime) {
	defer a.bg.Done()
	for wait := time.Second; ; wait = min(2*wait, time.Minute) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		err := a.prepare(ctx, rt)
		switch {
		case err == nil:
			a.logger.Info("keygate store migrated and its secret checked")
			return
		case ctx.Err() != nil:
			return
		}
		rt.report.Report("start-up (migration and secret check), retried in the background", err)
		if errors.Is(err, auth.ErrWrongSecret) {
			return
		}
	}
}
