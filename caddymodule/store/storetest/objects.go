package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/store"
)

func testObjects(t *testing.T, s store.Store) {
	ctx := t.Context()
	att := store.Object{Kind: store.ObjectAttachment, ID: "3f0c2e7a-attachment", ServerID: "abcd1234"}
	prev := store.Object{Kind: store.ObjectPreview, ID: "p-1", ServerID: "efgh5678"}
	if err := s.RecordObjects(ctx, "acct_1", []store.Object{att, prev}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordObjects(ctx, "acct_1", nil); err != nil {
		t.Fatalf("recording nothing: %v", err)
	}
	if got, err := s.ObjectServer(ctx, "acct_1", store.ObjectAttachment, att.ID); err != nil || got != "abcd1234" {
		t.Fatalf("ObjectServer(attachment) = %q, %v", got, err)
	}
	if got, err := s.ObjectServer(ctx, "acct_1", store.ObjectPreview, prev.ID); err != nil || got != "efgh5678" {
		t.Fatalf("ObjectServer(preview) = %q, %v", got, err)
	}
	for name, q := range map[string][3]string{
		"other account": {"acct_2", store.ObjectAttachment, att.ID},
		"other kind":    {"acct_1", store.ObjectPreview, att.ID},
		"unknown id":    {"acct_1", store.ObjectAttachment, "nope"},
		"sql":           {"acct_1", store.ObjectAttachment, "' or 1=1 --"},
		"nul":           {"acct_1", store.ObjectAttachment, "a\x00b"},
	} {
		if _, err := s.ObjectServer(ctx, q[0], q[1], q[2]); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: ObjectServer error = %v, want ErrNotFound", name, err)
		}
	}

	// Recording again refreshes; a later record wins.
	moved := att
	moved.ServerID = "ijkl9012"
	if err := s.RecordObjects(ctx, "acct_1", []store.Object{moved}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ObjectServer(ctx, "acct_1", store.ObjectAttachment, att.ID); got != "ijkl9012" {
		t.Fatalf("after re-recording: %q", got)
	}

	for _, bad := range []store.Object{
		{Kind: "message", ID: "m", ServerID: "abcd1234"},
		{Kind: store.ObjectAttachment, ID: "", ServerID: "abcd1234"},
		{Kind: store.ObjectAttachment, ID: "a\tb", ServerID: "abcd1234"},
		{Kind: store.ObjectAttachment, ID: "a", ServerID: "../x"},
	} {
		if err := s.RecordObjects(ctx, "acct_1", []store.Object{bad}); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("RecordObjects(%+v) = %v, want ErrInvalid", bad, err)
		}
	}

	n, err := s.PurgeObjects(ctx, time.Now().Add(-time.Hour))
	if err != nil || n != 0 {
		t.Fatalf("purging nothing = %d, %v", n, err)
	}
	n, err = s.PurgeObjects(ctx, time.Now().Add(time.Second))
	if err != nil || n != 2 {
		t.Fatalf("purging all = %d, %v; want 2", n, err)
	}
	if _, err := s.ObjectServer(ctx, "acct_1", store.ObjectPreview, prev.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after purge: %v", err)
	}
}
