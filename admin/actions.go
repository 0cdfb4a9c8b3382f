package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/inboxapi"
	"github.com/keygate/keygate/caddymodule/store"
)

// The actions, shared by the pages and the JSON API. Each is called only
// after the session's admin and CSRF checks.

// createInput is a key to create, as a form or a JSON body gives it.
type createInput struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Server string `json:"server"`
}

// create makes a key. It returns the inboxes it read, so that a form shown
// again with an error can offer them.
func (d *Dashboard) create(r *http.Request, s *session, acct account, in createInput) (store.Key, string, []inboxapi.Inbox, error) {
	ctx := r.Context()
	var inboxes []inboxapi.Inbox
	if err := store.ValidateName(in.Name); err != nil {
		return store.Key{}, "", nil, fail(http.StatusBadRequest, msgBadName)
	}
	typ := store.KeyType(in.Type)
	switch typ {
	case store.Standard:
		if in.Server != "" {
			return store.Key{}, "", nil, fail(http.StatusBadRequest, "A standard key is not tied to an inbox: leave the inbox out.")
		}
	case store.Restricted:
		if d.cfg.Inboxes == nil {
			return store.Key{}, "", nil, fail(http.StatusServiceUnavailable, msgNoInboxAPI)
		}
		var err error
		if inboxes, err = d.inboxes(ctx, acct.ID); err != nil {
			return store.Key{}, "", nil, err
		}
		if in.Server == "" {
			return store.Key{}, "", inboxes, fail(http.StatusBadRequest, msgPickInbox)
		}
		if !slices.ContainsFunc(inboxes, func(i inboxapi.Inbox) bool { return i.ID == in.Server }) {
			return store.Key{}, "", inboxes, fail(http.StatusBadRequest, msgForeign)
		}
	default:
		return store.Key{}, "", nil, fail(http.StatusBadRequest, "The key type must be standard or restricted.")
	}

	k, plain, err := s.mgr.CreateKey(ctx, auth.NewKey{AccountID: acct.ID, Name: in.Name, Type: typ, ServerID: in.Server}, d.actor(r, s))
	switch {
	case errors.Is(err, store.ErrNameTaken):
		return store.Key{}, "", inboxes, fail(http.StatusConflict, msgNameTaken)
	case errors.Is(err, store.ErrInvalid):
		return store.Key{}, "", inboxes, fail(http.StatusBadRequest, msgBadName)
	case err != nil:
		return store.Key{}, "", inboxes, err
	}
	d.cfg.Logger.Info("API key created", zap.String("account_id", acct.ID), zap.String("key_id", k.ID),
		zap.String("key_prefix", k.Display), zap.String("key_type", string(k.Type)), zap.String("user", s.user))
	return k, plain.Secret(), inboxes, nil
}

// reveal opens a key and records that it was revealed.
func (d *Dashboard) reveal(r *http.Request, s *session, acct account, keyID string) (store.Key, string, error) {
	if keyID == "" {
		return store.Key{}, "", fail(http.StatusNotFound, msgNoKey)
	}
	k, plain, err := s.mgr.RevealKey(r.Context(), acct.ID, keyID, d.actor(r, s))
	if err != nil {
		return store.Key{}, "", err
	}
	d.cfg.Logger.Info("API key revealed", zap.String("account_id", acct.ID), zap.String("key_id", k.ID),
		zap.String("key_prefix", k.Display), zap.String("user", s.user))
	return k, plain.Secret(), nil
}

// remove deletes a key if typed is exactly its name, and says where the
// deletion has taken effect. On a mismatch it returns the key, untouched,
// with the error.
func (d *Dashboard) remove(r *http.Request, s *session, acct account, keyID, typed string) (store.Key, revocation, error) {
	ctx := r.Context()
	if keyID == "" {
		return store.Key{}, revocation{}, fail(http.StatusNotFound, msgNoKey)
	}
	k, err := s.st.GetKey(ctx, acct.ID, keyID)
	if err != nil {
		return store.Key{}, revocation{}, err
	}
	k.Sealed = nil
	if typed != k.Name {
		return k, revocation{}, fail(http.StatusBadRequest, msgMismatch)
	}
	deleted, err := s.mgr.DeleteKey(ctx, acct.ID, keyID, d.actor(r, s))
	if err != nil {
		return store.Key{}, revocation{}, err
	}
	d.cfg.Logger.Info("API key deleted", zap.String("account_id", acct.ID), zap.String("key_id", k.ID),
		zap.String("key_prefix", k.Display), zap.String("user", s.user))
	return k, d.awaitRevocation(ctx, deleted), nil
}

