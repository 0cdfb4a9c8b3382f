package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/store"
)

// RecordActivity writes a flush's activity in one transaction of four
// statements, whatever its size: it share-locks the keys (in id order, as
// DeleteKey and other instances lock them), adds to the hours' rows,
// which locks them until it commits, so that instances writing the same
// hours take turns; reads the values those hours hold; and writes the
// values that fit (store.FitActivity), counting the rest in the hours'
// others.
func (s *Store) RecordActivity(ctx context.Context, hours []store.ActivityHour) error {
	const doing = "recording key activity"
	hours, err := store.PrepareActivity(hours)
	if err != nil {
		return fmt.Errorf("%s: %w", doing, err)
	}
	if len(hours) == 0 {
		return nil
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		live, err := lockLiveKeys(ctx, tx, hours)
		if err != nil {
			return err
		}
		hours = keepLive(hours, live)
		if len(hours) == 0 {
			return nil
		}
		if err := addActivityHours(ctx, tx, hours); err != nil {
			return err
		}
		stored, err := storedActivityValues(ctx, tx, hours)
		if err != nil {
			return err
		}
		return addActivityValues(ctx, tx, hours, stored)
	})
	if err != nil {
		return wrap(doing, "key", err)
	}
	return nil
}

// keepLive returns the hours of the live keys.
func keepLive(hours []store.ActivityHour, live map[string]bool) []store.ActivityHour {
	out := hours[:0]
	for _, h := range hours {
		if live[h.KeyID] {
			out = append(out, h)
		}
	}
	return out
}

// lockLiveKeys share-locks the hours' keys that exist, in id order: a
// DeleteKey waits for the flush, or the flush skips the key it deleted.
func lockLiveKeys(ctx context.Context, tx pgx.Tx, hours []store.ActivityHour) (map[string]bool, error) {
	ids := make([]string, 0, len(hours))
	for _, h := range hours {
		if n := len(ids); n == 0 || ids[n-1] != h.KeyID { // hours are sorted by key
			ids = append(ids, h.KeyID)
		}
	}
	const lockSQL = `select id from api_keys where id = any($1) order by id for key share`
	rows, _ := tx.Query(ctx, lockSQL, ids)
	found, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	live := make(map[string]bool, len(found))
	for _, id := range found {
		live[id] = true
	}
	return live, nil
}

// addActivityHours adds the hours' counts to their rows, in key and hour
// order.
func addActivityHours(ctx context.Context, tx pgx.Tx, hours []store.ActivityHour) error {
	n := len(hours)
	ids, ats := make([]string, n), make([]time.Time, n)
	allowed, refused := make([]int64, n), make([]int64, n)
	var others [store.NumActivityKinds][]int64
	for k := range others {
		others[k] = make([]int64, n)
	}
	for i, h := range hours {
		ids[i], ats[i], allowed[i], refused[i] = h.KeyID, h.Hour, h.Allowed, h.Refused
		for k := range others {
			others[k][i] = h.Others[k]
		}
	}
	const addSQL = `
		insert into key_activity as a (key_id, hour, allowed, refused, other_addresses, other_agents, other_servers)
		select * from unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[])
		on conflict (key_id, hour) do update
		set allowed = a.allowed + excluded.allowed,
		    refused = a.refused + excluded.refused,
		    other_addresses = a.other_addresses + excluded.other_addresses,
		    other_agents = a.other_agents + excluded.other_agents,
		    other_servers = a.other_servers + excluded.other_servers`
	_, err := tx.Exec(ctx, addSQL, ids, ats, allowed, refused, others[store.ActivityAddress], others[store.ActivityAgent], others[store.ActivityServer])
	return err
}

// activitySlot names one key's hour.
type activitySlot struct {
	key  string
	hour int64 // unix seconds
}

// storedActivityValues reads the values the hours hold, by hour.
func storedActivityValues(ctx context.Context, tx pgx.Tx, hours []store.ActivityHour) (map[activitySlot][]store.ActivityValue, error) {
	ids, ats := make([]string, len(hours)), make([]time.Time, len(hours))
	for i, h := range hours {
		ids[i], ats[i] = h.KeyID, h.Hour
	}
	const storedSQL = `
		select v.key_id, v.hour, v.kind, v.value
		from key_activity_values v
		join unnest($1::text[], $2::timestamptz[]) as h(key_id, hour) on v.key_id = h.key_id and v.hour = h.hour`
	rows, _ := tx.Query(ctx, storedSQL, ids, ats)
	defer rows.Close()
	stored := map[activitySlot][]store.ActivityValue{}
	for rows.Next() {
		var (
			id, kind, value string
			at              time.Time
		)
		if err := rows.Scan(&id, &at, &kind, &value); err != nil {
			return nil, err
		}
		k, err := store.ParseActivityKind(kind)
		if err != nil {
			return nil, err
		}
		slot := activitySlot{id, at.Unix()}
		stored[slot] = append(stored[slot], store.ActivityValue{Kind: k, Value: value})
	}
	return stored, rows.Err()
}

