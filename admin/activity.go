package admin

import (
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/keygate/keygate/caddymodule/store"
)

// A key's activity as the dashboard shows it: the evidence above the
// delete dialog's confirmation, the client libraries, and the chart of
// requests per hour on the key's page. Everything here is plain
// computation on what store.KeyActivity returns, so that the page, the
// dialog and the JSON API say the same.

// activityDays is how far back a key's page and the delete dialog look:
// the chart shows the last 7 or 30 days, the lists and the evidence 30.
const activityDays = 30

// chartDays are the chart's periods, in days.
var chartDays = []int{7, 30}

// activitySince is the start of the hour activityDays ago.
func activitySince(now time.Time) time.Time {
	return store.ActivityHourOf(now.AddDate(0, 0, -activityDays))
}

// usage is what the evidence says: the requests of the last 7 and 30
// days and where the last of them came from.
type usage struct {
	Week, Month counts
	LastUsed    time.Time // zero: never, as far as the store knows
	Address     string    // the address seen last, "" for none
	Client      string    // the client library seen last, "" for none
}

// counts are requests let through and refused by the key's scope.
type counts struct{ Allowed, Refused int64 }

func (c counts) total() int64 { return c.Allowed + c.Refused }

func (c *counts) add(h store.ActivityCount) {
	c.Allowed += h.Allowed
	c.Refused += h.Refused
}

// summarize reads a key's 30 days of activity as the evidence needs it.
// Last use comes from the key (it is exact; activity is kept per hour and
// may have been purged sooner than 30 days).
func summarize(k store.Key, act store.KeyActivity, now time.Time) usage {
	var u usage
	if k.LastUsed != nil {
		u.LastUsed = *k.LastUsed
	}
	week := store.ActivityHourOf(now.AddDate(0, 0, -7))
	for _, h := range act.Hours {
		u.Month.add(h)
		if !h.Hour.Before(week) {
			u.Week.add(h)
		}
	}
	if seen := act.Of(store.ActivityAddress); len(seen) > 0 {
		u.Address = seen[0].Value
	}
	if seen := act.Of(store.ActivityAgent); len(seen) > 0 {
		u.Client = clientLibrary(seen[0].Value)
	}
	return u
}

// evidence is the sentence above the delete dialog's confirmation, such
// as "Used 1,284 times in the last 7 days, last 2 minutes ago from
// 203.0.113.9 by mailosaur-python 7.1.0." or "Not used in the last 30
// days." It never claims more than the store knows: a key whose last use
// is recent but whose hours are not written yet (they are flushed every
// 30 s) is "last used 10 seconds ago", without a count.
func evidence(k store.Key, act store.KeyActivity, now time.Time) string {
	u := summarize(k, act, now)
	ago := func(t time.Time) string { return humanize.RelTime(t, now, "ago", "from now") }
	last := "" // ", last 2 minutes ago from … by …"
	if !u.LastUsed.IsZero() {
		last = ", last " + ago(u.LastUsed)
		if u.Address != "" {
			last += " from " + u.Address
		}
		if u.Client != "" {
			last += " by " + u.Client
		}
	}
	times := func(n int64) string {
		if n == 1 {
			return "once"
		}
		return humanize.Comma(n) + " times"
	}
	refused := ""
	if u.Week.Refused > 0 {
		refused = " (" + humanize.Comma(u.Week.Refused) + " refused by its scope)"
	}
	monthAgo := now.AddDate(0, 0, -activityDays)
	switch {
	case u.Week.total() > 0:
		return "Used " + times(u.Week.total()) + " in the last 7 days" + refused + last + "."
	case u.Month.total() > 0:
		return "Not used in the last 7 days; used " + times(u.Month.total()) + " in the last 30 days" + last + "."
	case u.LastUsed.After(monthAgo):
		return "Last used " + strings.TrimPrefix(last, ", last ") + "."
	case u.LastUsed.IsZero() && k.CreatedAt.After(monthAgo):
		return "Never used since it was created " + ago(k.CreatedAt) + "."
	case u.LastUsed.IsZero():
		return "Never used."
	}
	return "Not used in the last 30 days (last used " + ago(u.LastUsed) + ")."
}

// clientLibrary names the client a User-Agent comes from by its first
// product: "mailosaur-node/11.1.1 (linux)" is "mailosaur-node 11.1.1",
// "curl/8.5.0" is "curl 8.5.0", and a browser is "a browser". "" (no
// User-Agent) is "".
func clientLibrary(agent string) string {
	product, _, _ := strings.Cut(strings.TrimSpace(agent), " ")
	name, version, _ := strings.Cut(product, "/")
	switch {
	case name == "":
		return ""
	case name == "Mozilla" && strings.Contains(agent, "("):
		return "a browser"
	case version == "":
		return name
	}
	return name + " " + version
}

