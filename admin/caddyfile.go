package admin

import (
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/keygate/keygate/caddymodule/caddyconf"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("keygate_admin", parseHandler)
	httpcaddyfile.RegisterDirectiveOrder("keygate_admin", httpcaddyfile.Before, "reverse_proxy")
}

func parseHandler(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	hd := new(Handler)
	err := hd.UnmarshalCaddyfile(h.Dispenser)
	return hd, err
}

// UnmarshalCaddyfile sets up the dashboard from Caddyfile tokens. Syntax:
//
//	keygate_admin [<matcher>] {
//		inbox_api     <url>
//		inbox_timeout <duration>
//		header        account|key_type <name>
//		operators     <user-id...>
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.Errf("keygate_admin takes no arguments, only a block: keygate_admin { inbox_api <url> }")
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "inbox_api":
			if !d.AllArgs(&h.InboxAPI) {
				return d.Errf("inbox_api takes one URL, for example: inbox_api http://inbox-api.internal:8080")
			}
			if !strings.Contains(h.InboxAPI, "{") {
				if err := checkInboxAPI(h.InboxAPI); err != nil {
					return d.Err(err.Error())
				}
			}
		case "inbox_timeout":
			var v string
			if !d.AllArgs(&v) {
				return d.Errf("inbox_timeout takes one duration, for example: inbox_timeout 5s")
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("inbox_timeout must be a positive duration such as 5s, not %q", v)
			}
			h.InboxTimeout = caddy.Duration(dur)
		case "header":
			var field, name string
			if !d.AllArgs(&field, &name) {
				return d.Errf("header takes a field and a name, for example: header account X-Account-Id")
			}
			if field != "account" && field != "key_type" {
				return d.Errf("unknown header field %q; use account or key_type", field)
			}
			if h.Headers == nil {
				h.Headers = map[string]string{}
			}
			h.Headers[field] = name
		case "operators":
			users := d.RemainingArgs()
			if len(users) == 0 {
				return d.Errf("operators takes one or more user ids, as {http.auth.user.id} gives them, for example: operators ops-alice ops-bob")
			}
			h.Operators = append(h.Operators, users...)
		default:
			return caddyconf.UnknownOption(d, "keygate_admin option", "inbox_api", "inbox_timeout", "header", "operators")
		}
	}
	return nil
}

// Interface guards
var _ caddyfile.Unmarshaler = (*Handler)(nil)
