package caddymodule

import (
	"errors"
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
	storeLookups = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "keygate", Name: "store_lookup_duration_seconds",
		Help:    "Time taken by key lookups in the store, by result.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"result"})
)

// Resolved children, so the request path does no label hashing.
var (
	decisionCounters [3]prometheus.Counter // by auth.Result
	cacheCounters    [5]prometheus.Counter // by cache.Outcome
	lookupOK         = storeLookups.WithLabelValues("ok")
	lookupError      = storeLookups.WithLabelValues("error")
)

func init() {
	for r := range decisionCounters {
		decisionCounters[r] = decisions.WithLabelValues(auth.Result(r).String())
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

// registerMetrics adds the collectors to reg, which may already hold them.
func registerMetrics(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for _, c := range append([]prometheus.Collector{decisions, cacheLookups, storeLookups}, cs...) {
		var are prometheus.AlreadyRegisteredError
		if err := reg.Register(c); err != nil && !errors.As(err, &are) {
			return err
		}
	}
	return nil
}
