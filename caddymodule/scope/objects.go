package scope

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/keygate/keygate/caddymodule/store"
)

// ObjectStore is the part of store.Store that records attachments and
// previews, where every instance of a fleet can read them.
type ObjectStore interface {
	RecordObjects(ctx context.Context, accountID string, objs []store.Object) error
	ObjectServer(ctx context.Context, accountID, kind, id string) (string, error)
}

// MessageLookup asks the upstream for the server of one of the account's
// messages: found is false when the upstream does not know the message.
type MessageLookup func(ctx context.Context, messageID string) (server string, found bool, err error)

// Objects knows which server each message, attachment and preview belongs
// to. Messages are remembered in memory (the upstream can always be asked
// again); attachments and previews, which the API cannot map back, go to
// the store. It is safe for concurrent use.
type Objects struct {
	store    ObjectStore
	messages *lru.Cache[objectKey, string] // message → server
	recorded *lru.Cache[objectKey, int64]  // attachments and previews written lately, → unix seconds
	rewrite  int64                         // seconds after which a recorded object is written again
}

type objectKey struct {
	account string
	kind    Kind
	id      string
}

// NewObjects returns an Objects remembering up to size messages and
// writing an object again (to refresh its retention) at most once per
// refresh.
func NewObjects(st ObjectStore, size int, refresh time.Duration) (*Objects, error) {
	messages, err := lru.New[objectKey, string](size)
	if err != nil {
		return nil, err
	}
	recorded, err := lru.New[objectKey, int64](size)
	if err != nil {
		return nil, err
	}
	return &Objects{store: st, messages: messages, recorded: recorded, rewrite: int64(refresh / time.Second)}, nil
}

// ErrLookup wraps a failure to learn an object's server: the store or the
// upstream did not answer. The request can be neither allowed nor refused.
var ErrLookup = errors.New("object lookup failed")

// ServerOf returns the server of an object of the account. found is false
// for an object that does not exist or was never seen.
func (o *Objects) ServerOf(ctx context.Context, account string, kind Kind, id string, lookup MessageLookup) (server string, found bool, err error) {
	switch kind {
	case Message:
		if s, ok := o.KnownMessage(account, id); ok {
			return s, true, nil
		}
		s, found, err := lookup(ctx, id)
		if err != nil {
			return "", false, fmt.Errorf("%w: looking up message upstream: %w", ErrLookup, err)
		}
		if found {
			o.messages.Add(objectKey{account, Message, id}, s)
		}
		return s, found, nil
	case Attachment, Preview:
		s, err := o.store.ObjectServer(ctx, account, kind.String(), id)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return "", false, nil
		case err != nil:
			return "", false, fmt.Errorf("%w: %w", ErrLookup, err)
		}
		return s, true, nil
	}
	return "", false, nil
}

// KnownMessage returns the server of a message seen before.
func (o *Objects) KnownMessage(account, id string) (string, bool) {
	return o.messages.Get(objectKey{account, Message, id})
}

// MessageServer returns the server field of a message body.
func MessageServer(body []byte) (string, error) {
	f, err := ReadFacts(bytes.NewReader(body))
	if err != nil {
		return "", fmt.Errorf("reading message: %w", err)
	}
	if f.Server == "" {
		return "", errors.New("reading message: no server field")
	}
	return f.Server, nil
}

// Learn records what a successful response of the route reveals (f, read
// by ReadFacts), and returns the server a message response names (so that
// a response to be checked is read once). server is the server the
// request was known to address, needed where the response does not say
// it (previews).
func (o *Objects) Learn(ctx context.Context, account string, r *Route, server string, f Facts) (string, error) {
	var objs []store.Object
	switch r.Teaches {
	case TeachesMessage:
		if f.ID == "" || f.Server == "" {
			return "", fmt.Errorf("reading %s response: no message id or server", r.ID)
		}
		o.messages.Add(objectKey{account, Message, f.ID}, f.Server)
		for _, id := range f.Attachments {
			objs = o.stale(objs, account, Attachment, id, f.Server)
		}
	case TeachesPreviews:
		if server == "" {
			return "", nil
		}
		for _, id := range f.Items {
			objs = o.stale(objs, account, Preview, id, server)
		}
	}
	if len(objs) > 0 {
		if err := o.store.RecordObjects(ctx, account, objs); err != nil {
			for _, obj := range objs { // try again next time
				o.recorded.Remove(objectKey{account, kindOf(obj.Kind), obj.ID})
			}
			return f.Server, err
		}
	}
	return f.Server, nil
}

// stale appends the object unless it was written lately.
func (o *Objects) stale(objs []store.Object, account string, kind Kind, id, server string) []store.Object {
	if id == "" {
		return objs
	}
	now := time.Now().Unix()
	k := objectKey{account, kind, id}
	if at, ok := o.recorded.Get(k); ok && now-at < o.rewrite {
		return objs
	}
	o.recorded.Add(k, now)
	return append(objs, store.Object{Kind: kind.String(), ID: id, ServerID: server})
}

func kindOf(s string) Kind {
	switch s {
	case store.ObjectAttachment:
		return Attachment
	case store.ObjectPreview:
		return Preview
	}
	return NoObject
}
