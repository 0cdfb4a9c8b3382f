package health

import (
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/keygate/keygate/caddymodule/store"
)

// DefaultReportEvery is how often at most one kind of store problem is
// logged.
const DefaultReportEvery = time.Minute

// ReporterConfig configures a Reporter.
type ReporterConfig struct {
	Logger *zap.Logger
	// Diagnose explains an error: the store's Diagnose.
	Diagnose func(error) store.Diagnosis
	// Every is the least time between two lines about one kind of
	// problem. Default: DefaultReportEvery.
	Every time.Duration
	// Now is the clock. Default: time.Now.
	Now func() time.Time
}

// A Reporter logs store errors without flooding the log: a permanent
// problem (one an operator must fix) at ERROR with its cause and fix, a
// transient one at WARN, each kind at most once per Every. It is safe for
// concurrent use.
type Reporter struct {
	cfg   ReporterConfig
	mu    sync.Mutex
	kinds map[string]*reported
}

type reported struct {
	at         time.Time // last logged
	suppressed int       // met since, and not logged
}

// NewReporter returns a Reporter.
func NewReporter(cfg ReporterConfig) *Reporter {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Diagnose == nil {
		cfg.Diagnose = store.Diagnose
	}
	if cfg.Every <= 0 {
		cfg.Every = DefaultReportEvery
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Reporter{cfg: cfg, kinds: map[string]*reported{}}
}

// Report explains err, met while doing what during says ("key lookup"),
// and logs it unless the same kind of problem was logged less than Every
// ago. It returns the diagnosis.
func (r *Reporter) Report(during string, err error) store.Diagnosis {
	d := r.cfg.Diagnose(err)
	now := r.cfg.Now()
	r.mu.Lock()
	k := r.kinds[d.Kind]
	if k != nil && now.Sub(k.at) < r.cfg.Every {
		k.suppressed++
		r.mu.Unlock()
		return d
	}
	suppressed := 0
	if k == nil {
		r.kinds[d.Kind] = &reported{at: now}
	} else {
		suppressed, k.at, k.suppressed = k.suppressed, now, 0
	}
	r.mu.Unlock()

	fields := []zap.Field{
		zap.String("during", during),
		zap.String("kind", d.Kind),
		zap.String("cause", d.Cause),
	}
	if d.Fix != "" {
		fields = append(fields, zap.String("fix", d.Fix))
	}
	fields = append(fields, zap.String("error", d.Detail))
	if suppressed > 0 {
		fields = append(fields, zap.Int("repeats_not_logged", suppressed))
	}
	fields = append(fields, zap.String("logged_at_most_every", r.cfg.Every.String()))
	if d.Permanent {
		r.cfg.Logger.Error("keygate store misconfigured; API keys cannot be checked until it is fixed", fields...)
	} else {
		r.cfg.Logger.Warn("keygate store unavailable", fields...)
	}
	return d
}
