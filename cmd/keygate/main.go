// Command keygate is Caddy with the standard modules and keygate's.
//
// Besides Caddy's own commands it has keygate's operator commands, which
// any xcaddy build has as `caddy keygate …`; this binary also takes them
// without the group name: `keygate migrate`, `keygate account create demo`.
package main

import (
	"os"
	"slices"

	_ "time/tzdata"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"
	_ "github.com/keygate/keygate"
)

// operatorCommands are the subcommands of `caddy keygate`.
var operatorCommands = []string{"migrate", "account", "member", "key", "secret"}

func main() {
	if len(os.Args) > 1 && slices.Contains(operatorCommands, os.Args[1]) {
		os.Args = slices.Insert(os.Args, 1, "keygate")
	}
	caddycmd.Main()
}
