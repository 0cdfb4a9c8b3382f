// Package store defines what keygate keeps: accounts, their members, API keys
// and the audit log, behind one Store interface with a Postgres
// implementation for fleets (package postgres) and an embedded SQLite one for
// a single node (package sqlite). Package storetest holds the conformance
// suite both must pass.
//
// This package also holds every rule of the stores that is not SQL, so
// that the backends cannot drift apart and a new one writes only its SQL:
// what input is valid (the Validate and Check functions), what a store
// fills in before it inserts a row (the Prepare functions: ids, times and
// the audit event of a key change), how ListKeys and ListAudit search,
// sort and page (PlanKeys and PlanAudit make the scan a backend runs, and
// the page of what it read), how migration files are named and ordered
// (ParseMigrations) and when a schema is migrated far enough
// (CheckSchema). A backend maps these onto its queries and its database's
// errors onto ErrNotFound, ErrNameTaken and ErrInvalid.
//
// A store never sees a plaintext key: only its digest (for lookup) and its
// sealed copy (for reveal), both made by package keys.
//
// It keeps, too, what each key did per hour (activity.go): values that
// clients send (User-Agents, addresses) are cleaned, capped per key and
// hour, and summarized here, so that every store keeps the same bounds.
package store

import (
	"context"
	"errors"
	"time"

	"github.com/keygate/keygate/caddymodule/keys"
)

// Errors a Store returns; wrap-aware callers test them with errors.Is.
var (
	// ErrNotFound: no such account, member or key (or it is not in the
	// account named in the call).
	ErrNotFound = errors.New("not found")
	// ErrNameTaken: another live key of the account already has the name,
	// or another account has the name.
	ErrNameTaken = errors.New("name already in use")
	// ErrInvalid: the input breaks a rule of the data model (see the
	// Validate, Check and Prepare functions).
	ErrInvalid = errors.New("invalid input")
	// ErrBusy: another process holds the lock asked for (LockRotation).
	ErrBusy = errors.New("busy")
)

// KeyType says what a key may reach.
type KeyType string

const (
	// Standard keys are account-wide.
	Standard KeyType = "standard"
	// Restricted keys are scoped to one server (inbox) of their account.
	Restricted KeyType = "restricted"
)

// Role is a member's role in an account.
type Role string

const (
	// Admin members (Account Administrators) may create, reveal and delete keys.
	Admin Role = "admin"
	// Member is any other member.
	Member Role = "member"
)

// Account is a tenant of the inbox API; keys and members belong to one.
type Account struct {
	ID        string
	Name      string
	CreatedAt time.Time
}

// Membership says that a user has a role in an account.
type Membership struct {
	AccountID string
	UserID    string
	Role      Role
	CreatedAt time.Time
}

// Key is an API key as stored: never the key itself.
type Key struct {
	ID        string
	AccountID string
	Name      string
	Type      KeyType
	ServerID  string // the one server of a Restricted key; empty for Standard
	Display   string // the key's display prefix (keys.Key.Display)
	Digest    keys.Digest
	Sealed    []byte // keys.Secret.Seal output; only GetKey and KeysBySecret fill it
	// Secret is the fingerprint of the secret that made Digest and Sealed
	// (keys.Secret.Fingerprint); "" for a key stored before keygate
	// recorded it, until AdoptKeys.
	Secret    string
	CreatedAt time.Time
	CreatedBy string     // user id of the creator, or "operator:<name>"
	LastUsed  *time.Time // nil until used; recorded in batches
	// Seq is the key event that CreateKey or DeleteKey committed, in stores
	// that announce key changes to a fleet (FleetStore); 0 elsewhere.
	Seq int64
	// LSN is the database's write-ahead log position read just after
	// DeleteKey's commit (Postgres; 0 elsewhere, and when it could not be
	// read): a
	// standby that has flushed this far keeps the change through a
	// failover (FleetStore.Standbys).
	LSN int64
}

// Identity is what the request path needs to know about a key: the subset of
// Key that LookupKey returns.
type Identity struct {
	KeyID     string
	AccountID string
	Type      KeyType
	ServerID  string
	Display   string
}

