package caddymodule

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/cache"
	"github.com/keygate/keygate/caddymodule/fleet"
	"github.com/keygate/keygate/caddymodule/health"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/scope"
	"github.com/keygate/keygate/caddymodule/store"
)

// runtime is what the app builds at Start: the parts of keygate that do
// the work. It is shared across config reloads while the store, secret and
// cache settings stay the same, so a reload keeps the cache warm and a key
// deleted through the new config is evicted from the cache the old one is
// still draining requests with.
type runtime struct {
	store    store.Store
	usage    *auth.Usage
	activity *auth.Activity
	verifier *auth.Verifier
	manager  *auth.Manager
	objects  *scope.Objects
	follower *fleet.Follower // nil for a store that is not shared by a fleet
	storeID  string          // the follower's share of the store
	report   *health.Reporter
	ready    *health.Checker
	stop     context.CancelFunc
	done     chan struct{}
	// secretErr is why keys are not checked yet: errSecretUnchecked until
	// checkSecrets has found the store's keys made with the keyring's
	// secrets, an auth.ErrWrongSecret if it found otherwise, nil after.
	secretErr atomic.Pointer[error]
	lastCheck atomic.Int64 // unix nanoseconds of the last check secretsChecked began
	local     bool         // a single node's store (auth.CheckSecrets)
}

// errSecretUnchecked: the store could not be asked yet which secret made
// its keys, so no key is refused as unknown.
var errSecretUnchecked = errors.New("keygate has not yet checked that its secret made the store's keys (the store did not answer since it started)")

// lookup looks a key up once the secrets are checked: before, a key not
// found might only have been made with another secret.
func (rt *runtime) lookup(ctx context.Context, d keys.Digest) (store.Identity, error) {
	if err := rt.secretsChecked(ctx); err != nil {
		return store.Identity{}, err
	}
	return rt.store.LookupKey(ctx, d)
}

// lookupAny is lookup for a key's digests under several secrets.
func (rt *runtime) lookupAny(ctx context.Context, ds []keys.Digest) (store.Identity, error) {
	if err := rt.secretsChecked(ctx); err != nil {
		return store.Identity{}, err
	}
	return rt.store.LookupKeyAny(ctx, ds)
}

// secretsChecked returns nil once the secrets are checked. Until then it
// checks them itself, at most once a second, so that keys work as soon as
// a store that was down answers; a wrong secret stays wrong until a new
// config.
func (rt *runtime) secretsChecked(ctx context.Context) error {
	p := rt.secretErr.Load()
	if p == nil {
		return nil
	}
	if !errors.Is(*p, errSecretUnchecked) {
		return *p
	}
	now, last := time.Now().UnixNano(), rt.lastCheck.Load()
	if now-last < int64(time.Second) || !rt.lastCheck.CompareAndSwap(last, now) {
		return *p
	}
	_, err := rt.checkSecrets(ctx)
	return err
}

// checkSecrets runs auth.CheckSecrets and records its verdict for lookup.
func (rt *runtime) checkSecrets(ctx context.Context) (auth.SecretCheck, error) {
	check, err := auth.CheckSecrets(ctx, rt.store, rt.manager.Keyring, rt.local)
	switch {
	case err == nil:
		rt.secretErr.Store(nil)
	case errors.Is(err, auth.ErrWrongSecret):
		rt.secretErr.Store(&err)
	}
	return check, err
}

// readyCheck is the readiness check: the store ready, and the secrets
// checked.
func (rt *runtime) readyCheck(ctx context.Context) error {
	if err := rt.store.Ready(ctx); err != nil {
		return err
	}
	return rt.secretsChecked(ctx)
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

// open builds or shares the runtime. The command line uses it too, without
// following the fleet's key events.
func (a *App) open(follow bool) (*runtime, error) {
	st, err := a.storeMod.Open()
	if err != nil {
		return nil, err
	}
	kr, err := a.keyring(st)
	if err != nil {
		return nil, err
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
		// Only a follower's events make a longer TTL safe: without one,
		// a deletion by another process (the command line on SQLite) is
		// seen when the TTL runs out.
		cfg.StaleBound = time.Duration(a.StaleBound)
		cfg.TTLFollowing = time.Duration(a.CacheTTLFollowing)
	}
	listenDSN := ""
	if follow {
		listenDSN = ld.ListenDSN()
	}
	limits := auth.Limits{UnknownLookups: max(a.UnknownKeyLookups, 0), ClientRefusals: max(a.ClientRefusals, 0)}
	a.rtKey = fmt.Sprintf("%s|%s|%+v|%+v|%v|%x", a.storeMod.ID(), strings.Join(kr.Fingerprints(), ","), cfg, limits, a.ObjectRetention, sha256.Sum256([]byte(listenDSN)))
	v, _, err := runtimes.LoadOrNew(a.rtKey, func() (caddy.Destructor, error) {
		rt := &runtime{store: st, usage: auth.NewUsage(), activity: auth.NewActivity(auth.ActivityConfig{}), local: a.storeMod.Local()}
		rt.secretErr.Store(&errSecretUnchecked)
		verifier, err := auth.NewVerifier(auth.VerifierConfig{Keyring: kr, Lookup: rt.lookup, LookupAny: rt.lookupAny, Cache: cfg, ObserveLookup: observeLookup, Usage: rt.usage, Limits: limits})
		if err != nil {
			return nil, err
		}
		// A recorded object is written again at most daily, which keeps it
		// within its retention while it is in use.
		objects, err := scope.NewObjects(st, cfg.Size, min(24*time.Hour, time.Duration(a.ObjectRetention)/2))
		if err != nil {
			return nil, err
		}
		rt.verifier, rt.objects = verifier, objects
		rt.manager = &auth.Manager{Store: st, Keyring: kr, Verifier: verifier}
		// The runtime outlives this config: not the config's logger,
		// whose writer a later config may close.
		rt.report = health.NewReporter(health.ReporterConfig{Logger: caddy.Log().Named("keygate"), Diagnose: diagnose(st)})
		ready := health.CheckerConfig{Check: rt.readyCheck, Diagnose: diagnose(st), Timeout: cfg.FetchTimeout}
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
		switch {
		case errors.Is(err, errSecretUnchecked):
			return store.Diagnosis{
				Kind:   "secret_unchecked",
				Cause:  "the store has not answered since keygate started, so it could not check that its secret made the store's keys: keys not in the cache get 503",
				Fix:    "make the store reachable; keygate checks again by itself",
				Detail: err.Error(),
			}
		case errors.Is(err, auth.ErrWrongSecret):
			return store.Diagnosis{
				Kind:      "wrong_secret",
				Permanent: true,
				Cause:     "the store's keys were made with a secret this instance does not have: every key gets 503 rather than 401",
				Fix:       "give this instance the secret that made them (as secret, or in previous_secrets while rotating) and reload",
				Detail:    err.Error(),
			}
		}
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
		Secrets:    v.Keyring().Fingerprints(),
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
	r, err = fleet.ReceiptOf(ctx, rt.store.(store.FleetStore), k.Seq, k.LSN, 3*Heartbeat)
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
