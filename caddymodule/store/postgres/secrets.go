package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/store"
)

// Secrets returns the current secret and every other that made a stored
// key, each answered from the index on (secret, id).
func (s *Store) Secrets(ctx context.Context) ([]store.Secret, error) {
	const secretsSQL = `
		select fingerprint, current, has_keys, added_at
		from (
			select fingerprint, current, added_at,
			       exists (select 1 from api_keys k where k.secret = s.fingerprint) as has_keys
			from keygate_secrets s
		) s
		where current or has_keys
		union all
		select '', false, true, 'epoch'::timestamptz
		where exists (select 1 from api_keys where secret is null)
		order by 4, 1`
	rows, _ := s.pool.Query(ctx, secretsSQL)
	secrets, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Secret, error) {
		var sec store.Secret
		err := row.Scan(&sec.Fingerprint, &sec.Current, &sec.HasKeys, &sec.AddedAt)
		sec.AddedAt = utc(sec.AddedAt)
		return sec, err
	})
	if err != nil {
		return nil, wrap("reading the store's secrets", "secret", err)
	}
	return secrets, nil
}

// InitSecret records the fingerprint as current on a store without a
// current secret; of concurrent callers, the unique index lets one win.
func (s *Store) InitSecret(ctx context.Context, fingerprint string) (string, error) {
	const doing = "recording the secret"
	if err := store.ValidateFingerprint(fingerprint); err != nil {
		return "", fmt.Errorf("%s: %w", doing, err)
	}
	const initSQL = `
		insert into keygate_secrets (fingerprint, current, added_at)
		select $1, true, $2
		where not exists (select 1 from keygate_secrets where current)
		on conflict do nothing`
	if _, err := s.pool.Exec(ctx, initSQL, fingerprint, now()); err != nil {
		return "", wrap(doing, "secret", err)
	}
	var current string
	if err := s.pool.QueryRow(ctx, `select fingerprint from keygate_secrets where current`).Scan(&current); err != nil {
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
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `update keygate_secrets set current = false where current and fingerprint <> $1`, fingerprint); err != nil {
			return err
		}
		const upsertSQL = `
			insert into keygate_secrets (fingerprint, current, added_at) values ($1, true, $2)
			on conflict (fingerprint) do update set current = true`
		_, err := tx.Exec(ctx, upsertSQL, fingerprint, now())
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
	tag, err := s.pool.Exec(ctx, `update api_keys set secret = $1 where secret is null`, fingerprint)
	if err != nil {
		return 0, wrap(doing, "key", err)
	}
	return tag.RowsAffected(), nil
}

// CountKeys counts the keys per secret.
func (s *Store) CountKeys(ctx context.Context) (map[string]int64, error) {
	rows, _ := s.pool.Query(ctx, `select coalesce(secret, ''), count(*) from api_keys group by 1`)
	counts := map[string]int64{}
	var (
		fp string
		n  int64
	)
	_, err := pgx.ForEachRow(rows, []any{&fp, &n}, func() error { counts[fp] = n; return nil })
	if err != nil {
		return nil, wrap("counting keys", "key", err)
	}
	return counts, nil
}

// KeysBySecret pages through the keys of one secret by id, from the
// index on (secret, id): an equality (or "is null") on secret, so that the
// index is read, rather than the primary key with a filter.
func (s *Store) KeysBySecret(ctx context.Context, fingerprint, afterID string, limit int) ([]store.Key, error) {
	const columns = `id, account_id, name, type, server_id, display, digest, created_at, created_by, last_used_at, sealed, secret`
	bySecretSQL := `select ` + columns + ` from api_keys where secret = $1 and id > $2 order by secret, id limit $3`
	args := []any{fingerprint, afterID, max(limit, 1)}
	if fingerprint == "" {
		bySecretSQL = `select ` + columns + ` from api_keys where secret is null and id > $1 order by secret, id limit $2`
		args = args[1:]
	}
	rows, _ := s.pool.Query(ctx, bySecretSQL, args...)
	ks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Key, error) {
		return scanKey(row, true)
	})
	if err != nil {
		return nil, wrap("reading keys by secret", "key", err)
	}
	return ks, nil
}

