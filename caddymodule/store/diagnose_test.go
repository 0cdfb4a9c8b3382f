package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"
)

func TestDiagnoseCommon(t *testing.T) {
	_, refused := net.DialTimeout("tcp", "127.0.0.1:1", 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer cancel()
	<-ctx.Done()
	for _, tc := range []struct {
		what      string
		err       error
		kind      string
		permanent bool
	}{
		{"connection refused", fmt.Errorf("connecting: %w", refused), KindUnreachable, false},
		{"unknown host", fmt.Errorf("connecting: %w", &net.DNSError{Err: "no such host", Name: "db.internal", IsNotFound: true}), KindUnknownHost, true},
		{"deadline", fmt.Errorf("looking up key: %w", ctx.Err()), KindTimeout, false},
		{"canceled", context.Canceled, KindCanceled, false},
		{"not migrated", fmt.Errorf("checking: %w", ErrNotMigrated), KindNotMigrated, true},
		{"unknown", errors.New("odd"), KindOther, false},
	} {
		d := Diagnose(tc.err)
		if d.Kind != tc.kind || d.Permanent != tc.permanent || d.Cause == "" || d.Detail != tc.err.Error() {
			t.Errorf("%s: Diagnose(%v) = %+v; want kind %s, permanent %v, a cause, the error as detail", tc.what, tc.err, d, tc.kind, tc.permanent)
		}
		if d.Permanent && d.Fix == "" {
			t.Errorf("%s: a permanent problem without a fix: %+v", tc.what, d)
		}
	}
}
