package caddymodule

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/keygate/keygate/caddymodule/caddyconf"
	"github.com/keygate/keygate/caddymodule/scope"
)

func init() {
	httpcaddyfile.RegisterGlobalOption("keygate", parseGlobalOption)
	httpcaddyfile.RegisterHandlerDirective("keygate", parseHandler)
	httpcaddyfile.RegisterDirectiveOrder("keygate", httpcaddyfile.Before, "basic_auth")
	httpcaddyfile.RegisterHandlerDirective("keygate_ready", parseReadyHandler)
	// After try_files, so before keygate: a probe needs no key.
	httpcaddyfile.RegisterDirectiveOrder("keygate_ready", httpcaddyfile.After, "try_files")
}

// parseGlobalOption sets up the keygate app. Syntax:
//
//	keygate {
//		store postgres <dsn> | store sqlite [<path>]
//		secret        <secret>
//		previous_secrets <secret>...
//		cache_size    <entries>
//		cache_ttl     <duration>
//		cache_ttl_following <duration>
//		negative_ttl  <duration>
//		store_timeout <duration>
//		stale_bound   <duration>
//		object_retention <duration>
//		activity_retention <duration>
//		usage_interval <duration>
//		unknown_key_lookups <per second>|off
//		client_refusals <per minute>|off
//		migrate       auto|off
//	}
func parseGlobalOption(d *caddyfile.Dispenser, _ any) (any, error) {
	app := new(App)
	if err := app.UnmarshalCaddyfile(d); err != nil {
		return nil, err
	}
	return httpcaddyfile.App{Name: "keygate", Value: caddyconfig.JSON(app, nil)}, nil
}

// UnmarshalCaddyfile sets up the app from the global option's tokens.
func (a *App) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the option name
	if d.NextArg() {
		return d.Errf("keygate takes no arguments here, only a block: keygate { ... }")
	}
	for d.NextBlock(0) {
		switch opt := d.Val(); opt {
		case "store":
			if !d.NextArg() {
				return d.Errf("store needs a kind: store postgres <dsn>, or store sqlite [<path>]")
			}
			name := d.Val()
			if name != "postgres" && name != "sqlite" {
				if _, err := caddy.GetModule("keygate.stores." + name); err != nil {
					return d.Errf("unknown store %q; use postgres or sqlite", name)
				}
			}
			unm, err := caddyfile.UnmarshalModule(d, "keygate.stores."+name)
			if err != nil {
				return err
			}
			a.StoreRaw = caddyconfig.JSONModuleObject(unm, "module", name, nil)
		case "secret":
			if !d.AllArgs(&a.Secret) {
				return d.Errf("secret takes one value, for example: secret {env.KEYGATE_SECRET}")
			}
		case "previous_secrets":
			prev := d.RemainingArgs()
			if len(prev) == 0 {
				return d.Errf("previous_secrets takes one or more secrets being rotated out, for example: previous_secrets {env.KEYGATE_PREVIOUS_SECRET}")
			}
			a.PreviousSecrets = append(a.PreviousSecrets, prev...)
		case "cache_size":
			var v string
			if !d.AllArgs(&v) {
				return d.Errf("cache_size takes one number, for example: cache_size 100000")
			}
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return d.Errf("cache_size must be a positive number of entries, not %q", v)
			}
			a.CacheSize = n
		case "cache_ttl":
			if err := parseDuration(d, &a.CacheTTL); err != nil {
				return err
			}
		case "cache_ttl_following":
			if err := parseDuration(d, &a.CacheTTLFollowing); err != nil {
				return err
			}
		case "negative_ttl":
			if err := parseDuration(d, &a.NegativeTTL); err != nil {
				return err
			}
		case "store_timeout":
			if err := parseDuration(d, &a.StoreTimeout); err != nil {
				return err
			}
		case "stale_bound":
			if err := parseDuration(d, &a.StaleBound); err != nil {
				return err
			}
		case "object_retention":
			if err := parseDuration(d, &a.ObjectRetention); err != nil {
				return err
			}
		case "activity_retention":
			if err := parseDuration(d, &a.ActivityRetention); err != nil {
				return err
			}
		case "usage_interval":
			if err := parseDuration(d, &a.UsageInterval); err != nil {
				return err
			}
		case "unknown_key_lookups":
			if err := parseLimit(d, &a.UnknownKeyLookups, "unknown_key_lookups 200"); err != nil {
				return err
			}
		case "client_refusals":
			if err := parseLimit(d, &a.ClientRefusals, "client_refusals 60"); err != nil {
				return err
			}
		case "migrate":
			if !d.AllArgs(&a.Migrate) || (a.Migrate != "auto" && a.Migrate != "off") {
				return d.Errf("migrate takes auto or off")
			}
		default:
			return caddyconf.UnknownOption(d, "keygate global option", "store", "secret", "previous_secrets", "cache_size", "cache_ttl", "cache_ttl_following", "negative_ttl", "store_timeout", "stale_bound", "object_retention", "activity_retention", "usage_interval", "unknown_key_lookups", "client_refusals", "migrate")
		}
	}
	return nil
}

func parseHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	hd := new(Handler)
	err := hd.UnmarshalCaddyfile(h.Dispenser)
	return hd, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	keygate [<matcher>] {
//		header        account|key_id|key_type|server <name>
//		realm         <realm>
//		retry_after   <duration>
//		route         <method> <path> deny|allow|own_server|own_object
//		inspect_limit <size>
//		inspect_memory <size>
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.Errf("keygate takes no arguments, only an optional block: keygate { ... }")
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "header":
			var field, name string
			if !d.AllArgs(&field, &name) {
				return d.Errf("header takes a field and a name, for example: header account X-Account-Id")
			}
			if !knownField(field) {
				return d.Errf("unknown identity header field %q; use account, key_id, key_type or server", field)
			}
			if h.Headers == nil {
				h.Headers = map[string]string{}
			}
			h.Headers[field] = name
		case "realm":
			if !d.AllArgs(&h.Realm) {
				return d.Errf("realm takes one value, for example: realm inbox-api")
			}
		case "retry_after":
			if err := parseDuration(d, &h.RetryAfter); err != nil {
				return err
			}
		case "route":
			var rc RouteConfig
			if !d.AllArgs(&rc.Method, &rc.Path, &rc.Restricted) {
				return d.Errf("route takes a method, a path and a rule, for example: route GET /api/reports/{server} own_server")
			}
			rc.Method = strings.ToUpper(rc.Method)
			r, err := rc.route()
			if err == nil {
				_, err = scope.New([]scope.Route{r})
			}
			if err != nil {
				return d.Err(err.Error())
			}
			h.Routes = append(h.Routes, rc)
		case "inspect_limit":
			var v string
			if !d.AllArgs(&v) {
				return d.Errf("inspect_limit takes a size, for example: inspect_limit 8MiB")
			}
			n, err := humanize.ParseBytes(v)
			if err != nil || n == 0 || n > 1<<30 {
				return d.Errf("inspect_limit must be a size between 1B and 1GiB such as 8MiB, not %q", v)
			}
			h.InspectLimit = int(n)
		case "inspect_memory":
			var v string
			if !d.AllArgs(&v) {
				return d.Errf("inspect_memory takes a size, for example: inspect_memory 64MiB")
			}
			n, err := humanize.ParseBytes(v)
			if err != nil || n < 64<<10 || n > 1<<40 {
				return d.Errf("inspect_memory must be a size between 64KiB and 1TiB such as 64MiB, not %q", v)
			}
			h.InspectMemory = int64(n)
		default:
			return caddyconf.UnknownOption(d, "keygate directive", "header", "realm", "retry_after", "route", "inspect_limit", "inspect_memory")
		}
	}
	return nil
}

func parseReadyHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	hd := new(ReadyHandler)
	err := hd.UnmarshalCaddyfile(h.Dispenser)
	return hd, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	keygate_ready [<matcher>]
func (h *ReadyHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.Errf("keygate_ready takes no arguments besides a matcher, for example: keygate_ready /ready")
	}
	if d.NextBlock(0) {
		return d.Errf("keygate_ready takes no block")
	}
	return nil
}

func parseDuration(d *caddyfile.Dispenser, dst *caddy.Duration) error {
	opt := d.Val()
	var v string
	if !d.AllArgs(&v) {
		return d.Errf("%s takes one duration, for example: %s 30s", opt, opt)
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur <= 0 {
		return d.Errf("%s must be a positive duration such as 30s or 5m, not %q", opt, v)
	}
	*dst = caddy.Duration(dur)
	return nil
}

// Interface guards
var (
	_ caddyfile.Unmarshaler = (*App)(nil)
	_ caddyfile.Unmarshaler = (*Handler)(nil)
	_ caddyfile.Unmarshaler = (*ReadyHandler)(nil)
)

// parseLimit reads a positive number, or off (stored as -1).
func parseLimit(d *caddyfile.Dispenser, dst *int, example string) error {
	opt := d.Val()
	var v string
	if !d.AllArgs(&v) {
		return d.Errf("%s takes one number or off, for example: %s", opt, example)
	}
	if v == "off" {
		*dst = -1
		return nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		return d.Errf("%s must be a positive number or off, not %q", opt, v)
	}
	*dst = n
	return nil
}
