package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/cache"
	"github.com/keygate/keygate/caddymodule/fleet"
	"github.com/keygate/keygate/caddymodule/health"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/scope"
	"github.com/keygate/keygate/caddymodule/store"
)

func init() {
	caddy.RegisterModule((*App)(nil))
}

// Defaults of the app's options.
const (
	DefaultCacheSize    = 100_000
	DefaultCacheTTL     = time.Minute
	DefaultNegativeTTL  = time.Minute
	DefaultStoreTimeout = 2 * time.Second
	DefaultRetention    = 30 * 24 * time.Hour
	DefaultStaleBound   = 5 * time.Second
	// DefaultUnknownKeyLookups and DefaultClientRefusals bound what keys
	// that fail may cost (see App).
	DefaultUnknownKeyLookups = 200
	DefaultClientRefusals    = 60
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
	// Changing it makes every existing key invalid.
	Secret string `json:"secret,omitempty"`

	// CacheSize is how many valid keys the cache holds. Unknown keys are
	// remembered in as many entries again, of their own, so that a flood
	// of them never evicts a valid key. Default: 100000.
	CacheSize int `json:"cache_size,omitempty"`
	// CacheTTL is how long a valid key is trusted without asking the store.
	// A key deleted on this instance is evicted at once; on other instances
	// of a fleet it is refused at the latest after this long. Default: 1m.
	CacheTTL caddy.Duration `json:"cache_ttl,omitempty"`
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
	secret   []byte // nil: generate or load the local one at Start
	logger   *zap.Logger
	rt       atomic.Pointer[runtime]
	rtKey    string
	stop     context.CancelFunc
	bg       sync.WaitGroup
}

// runtime is what the app builds at Start: the parts of keygate that do
// the work. It is shared across config reloads while the store, secret and
// cache settings stay the same, so a reload keeps the cache warm and a key
// deleted through the new config is evicted from the cache the old one is
// still draining requests with.
type runtime struct {
	store    store.Store
	usage    *auth.Usage
	verifier *auth.Verifier
	manager  *auth.Manager
	objects  *scope.Objects
	follower *fleet.Follower // nil for a store that is not shared by a fleet
	storeID  string          // the follower's share of the store
	report   *health.Reporter
	ready    *health.Checker
	stop     context.CancelFunc
	done     chan struct{}
}

// Destruct stops following key events when the last config using the
// runtime is gone, then releases the follower's share of the store.
func (rt *runtime) Destruct() error {
	if rt.stop == nil {
		return nil
	}
	rt.stop()
	<-rt.done
	_, err := stores.Delete(rt.storeID)
	return err
}

var runtimes = caddy.NewUsagePool()

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

	if a.Secret != "" {
		secret := caddy.NewReplacer().ReplaceKnown(a.Secret, "")
		if secret == "" {
			return errors.New("keygate secret is empty: if it is a placeholder such as {env.KEYGATE_SECRET}, set that variable")
		}
		a.secret = []byte(secret)
		if _, err := keys.NewKeyring(a.secret); err != nil {
			return fmt.Errorf("keygate secret: %w", err)
		}
	}
	if a.CacheSize == 0 {
		a.CacheSize = DefaultCacheSize
	}
	if a.CacheTTL == 0 {
		a.CacheTTL = caddy.Duration(DefaultCacheTTL)
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
	if a.StaleBound == 0 {
		a.StaleBound = caddy.Duration(DefaultStaleBound)
	}
	if a.UnknownKeyLookups == 0 {
		a.UnknownKeyLookups = DefaultUnknownKeyLookups
	}
	if a.ClientRefusals == 0 {
		a.ClientRefusals = DefaultClientRefusals
	}

	listenerUp := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "keygate", Name: "listener_up",
		Help: "1 while this instance receives the fleet's key events (Postgres store), else 0.",
	}, func() float64 {
		if rt := a.rt.Load(); rt != nil && rt.follower != nil && rt.follower.Up() {
			return 1
		}
		return 0
	})
	cacheEntries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "keygate", Name: "cache_entries",
		Help: "Keys in the cache, valid and unknown.",
	}, func() float64 {
		if rt := a.rt.Load(); rt != nil {
			return float64(rt.verifier.CacheLen())
		}
		return 0
	})
	ready := newReadyGauge(func() bool { return a.Ready(context.Background()).Ready })
	return registerMetrics(ctx.GetMetricsRegistry(), cacheEntries, listenerUp, ready)
}

// Validate checks the settings.
func (a *App) Validate() error {
	if a.secret == nil && !a.storeMod.Local() {
		return errors.New("keygate: the postgres store needs a secret shared by every instance; add `secret {env.KEYGATE_SECRET}` and set it to at least 32 random bytes (openssl rand -base64 32)")
	}
	switch {
	case a.CacheSize < 0:
		return errors.New("keygate: cache_size must be positive")
	case a.CacheTTL < 0, a.NegativeTTL < 0, a.StoreTimeout < 0, a.ObjectRetention < 0, a.StaleBound < 0:
		return errors.New("keygate: cache_ttl, negative_ttl, store_timeout, object_retention and stale_bound must be positive")
	case a.UnknownKeyLookups < -1, a.ClientRefusals < -1:
		return errors.New("keygate: unknown_key_lookups and client_refusals must be positive, or off")
	case a.Migrate != "auto" && a.Migrate != "off":
		return fmt.Errorf("keygate: migrate must be auto or off, not %q", a.Migrate)
	}
	return nil
}

