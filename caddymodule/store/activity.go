package store

import (
	"cmp"
	"fmt"
	"slices"
	"time"
	"unicode"
	"unicode/utf8"
)

// Key activity: what each key did, per hour, gathered in memory on the
// request path (auth.Activity) and written in batches (RecordActivity).
// The values it keeps come from clients, who control them: they are
// cleaned to short printable text (CleanActivityValue) and capped per
// key, hour and kind (ActivityCap), in the gatherer and again in the
// store, where the cap holds whatever several instances write.

// ActivityKind says what an ActivityValue is.
type ActivityKind uint8

const (
	// ActivityAddress: a client address, as Caddy resolved it (honouring
	// trusted_proxies), without a port.
	ActivityAddress ActivityKind = iota
	// ActivityAgent: a User-Agent; "" for requests that sent none.
	ActivityAgent
	// ActivityServer: a server (inbox) that a standard key's request
	// named in its path or server parameter.
	ActivityServer
	// NumActivityKinds is the number of kinds, for arrays indexed by kind.
	NumActivityKinds
)

var activityKindNames = [NumActivityKinds]string{"address", "agent", "server"}

// String returns the kind's stored name: address, agent or server.
func (k ActivityKind) String() string {
	if k < NumActivityKinds {
		return activityKindNames[k]
	}
	return fmt.Sprintf("ActivityKind(%d)", uint8(k))
}

// ParseActivityKind reads a kind's stored name.
func ParseActivityKind(s string) (ActivityKind, error) {
	for k, name := range activityKindNames {
		if s == name {
			return ActivityKind(k), nil
		}
	}
	return 0, fmt.Errorf("%w: unknown activity kind %q", ErrInvalid, s)
}

// The caps: how many distinct values of each kind are kept per key and
// hour (requests with others are only counted, in Others), and how long
// a value may be, in bytes.
const (
	MaxActivityAddresses = 10
	MaxActivityAgents    = 10
	MaxActivityServers   = 20
	MaxAgentLen          = 120
	MaxAddressLen        = 64
	// MaxActivityValueLen is the longest value of any kind.
	MaxActivityValueLen = MaxAgentLen
)

var activityCaps = [NumActivityKinds]int{MaxActivityAddresses, MaxActivityAgents, MaxActivityServers}

// ActivityCap is how many distinct values of the kind are kept per key
// and hour.
func ActivityCap(k ActivityKind) int { return activityCaps[k] }

// ActivityHour is what was gathered about one key in one hour: by one
// instance between two flushes when written, by all of them when read.
type ActivityHour struct {
	KeyID string
	// Hour is the start of the hour, UTC.
	Hour time.Time
	// Allowed counts the requests let through; Refused those the key's
	// scope refused (403, 404, 400).
	Allowed, Refused int64
	// Values are the distinct addresses, agents and servers seen, each
	// with its number of requests; at most ActivityCap of each kind.
	Values []ActivityValue
	// Others counts, by kind, the requests whose value was not kept
	// because the kind's cap was reached.
	Others [NumActivityKinds]int64
}

// ActivityValue is one address, agent or server and its requests.
type ActivityValue struct {
	Kind     ActivityKind
	Value    string
	Requests int64
}

// KeyActivity is a key's activity since a time, as KeyActivity reads it.
type KeyActivity struct {
	// Hours are the hours with requests, oldest first.
	Hours []ActivityCount
	// Values are the addresses, agents and servers seen, by kind, the
	// most recently seen first, then the most used; at most
	// ActivityListLimit of each kind.
	Values []ActivitySeen
	// Others counts, by kind, the requests whose value is not in Values:
	// past the caps when they were gathered, or past ActivityListLimit.
	Others [NumActivityKinds]int64
}

// ActivityCount is one hour's requests.
type ActivityCount struct {
	Hour             time.Time // start of the hour, UTC
	Allowed, Refused int64
}

// ActivitySeen is a value and how it was used over the hours read.
type ActivitySeen struct {
	Kind     ActivityKind
	Value    string
	Requests int64
	LastSeen time.Time // start of the last hour it was seen in
}

// ActivityListLimit is how many values of each kind KeyActivity returns.
const ActivityListLimit = 50

// Of returns the values of one kind, in Values' order.
func (a KeyActivity) Of(kind ActivityKind) []ActivitySeen {
	var out []ActivitySeen
	for _, v := range a.Values {
		if v.Kind == kind {
			out = append(out, v)
		}
	}
	return out
}

// Totals returns the requests allowed and refused over the hours read.
func (a KeyActivity) Totals() (allowed, refused int64) {
	for _, h := range a.Hours {
		allowed += h.Allowed
		refused += h.Refused
	}
	return allowed, refused
}

// ActivityHourOf returns the start of t's hour, UTC.
func ActivityHourOf(t time.Time) time.Time { return t.UTC().Truncate(time.Hour) }

