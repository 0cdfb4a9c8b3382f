package postgres

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

// LookupKey finds the key with the digest. It is the request path's only
// query, answered from the unique index on digest.
func (s *Store) LookupKey(ctx context.Context, digest keys.Digest) (store.Identity, error) {
	const lookupSQL = `
		select id, account_id, type, coalesce(server_id, ''), display
		from api_keys
		where digest = $1`
	var (
		id  store.Identity
		typ string
	)
	err := s.pool.QueryRow(ctx, lookupSQL, digest[:]).Scan(&id.KeyID, &id.AccountID, &typ, &id.ServerID, &id.Display)
	if err != nil {
		return store.Identity{}, wrap("looking up key", "key", err)
	}
	id.Type = store.KeyType(typ)
	return id, nil
}

// LookupKeyAny finds the key with any of the digests, from the unique
// index on digest.
func (s *Store) LookupKeyAny(ctx context.Context, digests []keys.Digest) (store.Identity, error) {
	const lookupSQL = `
		select id, account_id, type, coalesce(server_id, ''), display
		from api_keys
		where digest = any($1::bytea[])`
	ds := make([][]byte, len(digests))
	for i := range digests {
		ds[i] = digests[i][:]
	}
	var (
		id  store.Identity
		typ string
	)
	err := s.pool.QueryRow(ctx, lookupSQL, ds).Scan(&id.KeyID, &id.AccountID, &typ, &id.ServerID, &id.Display)
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
		values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, insertSQL,
			k.ID, k.AccountID, k.Name, string(k.Type), nullString(k.ServerID), k.Display,
			k.Digest[:], k.Sealed, k.CreatedAt, k.CreatedBy, nullString(k.Secret))
		if err != nil {
			return err
		}
		if _, err = insertEvent(ctx, tx, ev); err != nil {
			return err
		}
		// Other instances may have cached this digest as unknown.
		k.Seq, err = announce(ctx, tx, store.OpCreate, k.Digest, k.ID, k.CreatedAt)
		return err
	})
	if err != nil {
		return store.Key{}, wrap(doing, "account", err)
	}
	return k, nil
}

// GetKey returns one key of the account with its sealed copy.
func (s *Store) GetKey(ctx context.Context, accountID, keyID string) (store.Key, error) {
	const doing = "getting key"
	if notFound(accountID) || notFound(keyID) {
		return store.Key{}, fmt.Errorf("%s: key %w", doing, store.ErrNotFound)
	}
	const getSQL = `
		select id, account_id, name, type, server_id, display, digest, created_at, created_by, last_used_at, sealed, secret
		from api_keys
		where account_id = $1 and id = $2`
	k, err := scanKey(s.pool.QueryRow(ctx, getSQL, accountID, keyID), true)
	if err != nil {
		return store.Key{}, wrap(doing, "key", err)
	}
	return k, nil
}

// keyOrders are the expressions each store.KeyOrder sorts on, over a row
// and over a cursor's value (%s), as migration 0005 indexes them, ties
// broken by idOrder. Under the "C" collation lower folds ASCII letters only
// and text sorts by code point, as in every store whatever the
// database's locale; a key never used sorts first.
var keyOrders = map[store.KeyOrder]struct{ row, val string }{
	store.ByName:     {`lower(name collate "C")`, `lower(%s::text collate "C")`},
	store.ByCreated:  {`created_at`, `%s::timestamptz`},
	store.ByLastUsed: {`coalesce(last_used_at, '-infinity')`, `coalesce(%s::timestamptz, '-infinity')`},
}

const idOrder = `id collate "C"`

// ListKeys reads a page of the account's keys, without sealed copies, and
// counts the keys that match: the scan of store.PlanKeys, from the
// indexes of the order (but for ByLastUsed, which is sorted: an index on
// last_used_at would cost every TouchKeys its in-place updates).
func (s *Store) ListKeys(ctx context.Context, accountID string, q store.KeyQuery) (store.KeyPage, error) {
	const doing = "listing keys"
	scan, err := store.PlanKeys(q)
	if err != nil {
		return store.KeyPage{}, fmt.Errorf("%s: %w", doing, err)
	}
	if notFound(accountID) {
		return scan.Page(nil, 0), nil
	}
	var p params
	where := "account_id = " + p.add(accountID) + matchSQL(&p, scan.Match, "name", "display")
	var total int
	if err := s.pool.QueryRow(ctx, "select count(*) from api_keys where "+where, p...).Scan(&total); err != nil {
		return store.KeyPage{}, wrap(doing, "key", err)
	}
	order := keyOrders[scan.Order]
	op, dir := store.Direction(scan.Desc)
	if scan.From != nil {
		val := fmt.Sprintf(order.val, p.add(scan.From.Value(scan.Order)))
		where += fmt.Sprintf(" and (%s, %s) %s (%s, %s)", order.row, idOrder, op, val, p.add(scan.From.ID))
	}
	listSQL := `
		select id, account_id, name, type, server_id, display, digest, created_at, created_by, last_used_at
		from api_keys
		where ` + where + `
		order by ` + order.row + " " + dir + ", " + idOrder + " " + dir + `
		limit ` + p.add(scan.Fetch)
	rows, _ := s.pool.Query(ctx, listSQL, p...)
	ks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Key, error) {
		return scanKey(row, false)
	})
	if err != nil {
		return store.KeyPage{}, wrap(doing, "key", err)
	}
	return scan.Page(ks, total), nil
}

