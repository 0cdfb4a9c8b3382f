package postgres

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

var _ store.FleetStore = (*Store)(nil)

// channelSQL names the NOTIFY channel of key events. NOTIFY reaches every
// listener of the database, whatever its schema, so each schema (each
// deployment) has a channel of its own. A payload reads
// "<seq> <op> <digest hex> <commit time, unix microseconds> <key id>".
const channelSQL = `'keygate_key_events_' || substr(md5(current_schema()), 1, 16)`

// announce numbers a key event, keeps it and announces it, inside the
// transaction that makes the change: the notification is delivered only
// if, and when, the change commits.
func announce(ctx context.Context, tx pgx.Tx, op string, digest keys.Digest, keyID string, at time.Time) (int64, error) {
	var seq int64
	if err := tx.QueryRow(ctx, `update key_event_seq set value = value + 1 returning value`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("numbering key event: %w", err)
	}
	const insertSQL = `insert into key_events (seq, op, digest, key_id, at) values ($1, $2, $3, $4, $5)`
	if _, err := tx.Exec(ctx, insertSQL, seq, op, digest[:], keyID, at); err != nil {
		return 0, fmt.Errorf("recording key event: %w", err)
	}
	payload := fmt.Sprintf("%d %s %x %d %s", seq, op, digest[:], at.UnixMicro(), keyID)
	if _, err := tx.Exec(ctx, `select pg_notify(`+channelSQL+`, $1)`, payload); err != nil {
		return 0, fmt.Errorf("announcing key event: %w", err)
	}
	return seq, nil
}

func parsePayload(p string) (store.KeyEvent, error) {
	f := strings.Fields(p)
	if len(f) != 5 {
		return store.KeyEvent{}, fmt.Errorf("key event payload has %d fields, want 5", len(f))
	}
	seq, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil || seq <= 0 {
		return store.KeyEvent{}, errors.New("key event payload: bad sequence number")
	}
	if f[1] != store.OpCreate && f[1] != store.OpDelete {
		return store.KeyEvent{}, errors.New("key event payload: bad operation")
	}
	var ev store.KeyEvent
	if n, err := hex.Decode(ev.Digest[:], []byte(f[2])); err != nil || n != len(ev.Digest) {
		return store.KeyEvent{}, errors.New("key event payload: bad digest")
	}
	us, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil {
		return store.KeyEvent{}, errors.New("key event payload: bad time")
	}
	ev.Seq, ev.Op, ev.At, ev.KeyID = seq, f[1], time.UnixMicro(us).UTC(), f[4]
	return ev, nil
}

// KeyEventsSince returns events after a sequence number, in order.
func (s *Store) KeyEventsSince(ctx context.Context, after int64, limit int) ([]store.KeyEvent, error) {
	if limit <= 0 {
		limit = 1000
	}
	const sinceSQL = `select seq, op, digest, coalesce(key_id, ''), at from key_events where seq > $1 order by seq limit $2`
	rows, _ := s.pool.Query(ctx, sinceSQL, after, limit)
	evs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.KeyEvent, error) {
		var ev store.KeyEvent
		var digest []byte
		if err := row.Scan(&ev.Seq, &ev.Op, &digest, &ev.KeyID, &ev.At); err != nil {
			return ev, err
		}
		copy(ev.Digest[:], digest)
		ev.At = utc(ev.At)
		return ev, nil
	})
	if err != nil {
		return nil, wrap("reading key events", "key event", err)
	}
	return evs, nil
}

// LastKeyEvent returns the highest committed sequence number.
func (s *Store) LastKeyEvent(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.pool.QueryRow(ctx, `select value from key_event_seq`).Scan(&seq); err != nil {
		return 0, wrap("reading the last key event", "key event", err)
	}
	return seq, nil
}

// PruneKeyEvents deletes events committed before the time. The counter
// keeps its value, so sequence numbers never repeat.
func (s *Store) PruneKeyEvents(ctx context.Context, before time.Time) (int64, error) {
	tag, err := s.pool.Exec(ctx, `delete from key_events where at < $1`, utc(before))
	if err != nil {
		return 0, wrap("pruning key events", "key event", err)
	}
	return tag.RowsAffected(), nil
}

// ListenKeyEvents listens on a connection of its own, not the pool's: a
// LISTEN belongs to its session. The channel is named from the pool's
// schema, where the events are announced, whatever the listen DSN's search
// path. A connection that stays silent is pinged every keepalive, so a
// half-open one (a failover, a dropped NAT entry) is noticed in time.
func (s *Store) ListenKeyEvents(ctx context.Context, dsn string, keepalive time.Duration, connected func() error, alive func(), event func(store.KeyEvent) error) error {
	if keepalive <= 0 {
		keepalive = 5 * time.Second
	}
	var channel *string // null when no schema on the search_path exists
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := s.pool.QueryRow(cctx, `select `+channelSQL).Scan(&channel); err != nil {
		return fmt.Errorf("naming the key event channel: %w", err)
	}
	if channel == nil {
		return fmt.Errorf("naming the key event channel: %w", errNoSchema)
	}
	conn, err := connect(cctx, dsn)
	if err != nil {
		return fmt.Errorf("connecting the key event listener: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(cctx, "listen "+pgx.Identifier{*channel}.Sanitize()); err != nil {
		return fmt.Errorf("listening for key events: %w", err)
	}
	if err := connected(); err != nil {
		return err
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, keepalive)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		switch {
		case err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded):
			pctx, cancel := context.WithTimeout(ctx, keepalive)
			err = conn.Ping(pctx)
			cancel()
			if err != nil {
				return fmt.Errorf("pinging the key event listener: %w", err)
			}
			alive()
			continue
		case err != nil:
			return fmt.Errorf("waiting for key events: %w", err)
		}
		alive()
		ev, err := parsePayload(n.Payload)
		if err != nil {
			// Not ours to interpret: treat it as a gap, which the caller
			// repairs from key_events.
			return fmt.Errorf("reading a key event notification: %w", err)
		}
		if err := event(ev); err != nil {
			return err
		}
	}
}