// RekeyKeys replaces digests and sealed copies in one statement, each
// only where the key is still made with the secret it was read with.
func (s *Store) RekeyKeys(ctx context.Context, rekeys []store.Rekey) (int, error) {
	if len(rekeys) == 0 {
		return 0, nil
	}
	var (
		ids, froms, tos  = make([]string, len(rekeys)), make([]string, len(rekeys)), make([]string, len(rekeys))
		digests, sealeds = make([][]byte, len(rekeys)), make([][]byte, len(rekeys))
	)
	for i, r := range rekeys {
		if err := store.ValidateRekey(r); err != nil {
			return 0, fmt.Errorf("re-keying keys: %w", err)
		}
		ids[i], froms[i], tos[i], sealeds[i] = r.KeyID, r.From, r.To, r.Sealed
		digests[i] = r.Digest[:]
	}
	const rekeySQL = `
		update api_keys k
		set digest = r.digest, sealed = r.sealed, secret = r.secret
		from unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bytea[]) as r(id, from_secret, secret, digest, sealed)
		where k.id = r.id and k.secret is not distinct from nullif(r.from_secret, '')`
	// Rows are locked in id order first, as every other writer of several
	// keys (TouchKeys, RecordActivity) locks them, so that they queue
	// rather than deadlock; the update alone would lock them in the order
	// of its join.
	const lockSQL = `select id from api_keys where id = any($1) order by id for update`
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockSQL, ids); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, rekeySQL, ids, froms, tos, digests, sealeds)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return 0, wrap("re-keying keys", "key", err)
	}
	return int(n), nil
}

// LockRotation holds a session advisory lock, per schema, on a
// connection of its own until released; a process that dies releases it
// with its session. The connection is the session DSN's (WithSessionDSN)
// when there is one: through a transaction pooler the lock would stay
// with whichever server connection took it, held for no one, or be taken
// again by another process landing on that connection.
func (s *Store) LockRotation(ctx context.Context) (func(), error) {
	// The pool's schema names the lock, whatever the session DSN's
	// search_path.
	var schema *string
	if err := s.pool.QueryRow(ctx, `select current_schema()`).Scan(&schema); err != nil {
		return nil, fmt.Errorf("locking the rotation: reading current schema: %w", err)
	}
	if schema == nil {
		return nil, fmt.Errorf("locking the rotation: %w", errNoSchema)
	}
	conn, err := s.sessionConn(ctx)
	if err != nil {
		return nil, fmt.Errorf("locking the rotation: connecting: %w", err)
	}
	const lockSQL = `select pg_try_advisory_lock(hashtext('keygate.rotate.' || $1))`
	var locked bool
	if err := conn.QueryRow(ctx, lockSQL, *schema).Scan(&locked); err != nil {
		conn.release()
		return nil, fmt.Errorf("locking the rotation: %w", err)
	}
	if !locked {
		conn.release()
		return nil, fmt.Errorf("locking the rotation: %w", store.ErrBusy)
	}
	return func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		const unlockSQL = `select pg_advisory_unlock(hashtext('keygate.rotate.' || $1))`
		if _, err := conn.Exec(uctx, unlockSQL, *schema); err != nil {
			conn.Close(uctx) // ends the session, and the lock with it
		}
		conn.release()
	}, nil
}

// lockConn is a connection that is one session until released.
type lockConn struct {
	*pgx.Conn
	release func()
}

// sessionConn dials the session DSN, or takes a connection of the pool
// when there is none.
func (s *Store) sessionConn(ctx context.Context) (lockConn, error) {
	if s.session == "" {
		c, err := s.pool.Acquire(ctx)
		if err != nil {
			return lockConn{}, err
		}
		return lockConn{Conn: c.Conn(), release: c.Release}, nil
	}
	c, err := connect(ctx, s.session)
	if err != nil {
		return lockConn{}, err
	}
	return lockConn{Conn: c, release: func() { c.Close(context.Background()) }}, nil
}
