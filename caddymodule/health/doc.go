// Package health tells operators and orchestrators how keygate's store is
// doing. A Reporter logs store errors with their cause and their fix,
// once a minute per kind of cause however many requests meet them; a
// Checker answers readiness probes: ready only while the store answers
// and, on a store shared by a fleet, the key event listener follows.
//
// It knows nothing of Caddy: the caddymodule package wires it in.
package health
