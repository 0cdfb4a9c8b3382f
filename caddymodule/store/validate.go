package store

import (
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/keygate/keygate/caddymodule/keys"
)

// The rules here run before any SQL, in every store, so that all of them
// accept and refuse the same input with the same errors, and a store's
// constraints are a second line rather than the rule.

// CheckText rejects strings that Postgres text cannot hold (a NUL byte,
// invalid UTF-8) as ErrInvalid. Every store applies it to the text it
// writes, so that they all accept the same input and such text is the
// caller's mistake rather than a database error.
func CheckText(ss ...string) error {
	for _, s := range ss {
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			return fmt.Errorf("%w: text holds a NUL byte or invalid UTF-8", ErrInvalid)
		}
	}
	return nil
}

// MaxNameLen is the longest key or account name, in characters.
const MaxNameLen = 100

// ValidateName checks a key or account name: 1 to 100 printable characters,
// not starting or ending with a space. The error says what is wrong and
// wraps ErrInvalid.
func ValidateName(name string) error {
	switch n := utf8.RuneCountInString(name); {
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: name is not valid UTF-8", ErrInvalid)
	case n == 0:
		return fmt.Errorf("%w: name is empty", ErrInvalid)
	case n > MaxNameLen:
		return fmt.Errorf("%w: name is %d characters; at most %d are allowed", ErrInvalid, n, MaxNameLen)
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: name contains a non-printable character (%U)", ErrInvalid, r)
		}
	}
	if name[0] == ' ' || name[len(name)-1] == ' ' {
		return fmt.Errorf("%w: name starts or ends with a space", ErrInvalid)
	}
	return nil
}

// PrepareAccount makes the account CreateAccount inserts: a valid name
// (ValidateName), a fresh id and now as its creation time.
func PrepareAccount(name string, now time.Time) (Account, error) {
	if err := ValidateName(name); err != nil {
		return Account{}, err
	}
	id, err := keys.NewID("acct")
	if err != nil {
		return Account{}, err
	}
	return Account{ID: id, Name: name, CreatedAt: now}, nil
}

// ValidateKey checks the fields CreateKey relies on.
func ValidateKey(k Key) error {
	if err := ValidateName(k.Name); err != nil {
		return err
	}
	switch k.Type {
	case Standard:
		if k.ServerID != "" {
			return fmt.Errorf("%w: a standard key has no server", ErrInvalid)
		}
	case Restricted:
		if err := ValidateServerID(k.ServerID); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: key type must be %q or %q", ErrInvalid, Standard, Restricted)
	}
	if k.ID == "" || k.AccountID == "" || k.Display == "" || len(k.Sealed) == 0 || k.CreatedBy == "" {
		return fmt.Errorf("%w: key is missing its id, account, display prefix, sealed copy or creator", ErrInvalid)
	}
	return nil
}

// PrepareKey makes the row and the audit event CreateKey inserts: k must
// pass ValidateKey and CheckText, is created now and never used; ev is
// completed from k by PrepareKeyAuditEvent. Nothing the caller sets in
// CreatedAt or LastUsed reaches the store.
func PrepareKey(k Key, ev AuditEvent, now time.Time) (Key, AuditEvent, error) {
	if err := ValidateKey(k); err != nil {
		return Key{}, AuditEvent{}, err
	}
	if err := CheckText(k.ID, k.AccountID, k.Display, k.CreatedBy); err != nil {
		return Key{}, AuditEvent{}, err
	}
	if k.Secret != "" {
		if err := ValidateFingerprint(k.Secret); err != nil {
			return Key{}, AuditEvent{}, err
		}
	}
	k.CreatedAt = now
	k.LastUsed = nil
	ev, err := PrepareKeyAuditEvent(ev, ActionCreate, k, k.CreatedAt)
	if err != nil {
		return Key{}, AuditEvent{}, err
	}
	return k, ev, nil
}

// ValidateServerID checks a server (inbox) id: 1 to 64 letters, digits,
// '-' or '_'. The inbox API's ids are 8 characters; the bound only keeps
// anything that could be read two ways out of headers and URLs.
func ValidateServerID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("%w: server id must be 1 to 64 characters", ErrInvalid)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return fmt.Errorf("%w: server id may hold only letters, digits, '-' and '_'", ErrInvalid)
		}
	}
	return nil
}

// ValidateRole checks a member role.
func ValidateRole(r Role) error {
	if r != Admin && r != Member {
		return fmt.Errorf("%w: role must be %q or %q", ErrInvalid, Admin, Member)
	}
	return nil
}

// ValidateMember checks what SetMember writes: a user id and a role. The
// account is left to the store, which says ErrNotFound for an unknown one.
func ValidateMember(userID string, role Role) error {
	if err := ValidateUserID(userID); err != nil {
		return err
	}
	return ValidateRole(role)
}

// ValidateUserID checks a user id: 1 to 200 printable characters. User ids
// come from whichever authentication runs in front of the dashboard.
func ValidateUserID(id string) error {
	if id == "" || utf8.RuneCountInString(id) > 200 || !utf8.ValidString(id) {
		return fmt.Errorf("%w: user id must be 1 to 200 characters", ErrInvalid)
	}
	for _, r := range id {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: user id contains a non-printable character (%U)", ErrInvalid, r)
		}
	}
	return nil
}

// ValidateObject checks an object to record: a known kind, an id of 1 to
// 200 printable characters and a valid server id.
func ValidateObject(o Object) error {
	if o.Kind != ObjectAttachment && o.Kind != ObjectPreview {
		return fmt.Errorf("%w: object kind must be %q or %q", ErrInvalid, ObjectAttachment, ObjectPreview)
	}
	if o.ID == "" || utf8.RuneCountInString(o.ID) > 200 || !utf8.ValidString(o.ID) {
		return fmt.Errorf("%w: object id must be 1 to 200 characters", ErrInvalid)
	}
	for _, r := range o.ID {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: object id contains a non-printable character (%U)", ErrInvalid, r)
		}
	}
	return ValidateServerID(o.ServerID)
}

// ValidateObjects checks what RecordObjects writes, all of it before any
// is written: an account id and every object (ValidateObject, CheckText).
func ValidateObjects(accountID string, objs []Object) error {
	if err := CheckText(accountID); err != nil || accountID == "" {
		return fmt.Errorf("%w: account id", ErrInvalid)
	}
	for _, o := range objs {
		if err := ValidateObject(o); err != nil {
			return err
		}
		if err := CheckText(o.ID); err != nil {
			return err
		}
	}
	return nil
}
