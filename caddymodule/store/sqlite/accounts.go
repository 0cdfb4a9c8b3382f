package sqlite

import (
	"context"
	"fmt"

	"github.com/keygate/keygate/caddymodule/store"
)

// CreateAccount adds an account with a fresh id; the name must be unused.
func (s *Store) CreateAccount(ctx context.Context, name string) (store.Account, error) {
	const doing = "creating account"
	a, err := store.PrepareAccount(name, now())
	if err != nil {
		return store.Account{}, fmt.Errorf("%s: %w", doing, err)
	}
	const insertSQL = `insert into accounts (id, name, created_at) values (?, ?, ?)`
	if _, err := s.db.ExecContext(ctx, insertSQL, a.ID, a.Name, micros(a.CreatedAt)); err != nil {
		return store.Account{}, wrap(doing, "account", err)
	}
	return a, nil
}

// GetAccount returns one account.
func (s *Store) GetAccount(ctx context.Context, id string) (store.Account, error) {
	const getSQL = `select id, name, created_at from accounts where id = ?`
	a, err := scanAccount(s.db.QueryRowContext(ctx, getSQL, id))
	if err != nil {
		return store.Account{}, wrap("getting account", "account", err)
	}
	return a, nil
}

// ListAccounts returns every account, oldest first.
func (s *Store) ListAccounts(ctx context.Context) ([]store.Account, error) {
	const listSQL = `select id, name, created_at from accounts order by created_at, id`
	rows, err := s.db.QueryContext(ctx, listSQL)
	if err != nil {
		return nil, wrap("listing accounts", "account", err)
	}
	defer rows.Close()
	var as []store.Account
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			return nil, wrap("listing accounts", "account", err)
		}
		as = append(as, a)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap("listing accounts", "account", err)
	}
	return as, nil
}

func scanAccount(row interface{ Scan(...any) error }) (store.Account, error) {
	var (
		a         store.Account
		createdAt int64
	)
	err := row.Scan(&a.ID, &a.Name, &createdAt)
	a.CreatedAt = fromMicros(createdAt)
	return a, err
}

// SetMember adds the user to the account, or changes their role and keeps
// the time they joined.
func (s *Store) SetMember(ctx context.Context, accountID, userID string, role store.Role) (store.Membership, error) {
	const doing = "setting member"
	if err := store.ValidateMember(userID, role); err != nil {
		return store.Membership{}, fmt.Errorf("%s: %w", doing, err)
	}
	const upsertSQL = `
		insert into members (account_id, user_id, role, created_at)
		values (?, ?, ?, ?)
		on conflict (account_id, user_id) do update set role = excluded.role
		returning account_id, user_id, role, created_at`
	m, err := scanMembership(s.db.QueryRowContext(ctx, upsertSQL, accountID, userID, string(role), micros(now())))
	if err != nil {
		return store.Membership{}, wrap(doing, "account", err)
	}
	return m, nil
}

// RemoveMember removes the user from the account.
func (s *Store) RemoveMember(ctx context.Context, accountID, userID string) error {
	const doing = "removing member"
	const deleteSQL = `delete from members where account_id = ? and user_id = ?`
	res, err := s.db.ExecContext(ctx, deleteSQL, accountID, userID)
	if err != nil {
		return wrap(doing, "member", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return wrap(doing, "member", err)
	} else if n == 0 {
		return fmt.Errorf("%s: member %w", doing, store.ErrNotFound)
	}
	return nil
}

// ListMembers returns the account's members, oldest first.
func (s *Store) ListMembers(ctx context.Context, accountID string) ([]store.Membership, error) {
	const listSQL = `
		select account_id, user_id, role, created_at
		from members
		where account_id = ?
		order by created_at, user_id`
	return s.listMemberships(ctx, "listing members", listSQL, accountID)
}

// MembershipsOf returns the user's memberships, oldest first.
func (s *Store) MembershipsOf(ctx context.Context, userID string) ([]store.Membership, error) {
	const listSQL = `
		select account_id, user_id, role, created_at
		from members
		where user_id = ?
		order by created_at, account_id`
	return s.listMemberships(ctx, "listing memberships", listSQL, userID)
}

func (s *Store) listMemberships(ctx context.Context, doing, query string, arg string) ([]store.Membership, error) {
	rows, err := s.db.QueryContext(ctx, query, arg)
	if err != nil {
		return nil, wrap(doing, "member", err)
	}
	defer rows.Close()
	var ms []store.Membership
	for rows.Next() {
		m, err := scanMembership(rows)
		if err != nil {
			return nil, wrap(doing, "member", err)
		}
		ms = append(ms, m)
	}
	if err := rows.Err(); err != nil {
		return nil, wrap(doing, "member", err)
	}
	return ms, nil
}

func scanMembership(row interface{ Scan(...any) error }) (store.Membership, error) {
	var (
		m         store.Membership
		role      string
		createdAt int64
	)
	err := row.Scan(&m.AccountID, &m.UserID, &role, &createdAt)
	m.Role = store.Role(role)
	m.CreatedAt = fromMicros(createdAt)
	return m, err
}
