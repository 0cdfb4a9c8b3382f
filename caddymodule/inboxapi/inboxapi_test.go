package inboxapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestClientInboxes(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/servers" || r.Header.Get("X-Account") != "acct_1" || r.Header.Get("X-Type") != "standard" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		w.Write([]byte(`{"items":[{"id":"abcd1234","name":"Staging","messages":3},{"id":"efgh5678","name":"Prod"}]}`))
	}))
	defer srv.Close()
	c := &Client{BaseURL: srv.URL + "/", AccountHeader: "X-Account", KeyTypeHeader: "X-Type"}
	got, err := c.Inboxes(t.Context(), "acct_1")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != (Inbox{ID: "abcd1234", Name: "Staging"}) || got[1].ID != "efgh5678" {
		t.Fatalf("inboxes: %+v", got)
	}
}

func TestClientFailures(t *testing.T) {
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "boom", http.StatusInternalServerError)
	}))
	defer broken.Close()
	garbled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"items":[{"id":`))
	}))
	defer garbled.Close()
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(release)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()

	for name, c := range map[string]struct {
		client *Client
		want   string
	}{
		"broken":  {&Client{BaseURL: broken.URL}, "answered 500 Internal Server Error"},
		"garbled": {&Client{BaseURL: garbled.URL}, "could not be read"},
		"slow":    {&Client{BaseURL: slow.URL, Timeout: 50 * time.Millisecond}, "did not answer within 50ms"},
		"down":    {&Client{BaseURL: down.URL}, "could not be reached"},
	} {
		_, err := c.client.Inboxes(t.Context(), "acct_1")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v; want %q", name, err, c.want)
		}
	}
}
