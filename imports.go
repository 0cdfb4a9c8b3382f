// Package keygate registers every keygate module with Caddy, so that one
// line builds a Caddy with all of them:
//
//	xcaddy build v2.11.9 --with github.com/keygate/keygate
//
// The modules live in caddymodule (the app, the keygate handler and the
// stores) and admin (the dashboard, keygate_admin).
package keygate

import (
	_ "github.com/keygate/keygate/admin"
	_ "github.com/keygate/keygate/caddymodule"
)
