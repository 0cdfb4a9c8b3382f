package caddymodule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/health"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store"
)

func init() {
	caddy.RegisterModule((*App)(nil))
}

// Defaults of the app's options.
const (
	DefaultCacheSize = 100_000
	DefaultCacheTTL  = time.Minute
	// DefaultCacheTTLFollowing is CacheTTLFollowing's default.
	DefaultCacheTTLFollowing = time.Hour
	DefaultNegativeTTL       = time.Minute
	DefaultStoreTimeout      = 2 * time.Second
	DefaultRetention         = 30 * 24 * time.Hour
	DefaultStaleBound        = 5 * time.Second
	// DefaultUnknownKeyLookups and DefaultClientRefusals bound what keys
	// that fail may cost (see App).
	DefaultUnknownKeyLookups = 200
	DefaultClientRefusals    = 60
	// DefaultUsageInterval is how often last-used times and key activity
	// are written to the store.
	DefaultUsageInterval = 30 * time.Second
	// DefaultActivityRetention is how long key activity is kept.
	DefaultActivityRetention = 90 * 24 * time.Hour
	// Heartbeat is how often an instance reports itself to the fleet;
	// one not heard from for three heartbeats is no longer counted live.
	Heartbeat = 2 * time.Second
)

// App is the keygate app: what every keygate handler and the dashboard
// share. It owns the key store, the secret and the key cache. Configure it
// with the `keygate` global option; without one, it uses the embedded
// SQLite store in Caddy's data directory and a secret generated beside it.
type App struct {
	// Store keeps accounts, members, keys and the audit log. Default:
	// {"module":"sqlite"}, a file in Caddy's data directory.
	StoreRaw json.RawMessage `json:"store,omitempty" caddy:"namespace=keygate.stores inline_key=module"`

	// Secret from which the key digests and the sealing key are derived:
	// at least 32 bytes of random material, the same on every instance of a
	// fleet. Give it as a placeholder, {env.KEYGATE_SECRET} or
	// {file./run/secrets/keygate}, so that it stays out of the config.
	// Required with the postgres store. Default with the sqlite store: a
	// secret generated once and kept, mode 0600, in Caddy's data directory.
	// The store records a fingerprint of the secret its keys were made
	// with: an instance given another secret refuses to start. To change
	// it, give the new one here and the old one in PreviousSecrets, then
	// run `keygate secret rotate` (see the README).
	Secret string `json:"secret,omitempty"`

	// PreviousSecrets are secrets being rotated out, in the same forms as
	// Secret: a key made with one of them is still found, and its sealed
	// copy still opens, until `keygate secret rotate` has re-keyed it
	// under Secret. At most 3.
	PreviousSecrets []string `json:"previous_secrets,omitempty"`

	// CacheSize is how many valid keys the cache holds. Unknown keys are
	// remembered in as many entries again, of their own, so that a flood
	// of them never evicts a valid key. Default: 100000.
	CacheSize int `json:"cache_size,omitempty"`
	// CacheTTL is how long a valid key is trusted without asking the store
	// while no key events are followed: on the sqlite store, whose other
	// processes (the command line) announce nothing, and on the postgres
	// store while the listener is down or behind, where StaleBound bounds
	// it further. A key deleted on this instance is evicted at once.
	// Default: 1m.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`
	// CacheTTLFollowing is how long a valid key is trusted without asking
	// the store while this instance follows the fleet's key events
	// (Postgres store: listener up and caught up). A deletion then evicts
	// the key at once wherever it is cached, so this bounds only what a
	// key deleted without keygate (by hand in SQL) may keep working. The
	// moment the instance stops following, CacheTTL and StaleBound apply
	// again to every cached key, however long ago it was checked. No
	// shorter than CacheTTL; set it to CacheTTL's value to turn it off.
	// Default: 1h.
	CacheTTLFollowing caddy.Duration `json:"cache_ttl_following,omitempty"`
	// NegativeTTL is how long an unknown key is remembered as unknown, so
	// that a flood of bad keys does not become a flood of queries. A key
	// created on this instance is forgotten as unknown at once. Default: 1m.
	NegativeTTL caddy.Duration `json:"negative_ttl,omitempty"`
	// StoreTimeout bounds one store lookup; a request whose key could not
	// be looked up in time is answered 503. It bounds a readiness check
	// (keygate_ready) too. Default: 2s.
	StoreTimeout caddy.Duration `json:"store_timeout,omitempty"`

	// UnknownKeyLookups is how many store lookups per second may find no
	// key on this instance. The key format's checksum is public, so anyone
	// can make well-formed keys that do not exist; past this many a second,
	// keys not in the cache get 503 with Retry-After, never 401, until the
	// budget refills. Lookups of valid keys spend none of it, so only a
	// flood of unknown keys makes anyone wait. -1: no limit. Default: 200.
	UnknownKeyLookups int `json:"unknown_key_lookups,omitempty"`

	// ClientRefusals is how many refused requests (401) per minute one
	// client address (Caddy's client IP, which honours trusted_proxies) may
	// send before its requests get 429 with Retry-After, except those with
	// a valid key in the cache: a client that keeps sending keys that fail
	// slows down nobody else. -1: no limit. Default: 60.
	ClientRefusals int `json:"client_refusals,omitempty"`

	// ObjectRetention is how long keygate remembers which server an
	// attachment or a preview belongs to, after it last saw the object in
	// a response. A server-restricted key asking for an attachment or
	// preview keygate no longer remembers gets 404. Default: 30d.
	ObjectRetention caddy.Duration `json:"object_retention,omitempty"`

	// ActivityRetention is how long the store keeps what each key did,
	// per hour: requests let through and refused by the key's scope, and
	// the client addresses, User-Agents and servers seen, a few of each
	// per key and hour. Older hours are purged hourly, and a key's
	// activity is deleted with the key. Default: 90d.
	ActivityRetention caddy.Duration `json:"activity_retention,omitempty"`

	// UsageInterval is how often this instance writes what it gathered
	// about its keys (when each was last used, and its activity) to the
	// store, in one batch, and so how stale "last used" and the
	// dashboard's counts may be. Each instance writes at most one row per
	// active key and hour per interval, whatever its request rate: a
	// longer interval means fewer writes in a large fleet. Default: 30s.
	UsageInterval caddy.Duration `json:"usage_interval,omitempty"`

	// StaleBound is how long cached keys are trusted while this instance
	// does not receive the fleet's key events (Postgres store only): while
	// the listener is down, a key is used from the cache only if it was
	// checked, or the listener was still up, less than this long ago; older
	// entries are checked against the store again. Default: 5s.
	StaleBound caddy.Duration `json:"stale_bound,omitempty"`

	// Migrate says whether the app applies pending schema migrations when
	// it starts ("auto") or leaves them to `keygate migrate` ("off").
	// Migrations run under a lock, so instances starting together are safe.
	// Default: auto.
	Migrate string `json:"migrate,omitempty"`

	storeMod StoreModule
	secret   []byte   // nil: generate or load the local one at Start
	previous [][]byte // resolved PreviousSecrets
	logger   *zap.Logger
	rt       atomic.Pointer[runtime]
	rtKey    string
	// started is closed once Start has made its first attempt to migrate
	// and check the secrets, or when the config goes without starting:
	// until then a request waits for it (runtimeFor).
	started     chan struct{}
	startedOnce sync.Once
	stop        context.CancelFunc
	bg          sync.WaitGroup
}

