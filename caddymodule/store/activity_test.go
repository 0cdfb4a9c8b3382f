package store

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

var hour10 = time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC)

func TestCleanActivityValue(t *testing.T) {
	for _, c := range []struct {
		kind ActivityKind
		raw  string
		want string
		ok   bool
	}{
		{ActivityAgent, "mailosaur-node/11.1.1", "mailosaur-node/11.1.1", true},
		{ActivityAgent, "", "", true},
		{ActivityAgent, "a\tb\x00c\x7f\u0085d\u202ee\u00a0f", "a\uFFFDb\uFFFDc\uFFFD\uFFFDd\uFFFDe\uFFFDf", true},
		{ActivityAgent, "\xff\xfe", "\uFFFD\uFFFD", true},
		{ActivityAgent, "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.0.0", true}, // a browser's fits
		{ActivityAgent, strings.Repeat("é", 100), strings.Repeat("é", 60), true},
		{ActivityAgent, "x" + strings.Repeat("é", 100), "x" + strings.Repeat("é", 59), true}, // cut on a character
		{ActivityAddress, "203.0.113.9", "203.0.113.9", true},
		{ActivityAddress, "", "", false},
		{ActivityAddress, strings.Repeat("1", 100), strings.Repeat("1", MaxAddressLen), true},
		{ActivityServer, "abcd1234", "abcd1234", true},
		{ActivityServer, "../x", "", false},
		{ActivityServer, "", "", false},
		{NumActivityKinds, "x", "", false},
	} {
		got, ok := CleanActivityValue(c.kind, c.raw)
		if got != c.want || ok != c.ok {
			t.Errorf("CleanActivityValue(%v, %q) = %q, %v; want %q, %v", c.kind, c.raw, got, ok, c.want, c.ok)
		}
		if ok && (!utf8.ValidString(got) || len(got) > MaxActivityValueLen || !validActivityValue(c.kind, got)) {
			t.Errorf("CleanActivityValue(%v, %q) = %q: not valid as it is", c.kind, c.raw, got)
		}
	}
}

func TestActivityKindNames(t *testing.T) {
	for k := range NumActivityKinds {
		if got, err := ParseActivityKind(k.String()); err != nil || got != k {
			t.Errorf("ParseActivityKind(%q) = %v, %v", k.String(), got, err)
		}
	}
	if _, err := ParseActivityKind("cookie"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ParseActivityKind(cookie) = %v", err)
	}
}

func TestPrepareActivity(t *testing.T) {
	in := []ActivityHour{
		{KeyID: "key_b", Hour: hour10, Allowed: 1},
		{KeyID: "key_a", Hour: hour10.Add(time.Hour), Refused: 2, Values: []ActivityValue{{ActivityAgent, "b", 1}, {ActivityAgent, "a", 1}}},
		{KeyID: "key_a", Hour: hour10, Allowed: 3, Others: [NumActivityKinds]int64{1, 2, 3}},
		{KeyID: "key_a", Hour: hour10.Add(time.Hour).In(time.FixedZone("X", 3600)), Allowed: 1, Values: []ActivityValue{{ActivityAgent, "a", 4}}},
	}
	got, err := PrepareActivity(in)
	if err != nil {
		t.Fatal(err)
	}
	want := []ActivityHour{
		{KeyID: "key_a", Hour: hour10, Allowed: 3, Others: [NumActivityKinds]int64{1, 2, 3}},
		{KeyID: "key_a", Hour: hour10.Add(time.Hour), Allowed: 1, Refused: 2, Values: []ActivityValue{{ActivityAgent, "a", 5}, {ActivityAgent, "b", 1}}},
		{KeyID: "key_b", Hour: hour10, Allowed: 1},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("PrepareActivity =\n%v\nwant\n%v", got, want)
	}
	if in[1].Values[0].Value != "b" {
		t.Fatal("PrepareActivity sorted its input")
	}

	for name, h := range map[string]ActivityHour{
		"no key":          {Hour: hour10},
		"NUL in key":      {KeyID: "k\x00", Hour: hour10},
		"zero hour":       {KeyID: "k"},
		"mid-hour":        {KeyID: "k", Hour: hour10.Add(time.Minute)},
		"negative":        {KeyID: "k", Hour: hour10, Allowed: -1},
		"negative others": {KeyID: "k", Hour: hour10, Others: [NumActivityKinds]int64{0, -1, 0}},
		"no requests":     {KeyID: "k", Hour: hour10, Values: []ActivityValue{{ActivityAgent, "a", 0}}},
		"unclean agent":   {KeyID: "k", Hour: hour10, Values: []ActivityValue{{ActivityAgent, "a\x00", 1}}},
		"long agent":      {KeyID: "k", Hour: hour10, Values: []ActivityValue{{ActivityAgent, strings.Repeat("a", MaxAgentLen+1), 1}}},
		"bad server":      {KeyID: "k", Hour: hour10, Values: []ActivityValue{{ActivityServer, "a b", 1}}},
		"empty address":   {KeyID: "k", Hour: hour10, Values: []ActivityValue{{ActivityAddress, "", 1}}},
		"unknown kind":    {KeyID: "k", Hour: hour10, Values: []ActivityValue{{NumActivityKinds, "a", 1}}},
	} {
		if _, err := PrepareActivity([]ActivityHour{h}); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: PrepareActivity = %v, want ErrInvalid", name, err)
		}
	}
}

