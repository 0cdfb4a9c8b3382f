package caddymodule_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/keygate/keygate/admin"
	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/fleet"
	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
	"github.com/keygate/keygate/caddymodule/store/postgres"
)

// listTarget is the most a page of the key list or the audit log may
// take for an account of 10 000 keys.
const listTarget = 200 // milliseconds

// BenchmarkKeyList10k serves the dashboard's key list and audit log of
// an account with 10 000 keys (and 12 500 audit events) on Postgres,
// through the dashboard's handler: the first page, searches, sorts and a
// page deep in the list, and the page of a key with 30 days of activity
// at the caps, each under listTarget.
func BenchmarkKeyList10k(b *testing.B) {
	const n = 10000
	ctx := context.Background()
	dsn := pgtest.DSN(b)
	st, err := postgres.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	if err := st.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	acct, err := st.CreateAccount(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := st.SetMember(ctx, acct.ID, "admin", store.Admin); err != nil {
		b.Fatal(err)
	}
	insertKeys(b, dsn, acct.ID, n)
	kr, err := keys.NewKeyring(bytes.Repeat([]byte("bench secret "), 3))
	if err != nil {
		b.Fatal(err)
	}
	dash := admin.New(admin.Config{
		Backend:  listBackend{st: st, mgr: &auth.Manager{Store: st, Keyring: kr}},
		Identify: func(*http.Request) (string, error) { return "admin", nil },
	})

	// Cursors deep in the list: after 9 000 keys of two orders.
	deep := func(q store.KeyQuery) string {
		q.Limit = store.MaxKeyLimit
		for range 9000 / store.MaxKeyLimit {
			p, err := st.ListKeys(ctx, acct.ID, q)
			if err != nil || p.Next == "" {
				b.Fatalf("ListKeys: %v", err)
			}
			q.Cursor = p.Next
		}
		return url.QueryEscape(q.Cursor)
	}
	page, err := st.ListKeys(ctx, acct.ID, store.KeyQuery{Order: store.ByName, Limit: 1})
	if err != nil || page.Total != n {
		b.Fatalf("ListKeys = %d keys, %v", page.Total, err)
	}
	prefix := url.QueryEscape(page.Keys[0].Display)

	busy := busyKey(b, st, acct.ID)

	keysAt := "/?account=" + acct.ID
	auditAt := "/audit?account=" + acct.ID
	keyAt := "/key?account=" + acct.ID + "&key=" + busy
	for _, c := range []struct{ name, target string }{
		{"keys/first", keysAt},
		{"keys/search", keysAt + "&q=prod-12"},
		{"keys/search-none", keysAt + "&q=no+such+key"},
		{"keys/prefix", keysAt + "&q=" + prefix},
		{"keys/deep", keysAt + "&cursor=" + deep(store.KeyQuery{})},
		{"keys/name-desc", keysAt + "&sort=name&order=desc"},
		{"keys/name-desc-deep", keysAt + "&sort=name&order=desc&cursor=" + deep(store.KeyQuery{Order: store.ByName, Desc: true})},
		{"keys/last-used", keysAt + "&sort=last_used&order=desc"},
		{"keys/last-used-deep", keysAt + "&sort=last_used&order=desc&cursor=" + deep(store.KeyQuery{Order: store.ByLastUsed, Desc: true})},
		{"keys/api-500", "/api/accounts/" + acct.ID + "/keys?limit=500"},
		{"audit/first", auditAt},
		{"audit/search", auditAt + "&q=prod-12"},
		{"audit/action", auditAt + "&action=key.reveal"},
		{"audit/search-none", auditAt + "&q=no+such+key&action=key.delete"},
		{"key/page", keyAt},
		{"key/page-30-days", keyAt + "&days=30"},
		{"key/api", "/api/accounts/" + acct.ID + "/keys/" + busy},
		{"key/delete-confirm", "/delete?account=" + acct.ID + "&key=" + busy},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				rec := httptest.NewRecorder()
				dash.ServeHTTP(rec, httptest.NewRequest("GET", c.target, nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("GET %s: %d %.300s", c.target, rec.Code, rec.Body)
				}
			}
			ms := float64(b.Elapsed().Microseconds()) / 1000 / float64(b.N)
			b.ReportMetric(ms, "ms/op")
			if ms > listTarget {
				b.Errorf("%s: %.1f ms a page, over %d ms", c.name, ms, listTarget)
			}
		})
	}
}