// matchSQL is the condition of a store.Match on the columns of a name and
// a display prefix: "" when it matches every row, else " and (...)".
func matchSQL(p *params, m store.Match, name, display string) string {
	if m.Any() {
		return ""
	}
	cond := fmt.Sprintf(`lower(%s collate "C") like %s escape '\'`, name, p.add(m.Name))
	if m.Display != "" {
		cond += fmt.Sprintf(" or starts_with(%s, %s)", display, p.add(m.Display))
	}
	return " and (" + cond + ")"
}

// params numbers a statement's parameters as its text adds them.
type params []any

func (p *params) add(v any) string {
	*p = append(*p, v)
	return "$" + strconv.Itoa(len(*p))
}

// DeleteKey deletes the key's row, sealed copy and all, and writes ev in
// the same transaction.
func (s *Store) DeleteKey(ctx context.Context, accountID, keyID string, ev store.AuditEvent) (store.Key, error) {
	const doing = "deleting key"
	if notFound(accountID) || notFound(keyID) {
		return store.Key{}, fmt.Errorf("%s: key %w", doing, store.ErrNotFound)
	}
	if err := store.CheckKeyAuditEvent(ev, store.ActionDelete); err != nil {
		return store.Key{}, fmt.Errorf("%s: %w", doing, err)
	}
	const deleteSQL = `
		delete from api_keys
		where account_id = $1 and id = $2
		returning id, account_id, name, type, server_id, display, digest, created_at, created_by, last_used_at`
	var k store.Key
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		if k, err = scanKey(tx.QueryRow(ctx, deleteSQL, accountID, keyID), false); err != nil {
			return err
		}
		at := now()
		ev, err = store.PrepareKeyAuditEvent(ev, store.ActionDelete, k, at)
		if err != nil {
			return err
		}
		if _, err = insertEvent(ctx, tx, ev); err != nil {
			return err
		}
		k.Seq, err = announce(ctx, tx, store.OpDelete, k.Digest, k.ID, at)
		return err
	})
	if err != nil {
		return store.Key{}, wrap(doing, "key", err)
	}
	k.LSN = s.lsn(ctx)
	return k, nil
}

// TouchKeys raises last_used_at to the given times in one statement.
func (s *Store) TouchKeys(ctx context.Context, used map[string]time.Time) error {
	ids := make([]string, 0, len(used))
	for id := range used {
		if !notFound(id) {
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	sort.Strings(ids)
	ats := make([]time.Time, len(ids))
	for i, id := range ids {
		ats[i] = utc(used[id])
	}
	// Rows are locked in id order first, as every other writer of several
	// keys (RekeyKeys, RecordActivity) locks them, so that concurrent
	// batches queue rather than deadlock: the update alone locks them in
	// the order of its join, which a hash join does not keep.
	const lockSQL = `select id from api_keys where id = any($1) order by id for no key update`
	// greatest ignores nulls: a first use sets the time.
	const touchSQL = `
		update api_keys k
		set last_used_at = greatest(k.last_used_at, u.at)
		from unnest($1::text[], $2::timestamptz[]) as u(id, at)
		where k.id = u.id`
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, lockSQL, ids); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, touchSQL, ids, ats)
		return err
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
func scanKey(row pgx.Row, withSealed bool) (store.Key, error) {
	var (
		k        store.Key
		typ      string
		serverID *string
		digest   []byte
	)
	var secret *string
	dest := []any{&k.ID, &k.AccountID, &k.Name, &typ, &serverID, &k.Display, &digest, &k.CreatedAt, &k.CreatedBy, &k.LastUsed}
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
	if serverID != nil {
		k.ServerID = *serverID
	}
	if secret != nil {
		k.Secret = *secret
	}
	k.CreatedAt = utc(k.CreatedAt)
	k.LastUsed = utcPtr(k.LastUsed)
	return k, nil
}

// nullString stores "" as NULL, as the api_keys checks expect.
func nullString(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
