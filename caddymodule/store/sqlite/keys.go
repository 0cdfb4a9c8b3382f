package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

// LookupKey finds the key with the digest: the request path's only query,
// answered from the unique index on digest.
func (s *Store) LookupKey(ctx context.Context, digest keys.Digest) (store.Identity, error) {
	const lookupSQL = `
		select id, account_id, type, coalesce(server_id, ''), display
		from api_keys
		where digest = ?`
	var (
		id  store.Identity
		typ string
	)
	err := s.db.QueryRowContext(ctx, lookupSQL, digest[:]).Scan(&id.KeyID, &id.AccountID, &typ, &id.ServerID, &id.Display)
	if err != nil {
		return store.Identity{}, wrap("looking up key", "key", err)
	}
	id.Type = store.KeyType(typ)
	return id, nil
}

// LookupKeyAny finds the key with any of the digests, from the unique
// index on digest.
func (s *Store) LookupKeyAny(ctx context.Context, digests []keys.Digest) (store.Identity, error) {
	if len(digests) == 0 {
		return store.Identity{}, fmt.Errorf("looking up key: key %w", store.ErrNotFound)
	}
	args := make([]any, len(digests))
	for i := range digests {
		args[i] = digests[i][:]
	}
	lookupSQL := `
		select id, account_id, type, coalesce(server_id, ''), display
		from api_keys
		where digest in (?` + strings.Repeat(", ?", len(digests)-1) + `)`
	var (
		id  store.Identity
		typ string
	)
	err := s.db.QueryRowContext(ctx, lookupSQL, args...).Scan(&id.KeyID, &id.AccountID, &typ, &id.ServerID, &id.Display)
	if err != nil {
		return store.Identity{}, wrap("looking up key", "key", err)
	}
	id.Type = store.KeyType(typ)
	return id, nil
}

// CreateKey inserts k and its audit event in one transaction.
func (s *Store) CreateKey(ctx context.Context, k store.Key, ev store.AuditEvent) (store.Key, error) {
	const doing = "creating key"
	k, ev, err := store.PrepareKey(k, ev, now())
	if err != nil {
		return store.Key{}, fmt.Errorf("%s: %w", doing, err)
	}

	const insertSQL = `
		insert into api_keys (id, account_id, name, type, server_id, display, digest, sealed, created_at, created_by, secret)
		values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, insertSQL,
			k.ID, k.AccountID, k.Name, string(k.Type), nullString(k.ServerID), k.Display,
			k.Digest[:], k.Sealed, micros(k.CreatedAt), k.CreatedBy, nullString(k.Secret))
		if err != nil {
			return err
		}
		return insertEvent(ctx, tx, ev)
	})
	if err != nil {
		return store.Key{}, wrap(doing, "account", err)
	}
	return k, nil
}

// GetKey returns one key of the account with its sealed copy.
func (s *Store) GetKey(ctx context.Context, accountID, keyID string) (store.Key, error) {
	const getSQL = `
		select id, account_id, name, type, server_id, display, digest, created_at, created_by, last_used_at, sealed, secret
		from api_keys
		where account_id = ? and id = ?`
	k, err := scanKey(s.db.QueryRowContext(ctx, getSQL, accountID, keyID), true)
	if err != nil {
		return store.Key{}, wrap("getting key", "key", err)
	}
	return k, nil
}

// neverUsed stands for the last use of a key never used: before any.
const neverUsed = "-9223372036854775807"

// keyOrders are the expressions each store.KeyOrder sorts on, over a row
// and over a cursor's value (%s), as migration 0004 indexes them. lower
// folds ASCII letters only and names sort by code point, as in every
// store; a key never used sorts first.
var keyOrders = map[store.KeyOrder]struct{ row, val string }{
	store.ByName:     {`lower(name)`, `lower(%s)`},
	store.ByCreated:  {`created_at`, `%s`},
	store.ByLastUsed: {`coalesce(last_used_at, ` + neverUsed + `)`, `coalesce(%s, ` + neverUsed + `)`},
}

// ListKeys reads a page of the account's keys, without sealed copies, and
// counts the keys that match: the scan of store.PlanKeys, from the
// indexes of the order (but for ByLastUsed, which is sorted, as in
// Postgres).
func (s *Store) ListKeys(ctx context.Context, accountID string, q store.KeyQuery) (store.KeyPage, error) {
	const doing = "listing keys"
	scan, err := store.PlanKeys(q)
	if err != nil {
		return store.KeyPage{}, fmt.Errorf("%s: %w", doing, err)
	}
	var p params
	where := "account_id = " + p.add(accountID) + matchSQL(&p, scan.Match, "name", "display")
	var total int
	if err := s.db.QueryRowContext(ctx, "select count(*) from api_keys where "+where, p...).Scan(&total); err != nil {
		return store.KeyPage{}, wrap(doing, "key", err)
	}
	order := keyOrders[scan.Order]
	op, dir := store.Direction(scan.Desc)
	if scan.From != nil {
		// The first bound, redundant, is the one SQLite can seek an
		// expression's index to: it does not for a row value.
		v := stored(scan.From.Value(scan.Order))
		where += fmt.Sprintf(" and %s %s= %s", order.row, op, fmt.Sprintf(order.val, p.add(v)))
		where += fmt.Sprintf(" and (%s, id) %s (%s, %s)", order.row, op, fmt.Sprintf(order.val, p.add(v)), p.add(scan.From.ID))
	}
	listSQL := `
		select id, account_id, name, type, server_id, display, digest, created_at, created_by, last_used_at
		from api_keys
		where ` + where + `
		order by ` + order.row + " " + dir + ", id " + dir + `
		limit ` + p.add(scan.Fetch)
	rows, err := s.db.QueryContext(ctx, listSQL, p...)
	if err != nil {
		return store.KeyPage{}, wrap(doing, "key", err)
	}
	defer rows.Close()
	var ks []store.Key
	for rows.Next() {
		k, err := scanKey(rows, false)
		if err != nil {
			return store.KeyPage{}, wrap(doing, "key", err)
		}
		ks = append(ks, k)
	}
	if err := rows.Err(); err != nil {
		return store.KeyPage{}, wrap(doing, "key", err)
	}
	return scan.Page(ks, total), nil
}

// stored is a cursor's value as the table holds it: times in
// microseconds, NULL for never.
func stored(v any) any {
	switch v := v.(type) {
	case time.Time:
		return micros(v)
	case *time.Time:
		if v == nil {
			return nil
		}
		return micros(*v)
	}
	return v
}

// matchSQL is the condition of a store.Match on the columns of a name and
// a display prefix: "" when it matches every row, else " and (...)".
// LIKE ignores the case of ASCII letters; instr does not.
func matchSQL(p *params, m store.Match, name, display string) string {
	if m.Any() {
		return ""
	}
	cond := fmt.Sprintf(`lower(%s) like %s escape '\'`, name, p.add(m.Name))
	if m.Display != "" {
		cond += fmt.Sprintf(" or instr(%s, %s) = 1", display, p.add(m.Display))
	}
	return " and (" + cond + ")"
}

