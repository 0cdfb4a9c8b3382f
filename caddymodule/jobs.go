package caddymodule

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/store"
)

// writeUsage writes the gathered last-used times and key activity in
// batches every UsageInterval, and once more when the app stops.
func (a *App) writeUsage(ctx context.Context, rt *runtime) {
	defer a.bg.Done()
	t := time.NewTicker(time.Duration(a.UsageInterval))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.flushLastUsed(context.Background(), rt)
			a.flushActivity(context.Background(), rt)
			return
		case <-t.C:
			a.flushLastUsed(ctx, rt)
			a.flushActivity(ctx, rt)
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

// flushActivity writes the key activity gathered since the last flush:
// one row per key and hour, whatever the request rate. A failed write is
// retried with the next flush; one the store refuses as invalid would
// fail again, and is dropped.
func (a *App) flushActivity(ctx context.Context, rt *runtime) {
	hours := rt.activity.Drain()
	if len(hours) == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := rt.store.RecordActivity(wctx, hours)
	switch {
	case err == nil:
	case errors.Is(err, store.ErrInvalid):
		a.logger.Error("the store refused the key activity gathered; dropped", zap.Error(err), zap.Int("key_hours", len(hours)))
	default:
		rt.activity.Restore(hours)
		a.logger.Warn("recording key activity failed; will retry", zap.Error(err), zap.Int("key_hours", len(hours)))
	}
}

// purgeExpired forgets, hourly, the objects not seen within their
// retention and the key activity older than its own. Every instance of a
// fleet does it; the deletes are idempotent.
func (a *App) purgeExpired(ctx context.Context, st store.Store) {
	defer a.bg.Done()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		a.purgeOnce(ctx, st, time.Now())
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// purgeOnce forgets what was kept beyond its retention at now.
func (a *App) purgeOnce(ctx context.Context, st store.Store, now time.Time) {
	a.purge(ctx, "expired objects", func(ctx context.Context) (int64, error) {
		return st.PurgeObjects(ctx, now.Add(-time.Duration(a.ObjectRetention)))
	})
	a.purge(ctx, "expired key activity", func(ctx context.Context) (int64, error) {
		return st.PurgeActivity(ctx, now.Add(-time.Duration(a.ActivityRetention)))
	})
}

// purge runs one purge and logs what it did.
func (a *App) purge(ctx context.Context, what string, purge func(ctx context.Context) (int64, error)) {
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	n, err := purge(pctx)
	switch {
	case err != nil && ctx.Err() == nil:
		a.logger.Warn("purging "+what+" failed", zap.Error(err))
	case n > 0:
		a.logger.Info("purged "+what, zap.Int64("count", n))
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
