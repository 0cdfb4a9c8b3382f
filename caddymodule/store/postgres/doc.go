// Package postgres implements store.Store on PostgreSQL with pgx, for a fleet
// of keygate instances sharing one database.
//
// Open builds a pool from a DSN without dialing, so Caddy can start while the
// database is down; New wraps a pool owned by the caller. Neither migrates:
// call Migrate, which any number of instances may run at once.
//
// All tables live in the first schema of the connection's search_path, so
// several keygate deployments (or tests) can share a database.
package postgres
