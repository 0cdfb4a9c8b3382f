package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/keygate/keygate/caddymodule/store"
)

// The statements of RecordActivity, prepared once per flush.
const (
	// The WHERE also settles the upsert's parse (SQLite's rule for
	// INSERT … SELECT … ON CONFLICT).
	addHourSQL = `
		insert into key_activity as a (key_id, hour, allowed, refused, other_addresses, other_agents, other_servers)
		select ?1, ?2, ?3, ?4, ?5, ?6, ?7 where exists (select 1 from api_keys where id = ?1)
		on conflict (key_id, hour) do update
		set allowed = a.allowed + excluded.allowed,
		    refused = a.refused + excluded.refused,
		    other_addresses = a.other_addresses + excluded.other_addresses,
		    other_agents = a.other_agents + excluded.other_agents,
		    other_servers = a.other_servers + excluded.other_servers`
	storedValuesSQL = `select kind, value from key_activity_values where key_id = ? and hour = ?`
	addValueSQL     = `
		insert into key_activity_values as v (key_id, hour, kind, value, requests)
		values (?, ?, ?, ?, ?)
		on conflict (key_id, hour, kind, value) do update
		set requests = v.requests + excluded.requests`
	addOverSQL = `
		update key_activity
		set other_addresses = other_addresses + ?, other_agents = other_agents + ?, other_servers = other_servers + ?
		where key_id = ? and hour = ?`
)

// RecordActivity writes a flush's activity in one transaction, which
// holds SQLite's write lock: the values an hour holds cannot change
// between reading them and writing those that fit (store.FitActivity).
// Hours of keys that do not exist are skipped.
func (s *Store) RecordActivity(ctx context.Context, hours []store.ActivityHour) error {
	const doing = "recording key activity"
	hours, err := store.PrepareActivity(hours)
	if err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	if len(hours) == 0 {
		return nil
	}
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		w, err := prepareActivityWriter(ctx, tx)
		if err != nil {
			return err
		}
		defer w.close()
		for _, h := range hours {
			if err := w.write(ctx, h); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return wrap(doing, "key", err)
	}
	return nil
}

// activityWriter holds RecordActivity's prepared statements.
type activityWriter struct {
	addHour, stored, addValue, addOver *sql.Stmt
}

func prepareActivityWriter(ctx context.Context, tx *sql.Tx) (*activityWriter, error) {
	w := &activityWriter{}
	for _, p := range []struct {
		dst   **sql.Stmt
		query string
	}{{&w.addHour, addHourSQL}, {&w.stored, storedValuesSQL}, {&w.addValue, addValueSQL}, {&w.addOver, addOverSQL}} {
		stmt, err := tx.PrepareContext(ctx, p.query)
		if err != nil {
			w.close()
			return nil, err
		}
		*p.dst = stmt
	}
	return w, nil
}

func (w *activityWriter) close() {
	for _, st := range []*sql.Stmt{w.addHour, w.stored, w.addValue, w.addOver} {
		if st != nil {
			st.Close()
		}
	}
}

// write adds one hour of a key, if the key exists.
func (w *activityWriter) write(ctx context.Context, h store.ActivityHour) error {
	at := micros(h.Hour)
	res, err := w.addHour.ExecContext(ctx, h.KeyID, at, h.Allowed, h.Refused,
		h.Others[store.ActivityAddress], h.Others[store.ActivityAgent], h.Others[store.ActivityServer])
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return err // no such key
	}
	stored, err := w.storedValues(ctx, h.KeyID, at)
	if err != nil {
		return err
	}
	write, over := store.FitActivity(h, stored)
	for _, v := range write {
		if _, err := w.addValue.ExecContext(ctx, h.KeyID, at, v.Kind.String(), v.Value, v.Requests); err != nil {
			return err
		}
	}
	if over == [store.NumActivityKinds]int64{} {
		return nil
	}
	_, err = w.addOver.ExecContext(ctx, over[store.ActivityAddress], over[store.ActivityAgent], over[store.ActivityServer], h.KeyID, at)
	return err
}

func (w *activityWriter) storedValues(ctx context.Context, keyID string, at int64) ([]store.ActivityValue, error) {
	rows, err := w.stored.QueryContext(ctx, keyID, at)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var vs []store.ActivityValue
	for rows.Next() {
		var kind, value string
		if err := rows.Scan(&kind, &value); err != nil {
			return nil, err
		}
		k, err := store.ParseActivityKind(kind)
		if err != nil {
			return nil, err
		}
		vs = append(vs, store.ActivityValue{Kind: k, Value: value})
	}
	return vs, rows.Err()
}

// KeyActivity reads a key's hours and values since the hour of since.
func (s *Store) KeyActivity(ctx context.Context, accountID, keyID string, since time.Time) (store.KeyActivity, error) {
	const doing = "reading key activity"
	if err := store.CheckKeyActivity(accountID, keyID, since); err != nil {
		return store.KeyActivity{}, fmt.Errorf("%s: %w", doing, err)
	}
	var one int
	err := s.db.QueryRowContext(ctx, `select 1 from api_keys where account_id = ? and id = ?`, accountID, keyID).Scan(&one)
	if err != nil {
		return store.KeyActivity{}, wrap(doing, "key", err)
	}
	from := micros(store.ActivityHourOf(since))
	hours, err := s.activityHours(ctx, keyID, from)
	if err != nil {
		return store.KeyActivity{}, wrap(doing, "key", err)
	}
	values, err := s.activityValues(ctx, keyID, from)
	if err != nil {
		return store.KeyActivity{}, wrap(doing, "key", err)
	}
	return store.SummarizeActivity(hours, values), nil
}

func (s *Store) activityHours(ctx context.Context, keyID string, from int64) ([]store.ActivityHour, error) {
	const hoursSQL = `
		select hour, allowed, refused, other_addresses, other_agents, other_servers
		from key_activity where key_id = ? and hour >= ?`
	rows, err := s.db.QueryContext(ctx, hoursSQL, keyID, from)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var hours []store.ActivityHour
	for rows.Next() {
		var (
			h  store.ActivityHour
			at int64
		)
		if err := rows.Scan(&at, &h.Allowed, &h.Refused, &h.Others[store.ActivityAddress], &h.Others[store.ActivityAgent], &h.Others[store.ActivityServer]); err != nil {
			return nil, err
		}
		h.Hour = fromMicros(at)
		hours = append(hours, h)
	}
	return hours, rows.Err()
}

func (s *Store) activityValues(ctx context.Context, keyID string, from int64) ([]store.ActivitySeen, error) {
	const valuesSQL = `
		select kind, value, sum(requests), max(hour)
		from key_activity_values where key_id = ? and hour >= ?
		group by kind, value`
	rows, err := s.db.QueryContext(ctx, valuesSQL, keyID, from)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var values []store.ActivitySeen
	for rows.Next() {
		var (
			v    store.ActivitySeen
			kind string
			last int64
		)
		if err := rows.Scan(&kind, &v.Value, &v.Requests, &last); err != nil {
			return nil, err
		}
		if v.Kind, err = store.ParseActivityKind(kind); err != nil {
			return nil, err
		}
		v.LastSeen = fromMicros(last)
		values = append(values, v)
	}
	return values, rows.Err()
}

// PurgeActivity deletes the hours that began before the time; their
// values go with them.
func (s *Store) PurgeActivity(ctx context.Context, before time.Time) (int64, error) {
	res, err := s.db.ExecContext(ctx, `delete from key_activity where hour < ?`, micros(before))
	if err != nil {
		return 0, wrap("purging key activity", "key", err)
	}
	return res.RowsAffected()
}