// Heartbeat inserts or updates the instance's row.
func (s *Store) Heartbeat(ctx context.Context, in store.Instance) error {
	const upsertSQL = `
		insert into instances (id, address, listener_up, applied_seq, applied_at, started_at, heartbeat_at, secrets)
		values ($1, $2, $3, $4, $5, $6, $7, $8)
		on conflict (id) do update set
			address = excluded.address, listener_up = excluded.listener_up,
			applied_seq = excluded.applied_seq, applied_at = excluded.applied_at,
			heartbeat_at = excluded.heartbeat_at, secrets = excluded.secrets`
	var appliedAt *time.Time
	if !in.AppliedAt.IsZero() {
		t := utc(in.AppliedAt)
		appliedAt = &t
	}
	if err := store.CheckText(in.ID, in.Address); err != nil {
		return fmt.Errorf("recording heartbeat: %w", err)
	}
	for _, fp := range in.Secrets {
		if err := store.ValidateFingerprint(fp); err != nil {
			return fmt.Errorf("recording heartbeat: %w", err)
		}
	}
	secrets := in.Secrets
	if secrets == nil {
		secrets = []string{}
	}
	_, err := s.pool.Exec(ctx, upsertSQL, in.ID, in.Address, in.ListenerUp, in.AppliedSeq, appliedAt, utc(in.StartedAt), now(), secrets)
	if err != nil {
		return wrap("recording heartbeat", "instance", err)
	}
	return nil
}

// RemoveInstance deletes the instance's row.
func (s *Store) RemoveInstance(ctx context.Context, id string) error {
	if _, err := s.pool.Exec(ctx, `delete from instances where id = $1`, id); err != nil {
		return wrap("removing instance", "instance", err)
	}
	return nil
}

// ListInstances returns the instances heard from since the time.
func (s *Store) ListInstances(ctx context.Context, since time.Time) ([]store.Instance, error) {
	const listSQL = `
		select id, address, listener_up, applied_seq, applied_at, started_at, heartbeat_at, secrets
		from instances where heartbeat_at >= $1 order by started_at, id`
	rows, _ := s.pool.Query(ctx, listSQL, utc(since))
	ins, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Instance, error) {
		var in store.Instance
		var appliedAt *time.Time
		err := row.Scan(&in.ID, &in.Address, &in.ListenerUp, &in.AppliedSeq, &appliedAt, &in.StartedAt, &in.Heartbeat, &in.Secrets)
		if appliedAt != nil {
			in.AppliedAt = utc(*appliedAt)
		}
		in.StartedAt, in.Heartbeat = utc(in.StartedAt), utc(in.Heartbeat)
		return in, err
	})
	if err != nil {
		return nil, wrap("listing instances", "instance", err)
	}
	return ins, nil
}

// lsn reads the write-ahead log position after a commit: the insert
// position, at or past the commit record whatever synchronous_commit says.
// 0 when it cannot be read, which no standby is counted as having.
func (s *Store) lsn(ctx context.Context) int64 {
	var lsn int64
	if err := s.pool.QueryRow(ctx, `select (pg_current_wal_insert_lsn() - '0/0')::bigint`).Scan(&lsn); err != nil {
		return 0
	}
	return lsn
}

// standbysSQL counts the standbys a failover could promote: every
// physical replication slot that is not a backup's temporary one, and
// every walsender streaming without a slot (a base backup's are not
// standbys; a logical subscriber always has a logical slot). A slot's
// restart_lsn follows what its standby flushed, so a disconnected standby
// still counts, with what it had. pg_stat_replication shows its positions
// only to roles with pg_read_all_stats (pg_monitor); to others a standby
// without a slot is never counted as having flushed anything.
const standbysSQL = `
	with standbys as (
		select greatest(s.restart_lsn, r.flush_lsn) as flushed
		from pg_replication_slots s left join pg_stat_replication r on r.pid = s.active_pid
		where s.slot_type = 'physical' and not s.temporary
		union all
		select r.flush_lsn from pg_stat_replication r
		where r.state <> 'backup'
		and not exists (select 1 from pg_replication_slots s where s.active_pid = r.pid)
	)
	select count(*), count(*) filter (where flushed - '0/0' >= $1 and $1 > 0) from standbys`

// Standbys counts the database's standbys and those that have flushed lsn.
func (s *Store) Standbys(ctx context.Context, lsn int64) (known, flushed int, err error) {
	if err := s.pool.QueryRow(ctx, standbysSQL, lsn).Scan(&known, &flushed); err != nil {
		return 0, 0, wrap("counting standbys", "standby", err)
	}
	return known, flushed, nil
}
