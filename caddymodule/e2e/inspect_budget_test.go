package e2e

import (
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/cmd/inboxsim/sim"
)

// largeMessages gives s1 and s2 a message of about size bytes of text
// each, and returns their ids and the simulator's answer for each.
func largeMessages(t testing.TB, w *scopeWorld, size int) (mine, theirs string, bodies map[string]string) {
	t.Helper()
	s := w.up.Load()
	text := func() string {
		b := make([]byte, size/2)
		rand.Read(b)
		return hex.EncodeToString(b)
	}
	m := s.AddMessage(w.acctA, s1, sim.NewMessage{Subject: "large", Text: text(), HTML: "<p>\"quoted\" \\ \u00e9</p>"})
	om := s.AddMessage(w.acctA, s2, sim.NewMessage{Subject: "large, other inbox", Text: text()})
	bodies = map[string]string{}
	for _, id := range []string{m.ID, om.ID} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/api/messages/"+id, nil)
		req.Header.Set(sim.AccountHeader, w.acctA)
		s.ServeHTTP(rec, req)
		if rec.Code != 200 {
			t.Fatalf("simulator: %d", rec.Code)
		}
		bodies[id] = rec.Body.String()
	}
	return m.ID, om.ID, bodies
}

// checkBusy fails the test unless r is inspect_memory's clean 503.
func checkBusy(t *testing.T, r response) {
	t.Helper()
	if r.status != 503 || r.header.Get("Retry-After") == "" || !strings.Contains(r.body, `"code":"inspect_busy"`) {
		t.Errorf("503 without Retry-After or its error: %v %q", r.header, r.body)
	}
}

// Many fetches of a large message at once, with a budget for about one
// reading: every answer is the message, whole, or a clean 503, and a
// restricted key never gets another inbox's message.
func TestInspectBudgetLargeMessages(t *testing.T) {
	w := newScopeWorldSite(t, "keygate {\n\t\tinspect_memory 256KiB\n\t\tinspect_limit 16MiB\n\t}")
	w.reset()
	mine, theirs, bodies := largeMessages(t, w, 4<<20)

	type ask struct {
		key, id string
		owned   bool // the key may read it
	}
	asks := []ask{{w.own, mine, true}, {w.own, theirs, false}, {w.standard, mine, true}, {w.other, mine, false}, {w.standard, theirs, true}}
	var mu sync.Mutex
	counts := map[int]int{}
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Go(func() {
			a := asks[i%len(asks)]
			r := w.send(a.key, "GET", "/api/messages/"+a.id, "", "Accept-Encoding", "gzip")
			if r.header.Get("Content-Encoding") == "gzip" {
				r.body = gunzip(t, r.body)
			}
			mu.Lock()
			counts[r.status]++
			mu.Unlock()
			switch {
			case r.status == 503:
				checkBusy(t, r)
			case a.owned && r.status == 200:
				if r.body != bodies[a.id] {
					t.Errorf("message %s came back changed (%d bytes, want %d)", a.id, len(r.body), len(bodies[a.id]))
				}
			case !a.owned && r.status == 404:
			default:
				t.Errorf("key for its own inbox=%v got %d for message %s (%d bytes)", a.owned, r.status, a.id, len(r.body))
			}
		})
	}
	wg.Wait()
	t.Logf("answers by status: %v", counts)
}

// A reading that holds the budget (a client slow to take a large message)
// makes the next request that must read wait, then get a clean 503; the
// first client still gets its message whole, and once it is done the
// budget is back.
func TestInspectBudgetSpentAnswers503(t *testing.T) {
	w := newScopeWorldSite(t, "keygate {\n\t\tinspect_memory 64KiB\n\t\tinspect_limit 64MiB\n\t}")
	w.reset()
	// Larger than what loopback sockets buffer, so the slow client keeps
	// keygate writing.
	mine, _, bodies := largeMessages(t, w, 40<<20)

	req, _ := http.NewRequest("GET", "http://"+w.n.addr+"/api/messages/"+mine, nil)
	req.Header.Set("Authorization", basicUser(w.standard))
	slow, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Body.Close()
	waitFor(t, "the slow reading to hold the budget", 10*time.Second, func() bool {
		return strings.Contains(w.n.adminGet("/metrics"), "caddy_keygate_inspect_memory_bytes 65536")
	}, func() string { return "" })

	start := time.Now()
	r := w.send(w.own, "GET", "/api/messages/"+mine, "")
	if r.status != 503 {
		t.Fatalf("a request while the budget is spent got %d", r.status)
	}
	checkBusy(t, r)
	t.Logf("503 after %v", time.Since(start).Round(time.Millisecond))

	b, err := io.ReadAll(slow.Body)
	if err != nil || string(b) != bodies[mine] {
		t.Fatalf("the slow client got %d bytes (want %d): %v", len(b), len(bodies[mine]), err)
	}
	if r := w.send(w.own, "GET", "/api/messages/"+mine, ""); r.status != 200 || r.body != bodies[mine] {
		t.Fatalf("after the budget came back: %d, %d bytes", r.status, len(r.body))
	}
}

func gunzip(t *testing.T, s string) string {
	t.Helper()
	zr, err := gzip.NewReader(strings.NewReader(s))
	if err != nil {
		t.Errorf("gzip: %v", err)
		return s
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		t.Errorf("gzip: %v", err)
	}
	return string(b)
}