// Start opens the store, builds (or shares) the runtime and applies
// migrations. A database that is down does not stop Caddy: requests get 503
// until it answers, and migrations are retried in the background.
func (a *App) Start() error {
	rt, err := a.open(true)
	if err != nil {
		return err
	}
	// Serve at once: with the cache shared across a reload it is warm, and
	// a store not yet migrated only fails lookups (503) until it is.
	a.rt.Store(rt)
	var ctx context.Context
	ctx, a.stop = context.WithCancel(context.Background())
	if a.Migrate == "auto" {
		// A database that does not answer must not hold up Caddy's start
		// or a reload for long: after a first try, keep trying behind it.
		first, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := migrateOnce(first, rt.store)
		cancel()
		if err != nil {
			if a.storeMod.Local() {
				return err
			}
			rt.report.Report("migration, retried in the background", err)
			a.bg.Add(1)
			go a.retryMigrate(ctx, rt)
		}
	}
	a.bg.Add(2)
	go a.purgeObjects(ctx, rt.store)
	go a.writeLastUsed(ctx, rt)
	return nil
}

// LastUsedInterval is how often the times keys were last used are written
// to the store: "last used" is accurate to within this much.
const LastUsedInterval = 30 * time.Second

// writeLastUsed writes the gathered last-used times in batches, and once
// more when the app stops.
func (a *App) writeLastUsed(ctx context.Context, rt *runtime) {
	defer a.bg.Done()
	t := time.NewTicker(LastUsedInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			a.flushLastUsed(context.Background(), rt)
			return
		case <-t.C:
			a.flushLastUsed(ctx, rt)
		}
	}
}

