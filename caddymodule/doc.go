// Package caddymodule plugs keygate into Caddy v2. It is glue: the logic
// lives in the Caddy-free packages below it (keys, store, cache, auth,
// scope, fleet, health, inboxapi).
//
// It registers:
//
//   - the app "keygate", configured by the global option of that name: it owns
//     the store, the secret and the key cache, shared by every site;
//   - the handler http.handlers.keygate (directive "keygate", ordered before
//     basic_auth), which lets a request through only with a live API key;
//   - the handler http.handlers.keygate_ready (directive "keygate_ready",
//     ordered after try_files, so before keygate), which answers readiness
//     probes: 200 while the store answers and the key event listener
//     follows, else 503, with the cause and the fix in JSON;
//   - the stores keygate.stores.postgres and keygate.stores.sqlite;
//   - the command "keygate" with the operator subcommands, secret rotation
//     among them.
//
// Files: app.go is the app's settings and lifecycle, runtime.go what it
// builds at start and shares across reloads, jobs.go its background work
// (writing last-used times and key activity, purging what is past its
// retention),
// secret.go where its secrets come from, metrics.go every metric;
// handler.go, enforce.go, identity.go and inspect.go the request path;
// command.go, operator.go and secret_command.go the command line.
package caddymodule
