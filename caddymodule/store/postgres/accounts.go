package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/store"
)

// CreateAccount adds an account with a fresh id; the name must be unused.
func (s *Store) CreateAccount(ctx context.Context, name string) (store.Account, error) {
	const doing = "creating account"
	a, err := store.PrepareAccount(name, now())
	if err != nil {
		return store.Account{}, fmt.Errorf("%s: %w", doing, err)
	}
	const insertSQL = `insert into accounts (id, name, created_at) values ($1, $2, $3)`
	if _, err := s.pool.Exec(ctx, insertSQL, a.ID, a.Name, a.CreatedAt); err != nil {
		return store.Account{}, wrap(doing, "account", err)
	}
	return a, nil
}

// GetAccount returns one account.
func (s *Store) GetAccount(ctx context.Context, id string) (store.Account, error) {
	const doing = "getting account"
	if notFound(id) {
		return store.Account{}, fmt.Errorf("%s: account %w", doing, store.ErrNotFound)
	}
	const getSQL = `select id, name, created_at from accounts where id = $1`
	rows, _ := s.pool.Query(ctx, getSQL, id)
	a, err := pgx.CollectExactlyOneRow(rows, scanAccount)
	if err != nil {
		return store.Account{}, wrap(doing, "account", err)
	}
	return a, nil
}

// ListAccounts returns every account, oldest first.
func (s *Store) ListAccounts(ctx context.Context) ([]store.Account, error) {
	const listSQL = `select id, name, created_at from accounts order by created_at, id`
	rows, _ := s.pool.Query(ctx, listSQL)
	as, err := pgx.CollectRows(rows, scanAccount)
	if err != nil {
		return nil, wrap("listing accounts", "account", err)
	}
	return as, nil
}

func scanAccount(row pgx.CollectableRow) (store.Account, error) {
	var a store.Account
	err := row.Scan(&a.ID, &a.Name, &a.CreatedAt)
	a.CreatedAt = utc(a.CreatedAt)
	return a, err
}

// SetMember adds the user to the account, or changes their role and keeps
// the time they joined.
func (s *Store) SetMember(ctx context.Context, accountID, userID string, role store.Role) (store.Membership, error) {
	const doing = "setting member"
	if err := store.ValidateMember(userID, role); err != nil {
		return store.Membership{}, fmt.Errorf("%s: %w", doing, err)
	}
	if notFound(accountID) {
		return store.Membership{}, fmt.Errorf("%s: account %w", doing, store.ErrNotFound)
	}
	const upsertSQL = `
		insert into members (account_id, user_id, role, created_at)
		values ($1, $2, $3, $4)
		on conflict (account_id, user_id) do update set role = excluded.role
		returning account_id, user_id, role, created_at`
	rows, _ := s.pool.Query(ctx, upsertSQL, accountID, userID, string(role), now())
	m, err := pgx.CollectExactlyOneRow(rows, scanMembership)
	if err != nil {
		return store.Membership{}, wrap(doing, "account", err)
	}
	return m, nil
}

// RemoveMember removes the user from the account.
func (s *Store) RemoveMember(ctx context.Context, accountID, userID string) error {
	const doing = "removing member"
	if notFound(accountID) || notFound(userID) {
		return fmt.Errorf("%s: member %w", doing, store.ErrNotFound)
	}
	const deleteSQL = `delete from members where account_id = $1 and user_id = $2`
	tag, err := s.pool.Exec(ctx, deleteSQL, accountID, userID)
	if err != nil {
		return wrap(doing, "member", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%s: member %w", doing, store.ErrNotFound)
	}
	return nil
}

// ListMembers returns the account's members, oldest first.
func (s *Store) ListMembers(ctx context.Context, accountID string) ([]store.Membership, error) {
	if notFound(accountID) {
		return nil, nil
	}
	const listSQL = `
		select account_id, user_id, role, created_at
		from members
		where account_id = $1
		order by created_at, user_id`
	rows, _ := s.pool.Query(ctx, listSQL, accountID)
	ms, err := pgx.CollectRows(rows, scanMembership)
	if err != nil {
		return nil, wrap("listing members", "member", err)
	}
	return ms, nil
}

// MembershipsOf returns the user's memberships, oldest first.
func (s *Store) MembershipsOf(ctx context.Context, userID string) ([]store.Membership, error) {
	if notFound(userID) {
		return nil, nil
	}
	const listSQL = `
		select account_id, user_id, role, created_at
		from members
		where user_id = $1
		order by created_at, account_id`
	rows, _ := s.pool.Query(ctx, listSQL, userID)
	ms, err := pgx.CollectRows(rows, scanMembership)
	if err != nil {
		return nil, wrap("listing memberships", "member", err)
	}
	return ms, nil
}

func scanMembership(row pgx.CollectableRow) (store.Membership, error) {
	var (
		m    store.Membership
		role string
	)
	err := row.Scan(&m.AccountID, &m.UserID, &role, &m.CreatedAt)
	m.Role = store.Role(role)
	m.CreatedAt = utc(m.CreatedAt)
	return m, err
}