// CleanActivityValue returns the value of the kind that raw is recorded
// as, and false when raw is not recorded at all. See AppendActivityValue.
func CleanActivityValue(kind ActivityKind, raw string) (string, bool) {
	var buf [MaxActivityValueLen]byte
	v, ok := AppendActivityValue(buf[:0], kind, raw)
	return string(v), ok
}

// AppendActivityValue appends to dst the value of the kind that raw is
// recorded as, and says whether raw is recorded at all:
//
//   - an agent: every character that is not printable (control and
//     format characters, invalid UTF-8) replaced by U+FFFD, cut to
//     MaxAgentLen bytes on a character boundary; "" is kept (no agent);
//   - an address: the same, cut to MaxAddressLen bytes; never "";
//   - a server: a valid server id (ValidateServerID), as it is.
//
// It appends at most MaxActivityValueLen bytes, so a caller with a buffer
// of that size on its stack cleans without allocating.
func AppendActivityValue(dst []byte, kind ActivityKind, raw string) ([]byte, bool) {
	switch kind {
	case ActivityAgent:
		return appendPrintable(dst, raw, MaxAgentLen), true
	case ActivityAddress:
		return appendPrintable(dst, raw, MaxAddressLen), raw != ""
	case ActivityServer:
		if ValidateServerID(raw) != nil {
			return dst, false
		}
		return append(dst, raw...), true
	}
	return dst, false
}

// appendPrintable appends raw's printable characters, and U+FFFD for each
// other character or invalid byte, up to max bytes.
func appendPrintable(dst []byte, raw string, max int) []byte {
	limit := len(dst) + max
	for _, r := range raw { // an invalid byte reads as U+FFFD
		if !unicode.IsPrint(r) {
			r = utf8.RuneError
		}
		if len(dst)+utf8.RuneLen(r) > limit {
			break
		}
		dst = utf8.AppendRune(dst, r)
	}
	return dst
}

// validActivityValue says whether v is a value that the kind records as
// it is.
func validActivityValue(kind ActivityKind, v string) bool {
	var buf [MaxActivityValueLen]byte
	clean, ok := AppendActivityValue(buf[:0], kind, v)
	return ok && string(clean) == v
}

// PrepareActivity checks what RecordActivity writes and puts it in the
// form every store writes: the hours of one key merged, sorted by key and
// hour (so that instances writing at once take their locks in one order),
// each hour's values merged and sorted by kind and value, and values past
// a kind's cap (the least used) moved to Others. A key id must be text
// (CheckText), an hour the start of an hour, counts positive and values
// clean (AppendActivityValue). The input is not modified.
func PrepareActivity(hours []ActivityHour) ([]ActivityHour, error) {
	type slot struct {
		key  string
		hour int64
	}
	merged := make(map[slot]*ActivityHour, len(hours))
	for _, h := range hours {
		if err := validateActivityHour(h); err != nil {
			return nil, err
		}
		s := slot{h.KeyID, h.Hour.Unix()}
		m := merged[s]
		if m == nil {
			m = &ActivityHour{KeyID: h.KeyID, Hour: h.Hour.UTC()}
			merged[s] = m
		}
		m.Allowed += h.Allowed
		m.Refused += h.Refused
		for k := range m.Others {
			m.Others[k] += h.Others[k]
		}
		m.Values = append(m.Values, h.Values...)
	}
	out := make([]ActivityHour, 0, len(merged))
	for _, m := range merged {
		m.Values = mergeActivityValues(m.Values)
		m.Values, m.Others = capActivityValues(m.Values, m.Others)
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b ActivityHour) int {
		return cmp.Or(cmp.Compare(a.KeyID, b.KeyID), a.Hour.Compare(b.Hour))
	})
	return out, nil
}

func validateActivityHour(h ActivityHour) error {
	if h.KeyID == "" || CheckText(h.KeyID) != nil || len(h.KeyID) > 200 {
		return fmt.Errorf("%w: activity needs a key id of 1 to 200 bytes of text", ErrInvalid)
	}
	if h.Hour.IsZero() || !h.Hour.Equal(ActivityHourOf(h.Hour)) {
		return fmt.Errorf("%w: activity hour %v is not the start of an hour", ErrInvalid, h.Hour)
	}
	if h.Allowed < 0 || h.Refused < 0 {
		return fmt.Errorf("%w: activity counts must be positive", ErrInvalid)
	}
	for _, n := range h.Others {
		if n < 0 {
			return fmt.Errorf("%w: activity counts must be positive", ErrInvalid)
		}
	}
	for _, v := range h.Values {
		if v.Kind >= NumActivityKinds || v.Requests <= 0 {
			return fmt.Errorf("%w: activity value of kind %v with %d requests", ErrInvalid, v.Kind, v.Requests)
		}
		if !validActivityValue(v.Kind, v.Value) {
			return fmt.Errorf("%w: activity %v %q is not as it is recorded (CleanActivityValue)", ErrInvalid, v.Kind, v.Value)
		}
	}
	return nil
}

