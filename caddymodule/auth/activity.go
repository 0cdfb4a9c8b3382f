package auth

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/keygate/keygate/caddymodule/store"
)

// Activity gathers what keys do, per key and hour, in memory, so that it
// costs no database write per request: the app writes it in batches
// (store.Store.RecordActivity). For each key and hour it counts the
// requests let through and those refused by the key's scope, and keeps
// the distinct client addresses, User-Agents and, for standard keys,
// servers, each with its requests: at most store.ActivityCap of each kind
// (the requests of others are counted, their values not kept), cleaned
// by store.AppendActivityValue.
//
// Recording a request of a key already tracked, with values already kept
// (or past the cap), allocates nothing and takes only the key's own lock.
// At most MaxKeys keys are tracked between two drains; the requests of
// others are dropped and counted (Dropped).
type Activity struct {
	now     func() time.Time
	maxKeys int
	dropped atomic.Int64

	mu   sync.Mutex
	keys map[string]*keyActivity
	full *keyActivity // this round's stand-in for the keys past maxKeys
}

// ActivityConfig configures an Activity.
type ActivityConfig struct {
	// MaxKeys bounds the keys tracked between two drains. Default:
	// DefaultActivityKeys.
	MaxKeys int
	// Now is the clock. Default: the second the key was last checked
	// (Usage notes it: the request path reads the clock once), else
	// time.Now.
	Now func() time.Time
}

// DefaultActivityKeys is how many keys an Activity tracks between two
// drains by default: a few hundred bytes each for a key used by one
// client, up to about 6 KiB with every cap reached.
const DefaultActivityKeys = 10_000

// maxActivityHours bounds the hours kept per key: more accumulate only
// while writes keep failing, and Restore drops the oldest.
const maxActivityHours = 24

// Use is one request of a key, as Activity records it.
type Use struct {
	// Refused: the key's scope refused the request (403, 404, 400);
	// otherwise it was let through.
	Refused bool
	// Client is the client's address ("" for none), Agent its
	// User-Agent ("" for none), Server the server the request names (""
	// for none; kept for standard keys only).
	Client, Agent, Server string
}

// NewActivity returns an empty Activity.
func NewActivity(cfg ActivityConfig) *Activity {
	if cfg.MaxKeys <= 0 {
		cfg.MaxKeys = DefaultActivityKeys
	}
	a := &Activity{now: cfg.Now, maxKeys: cfg.MaxKeys, keys: map[string]*keyActivity{}}
	a.full = &keyActivity{owner: a, full: true}
	return a
}

// Record records a request of the key, in the hour the Verifier checked
// it in (see ActivityConfig.Now).
func (a *Activity) Record(id *Identity, u Use) {
	hour := a.hourOf(id)
	if id.Type != store.Standard {
		u.Server = ""
	}
	ka := id.activity.Load()
	for {
		if ka == nil || ka.owner != a || ka.sealed.Load() {
			ka = a.track(id)
		}
		if ka.full {
			a.dropped.Add(1)
			return
		}
		if ka.add(hour, &u) {
			return
		}
		ka = nil // drained meanwhile: the next round's
	}
}

const secondsPerHour = int64(time.Hour / time.Second)

// hourOf returns the hour of a request of the key being recorded, in unix
// hours. Verify has just noted the second it checked the key in, for
// Usage; reading the clock again would cost as much as the rest of
// Record.
func (a *Activity) hourOf(id *Identity) int64 {
	if a.now != nil {
		return a.now().Unix() / secondsPerHour
	}
	if sec := id.lastMarked.Load(); sec > 0 {
		return sec / secondsPerHour
	}
	return time.Now().Unix() / secondsPerHour
}

// track returns the key's record of this round, made if need be, and
// keeps it on the identity for the next request.
func (a *Activity) track(id *Identity) *keyActivity {
	a.mu.Lock()
	defer a.mu.Unlock()
	ka := a.keys[id.KeyID]
	switch {
	case ka != nil:
	case len(a.keys) >= a.maxKeys:
		ka = a.full
	default:
		ka = &keyActivity{owner: a, keyID: id.KeyID}
		a.keys[id.KeyID] = ka
	}
	id.activity.Store(ka)
	return ka
}

// Drain returns what was gathered since the last Drain and forgets it.
func (a *Activity) Drain() []store.ActivityHour {
	a.mu.Lock()
	old, full := a.keys, a.full
	a.keys, a.full = make(map[string]*keyActivity, len(old)), &keyActivity{owner: a, full: true}
	a.mu.Unlock()
	full.sealed.Store(true)
	var out []store.ActivityHour
	for _, ka := range old {
		out = ka.drain(out)
	}
	return out
}

// Restore puts back hours whose write failed, to be written with the
// next Drain. Within the bounds (MaxKeys, the caps, 24 hours a key), what
// does not fit is dropped and counted.
func (a *Activity) Restore(hours []store.ActivityHour) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, h := range hours {
		ka := a.keys[h.KeyID]
		if ka == nil {
			if len(a.keys) >= a.maxKeys {
				a.dropped.Add(h.Allowed + h.Refused)
				continue
			}
			ka = &keyActivity{owner: a, keyID: h.KeyID}
			a.keys[h.KeyID] = ka
		}
		a.dropped.Add(ka.restore(h))
	}
}

