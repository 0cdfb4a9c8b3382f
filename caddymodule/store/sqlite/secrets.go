package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/keygate/keygate/caddymodule/store"
)

// Secrets returns the current secret and every other that made a stored
// key, each answered from the index on (secret, id).
func (s *Store) Secrets(ctx context.Context) ([]store.Secret, error) {
	const doing = "reading the store's secrets"
	const secretsSQL = `
		select fingerprint, current, has_keys, added_at
		from (
			select fingerprint, current, added_at,
			       exists (select 1 from api_keys k where k.secret = s.fingerprint) as has_keys
			from keygate_secrets s
		)
		where current = 1 or has_keys
		union all
		select '', 0, 1, 0
		where exists (select 1 from api_keys where secret is null)
		order by 4, 1`
	rows, err := s.db.QueryContext(ctx, secretsSQL)
	if err != nil {
		return nil, wrap(doing, "secret", err)
	}
	defer rows.Close()
	var secrets []store.Secret
	for rows.Next() {
		var (
			sec     store.Secret
			addedAt int64
		)
		if err := rows.Scan(&sec.Fingerprint, &sec.Current, &sec.HasKeys, &addedAt); err != nil {
			return nil, wrap(doing, "secret", err)
		}
		sec.AddedAt = fromMicros(addedAt)
		secrets = append(secrets, sec)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(doing, "secret", err)
	}
	return secrets, nil
}

// InitSecret records the fingerprint as current on a store without a
// current secret, under the write lock.
func (s *Store) InitSecret(ctx context.Context, fingerprint string) (string, error) {
	const doing = "recording the secret"
	if err := store.ValidateFingerprint(fingerprint); err != nil {
		return "", fmt.Errorf("%s: %w", doing, err)
	}
	var current string
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		const initSQL = `
			insert into keygate_secrets (fingerprint, current, added_at)
			select ?, 1, ?
			where not exists (select 1 from keygate_secrets where current = 1)
			on conflict do nothing`
		if _, err := tx.ExecContext(ctx, initSQL, fingerprint, micros(now())); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `select fingerprint from keygate_secrets where current = 1`).Scan(&current)
	})
	if err != nil {
		return "", wrap(doing, "current secret", err)
	}
	return current, nil
}

// SetCurrentSecret makes the fingerprint the current secret, adding it if
// new, in one transaction.
func (s *Store) SetCurrentSecret(ctx context.Context, fingerprint string) error {
	const doing = "making a secret current"
	if err := store.ValidateFingerprint(fingerprint); err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `update keygate_secrets set current = 0 where current = 1 and fingerprint <> ?`, fingerprint); err != nil {
			return err
		}
		const upsertSQL = `
			insert into keygate_secrets (fingerprint, current, added_at) values (?, 1, ?)
			on conflict (fingerprint) do update set current = 1`
		_, err := tx.ExecContext(ctx, upsertSQL, fingerprint, micros(now()))
		return err
	})
	if err != nil {
		return wrap(doing, "secret", err)
	}
	return nil
}

// AdoptKeys records the fingerprint on the keys stored without one.
func (s *Store) AdoptKeys(ctx context.Context, fingerprint string) (int64, error) {
	const doing = "recording the secret of existing keys"
	if err := store.ValidateFingerprint(fingerprint); err != nil {
		return 0, fmt.Errorf("%s: %w", doing, err)
	}
	res, err := s.db.ExecContext(ctx, `update api_keys set secret = ? where secret is null`, fingerprint)
	if err != nil {
		return 0, wrap(doing, "key", err)
	}
	return res.RowsAffected()
}

// CountKeys counts the keys per secret.
func (s *Store) CountKeys(ctx context.Context) (map[string]int64, error) {
	const doing = "counting keys"
	rows, err := s.db.QueryContext(ctx, `select coalesce(secret, ''), count(*) from api_keys group by 1`)
	if err != nil {
		return nil, wrap(doing, "key", err)
	}
	defer rows.Close()
	counts := map[string]int64{}
	for rows.Next() {
		var (
			fp string
			n  int64
		)
		if err := rows.Scan(&fp, &n); err != nil {
			return nil, wrap(doing, "key", err)
		}
		counts[fp] = n
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(doing, "key", err)
	}
	return counts, nil
}

// KeysBySecret pages through the keys of one secret by id.
func (s *Store) KeysBySecret(ctx context.Context, fingerprint, afterID string, limit int) ([]store.Key, error) {
	const doing = "reading keys by secret"
	// An equality (or "is null") on secret reads the index on (secret, id).
	const columns = `id, account_id, name, type, server_id, display, digest, created_at, created_by, last_used_at, sealed, secret`
	bySecretSQL := `select ` + columns + ` from api_keys where secret = ? and id > ? order by secret, id limit ?`
	args := []any{fingerprint, afterID, max(limit, 1)}
	if fingerprint == "" {
		bySecretSQL = `select ` + columns + ` from api_keys where secret is null and id > ? order by secret, id limit ?`
		args = args[1:]
	}
	rows, err := s.db.QueryContext(ctx, bySecretSQL, args...)
	if err != nil {
		return nil, wrap(doing, "key", err)
	}
	defer rows.Close()
	var ks []store.Key
	for rows.Next() {
		k, err := scanKey(rows, true)
		if err != nil {
			return nil, wrap(doing, "key", err)
		}
		ks = append(ks, k)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(doing, "key", err)
	}
	return ks, nil
}

// RekeyKeys replaces digests and sealed copies in one transaction, each
// only where the key is still made with the secret it was read with.
func (s *Store) RekeyKeys(ctx context.Context, rekeys []store.Rekey) (int, error) {
	for _, r := range rekeys {
		if err := store.ValidateRekey(r); err != nil {
			return 0, fmt.Errorf("re-keying keys: %w", err)
		}
	}
	const rekeySQL = `
		update api_keys set digest = ?, sealed = ?, secret = ?
		where id = ? and secret is nullif(?, '')`
	n := 0
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, rekeySQL)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, r := range rekeys {
			res, err := stmt.ExecContext(ctx, r.Digest[:], r.Sealed, r.To, r.KeyID, r.From)
			if err != nil {
				return err
			}
			changed, _ := res.RowsAffected()
			n += int(changed)
		}
		return nil
	})
	if err != nil {
		return 0, wrap("re-keying keys", "key", err)
	}
	// The old sealed copies are overwritten in the file (secure_delete);
	// this erases them from the WAL too, as DeleteKey does.
	s.erase(ctx)
	return n, nil
}

// LockRotation takes an exclusive lock on a file beside the database,
// which the kernel releases when the process ends.
func (s *Store) LockRotation(ctx context.Context) (func(), error) {
	f, err := os.OpenFile(s.path+".rotate.lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking the rotation: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("locking the rotation: %w", store.ErrBusy)
		}
		return nil, fmt.Errorf("locking the rotation: %w", err)
	}
	return func() { f.Close() }, nil
}