// CaddyModule returns the Caddy module information.
func (*App) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "keygate", New: func() caddy.Module { return new(App) }}
}

// Provision loads the store module and resolves the settings. It opens
// nothing and writes nothing: `caddy validate` runs it.
func (a *App) Provision(ctx caddy.Context) error {
	a.logger = ctx.Logger()
	if a.StoreRaw == nil {
		a.StoreRaw = json.RawMessage(`{"module":"sqlite"}`)
	}
	mod, err := ctx.LoadModule(a, "StoreRaw")
	if err != nil {
		return fmt.Errorf("loading keygate store: %w", err)
	}
	a.storeMod = mod.(StoreModule)
	a.started = make(chan struct{})

	if a.Secret != "" {
		secret := caddy.NewReplacer().ReplaceKnown(a.Secret, "")
		if secret == "" {
			return errors.New("keygate secret is empty: if it is a placeholder such as {env.KEYGATE_SECRET}, set that variable")
		}
		a.secret = []byte(secret)
	}
	for i, p := range a.PreviousSecrets {
		prev := caddy.NewReplacer().ReplaceKnown(p, "")
		if prev == "" {
			return fmt.Errorf("keygate previous secret %d is empty: if it is a placeholder such as {env.KEYGATE_PREVIOUS_SECRET}, set that variable", i+1)
		}
		a.previous = append(a.previous, []byte(prev))
	}
	if a.secret != nil {
		if _, err := keys.NewKeyring(a.secret, a.previous...); err != nil {
			return fmt.Errorf("keygate secret: %w", err)
		}
	}
	if a.CacheSize == 0 {
		a.CacheSize = DefaultCacheSize
	}
	if a.CacheTTL == 0 {
		a.CacheTTL = caddy.Duration(DefaultCacheTTL)
	}
	if a.CacheTTLFollowing == 0 {
		a.CacheTTLFollowing = max(caddy.Duration(DefaultCacheTTLFollowing), a.CacheTTL)
	}
	if a.NegativeTTL == 0 {
		a.NegativeTTL = caddy.Duration(DefaultNegativeTTL)
	}
	if a.StoreTimeout == 0 {
		a.StoreTimeout = caddy.Duration(DefaultStoreTimeout)
	}
	if a.Migrate == "" {
		a.Migrate = "auto"
	}
	if a.ObjectRetention == 0 {
		a.ObjectRetention = caddy.Duration(DefaultRetention)
	}
	if a.UsageInterval == 0 {
		a.UsageInterval = caddy.Duration(DefaultUsageInterval)
	}
	if a.ActivityRetention == 0 {
		a.ActivityRetention = caddy.Duration(DefaultActivityRetention)
	}
	if a.StaleBound == 0 {
		a.StaleBound = caddy.Duration(DefaultStaleBound)
	}
	if a.UnknownKeyLookups == 0 {
		a.UnknownKeyLookups = DefaultUnknownKeyLookups
	}
	if a.ClientRefusals == 0 {
		a.ClientRefusals = DefaultClientRefusals
	}

	return registerMetrics(ctx.GetMetricsRegistry(), appGauges(a)...)
}

