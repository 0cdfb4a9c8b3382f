package caddymodule

import (
	"fmt"
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/keygate/keygate/caddymodule/health"
)

func init() {
	caddy.RegisterModule((*ReadyHandler)(nil))
}

// ReadyHandler answers readiness probes for load balancers and
// orchestrators: 200 while this instance can check keys (the store answers
// within store_timeout and, with the Postgres store, the key event
// listener follows), else 503; with a JSON body such as
// {"ready":true,"store":"ok","listener":"following"}, or one that names
// what is not ready, why and the fix. The store's answer is reused for a
// second, so probes cannot hammer the database. It answers every request
// it is given: limit it with a matcher.
type ReadyHandler struct {
	app *App
}

// CaddyModule returns the Caddy module information.
func (*ReadyHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.keygate_ready", New: func() caddy.Module { return new(ReadyHandler) }}
}

// Provision connects the handler to the keygate app.
func (h *ReadyHandler) Provision(ctx caddy.Context) error {
	app, err := ctx.App("keygate")
	if err != nil {
		return fmt.Errorf("loading keygate app: %w", err)
	}
	h.app = app.(*App)
	return nil
}

// ServeHTTP answers the probe; it never calls the next handler.
func (h *ReadyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	return health.Write(w, r, h.app.Ready(r.Context()))
}

// Interface guards
var (
	_ caddy.Provisioner           = (*ReadyHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*ReadyHandler)(nil)
)