// chart is a bar chart of requests per hour, drawn by the template as
// SVG: the dashboard's CSP allows no script and no inline style, and an
// SVG of rectangles with classes needs neither. Coordinates are in the
// viewBox: the plot spans chartLeft..chartLeft+chartWidth across and
// 0..chartHeight down, whatever the period.
type chart struct {
	Days    int
	Bars    []bar  // hours with requests, oldest first
	Max     string // the top of the scale, for the axis label
	Ticks   []tick // day marks along the bottom
	Allowed string // totals over the period, for people
	Refused string
	Title   string // what a screen reader hears
	Daily   []dayRow
}

// bar is one hour: an allowed part stacked under a refused part.
type bar struct {
	X, W               float64
	AllowedY, AllowedH float64
	RefusedY, RefusedH float64
	Label              string // "29 Nov 14:00 UTC: 120 allowed, 3 refused"
}

type tick struct {
	X     float64
	Label string
}

// dayRow is a day's totals: the chart's data as a table.
type dayRow struct {
	Day, Allowed, Refused string
}

// The plot's place in the chart's viewBox (0 0 760 150).
const (
	chartLeft   = 40
	chartWidth  = 720
	chartHeight = 120
)

// newChart draws the hours of the last days days, up to the hour of now.
func newChart(hours []store.ActivityCount, days int, now time.Time) chart {
	end := store.ActivityHourOf(now).Add(time.Hour)
	start := end.Add(-time.Duration(days) * 24 * time.Hour)
	c := chart{Days: days}
	var peak int64
	var total counts
	var in []store.ActivityCount
	for _, h := range hours {
		if h.Hour.Before(start) || !h.Hour.Before(end) {
			continue
		}
		in = append(in, h)
		peak = max(peak, h.Allowed+h.Refused)
		total.add(h)
	}
	top := niceCeil(peak)
	c.Max = humanize.Comma(top)
	scale := float64(chartHeight) / float64(top)
	slot := float64(chartWidth) / float64(days*24) // one hour's width
	x := func(t time.Time) float64 { return chartLeft + float64(t.Sub(start)/time.Hour)*slot }
	for _, h := range in {
		b := bar{X: x(h.Hour), W: max(slot*0.8, 0.6)}
		b.AllowedH = float64(h.Allowed) * scale
		b.AllowedY = chartHeight - b.AllowedH
		b.RefusedH = float64(h.Refused) * scale
		b.RefusedY = b.AllowedY - b.RefusedH
		b.Label = h.Hour.UTC().Format("2 Jan 15:04 UTC") + ": " + humanize.Comma(h.Allowed) + " allowed, " + humanize.Comma(h.Refused) + " refused"
		c.Bars = append(c.Bars, b)
	}
	step := 1
	if days > 7 {
		step = 5
	}
	first := start.Truncate(24 * time.Hour) // days start at midnight UTC
	if first.Before(start) {
		first = first.Add(24 * time.Hour)
	}
	for d, i := first, 0; d.Before(end); d, i = d.Add(24*time.Hour), i+1 {
		// A label at the right edge would be cut off.
		if i%step == 0 && x(d) < chartLeft+chartWidth-24 {
			c.Ticks = append(c.Ticks, tick{X: x(d), Label: d.Format("2 Jan")})
		}
	}
	c.Allowed, c.Refused = humanize.Comma(total.Allowed), humanize.Comma(total.Refused)
	c.Title = "Requests per hour over the last " + strconv.Itoa(days) + " days: " + c.Allowed + " allowed, " + c.Refused + " refused"
	c.Daily = daily(in, start, days)
	return c
}

// daily sums hours into UTC days, newest first, days without requests
// left out.
func daily(hours []store.ActivityCount, start time.Time, days int) []dayRow {
	type sum struct{ allowed, refused int64 }
	byDay := map[time.Time]*sum{}
	for _, h := range hours {
		d := h.Hour.UTC().Truncate(24 * time.Hour)
		if byDay[d] == nil {
			byDay[d] = &sum{}
		}
		byDay[d].allowed += h.Allowed
		byDay[d].refused += h.Refused
	}
	var out []dayRow
	for d := start.UTC().Truncate(24*time.Hour).AddDate(0, 0, days); !d.Before(start.UTC().Truncate(24 * time.Hour)); d = d.AddDate(0, 0, -1) {
		if s := byDay[d]; s != nil {
			out = append(out, dayRow{Day: d.Format("Mon 2 Jan"), Allowed: humanize.Comma(s.allowed), Refused: humanize.Comma(s.refused)})
		}
	}
	return out
}

// niceCeil rounds n up to 1, 2 or 5 times a power of ten, so that the
// scale's top reads well; at least 1.
func niceCeil(n int64) int64 {
	for p := int64(1); ; p *= 10 {
		for _, m := range []int64{1, 2, 5} {
			if n <= m*p {
				return m * p
			}
		}
	}
}
