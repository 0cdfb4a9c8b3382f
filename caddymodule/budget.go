package caddymodule

import (
	"context"
	"time"

	"golang.org/x/sync/semaphore"
)

// inspectBudget bounds the memory that reading responses takes across
// all the requests of a handler: each reading charges a fixed cost up
// front (see inspectCost), so many large responses at once wait their
// turn instead of growing the process.
type inspectBudget struct {
	sem  *semaphore.Weighted
	size int64
}

func newInspectBudget(size int64) *inspectBudget {
	return &inspectBudget{sem: semaphore.NewWeighted(size), size: size}
}

// take charges cost to the budget, waiting at most wait for it. It
// returns the function that gives it back, or false when the budget
// stayed spent (the request is answered 503). A cost over the whole
// budget is charged as the whole budget: one reading at a time.
func (b *inspectBudget) take(ctx context.Context, cost int64, wait time.Duration) (func(), bool) {
	cost = min(cost, b.size)
	if !b.sem.TryAcquire(cost) {
		ctx, cancel := context.WithTimeout(ctx, wait)
		err := b.sem.Acquire(ctx, cost)
		cancel()
		if err != nil {
			return nil, false
		}
	}
	inspectMemoryInUse.Add(float64(cost))
	return func() {
		inspectMemoryInUse.Sub(float64(cost))
		b.sem.Release(cost)
	}, true
}