// Audit actions.
const (
	ActionCreate = "key.create"
	ActionReveal = "key.reveal"
	ActionDelete = "key.delete"
	// ActionRotate: an operator's `keygate secret rotate` re-keyed the
	// account's keys under a new secret (Detail says how many).
	ActionRotate = "secret.rotate"
)

// AuditEvent records who did what to which key. It never holds key material.
type AuditEvent struct {
	ID         int64 // assigned by the store
	AccountID  string
	Actor      string // user id, or "operator:<name>" for the command line
	Action     string // one of the Action constants
	KeyID      string
	KeyName    string
	KeyDisplay string
	RemoteAddr string // where the request came from; empty for the command line
	Detail     string // what an event about no one key did (ActionRotate)
	At         time.Time
}

// Store is keygate's persistence. Implementations are safe for concurrent
// use; every method takes a context first and wraps its errors with what was
// being done, keeping ErrNotFound, ErrNameTaken and ErrInvalid testable
// with errors.Is.
type Store interface {
	// Migrate brings the schema up to date. It is safe to call from several
	// processes at once and to call again; it is never called implicitly by
	// the other methods.
	Migrate(ctx context.Context) error
	// Ping checks that the store can answer.
	Ping(ctx context.Context) error
	// Ready checks that the store can serve key lookups: it answers, its
	// schema is migrated as far as this keygate needs, and the keys can
	// be read. It costs one cheap query; readiness probes call it. The
	// error of a store whose migrations were never applied wraps
	// ErrNotMigrated or is diagnosed as KindNotMigrated.
	Ready(ctx context.Context) error
	// Diagnose explains an error this store returned: what is wrong and
	// how to fix it, in words that never hold a password.
	Diagnose(err error) Diagnosis
	// Close releases the store's resources.
	Close() error

	// LookupKey finds the live key with the digest: the request path's query.
	LookupKey(ctx context.Context, digest keys.Digest) (Identity, error)
	// LookupKeyAny finds the live key with any of the digests (a key's
	// digests under each configured secret, while one is rotated out), in
	// one statement: a key re-keyed from one digest to another between
	// two lookups would be missed by both.
	LookupKeyAny(ctx context.Context, digests []keys.Digest) (Identity, error)

	// CreateKey inserts k (ID, AccountID, Name, Type, ServerID, Display,
	// Digest, Sealed, CreatedBy; CreatedAt is set by the store) and writes ev
	// in the same transaction. It returns ErrNameTaken for a duplicate name in
	// the account, ErrNotFound for an unknown account, ErrInvalid for a key
	// that breaks ValidateKey.
	CreateKey(ctx context.Context, k Key, ev AuditEvent) (Key, error)
	// GetKey returns one key of the account, Sealed included.
	GetKey(ctx context.Context, accountID, keyID string) (Key, error)
	// ListKeys returns a page of the account's keys, without Sealed: those
	// the query's search matches, in its order, and how many match in
	// all. It runs PlanKeys's scan, so a bad query is ErrInvalid; an
	// unknown account has no keys. AllKeys reads every page.
	ListKeys(ctx context.Context, accountID string, q KeyQuery) (KeyPage, error)
	// DeleteKey removes the key for good (sealed copy included) and writes
	// ev in the same transaction, filling ev's KeyName and KeyDisplay from
	// the deleted row. It returns the deleted key, whose Digest the caller
	// evicts from caches.
	DeleteKey(ctx context.Context, accountID, keyID string, ev AuditEvent) (Key, error)
	// TouchKeys records last-used times, keeping the later of the stored and
	// the given time. Unknown ids are ignored (the key may have been deleted).
	TouchKeys(ctx context.Context, used map[string]time.Time) error

	// CreateAccount adds an account with a fresh id.
	CreateAccount(ctx context.Context, name string) (Account, error)
	// GetAccount returns one account.
	GetAccount(ctx context.Context, id string) (Account, error)
	// ListAccounts returns every account, oldest first.
	ListAccounts(ctx context.Context) ([]Account, error)

	// SetMember adds the user to the account or changes their role.
	SetMember(ctx context.Context, accountID, userID string, role Role) (Membership, error)
	// RemoveMember removes the user from the account.
	RemoveMember(ctx context.Context, accountID, userID string) error
	// ListMembers returns the account's members, oldest first.
	ListMembers(ctx context.Context, accountID string) ([]Membership, error)
	// MembershipsOf returns every account the user belongs to.
	MembershipsOf(ctx context.Context, userID string) ([]Membership, error)

	// AppendAudit writes one audit event (reveals; creates and deletes are
	// written by CreateKey and DeleteKey).
	AppendAudit(ctx context.Context, ev AuditEvent) error
	// ListAudit returns a page of the account's events, newest first:
	// those the query's search and action match, before or after an event
	// id. It runs PlanAudit's scan, so a bad query is ErrInvalid.
	ListAudit(ctx context.Context, accountID string, q AuditQuery) (AuditPage, error)

	// Secrets returns the secrets the store's keys depend on, oldest
	// first: the one new keys are made with (Current), and every other
	// that made a key still stored. A fingerprint "" stands for keys
	// stored before keygate recorded fingerprints (see AdoptKeys).
	Secrets(ctx context.Context) ([]Secret, error)
	// InitSecret records fingerprint as the current secret unless the
	// store has one already, and returns the current one: of several
	// instances starting on a new store, one secret wins.
	InitSecret(ctx context.Context, fingerprint string) (string, error)
	// SetCurrentSecret makes fingerprint the secret new keys are made with.
	SetCurrentSecret(ctx context.Context, fingerprint string) error
	// AdoptKeys records fingerprint on every key stored without one.
	AdoptKeys(ctx context.Context, fingerprint string) (int64, error)
	// CountKeys returns how many keys each secret made ("" for keys
	// without a fingerprint).
	CountKeys(ctx context.Context) (map[string]int64, error)
	// KeysBySecret returns up to limit keys made with the secret
	// fingerprint ("" for keys without one), Sealed included, with ids
	// after afterID, in id order.
	KeysBySecret(ctx context.Context, fingerprint, afterID string, limit int) ([]Key, error)
	// RekeyKeys replaces the digest, sealed copy and secret of each key
	// (by KeyID) that is still made with the secret From, in
	// one transaction, and returns how many it changed: a key deleted or
	// re-keyed meanwhile is left alone.
	RekeyKeys(ctx context.Context, rekeys []Rekey) (int, error)
	// LockRotation takes the store-wide lock of a rotation, or returns
	// ErrBusy while another process holds it. The lock is released by
	// the returned function, or when the process ends.
	LockRotation(ctx context.Context) (release func(), err error)

	// RecordObjects records which server each object belongs to, as seen
	// in the inbox API's responses, refreshing the time it was last seen.
	RecordObjects(ctx context.Context, accountID string, objs []Object) error
	// ObjectServer returns the server of an object of the account, or
	// ErrNotFound if it was never recorded (or has expired).
	ObjectServer(ctx context.Context, accountID, kind, id string) (string, error)
	// PurgeObjects forgets objects last seen before the time and returns
	// how many it forgot.
	PurgeObjects(ctx context.Context, seenBefore time.Time) (int64, error)

	// RecordActivity adds what an instance gathered about its keys (per
	// key and hour: requests allowed and refused, and the addresses,
	// agents and servers seen) to what the store holds, in one
	// transaction. Counts add up; no key, hour and kind ever holds more
	// than ActivityCap distinct values, however many instances write at
	// once: the requests of values past the cap are added to the hour's
	// Others (FitActivity). Hours of keys that do not exist (deleted
	// since) are ignored. PrepareActivity says what is valid (ErrInvalid).
	RecordActivity(ctx context.Context, hours []ActivityHour) error
	// KeyActivity returns the activity of a key of the account from the
	// hour of since on (SummarizeActivity), or ErrNotFound when the
	// account has no such key. A key's activity is deleted with the key.
	KeyActivity(ctx context.Context, accountID, keyID string, since time.Time) (KeyActivity, error)
	// PurgeActivity forgets the activity of the hours that began before
	// the time, and returns how many hours of keys it forgot.
	PurgeActivity(ctx context.Context, before time.Time) (int64, error)
}