func (a *App) flushLastUsed(ctx context.Context, rt *runtime) {
	used := rt.usage.Drain()
	if len(used) == 0 {
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := rt.store.TouchKeys(wctx, used); err != nil {
		rt.usage.Restore(used) // next time
		a.logger.Warn("recording when keys were last used failed; will retry", zap.Error(err), zap.Int("keys", len(used)))
	}
}

// purgeObjects forgets, hourly, the objects not seen within the retention.
// Every instance of a fleet does it; the deletes are idempotent.
func (a *App) purgeObjects(ctx context.Context, st store.Store) {
	defer a.bg.Done()
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		pctx, cancel := context.WithTimeout(ctx, time.Minute)
		n, err := st.PurgeObjects(pctx, time.Now().Add(-time.Duration(a.ObjectRetention)))
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			a.logger.Warn("purging expired objects failed", zap.Error(err))
		case n > 0:
			a.logger.Info("purged expired objects", zap.Int64("count", n))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// open builds or shares the runtime. The command line uses it too, without
// following the fleet's key events.
func (a *App) open(follow bool) (*runtime, error) {
	st, err := a.storeMod.Open()
	if err != nil {
		return nil, err
	}
	secret := a.secret
	if secret == nil {
		if secret, err = loadOrCreateSecret(filepath.Join(caddy.AppDataDir(), "keygate", "secret")); err != nil {
			return nil, err
		}
	}
	kr, err := keys.NewKeyring(secret)
	if err != nil {
		return nil, fmt.Errorf("keygate secret: %w", err)
	}
	cfg := cache.Config{
		Size:         a.CacheSize,
		TTL:          time.Duration(a.CacheTTL),
		NegativeTTL:  time.Duration(a.NegativeTTL),
		FetchTimeout: time.Duration(a.StoreTimeout),
	}
	fs, fleetStore := st.(store.FleetStore)
	ld, listens := a.storeMod.(interface{ ListenDSN() string })
	follow = follow && fleetStore && listens
	if follow {
		cfg.StaleBound = time.Duration(a.StaleBound)
	}
	listenDSN := ""
	if follow {
		listenDSN = ld.ListenDSN()
	}
	limits := auth.Limits{UnknownLookups: max(a.UnknownKeyLookups, 0), ClientRefusals: max(a.ClientRefusals, 0)}
	a.rtKey = fmt.Sprintf("%s|%x|%+v|%+v|%v|%x", a.storeMod.ID(), sha256.Sum256(secret), cfg, limits, a.ObjectRetention, sha256.Sum256([]byte(listenDSN)))
	v, _, err := runtimes.LoadOrNew(a.rtKey, func() (caddy.Destructor, error) {
		usage := auth.NewUsage()
		verifier, err := auth.NewVerifier(auth.VerifierConfig{Keyring: kr, Lookup: st.LookupKey, Cache: cfg, ObserveLookup: observeLookup, Usage: usage, Limits: limits})
		if err != nil {
			return nil, err
		}
		// A recorded object is written again at most daily, which keeps it
		// within its retention while it is in use.
		objects, err := scope.NewObjects(st, cfg.Size, min(24*time.Hour, time.Duration(a.ObjectRetention)/2))
		if err != nil {
			return nil, err
		}
		rt := &runtime{
			store:    st,
			usage:    usage,
			verifier: verifier,
			manager:  &auth.Manager{Store: st, Keyring: kr, Verifier: verifier},
			objects:  objects,
			// The runtime outlives this config: not the config's logger,
			// whose writer a later config may close.
			report: health.NewReporter(health.ReporterConfig{Logger: caddy.Log().Named("keygate"), Diagnose: diagnose(st)}),
		}
		ready := health.CheckerConfig{Check: st.Ready, Diagnose: st.Diagnose, Timeout: cfg.FetchTimeout}
		if follow {
			if rt.follower, err = a.newFollower(fs, listenDSN, verifier, rt.report); err != nil {
				return nil, err
			}
			ready.Follower = rt.follower
			// The follower needs the store until it has stopped, which may
			// be after the config's store module has released its share.
			if _, err := sharedStore(a.storeMod.ID(), func() (store.Store, error) { return st, nil }); err != nil {
				return nil, err
			}
			rt.storeID = a.storeMod.ID()
			var ctx context.Context
			ctx, rt.stop = context.WithCancel(context.Background()) // outlives this config, like the runtime
			rt.done = make(chan struct{})
			go func() { defer close(rt.done); rt.follower.Run(ctx) }()
		}
		rt.ready = health.NewChecker(ready)
		return rt, nil
	})
	if err != nil {
		a.rtKey = ""
		return nil, err
	}
	return v.(*runtime), nil
}

// diagnose explains the errors of a key check: the store's, and the
// spent budget of lookups for unknown keys.
func diagnose(st store.Store) func(error) store.Diagnosis {
	return func(err error) store.Diagnosis {
		if errors.Is(err, auth.ErrLookupBudget) {
			return store.Diagnosis{
				Kind:   "unknown_key_flood",
				Cause:  "more well-formed keys that do not exist arrive than unknown_key_lookups allows: keys not in the cache get 503 until the budget refills",
				Fix:    "find the clients sending them (client_refusals throttles each one); raise unknown_key_lookups if they are legitimate",
				Detail: err.Error(),
			}
		}
		return st.Diagnose(err)
	}
}

// newFollower makes the follower of the fleet's key events for this
// instance, identified by host, process and a random suffix.
func (a *App) newFollower(fs store.FleetStore, listenDSN string, v *auth.Verifier, report *health.Reporter) (*fleet.Follower, error) {
	host, _ := os.Hostname()
	suffix, err := keys.NewID("inst")
	if err != nil {
		return nil, err
	}
	return fleet.New(fleet.Config{
		Store:      fs,
		ListenDSN:  listenDSN,
		Cache:      v,
		InstanceID: suffix,
		Address:    fmt.Sprintf("%s pid %d", host, os.Getpid()),
		Heartbeat:  Heartbeat,
		Keepalive:  max(time.Duration(a.StaleBound)/3, 100*time.Millisecond),
		// The follower outlives this config: not the config's logger,
		// whose writer a later config may close.
		Logger:     caddy.Log().Named("keygate.fleet"),
		ObserveLag: func(d time.Duration) { revocationLag.Observe(d.Seconds()) },
		Report:     func(err error) { report.Report("key event listener", err) },
	})
}

// Receipt says on how many live instances the key event of a create or
// delete has taken effect. ok is false for a store without a fleet, where
// the change took effect on this instance before it returned.
func (a *App) Receipt(ctx context.Context, k store.Key) (r fleet.Receipt, ok bool, err error) {
	rt := a.rt.Load()
	if rt == nil || rt.follower == nil || k.Seq == 0 {
		return fleet.Receipt{}, false, nil
	}
	r, err = fleet.ReceiptOf(ctx, rt.store.(store.FleetStore), k.Seq, 3*Heartbeat)
	return r, true, err
}

// Instances lists the live instances of the fleet, or nil for a store
// without one.
func (a *App) Instances(ctx context.Context) ([]store.Instance, error) {
	rt := a.rt.Load()
	if rt == nil || rt.follower == nil {
		return nil, nil
	}
	return rt.store.(store.FleetStore).ListInstances(ctx, time.Now().Add(-3*Heartbeat))
}

func migrateOnce(ctx context.Context, st store.Store) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return st.Migrate(ctx)
}

func (a *App) retryMigrate(ctx context.Context, rt *runtime) {
	defer a.bg.Done()
	for wait := time.Second; ; wait = min(2*wait, time.Minute) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		if err := migrateOnce(ctx, rt.store); err != nil {
			if ctx.Err() == nil {
				rt.report.Report("migration, retried in the background", err)
			}
			continue
		}
		a.logger.Info("keygate store migrated")
		return
	}
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
