package auth

import (
	"sync"
	"time"
)

// Usage gathers when keys were last used, in memory, so that "last used"
// costs no database write per request: the app writes the gathered times
// in batches (store.Store.TouchKeys). Marking a key takes a lock at most
// once per second per key; otherwise it is one atomic load.
type Usage struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// NewUsage returns an empty Usage.
func NewUsage() *Usage { return &Usage{seen: map[string]time.Time{}} }

// mark records that the key was used at now (unix nanoseconds).
func (u *Usage) mark(id *Identity, now int64) {
	sec := now / int64(time.Second)
	if id.lastMarked.Load() == sec {
		return
	}
	id.lastMarked.Store(sec)
	u.mu.Lock()
	u.seen[id.KeyID] = time.Unix(sec, 0).UTC()
	u.mu.Unlock()
}

// Drain returns the times gathered since the last Drain and forgets them.
func (u *Usage) Drain() map[string]time.Time {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		return nil
	}
	out := u.seen
	u.seen = make(map[string]time.Time, len(out))
	return out
}

// Restore puts back times whose write failed, keeping later ones.
func (u *Usage) Restore(used map[string]time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for id, t := range used {
		if cur, ok := u.seen[id]; !ok || t.After(cur) {
			u.seen[id] = t
		}
	}
}
