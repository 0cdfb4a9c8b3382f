package caddymodule

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/cache"
)

// The collectors live at package level and are registered into each
// config's registry, so their values survive reloads and two configs never
// register two collectors of one name. Labels are bounded: never a key, a
// key id or an account.
var (
	decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "keygate", Name: "decisions_total",
		Help: "Requests answered by the keygate handler, by result.",
	}, []string{"result"})
	cacheLookups = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "keygate", Name: "cache_lookups_total",
		Help: "Key cache lookups, by outcome.",
	}, []string{"outcome"})
	revocationLag = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "keygate", Name: "revocation_lag_seconds",
		Help:    "Time from a key's creation or deletion committing to this instance applying it to its cache.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	storeLookups = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "keygate", Name: "store_lookup_duration_seconds",
		Help:    "Time taken by key lookups in the store, by result.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"result"})
	inspectMemoryInUse = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "keygate", Name: "inspect_memory_bytes",
		Help: "Memory charged to the inspect_memory budgets by the responses being read.",
	})
)

// outcome is the handler's final answer to a request, the decisions
// metric's label. The first four are auth.Result's, in its order.
type outcome uint8

const (
	outAllowed              = outcome(auth.Allowed)
	outUnauthorized         = outcome(auth.Unauthorized)
	outUnavailable          = outcome(auth.Unavailable)
	outThrottled            = outcome(auth.Throttled)
	outForbidden    outcome = iota // the key's scope does not cover the request
	outNotFound                    // an object of another server, or never seen
	outBadRequest                  // a request that could be read two ways
	outBadGateway                  // a response that had to be checked and could not be
	outBusy                        // the inspect_memory budget stayed spent: 503
	numOutcomes

	// outUncounted is the outcome that no result counts: a response
	// keygate only learns from whose upstream handler failed, answered by
	// Caddy's error handling.
	outUncounted = numOutcomes
)

var outcomeNames = [numOutcomes]string{"allowed", "unauthorized", "unavailable", "throttled", "forbidden", "not_found", "bad_request", "bad_gateway", "inspect_busy"}

// Resolved children, so the request path does no label hashing.
var (
	decisionCounters [numOutcomes]prometheus.Counter
	cacheCounters    [5]prometheus.Counter // by cache.Outcome
	lookupOK         = storeLookups.WithLabelValues("ok")
	lookupError      = storeLookups.WithLabelValues("error")
)

func init() {
	for o := range decisionCounters {
		decisionCounters[o] = decisions.WithLabelValues(outcomeNames[o])
	}
	for o := range cacheCounters {
		cacheCounters[o] = cacheLookups.WithLabelValues(cache.Outcome(o).String())
	}
}

func observeLookup(d time.Duration, err error) {
	if err != nil {
		lookupError.Observe(d.Seconds())
		return
	}
	lookupOK.Observe(d.Seconds())
}

// appGauges makes the gauges (and one counter) that read the app's
// runtime when scraped: made per config, as each reads its own app. The
// ready gauge is 0 or 1 as the keygate_ready handler would answer: a
// scrape may run the store's readiness query, which is cached for a second
// and bounded by store_timeout. The activity counter starts again from 0
// with a new runtime (a reload that changes the store, secrets or cache).
func appGauges(a *App) []prometheus.Collector {
	return []prometheus.Collector{
		newGauge("listener_up", "1 while this instance receives the fleet's key events (Postgres store), else 0.", func() float64 {
			rt := a.rt.Load()
			return boolGauge(rt != nil && rt.follower != nil && rt.follower.Up())
		}),
		newGauge("cache_entries", "Keys in the cache, valid and unknown.", func() float64 {
			if rt := a.rt.Load(); rt != nil {
				return float64(rt.verifier.CacheLen())
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: "caddy", Subsystem: "keygate", Name: "store_info",
			Help:        "1, labelled with the kind of store this instance uses (sqlite, or postgres for a fleet): dashboards and alerts tell a fleet's instances by it.",
			ConstLabels: prometheus.Labels{"store": storeKind(a.storeMod)},
		}, func() float64 { return 1 }),
		newGauge("ready", "1 while this instance can check keys: the store answers, its secret made the store's keys and, with the Postgres store, the key event listener follows; else 0.", func() float64 {
			return boolGauge(a.Ready(context.Background()).Ready)
		}),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: "caddy", Subsystem: "keygate", Name: "activity_dropped_total",
			Help: "Requests left out of key activity because more keys than the gatherer tracks were used between two flushes.",
		}, func() float64 {
			if rt := a.rt.Load(); rt != nil {
				return float64(rt.activity.Dropped())
			}
			return 0
		}),
	}
}

// storeKind is the store module's name: sqlite or postgres.
func storeKind(m StoreModule) string {
	id := string(m.CaddyModule().ID)
	return id[strings.LastIndexByte(id, '.')+1:]
}

func newGauge(name, help string, value func() float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "caddy", Subsystem: "keygate", Name: name, Help: help}, value)
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// registerMetrics adds the collectors to reg, which may already hold them.
func registerMetrics(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range append([]prometheus.Collector{decisions, cacheLookups, storeLookups, revocationLag, inspectMemoryInUse}, cs...) {
		var are prometheus.AlreadyRegisteredError
		if err := reg.Register(c); err != nil && !errors.As(err, &are) {
			return err
		}
	}
	return nil
}
