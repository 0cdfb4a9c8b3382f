package admin

import (
	"testing"
	"time"
)

// The receipt says what is known: nothing of standbys where the database
// has none, and a deletion is called safe from a failover only once every
// standby has it.
func TestRevocationWording(t *testing.T) {
	lag := 4 * time.Millisecond
	for _, tc := range []struct {
		rv   revocation
		want string
	}{
		{revocation{}, "Revoked on this instance."},
		{revocation{Fleet: true, Applied: 3, Live: 3, Lag: lag}, "Revoked on 3 of 3 instances in 4 ms."},
		{revocation{Fleet: true, Applied: 3, Live: 3, Lag: lag, Standbys: 1, Replicated: 1},
			"Revoked on 3 of 3 instances in 4 ms; replicated to the standby."},
		{revocation{Fleet: true, Applied: 3, Live: 3, Lag: lag, Standbys: 1},
			"Revoked on 3 of 3 instances in 4 ms; not yet confirmed on the standby: a failover now could undo it."},
		{revocation{Fleet: true, Applied: 2, Live: 2, Lag: lag, Standbys: 2, Replicated: 2},
			"Revoked on 2 of 2 instances in 4 ms; replicated to all 2 standbys."},
		{revocation{Fleet: true, Applied: 2, Live: 2, Lag: lag, Standbys: 2, Replicated: 1},
			"Revoked on 2 of 2 instances in 4 ms; confirmed on 1 of 2 standbys so far: a failover now could undo it."},
		{revocation{Fleet: true, Applied: 1, Live: 2, Standbys: 1},
			"Revoked on 1 of 2 live instances so far; an instance that has not confirmed refuses the key at the latest when its staleness bound runs out; not yet confirmed on the standby: a failover now could undo it."},
	} {
		if got := tc.rv.String(); got != tc.want {
			t.Errorf("%+v:\n got %q\nwant %q", tc.rv, got, tc.want)
		}
	}
}