// Secret is a secret a store's keys are made with, named by its
// fingerprint: the store never holds the secret.
type Secret struct {
	Fingerprint string
	Current     bool // new keys are made with it
	HasKeys     bool // keys made with it are stored
	AddedAt     time.Time
}

// Rekey is a key's new digest and sealed copy, made with the secret To,
// replacing those made with the secret From.
type Rekey struct {
	KeyID  string
	From   string // fingerprint of the secret the key was made with ("" for none recorded)
	To     string // fingerprint of the secret Digest and Sealed are made with
	Digest keys.Digest
	Sealed []byte
}

// Object kinds: the objects whose server the inbox API cannot tell later.
const (
	ObjectAttachment = "attachment"
	ObjectPreview    = "preview"
)

// Object says that an attachment or a preview belongs to a server. The
// inbox API gives no way to map their ids back, so keygate records them as
// they pass by in responses, where every instance of a fleet can read them.
type Object struct {
	Kind     string // ObjectAttachment or ObjectPreview
	ID       string
	ServerID string
}

// Key event operations.
const (
	OpCreate = "create"
	OpDelete = "delete"
)

// KeyEvent is a committed create or delete of a key, as every instance of
// a fleet must apply it to its cache. Seq numbers have no gaps: an
// instance that sees seq N+2 after N knows it missed one.
type KeyEvent struct {
	Seq    int64
	Op     string // OpCreate or OpDelete
	Digest keys.Digest
	KeyID  string    // "" in events recorded before keygate recorded it
	At     time.Time // commit time, for measuring how long it took to apply
}