// Dropped returns how many requests were not recorded, since the
// Activity was made, because MaxKeys keys were tracked already.
func (a *Activity) Dropped() int64 { return a.dropped.Load() }

// keyActivity is one key's record of one round (between two drains).
type keyActivity struct {
	owner *Activity
	keyID string
	full  bool // the stand-in for keys not tracked: records nothing

	mu     sync.Mutex
	sealed atomic.Bool // drained: requests go to the next round's record
	hours  []*hourActivity
}

type hourActivity struct {
	hour             int64 // unix hours
	allowed, refused int64
	sets             [store.NumActivityKinds]valueSet
}

// valueSet is one kind's values of an hour.
type valueSet struct {
	vals   []store.ActivityValue
	others int64
}

// add records a request, unless the record was drained.
func (ka *keyActivity) add(hour int64, u *Use) bool {
	ka.mu.Lock()
	defer ka.mu.Unlock()
	if ka.sealed.Load() {
		return false
	}
	h := ka.hourOf(hour)
	if u.Refused {
		h.refused++
	} else {
		h.allowed++
	}
	if u.Client != "" {
		h.sets[store.ActivityAddress].add(store.ActivityAddress, u.Client)
	}
	h.sets[store.ActivityAgent].add(store.ActivityAgent, u.Agent)
	if u.Server != "" {
		h.sets[store.ActivityServer].add(store.ActivityServer, u.Server)
	}
	return true
}

func (ka *keyActivity) has(hour int64) bool {
	for _, h := range ka.hours {
		if h.hour == hour {
			return true
		}
	}
	return false
}

// hourOf returns the hour's record, made if need be. Requests come in
// time order but for a few at an hour's turn: look from the latest.
func (ka *keyActivity) hourOf(hour int64) *hourActivity {
	for i := len(ka.hours) - 1; i >= 0; i-- {
		if ka.hours[i].hour == hour {
			return ka.hours[i]
		}
	}
	h := &hourActivity{hour: hour}
	ka.hours = append(ka.hours, h)
	return h
}

// add counts a request with the raw value. A value kept already is found
// without cleaning raw when raw is clean; a value past the cap is cleaned
// on the stack to be compared, and counted in others.
func (s *valueSet) add(kind store.ActivityKind, raw string) {
	if s.count(raw, 1) {
		return
	}
	var buf [store.MaxActivityValueLen]byte
	clean, ok := store.AppendActivityValue(buf[:0], kind, raw)
	if !ok {
		return // not a value of the kind (a server id that is none)
	}
	if string(clean) != raw && s.countClean(clean) {
		return
	}
	if len(s.vals) >= store.ActivityCap(kind) {
		s.others++
		return
	}
	s.vals = append(s.vals, store.ActivityValue{Kind: kind, Value: string(clean), Requests: 1})
}

// count adds n requests to the value, if kept.
func (s *valueSet) count(v string, n int64) bool {
	for i := range s.vals {
		if s.vals[i].Value == v {
			s.vals[i].Requests += n
			return true
		}
	}
	return false
}

// countClean is count of one request, for a value cleaned into a buffer:
// compared in place, not copied to a string.
func (s *valueSet) countClean(v []byte) bool {
	for i := range s.vals {
		if s.vals[i].Value == string(v) {
			s.vals[i].Requests++
			return true
		}
	}
	return false
}

// drain seals the record and appends its hours to out. The record itself
// stays on the key's cached identity until its next request: it keeps
// nothing of them.
func (ka *keyActivity) drain(out []store.ActivityHour) []store.ActivityHour {
	ka.mu.Lock()
	defer ka.mu.Unlock()
	ka.sealed.Store(true)
	for _, h := range ka.hours {
		ah := store.ActivityHour{KeyID: ka.keyID, Hour: time.Unix(h.hour*secondsPerHour, 0).UTC(), Allowed: h.allowed, Refused: h.refused}
		for k := range h.sets {
			ah.Values = append(ah.Values, h.sets[k].vals...)
			ah.Others[k] = h.sets[k].others
		}
		out = append(out, ah)
	}
	ka.hours = nil
	return out
}

// restore merges an hour back and returns how many of its requests did
// not fit.
func (ka *keyActivity) restore(ah store.ActivityHour) (dropped int64) {
	ka.mu.Lock()
	defer ka.mu.Unlock()
	hour := ah.Hour.Unix() / secondsPerHour
	if !ka.has(hour) && len(ka.hours) >= maxActivityHours {
		oldest := 0
		for i, h := range ka.hours {
			if h.hour < ka.hours[oldest].hour {
				oldest = i
			}
		}
		if ka.hours[oldest].hour >= hour {
			return ah.Allowed + ah.Refused // older than all kept
		}
		dropped = ka.hours[oldest].allowed + ka.hours[oldest].refused
		ka.hours = append(ka.hours[:oldest], ka.hours[oldest+1:]...)
	}
	h := ka.hourOf(hour)
	h.allowed += ah.Allowed
	h.refused += ah.Refused
	for k := range h.sets {
		h.sets[k].others += ah.Others[k]
	}
	for _, v := range ah.Values {
		s := &h.sets[v.Kind]
		switch {
		case s.count(v.Value, v.Requests):
		case len(s.vals) < store.ActivityCap(v.Kind):
			s.vals = append(s.vals, v)
		default:
			s.others += v.Requests
		}
	}
	return dropped
}
