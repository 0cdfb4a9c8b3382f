package store

import "fmt"

// ValidateFingerprint checks a secret's fingerprint (keys.Secret's): 16
// lower-case hex characters, so that nothing else is ever recorded as one.
func ValidateFingerprint(fp string) error {
	if len(fp) != 16 {
		return fmt.Errorf("%w: a secret's fingerprint is 16 hex characters", ErrInvalid)
	}
	for i := 0; i < len(fp); i++ {
		if c := fp[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("%w: a secret's fingerprint is 16 hex characters", ErrInvalid)
		}
	}
	return nil
}

// ValidateRekey checks what RekeyKeys writes: a fingerprint and a sealed
// copy, for a key id.
func ValidateRekey(r Rekey) error {
	if err := ValidateFingerprint(r.To); err != nil {
		return fmt.Errorf("key %s: %w", r.KeyID, err)
	}
	if r.KeyID == "" || len(r.Sealed) == 0 {
		return fmt.Errorf("%w: a re-keyed key needs its id and a sealed copy", ErrInvalid)
	}
	return nil
}
