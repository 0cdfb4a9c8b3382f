package scope_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/scope"
	"github.com/keygate/keygate/caddymodule/store/sqlite"
)

func newObjects(t *testing.T) *scope.Objects {
	t.Helper()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "objects.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	o, err := scope.NewObjects(st, 100, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

func route(t *testing.T, method, path string) *scope.Route {
	t.Helper()
	p, _ := scope.New(scope.InboxAPI)
	m, err := p.Read(method, path, "server=s1")
	if err != nil || m.Route == nil {
		t.Fatalf("no route for %s %s: %v", method, path, err)
	}
	return m.Route
}

func noLookup(t *testing.T) scope.MessageLookup {
	return func(context.Context, string) (string, bool, error) {
		t.Fatal("the upstream was asked for a message keygate knows")
		return "", false, nil
	}
}

func TestLearnMessage(t *testing.T) {
	o := newObjects(t)
	ctx := context.Background()
	body := []byte(`{"id":"m1","server":"s1","subject":"x","attachments":[{"id":"a1","fileName":"a.pdf"},{"id":"a2"}]}`)
	if _, err := o.Learn(ctx, "acct", route(t, "GET", "/api/messages/m1"), "", facts(t, body)); err != nil {
		t.Fatal(err)
	}
	if s, found, err := o.ServerOf(ctx, "acct", scope.Message, "m1", noLookup(t)); err != nil || !found || s != "s1" {
		t.Fatalf("message = %q %v %v", s, found, err)
	}
	for _, a := range []string{"a1", "a2"} {
		if s, found, err := o.ServerOf(ctx, "acct", scope.Attachment, a, nil); err != nil || !found || s != "s1" {
			t.Fatalf("attachment %s = %q %v %v", a, s, found, err)
		}
	}
	// Another account knows none of it.
	if _, found, _ := o.ServerOf(ctx, "other", scope.Attachment, "a1", nil); found {
		t.Fatal("an attachment is known to another account")
	}
	if _, found, _ := o.ServerOf(ctx, "acct", scope.Attachment, "never-seen", nil); found {
		t.Fatal("an attachment never seen is known")
	}
}

func TestLearnPreviews(t *testing.T) {
	o := newObjects(t)
	ctx := context.Background()
	previews := []byte(`{"items":[{"id":"p1","emailClient":"x"},{"id":"p2"}]}`)
	if _, err := o.Learn(ctx, "acct", route(t, "POST", "/api/messages/m1/screenshots"), "s1", facts(t, previews)); err != nil {
		t.Fatal(err)
	}
	if s, found, err := o.ServerOf(ctx, "acct", scope.Preview, "p2", nil); err != nil || !found || s != "s1" {
		t.Fatalf("preview = %q %v %v", s, found, err)
	}
	if _, err := o.Learn(ctx, "acct", route(t, "GET", "/api/messages/m1"), "", scope.Facts{}); err == nil {
		t.Fatal("learning a message from an empty body succeeded")
	}
}

func TestServerOfAsksUpstreamOnce(t *testing.T) {
	o := newObjects(t)
	ctx := context.Background()
	calls := 0
	lookup := func(_ context.Context, id string) (string, bool, error) {
		calls++
		if id == "m9" {
			return "s9", true, nil
		}
		return "", false, nil
	}
	for range 3 {
		if s, found, err := o.ServerOf(ctx, "acct", scope.Message, "m9", lookup); err != nil || !found || s != "s9" {
			t.Fatalf("ServerOf = %q %v %v", s, found, err)
		}
	}
	if _, found, _ := o.ServerOf(ctx, "acct", scope.Message, "missing", lookup); found {
		t.Fatal("a missing message was found")
	}
	if calls != 2 {
		t.Fatalf("upstream asked %d times, want 2 (the answer is remembered)", calls)
	}
	failing := func(context.Context, string) (string, bool, error) { return "", false, errors.New("upstream down") }
	if _, _, err := o.ServerOf(ctx, "acct", scope.Message, "m10", failing); !errors.Is(err, scope.ErrLookup) {
		t.Fatalf("failed look-up = %v, want ErrLookup", err)
	}
}

func TestMessageServer(t *testing.T) {
	if s, err := scope.MessageServer([]byte(`{"id":"m","server":"s1"}`)); err != nil || s != "s1" {
		t.Fatalf("= %q %v", s, err)
	}
	for _, bad := range []string{``, `{}`, `{"server":""}`, `[1]`, `{"server":1}`, `{"server":"s1","server":"s2"}`, `{"server":"s1","Server":"s2"}`} {
		if _, err := scope.MessageServer([]byte(bad)); err == nil {
			t.Errorf("MessageServer(%q) succeeded", bad)
		}
	}
}

func facts(t *testing.T, body []byte) scope.Facts {
	t.Helper()
	f, err := scope.ReadFacts(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return f
}
