package store

import (
	"fmt"
	"unicode"
	"unicode/utf8"
)

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