// addActivityValues writes the values that fit their hours' caps and adds
// the requests of the others to the hours' others.
func addActivityValues(ctx context.Context, tx pgx.Tx, hours []store.ActivityHour, stored map[activitySlot][]store.ActivityValue) error {
	var (
		ids, kinds, values []string
		ats                []time.Time
		requests           []int64
		overIDs            []string
		overAts            []time.Time
		over               [store.NumActivityKinds][]int64
	)
	for _, h := range hours {
		write, o := store.FitActivity(h, stored[activitySlot{h.KeyID, h.Hour.Unix()}])
		for _, v := range write {
			ids, ats, kinds = append(ids, h.KeyID), append(ats, h.Hour), append(kinds, v.Kind.String())
			values, requests = append(values, v.Value), append(requests, v.Requests)
		}
		if o != [store.NumActivityKinds]int64{} {
			overIDs, overAts = append(overIDs, h.KeyID), append(overAts, h.Hour)
			for k := range over {
				over[k] = append(over[k], o[k])
			}
		}
	}
	var b pgx.Batch
	if len(ids) > 0 {
		const valuesSQL = `
			insert into key_activity_values as v (key_id, hour, kind, value, requests)
			select * from unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::bigint[])
			on conflict (key_id, hour, kind, value) do update
			set requests = v.requests + excluded.requests`
		b.Queue(valuesSQL, ids, ats, kinds, values, requests)
	}
	if len(overIDs) > 0 {
		const overSQL = `
			update key_activity a
			set other_addresses = a.other_addresses + o.addresses,
			    other_agents = a.other_agents + o.agents,
			    other_servers = a.other_servers + o.servers
			from unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::bigint[]) as o(key_id, hour, addresses, agents, servers)
			where a.key_id = o.key_id and a.hour = o.hour`
		b.Queue(overSQL, overIDs, overAts, over[store.ActivityAddress], over[store.ActivityAgent], over[store.ActivityServer])
	}
	if b.Len() == 0 {
		return nil
	}
	return tx.SendBatch(ctx, &b).Close()
}

// KeyActivity reads a key's hours and values since the hour of since, in
// one round trip.
func (s *Store) KeyActivity(ctx context.Context, accountID, keyID string, since time.Time) (store.KeyActivity, error) {
	const doing = "reading key activity"
	if err := store.CheckKeyActivity(accountID, keyID, since); err != nil {
		return store.KeyActivity{}, fmt.Errorf("%s: %w", doing, err)
	}
	from := store.ActivityHourOf(since)
	const (
		keySQL   = `select exists (select 1 from api_keys where account_id = $1 and id = $2)`
		hoursSQL = `
			select hour, allowed, refused, other_addresses, other_agents, other_servers
			from key_activity where key_id = $1 and hour >= $2`
		valuesSQL = `
			select kind, value, sum(requests)::bigint, max(hour)
			from key_activity_values where key_id = $1 and hour >= $2
			group by kind, value`
	)
	var (
		exists bool
		hours  []store.ActivityHour
		values []store.ActivitySeen
	)
	var b pgx.Batch
	b.Queue(keySQL, accountID, keyID).QueryRow(func(row pgx.Row) error { return row.Scan(&exists) })
	b.Queue(hoursSQL, keyID, from).Query(func(rows pgx.Rows) error {
		var err error
		hours, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.ActivityHour, error) {
			var h store.ActivityHour
			err := row.Scan(&h.Hour, &h.Allowed, &h.Refused, &h.Others[store.ActivityAddress], &h.Others[store.ActivityAgent], &h.Others[store.ActivityServer])
			return h, err
		})
		return err
	})
	b.Queue(valuesSQL, keyID, from).Query(func(rows pgx.Rows) error {
		var err error
		values, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.ActivitySeen, error) {
			var (
				v    store.ActivitySeen
				kind string
			)
			if err := row.Scan(&kind, &v.Value, &v.Requests, &v.LastSeen); err != nil {
				return v, err
			}
			v.Kind, err = store.ParseActivityKind(kind)
			return v, err
		})
		return err
	})
	if err := s.pool.SendBatch(ctx, &b).Close(); err != nil {
		return store.KeyActivity{}, wrap(doing, "key", err)
	}
	if !exists {
		return store.KeyActivity{}, fmt.Errorf("%s: key %w", doing, store.ErrNotFound)
	}
	return store.SummarizeActivity(hours, values), nil
}

// PurgeActivity deletes the hours that began before the time; their
// values go with them.
func (s *Store) PurgeActivity(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `delete from key_activity where hour < $1`, utc(before))
	if err != nil {
		return 0, wrap("purging key activity", "key", err)
	}
	return tag.RowsAffected(), nil
}