// Validate checks the settings.
func (a *App) Validate() error {
	if a.secret == nil && !a.storeMod.Local() {
		return errors.New("keygate: the postgres store needs a secret shared by every instance; add `secret {env.KEYGATE_SECRET}` and set it to at least 32 random bytes (openssl rand -base64 32)")
	}
	if a.secret == nil && len(a.previous) > 0 {
		return errors.New("keygate: previous_secrets needs a `secret`: to rotate the generated secret, give a new one as `secret` and the generated one, {file.<caddy data dir>/keygate/secret}, in previous_secrets")
	}
	switch {
	case a.CacheSize < 0:
		return errors.New("keygate: cache_size must be positive")
	case a.CacheTTL < 0, a.NegativeTTL < 0, a.StoreTimeout < 0, a.ObjectRetention < 0, a.StaleBound < 0, a.ActivityRetention < 0, a.UsageInterval < 0:
		return errors.New("keygate: cache_ttl, negative_ttl, store_timeout, object_retention, stale_bound, activity_retention and usage_interval must be positive")
	case a.CacheTTLFollowing < a.CacheTTL:
		return fmt.Errorf("keygate: cache_ttl_following (%v) must be at least cache_ttl (%v): it lengthens trust while the key events are followed, never shortens it", time.Duration(a.CacheTTLFollowing), time.Duration(a.CacheTTL))
	case a.UnknownKeyLookups < -1, a.ClientRefusals < -1:
		return errors.New("keygate: unknown_key_lookups and client_refusals must be positive, or off")
	case a.Migrate != "auto" && a.Migrate != "off":
		return fmt.Errorf("keygate: migrate must be auto or off, not %q", a.Migrate)
	}
	return nil
}