// mergeActivityValues sorts values by kind and value, adding up the
// requests of each.
func mergeActivityValues(vs []ActivityValue) []ActivityValue {
	vs = slices.Clone(vs)
	slices.SortFunc(vs, compareActivityValues)
	out := vs[:0]
	for _, v := range vs {
		if n := len(out); n > 0 && out[n-1].Kind == v.Kind && out[n-1].Value == v.Value {
			out[n-1].Requests += v.Requests
			continue
		}
		out = append(out, v)
	}
	return out
}

func compareActivityValues(a, b ActivityValue) int {
	return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Value, b.Value))
}

// capActivityValues keeps at most ActivityCap values of each kind, the
// most used (then the first by value), and counts the others' requests
// in others. vs is sorted by kind and value, and stays so.
func capActivityValues(vs []ActivityValue, others [NumActivityKinds]int64) ([]ActivityValue, [NumActivityKinds]int64) {
	var count [NumActivityKinds]int
	for _, v := range vs {
		count[v.Kind]++
	}
	over := false
	for k, n := range count {
		over = over || n > activityCaps[k]
	}
	if !over {
		return vs, others
	}
	ranked := slices.Clone(vs)
	slices.SortStableFunc(ranked, func(a, b ActivityValue) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(b.Requests, a.Requests))
	})
	var kept [NumActivityKinds]int
	out := make([]ActivityValue, 0, len(vs))
	for _, v := range ranked {
		if kept[v.Kind] < activityCaps[v.Kind] {
			kept[v.Kind]++
			out = append(out, v)
		} else {
			others[v.Kind] += v.Requests
		}
	}
	slices.SortFunc(out, compareActivityValues)
	return out, others
}

// FitActivity decides which of an hour's values (as PrepareActivity left
// them) a store writes, given the values it already holds for that key
// and hour (their Kind and Value; Requests is ignored): a value it holds
// is added to; a new one is written while its kind has fewer than
// ActivityCap values, the most used first; the requests of the rest are
// returned, by kind, to be added to the hour's others. A store calls it
// while it holds the hour's row locked, so that the cap holds whatever
// several instances write at once.
func FitActivity(h ActivityHour, stored []ActivityValue) (write []ActivityValue, over [NumActivityKinds]int64) {
	type key struct {
		kind  ActivityKind
		value string
	}
	have := make(map[key]bool, len(stored))
	var count [NumActivityKinds]int
	for _, v := range stored {
		have[key{v.Kind, v.Value}] = true
		count[v.Kind]++
	}
	ranked := slices.Clone(h.Values)
	slices.SortStableFunc(ranked, func(a, b ActivityValue) int { return cmp.Compare(b.Requests, a.Requests) })
	for _, v := range ranked {
		switch {
		case have[key{v.Kind, v.Value}]:
			write = append(write, v)
		case count[v.Kind] < activityCaps[v.Kind]:
			count[v.Kind]++
			write = append(write, v)
		default:
			over[v.Kind] += v.Requests
		}
	}
	slices.SortFunc(write, compareActivityValues)
	return write, over
}

// CheckKeyActivity checks KeyActivity's arguments: ErrNotFound for ids
// that no key can have, ErrInvalid for a zero time.
func CheckKeyActivity(accountID, keyID string, since time.Time) error {
	if accountID == "" || keyID == "" || CheckText(accountID, keyID) != nil {
		return fmt.Errorf("key %w", ErrNotFound)
	}
	if since.IsZero() {
		return fmt.Errorf("%w: activity since the zero time", ErrInvalid)
	}
	return nil
}

// SummarizeActivity makes what KeyActivity returns from what a store
// read: the hours since (each with its others, by kind), and each value's
// requests and last hour over those hours. It sorts them (in place) and
// keeps ActivityListLimit values of each kind, counting the rest in
// Others.
func SummarizeActivity(hours []ActivityHour, values []ActivitySeen) KeyActivity {
	var a KeyActivity
	slices.SortFunc(hours, func(x, y ActivityHour) int { return x.Hour.Compare(y.Hour) })
	for _, h := range hours {
		a.Hours = append(a.Hours, ActivityCount{Hour: h.Hour.UTC(), Allowed: h.Allowed, Refused: h.Refused})
		for k := range a.Others {
			a.Others[k] += h.Others[k]
		}
	}
	slices.SortFunc(values, func(x, y ActivitySeen) int {
		return cmp.Or(cmp.Compare(x.Kind, y.Kind), y.LastSeen.Compare(x.LastSeen), cmp.Compare(y.Requests, x.Requests), cmp.Compare(x.Value, y.Value))
	})
	var listed [NumActivityKinds]int
	for _, v := range values {
		if listed[v.Kind] == ActivityListLimit {
			a.Others[v.Kind] += v.Requests
			continue
		}
		listed[v.Kind]++
		v.LastSeen = v.LastSeen.UTC()
		a.Values = append(a.Values, v)
	}
	return a
}