// revocation says where a deletion has taken effect, and whether it would
// survive a failover of the database.
type revocation struct {
	Fleet   bool // the store is shared by a fleet; else this instance is all
	Applied int  // live instances that refuse the key
	Live    int
	Lag     time.Duration // from the commit to the last instance, when all did
	// Standbys the database knows of, and how many have the deletion: a
	// failover to one that has not would bring the key back.
	Standbys, Replicated int
}

// String is the sentence the page shows. It says nothing of standbys
// where the database has none (a single Postgres), and never calls a
// deletion safe before every standby has it.
func (rv revocation) String() string {
	var s string
	switch {
	case !rv.Fleet:
		return "Revoked on this instance."
	case rv.Live > 0 && rv.Applied == rv.Live:
		s = fmt.Sprintf("Revoked on %d of %d instances in %s", rv.Applied, rv.Live, roundLag(rv.Lag))
	default:
		s = fmt.Sprintf("Revoked on %d of %d live instances so far; an instance that has not confirmed refuses the key at the latest when its staleness bound runs out", rv.Applied, rv.Live)
	}
	switch {
	case rv.Standbys == 0:
	case rv.Replicated == rv.Standbys && rv.Standbys == 1:
		s += "; replicated to the standby"
	case rv.Replicated == rv.Standbys:
		s += fmt.Sprintf("; replicated to all %d standbys", rv.Standbys)
	case rv.Standbys == 1:
		s += "; not yet confirmed on the standby: a failover now could undo it"
	default:
		s += fmt.Sprintf("; confirmed on %d of %d standbys so far: a failover now could undo it", rv.Replicated, rv.Standbys)
	}
	return s + "."
}

func roundLag(d time.Duration) string {
	if d < time.Millisecond {
		return "under 1 ms"
	}
	return strconv.FormatInt(d.Round(time.Millisecond).Milliseconds(), 10) + " ms"
}

// awaitRevocation waits, up to two seconds, for every live instance of a
// fleet to confirm a deletion, and every standby of the database to have
// it: they do so within milliseconds unless one is cut off.
func (d *Dashboard) awaitRevocation(ctx context.Context, k store.Key) revocation {
	deadline := time.Now().Add(2 * time.Second)
	for {
		r, ok, err := d.cfg.Backend.Receipt(ctx, k)
		if !ok {
			return revocation{}
		}
		rv := revocation{Fleet: true, Applied: r.Applied, Live: r.Live, Lag: r.Lag, Standbys: r.Standbys, Replicated: r.Replicated}
		if err == nil && r.Live > 0 && r.Applied == r.Live && r.Replicated == r.Standbys || time.Now().After(deadline) || ctx.Err() != nil {
			if err != nil {
				d.cfg.Logger.Warn("reading revocation receipts failed", zap.Error(err))
			}
			return rv
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// inboxes lists the account's inboxes, as a 502 the user can read when the
// inbox API fails.
func (d *Dashboard) inboxes(ctx context.Context, accountID string) ([]inboxapi.Inbox, error) {
	if d.cfg.Inboxes == nil {
		return nil, fail(http.StatusServiceUnavailable, msgNoInboxAPI)
	}
	list, err := d.cfg.Inboxes.Inboxes(ctx, accountID)
	if err != nil {
		d.cfg.Logger.Warn("listing inboxes failed", zap.String("account_id", accountID), zap.Error(err))
		return nil, fail(http.StatusBadGateway, "The account's inboxes could not be read: "+err.Error()+". Try again shortly.")
	}
	return list, nil
}

// inboxNames maps server ids to names for keys that have one; it asks the
// inbox API only when a key is restricted. The error is for a notice: the
// list still shows, with ids.
func (d *Dashboard) inboxNames(ctx context.Context, accountID string, ks ...store.Key) (map[string]string, string) {
	if !slices.ContainsFunc(ks, func(k store.Key) bool { return k.ServerID != "" }) {
		return nil, ""
	}
	return d.allInboxNames(ctx, accountID)
}

// allInboxNames maps the account's server ids to names; nil, and why for
// a notice, when the inbox API is not configured or does not answer.
func (d *Dashboard) allInboxNames(ctx context.Context, accountID string) (map[string]string, string) {
	if d.cfg.Inboxes == nil {
		return nil, ""
	}
	list, err := d.inboxes(ctx, accountID)
	if err != nil {
		return nil, err.Error()
	}
	names := make(map[string]string, len(list))
	for _, in := range list {
		names[in.ID] = in.Name
	}
	return names, ""
}