// Start opens the store, builds (or shares) the runtime, applies
// migrations and checks that the configured secrets made the store's keys.
// A database that is down does not stop Caddy: requests get 503 until it
// answers, and what could not be done is retried in the background. A
// store whose keys were made with another secret stops the start.
func (a *App) Start() error {
	defer a.markStarted()
	rt, err := a.open(true)
	if err != nil {
		return err
	}
	// Serve at once: with the cache shared across a reload it is warm, and
	// until the store is migrated and the secret checked, lookups only
	// fail (503).
	a.rt.Store(rt)
	var ctx context.Context
	ctx, a.stop = context.WithCancel(context.Background())
	// A database that does not answer must not hold up Caddy's start or a
	// reload for long: after a first try, keep trying behind it.
	first, cancel := context.WithTimeout(ctx, 5*time.Second)
	err = a.prepare(first, rt)
	cancel()
	switch {
	case errors.Is(err, auth.ErrWrongSecret), err != nil && a.storeMod.Local():
		return err
	case err != nil:
		rt.report.Report("start-up (migration and secret check), retried in the background", err)
		a.bg.Add(1)
		go a.retryPrepare(ctx, rt)
	}
	a.bg.Add(2)
	go a.purgeExpired(ctx, rt.store)
	go a.writeUsage(ctx, rt)
	return nil
}

// prepare migrates the store (when the app does) and checks the secrets.
func (a *App) prepare(ctx context.Context, rt *runtime) error {
	if a.Migrate == "auto" {
		if err := migrateOnce(ctx, rt.store); err != nil {
			return err
		}
	}
	check, err := rt.checkSecrets(ctx)
	if err != nil {
		return err
	}
	if check.Adopted > 0 {
		a.logger.Info("recorded which secret made the keys stored before keygate recorded it", zap.Int64("keys", check.Adopted))
	}
	for _, fp := range check.Unused {
		a.logger.Warn("a previous secret made no key left in the store: remove it from previous_secrets", zap.String("fingerprint", fp))
	}
	return nil
}

func (a *App) markStarted() {
	if a.started != nil {
		a.startedOnce.Do(func() { close(a.started) })
	}
}

// runtimeFor returns the runtime a request is checked with, nil before the
// app has started. A config's server can take requests before its keygate
// app has started: Caddy starts apps in no set order, and on a reload the
// new server shares the listening port at once, while the new runtime (a
// new one when the secrets change) has yet to check them. Such a request
// waits for Start's first attempt, at most store_timeout, rather than
// being answered 503 for a moment on every reload.
func (a *App) runtimeFor(ctx context.Context) *runtime {
	select {
	case <-a.started:
		return a.rt.Load()
	default:
	}
	if a.started == nil { // not provisioned
		return a.rt.Load()
	}
	wait := time.NewTimer(time.Duration(a.StoreTimeout))
	defer wait.Stop()
	select {
	case <-a.started:
	case <-wait.C:
	case <-ctx.Done():
	}
	return a.rt.Load()
}

// Stop ends the app's background work.
func (a *App) Stop() error {
	if a.stop != nil {
		a.stop()
	}
	a.bg.Wait()
	return nil
}

// Cleanup releases this config's share of the runtime; the store module
// releases the store.
func (a *App) Cleanup() error {
	a.markStarted() // a config that never started: release the waiting requests
	if a.rtKey == "" {
		return nil
	}
	_, err := runtimes.Delete(a.rtKey)
	a.rtKey = ""
	return err
}

// Manager returns what creates, reveals and deletes keys, or nil before
// the app has started. The dashboard uses it.
func (a *App) Manager() *auth.Manager {
	if rt := a.rt.Load(); rt != nil {
		return rt.manager
	}
	return nil
}

// Ready says whether this instance can check keys: the store answers and,
// on a store shared by a fleet, the key event listener follows. It is what
// the keygate_ready handler answers and the ready gauge shows.
func (a *App) Ready(ctx context.Context) health.Status {
	if rt := a.rt.Load(); rt != nil {
		return rt.ready.Status(ctx)
	}
	return health.NotStarted()
}

// Store returns the store, or nil before the app has started.
func (a *App) Store() store.Store {
	if rt := a.rt.Load(); rt != nil {
		return rt.store
	}
	return nil
}

// Interface guards
var (
	_ caddy.App          = (*App)(nil)
	_ caddy.Provisioner  = (*App)(nil)
	_ caddy.Validator    = (*App)(nil)
	_ caddy.CleanerUpper = (*App)(nil)
)