// insertKeys adds n keys to the account in one statement, as an account
// that grew over time would have them: five name families, one key in
// ten restricted, one in three used, and a create event for each with a
// reveal for one in four.
func insertKeys(b *testing.B, dsn, accountID string, n int) {
	b.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	const keysSQL = `
		insert into api_keys (id, account_id, name, type, server_id, display, digest, sealed, created_at, created_by, last_used_at)
		select 'key_bench' || lpad(i::text, 11, '0'), $1,
		       (array['ci', 'prod', 'staging', 'dev', 'backup'])[1 + i % 5] || '-' || i,
		       case when i % 10 = 0 then 'restricted' else 'standard' end,
		       case when i % 10 = 0 then 'inbox' || (i % 7) end,
		       'kg_' || substr(md5(i::text), 1, 5),
		       sha256(convert_to(i::text, 'UTF8')),
		       '\x00'::bytea,
		       now() - make_interval(secs => $2 - i),
		       'operator:bench',
		       case when i % 3 = 0 then now() - make_interval(mins => i % 1000) end
		from generate_series(1, $2::int) as i`
	const auditSQL = `
		insert into audit_events (account_id, actor, action, key_id, key_name, key_display, remote_addr, at)
		select account_id, created_by, a.action, id, name, display, '192.0.2.1', created_at
		from api_keys, (values ('key.create'), ('key.reveal')) as a(action)
		where account_id = $1 and (a.action = 'key.create' or right(id, 2)::int % 4 = 0)
		order by created_at, a.action`
	for _, q := range []struct {
		sql  string
		args []any
	}{{keysSQL, []any{accountID, n}}, {auditSQL, []any{accountID}}, {"analyze api_keys, audit_events", nil}} {
		if _, err := conn.Exec(ctx, q.sql, q.args...); err != nil {
			b.Fatalf("%s: %v", q.sql, err)
		}
	}
}

// busyKey gives one of the account's standard keys 30 days of activity
// around the clock, every hour at the caps (10 addresses, 10 agents, 20
// servers): the most a key's page reads. It returns the key's id.
func busyKey(b *testing.B, st store.Store, accountID string) string {
	b.Helper()
	ctx := context.Background()
	const id = "key_bench00000000003" // i = 3: standard, used
	now := store.ActivityHourOf(time.Now())
	var hours []store.ActivityHour
	for h := range 30 * 24 {
		hour := store.ActivityHour{KeyID: id, Hour: now.Add(-time.Duration(h) * time.Hour), Allowed: int64(1000 + h), Refused: int64(h % 7)}
		for i := range store.MaxActivityServers {
			if i < store.MaxActivityAddresses {
				hour.Values = append(hour.Values,
					store.ActivityValue{Kind: store.ActivityAddress, Value: fmt.Sprintf("203.0.113.%d", (h+i)%250), Requests: 100},
					store.ActivityValue{Kind: store.ActivityAgent, Value: fmt.Sprintf("mailosaur-node/11.%d.%d", h%20, i), Requests: 100})
			}
			hour.Values = append(hour.Values, store.ActivityValue{Kind: store.ActivityServer, Value: fmt.Sprintf("srv%05d", (h*7+i)%400), Requests: 50})
		}
		hours = append(hours, hour)
	}
	for batch := range slices.Chunk(hours, 100) {
		if err := st.RecordActivity(ctx, batch); err != nil {
			b.Fatalf("recording activity: %v", err)
		}
	}
	return id
}

// listBackend is the dashboard's backend of one store, without a fleet.
type listBackend struct {
	st  store.Store
	mgr *auth.Manager
}

func (l listBackend) Store() store.Store     { return l.st }
func (l listBackend) Manager() *auth.Manager { return l.mgr }
func (listBackend) Receipt(context.Context, store.Key) (fleet.Receipt, bool, error) {
	return fleet.Receipt{}, false, nil
}
func (listBackend) Instances(context.Context) ([]store.Instance, error) { return nil, nil }