// TestPrepareActivityCaps: values past a kind's cap, the least used, move
// to Others.
func TestPrepareActivityCaps(t *testing.T) {
	h := ActivityHour{KeyID: "k", Hour: hour10}
	for i := range 15 {
		h.Values = append(h.Values, ActivityValue{ActivityAgent, fmt.Sprintf("agent/%02d", i), int64(i + 1)})
	}
	h.Values = append(h.Values, ActivityValue{ActivityAddress, "192.0.2.1", 7})
	got, err := PrepareActivity([]ActivityHour{h})
	if err != nil {
		t.Fatal(err)
	}
	g := got[0]
	if len(g.Values) != 11 || g.Values[0].Value != "192.0.2.1" || g.Values[1].Value != "agent/05" || g.Others[ActivityAgent] != 1+2+3+4+5 {
		t.Fatalf("capped: %+v", g)
	}
}

func TestFitActivity(t *testing.T) {
	h := ActivityHour{KeyID: "k", Hour: hour10, Values: []ActivityValue{
		{ActivityAddress, "192.0.2.1", 1},
		{ActivityAgent, "known", 5},
		{ActivityAgent, "new-big", 9},
		{ActivityAgent, "new-small", 2},
		{ActivityAgent, "new-tiny", 1},
	}}
	var stored []ActivityValue
	for i := range MaxActivityAgents - 2 {
		stored = append(stored, ActivityValue{Kind: ActivityAgent, Value: fmt.Sprint("old/", i)})
	}
	stored = append(stored, ActivityValue{Kind: ActivityAgent, Value: "known"})
	write, over := FitActivity(h, stored)
	want := []ActivityValue{{ActivityAddress, "192.0.2.1", 1}, {ActivityAgent, "known", 5}, {ActivityAgent, "new-big", 9}}
	if fmt.Sprint(write) != fmt.Sprint(want) || over != [NumActivityKinds]int64{0, 3, 0} {
		t.Fatalf("FitActivity = %v, %v; want %v and 3 agents' requests over", write, over, want)
	}
	// Nothing stored: everything fits (PrepareActivity capped it).
	if write, over := FitActivity(h, nil); len(write) != len(h.Values) || over != ([NumActivityKinds]int64{}) {
		t.Fatalf("FitActivity on an empty hour = %v, %v", write, over)
	}
}

func TestSummarizeActivity(t *testing.T) {
	hours := []ActivityHour{
		{Hour: hour10.Add(time.Hour), Allowed: 2, Refused: 1, Others: [NumActivityKinds]int64{0, 4, 0}},
		{Hour: hour10, Allowed: 5, Others: [NumActivityKinds]int64{1, 0, 0}},
	}
	var values []ActivitySeen
	for i := range ActivityListLimit + 5 {
		values = append(values, ActivitySeen{Kind: ActivityAgent, Value: fmt.Sprintf("a%03d", i), Requests: int64(i%3 + 1), LastSeen: hour10})
	}
	values = append(values,
		ActivitySeen{Kind: ActivityAgent, Value: "latest", Requests: 1, LastSeen: hour10.Add(time.Hour)},
		ActivitySeen{Kind: ActivityAddress, Value: "192.0.2.1", Requests: 7, LastSeen: hour10},
	)
	a := SummarizeActivity(hours, values)
	if len(a.Hours) != 2 || !a.Hours[0].Hour.Equal(hour10) || a.Hours[1].Refused != 1 {
		t.Fatalf("hours = %+v", a.Hours)
	}
	if al, re := a.Totals(); al != 7 || re != 1 {
		t.Fatalf("Totals = %d, %d", al, re)
	}
	agents := a.Of(ActivityAgent)
	if len(agents) != ActivityListLimit || agents[0].Value != "latest" || agents[1].Requests != 3 {
		t.Fatalf("agents = %+v", agents[:3])
	}
	// The 6 least used, least recent agents (1 request each) are counted.
	if a.Others != [NumActivityKinds]int64{1, 4 + 6, 0} || len(a.Of(ActivityAddress)) != 1 || a.Values[0].Kind != ActivityAddress {
		t.Fatalf("others = %v, values %+v", a.Others, a.Of(ActivityAddress))
	}
}