// params collects a statement's parameters as its text adds them.
type params []any

func (p *params) add(v any) string {
	*p = append(*p, v)
	return "?"
}

// DeleteKey deletes the key's row, sealed copy and all, and writes ev in
// the same transaction; then it erases the row's old versions from the
// WAL.
func (s *Store) DeleteKey(ctx context.Context, accountID, keyID string, ev store.AuditEvent) (store.Key, error) {
	const doing = "deleting key"
	if err := store.CheckKeyAuditEvent(ev, store.ActionDelete); err != nil {
		return store.Key{}, fmt.Errorf("%s: %w", doing, err)
	}
	const deleteSQL = `
		delete from api_keys
		where account_id = ? and id = ?
		returning id, account_id, name, type, server_id, display, digest, created_at, created_by, last_used_at`
	var k store.Key
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		if k, err = scanKey(tx.QueryRowContext(ctx, deleteSQL, accountID, keyID), false); err != nil {
			return err
		}
		if ev, err = store.PrepareKeyAuditEvent(ev, store.ActionDelete, k, now()); err != nil {
			return err
		}
		return insertEvent(ctx, tx, ev)
	})
	if err != nil {
		return store.Key{}, wrap(doing, "key", err)
	}
	// The key is deleted whatever the erase does: an error here would
	// keep the caller from forgetting the key.
	s.erase(ctx)
	return k, nil
}

// erase moves every page of the WAL into the database file and empties
// the WAL. secure_delete zeroes a deleted row in the page's new version,
// but the older versions, which hold the row, stay in the WAL's frames
// until a checkpoint copies the new one over the database's page and the
// WAL is truncated. TRUNCATE waits (up to the busy timeout) for readers
// of older snapshots; if one outlasts it, the frames stay until the next
// deletion, or until the last connection closes, which checkpoints too.
func (s *Store) erase(ctx context.Context) {
	var busy, logFrames, done int
	s.db.QueryRowContext(ctx, `pragma wal_checkpoint(truncate)`).Scan(&busy, &logFrames, &done)
}

// TouchKeys raises last_used_at to the given times, in one transaction.
func (s *Store) TouchKeys(ctx context.Context, used map[string]time.Time) error {
	if len(used) == 0 {
		return nil
	}
	ids := make([]string, 0, len(used))
	for id := range used {
		ids = append(ids, id)
	}
	sort.Strings(ids) // a deterministic order makes a slow batch easier to reason about

	// max() of a NULL is NULL: a first use takes the given time.
	const touchSQL = `update api_keys set last_used_at = max(coalesce(last_used_at, ?), ?) where id = ?`
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, touchSQL)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for _, id := range ids {
			at := micros(utc(used[id]))
			if _, err := stmt.ExecContext(ctx, at, at, id); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return wrap("recording key use", "key", err)
	}
	return nil
}

// scanKey reads the columns
//
//	id, account_id, name, type, server_id, display, digest, created_at, created_by, last_used_at
//
// followed by sealed and secret when withSealed is set.
func scanKey(row interface{ Scan(...any) error }, withSealed bool) (store.Key, error) {
	var (
		k         store.Key
		typ       string
		serverID  sql.NullString
		digest    []byte
		createdAt int64
		lastUsed  sql.NullInt64
	)
	var secret sql.NullString
	dest := []any{&k.ID, &k.AccountID, &k.Name, &typ, &serverID, &k.Display, &digest, &createdAt, &k.CreatedBy, &lastUsed}
	if withSealed {
		dest = append(dest, &k.Sealed, &secret)
	}
	if err := row.Scan(dest...); err != nil {
		return store.Key{}, err
	}
	if len(digest) != len(k.Digest) {
		return store.Key{}, fmt.Errorf("key %s has a %d-byte digest", k.ID, len(digest))
	}
	copy(k.Digest[:], digest)
	k.Type = store.KeyType(typ)
	k.ServerID = serverID.String
	k.Secret = secret.String
	k.CreatedAt = fromMicros(createdAt)
	if lastUsed.Valid {
		t := fromMicros(lastUsed.Int64)
		k.LastUsed = &t
	}
	return k, nil
}

// nullString stores "" as NULL, as the api_keys checks expect.
func nullString(s string) sql.NullString {
	return sql.NullString{String: s, Valid: s != ""}
}
