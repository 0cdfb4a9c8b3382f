package admin

import (
	"strings"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/store"
)

func TestClientLibrary(t *testing.T) {
	for agent, want := range map[string]string{
		"mailosaur-node/11.1.1":                  "mailosaur-node 11.1.1",
		"mailosaur-python/7.4.0 (CPython 3.12)":  "mailosaur-python 7.4.0",
		"  curl/8.5.0":                           "curl 8.5.0",
		"Mozilla/5.0 (X11; Linux x86_64) Chrome": "a browser",
		"Mozilla/5.0":                            "Mozilla 5.0",
		"okhttp":                                 "okhttp",
		"":                                       "",
		"/1.0":                                   "",
	} {
		if got := clientLibrary(agent); got != want {
			t.Errorf("clientLibrary(%q) = %q, want %q", agent, got, want)
		}
	}
}

func TestNiceCeil(t *testing.T) {
	for n, want := range map[int64]int64{0: 1, 1: 1, 2: 2, 3: 5, 7: 10, 10: 10, 11: 20, 1284: 2000, 5001: 10000} {
		if got := niceCeil(n); got != want {
			t.Errorf("niceCeil(%d) = %d, want %d", n, got, want)
		}
	}
}

func TestEvidence(t *testing.T) {
	now := time.Date(2026, 11, 29, 14, 30, 0, 0, time.UTC)
	ago := func(d time.Duration) *time.Time { t := now.Add(-d); return &t }
	hour := func(d time.Duration, allowed, refused int64) store.ActivityCount {
		return store.ActivityCount{Hour: store.ActivityHourOf(now.Add(-d)), Allowed: allowed, Refused: refused}
	}
	seen := []store.ActivitySeen{
		{Kind: store.ActivityAddress, Value: "203.0.113.9", Requests: 3},
		{Kind: store.ActivityAddress, Value: "198.51.100.7", Requests: 900},
		{Kind: store.ActivityAgent, Value: "mailosaur-python/7.4.0", Requests: 3},
	}
	created := now.AddDate(0, -6, 0)
	for _, tc := range []struct {
		name     string
		key      store.Key
		activity store.KeyActivity
		want     string
	}{
		{"used this week", store.Key{CreatedAt: created, LastUsed: ago(2 * time.Minute)},
			store.KeyActivity{Hours: []store.ActivityCount{hour(10*24*time.Hour, 5, 0), hour(3*time.Hour, 1200, 0), hour(0, 72, 12)}, Values: seen},
			"Used 1,284 times in the last 7 days (12 refused by its scope), last 2 minutes ago from 203.0.113.9 by mailosaur-python 7.4.0."},
		{"once, no agent or address kept", store.Key{CreatedAt: created, LastUsed: ago(time.Hour)},
			store.KeyActivity{Hours: []store.ActivityCount{hour(time.Hour, 1, 0)}},
			"Used once in the last 7 days, last 1 hour ago."},
		{"not this week", store.Key{CreatedAt: created, LastUsed: ago(12 * 24 * time.Hour)},
			store.KeyActivity{Hours: []store.ActivityCount{hour(12*24*time.Hour, 40, 0)}, Values: seen[:1]},
			"Not used in the last 7 days; used 40 times in the last 30 days, last 1 week ago from 203.0.113.9."},
		{"hours not written yet", store.Key{CreatedAt: created, LastUsed: ago(10 * time.Second)}, store.KeyActivity{},
			"Last used 10 seconds ago."},
		{"idle for months", store.Key{CreatedAt: created, LastUsed: ago(90 * 24 * time.Hour)}, store.KeyActivity{},
			"Not used in the last 30 days (last used 3 months ago)."},
		{"never used, new", store.Key{CreatedAt: now.Add(-3 * 24 * time.Hour)}, store.KeyActivity{},
			"Never used since it was created 3 days ago."},
		{"never used, old", store.Key{CreatedAt: created}, store.KeyActivity{}, "Never used."},
	} {
		if got := evidence(tc.key, tc.activity, now); got != tc.want {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
}

func TestChart(t *testing.T) {
	now := time.Date(2026, 11, 29, 14, 30, 0, 0, time.UTC)
	hours := []store.ActivityCount{
		{Hour: now.Add(-40 * 24 * time.Hour).Truncate(time.Hour), Allowed: 99999}, // before the period
		{Hour: time.Date(2026, 11, 22, 15, 0, 0, 0, time.UTC), Allowed: 30},       // the first hour of 7 days
		{Hour: time.Date(2026, 11, 29, 14, 0, 0, 0, time.UTC), Allowed: 60, Refused: 15},
	}
	c := newChart(hours, 7, now)
	if len(c.Bars) != 2 || c.Max != "100" || c.Allowed != "90" || c.Refused != "15" {
		t.Fatalf("chart = %d bars, max %s, %s allowed, %s refused", len(c.Bars), c.Max, c.Allowed, c.Refused)
	}
	first, last := c.Bars[0], c.Bars[1]
	if first.X != chartLeft || first.AllowedH != 36 || first.AllowedY != chartHeight-36 || first.RefusedH != 0 {
		t.Errorf("first bar = %+v", first)
	}
	if want := chartLeft + chartWidth - chartWidth/(7*24.0); last.X != want || last.AllowedH != 72 || last.RefusedH != 18 || last.RefusedY != chartHeight-90 {
		t.Errorf("last bar = %+v; want x %v", last, want)
	}
	if !strings.Contains(last.Label, "29 Nov 14:00 UTC: 60 allowed, 15 refused") {
		t.Errorf("label %q", last.Label)
	}
	if len(c.Ticks) != 7 || c.Ticks[0].Label != "23 Nov" {
		t.Errorf("ticks = %+v", c.Ticks)
	}
	if len(c.Daily) != 2 || c.Daily[0].Day != "Sun 29 Nov" || c.Daily[0].Refused != "15" || c.Daily[1].Allowed != "30" {
		t.Errorf("daily = %+v", c.Daily)
	}
	if c := newChart(nil, 30, now); len(c.Bars) != 0 || c.Max != "1" || len(c.Ticks) != 6 {
		t.Errorf("empty 30-day chart = %+v", c)
	}
}

func TestHourLabel(t *testing.T) {
	now := time.Date(2026, 11, 29, 14, 30, 0, 0, time.UTC)
	for h, want := range map[time.Time]string{
		time.Date(2026, 11, 29, 14, 0, 0, 0, time.UTC): "this hour",
		time.Date(2026, 11, 29, 13, 0, 0, 0, time.UTC): "last hour",
		time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC):  "today 09:00–10:00 UTC",
		time.Date(2026, 11, 28, 23, 0, 0, 0, time.UTC): "28 Nov 23:00–00:00 UTC",
	} {
		if got := hourLabel(h, now); got != want {
			t.Errorf("hourLabel(%v) = %q, want %q", h, got, want)
		}
	}
}