// Instance is one running keygate, as it reports itself to the fleet.
type Instance struct {
	ID         string
	Address    string // host and process, for people
	ListenerUp bool   // receiving key events
	// Secrets are the fingerprints of the secrets the instance has, its
	// current one first: a rotation makes a secret current only when
	// every live instance has it.
	Secrets    []string
	AppliedSeq int64 // the last key event applied to its cache
	AppliedAt  time.Time
	StartedAt  time.Time
	Heartbeat  time.Time
}

// FleetStore is a store shared by several instances (Postgres): it numbers
// key events, keeps them for catching up, announces them as they commit,
// and records the instances' receipts.
type FleetStore interface {
	Store
	// KeyEventsSince returns up to limit events with seq > after, in order.
	KeyEventsSince(ctx context.Context, after int64, limit int) ([]KeyEvent, error)
	// LastKeyEvent returns the highest committed seq (0 before any).
	LastKeyEvent(ctx context.Context) (int64, error)
	// PruneKeyEvents forgets events committed before the time.
	PruneKeyEvents(ctx context.Context, before time.Time) (int64, error)
	// ListenKeyEvents connects to dsn (a session connection: transaction
	// poolers break LISTEN), listens, calls connected once listening, then
	// delivers each event as it commits, until the connection fails, a
	// callback returns an error, or ctx ends. It calls alive whenever the
	// connection is known to work (an event, or a ping after keepalive of
	// silence). It always returns an error.
	ListenKeyEvents(ctx context.Context, dsn string, keepalive time.Duration, connected func() error, alive func(), event func(KeyEvent) error) error
	// Heartbeat records the instance's state (insert or update).
	Heartbeat(ctx context.Context, in Instance) error
	// RemoveInstance removes an instance that is shutting down.
	RemoveInstance(ctx context.Context, id string) error
	// ListInstances returns the instances that sent a heartbeat since the time.
	ListInstances(ctx context.Context, since time.Time) ([]Instance, error)
	// Standbys counts the standbys the database knows of (a failover may
	// promote one of them) and how many have flushed its write-ahead log
	// up to lsn (Key.LSN); none is counted as having flushed lsn 0.
	Standbys(ctx context.Context, lsn int64) (known, flushed int, err error)
}
