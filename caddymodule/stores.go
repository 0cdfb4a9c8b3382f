package caddymodule

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/keygate/keygate/caddymodule/caddyconf"
	"github.com/keygate/keygate/caddymodule/store"
	"github.com/keygate/keygate/caddymodule/store/postgres"
	"github.com/keygate/keygate/caddymodule/store/sqlite"
)

func init() {
	caddy.RegisterModule(PostgresStore{})
	caddy.RegisterModule(SQLiteStore{})
}

// StoreModule is a module in the keygate.stores namespace.
type StoreModule interface {
	caddy.Module
	// Open returns the store. It is called when the app starts, never in
	// Provision, so that `caddy validate` touches no database. Stores for
	// the same database are shared across config reloads; Cleanup releases
	// this module's share.
	Open() (store.Store, error)
	// ID identifies the database, so that the app shares its cache with the
	// previous config only when both use the same one.
	ID() string
	// Local reports whether the store lives on this machine only, the one
	// case where keygate may generate and keep its own secret.
	Local() bool
	// Describe says which database the store is, for operators: kind and
	// path, or host and database, never a password.
	Describe() string
}

// stores holds every open store, shared across config reloads and closed
// when the last config using it is cleaned up.
var stores = caddy.NewUsagePool()

type storeCloser struct{ store.Store }

func (s storeCloser) Destruct() error { return s.Close() }

// sharedStore opens a store once per id, however many configs use it.
func sharedStore(id string, open func() (store.Store, error)) (store.Store, error) {
	v, _, err := stores.LoadOrNew(id, func() (caddy.Destructor, error) {
		st, err := open()
		if err != nil {
			return nil, err
		}
		return storeCloser{st}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(storeCloser).Store, nil
}

// PostgresStore keeps keys in PostgreSQL: the store for a fleet of Caddy
// instances. The pool is shared by every config that names the same DSN.
type PostgresStore struct {
	// DSN is the connection string, as a URL or key=value pairs. Use a
	// placeholder such as {env.KEYGATE_DATABASE_URL} or {file./run/secrets/dsn}
	// so that a password stays out of the config; it is resolved when the
	// module is provisioned. pgxpool options such as pool_max_conns may be
	// given in it. Required.
	DSN string `json:"dsn,omitempty"`

	// Listen is the connection string for the key event listener, which
	// needs a session connection: give a direct one here when DSN goes
	// through a transaction pooler (such as PgBouncer in transaction mode),
	// which breaks LISTEN. `keygate secret rotate` holds its lock on such
	// a connection too. Default: DSN.
	Listen string `json:"listen,omitempty"`

	dsn    string
	listen string
	id     string
	opened bool
}

// CaddyModule returns the Caddy module information.
func (PostgresStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "keygate.stores.postgres", New: func() caddy.Module { return new(PostgresStore) }}
}

// Provision resolves the DSN. It does not connect.
func (s *PostgresStore) Provision(caddy.Context) error {
	repl := caddy.NewReplacer()
	s.dsn = repl.ReplaceKnown(s.DSN, "")
	s.listen = s.dsn
	if s.Listen != "" {
		s.listen = repl.ReplaceKnown(s.Listen, "")
	}
	// The DSN may hold a password: keep only its hash as the share key.
	s.id = fmt.Sprintf("postgres:%x", sha256.Sum256([]byte(s.dsn)))
	return nil
}

// Validate parses the DSNs as the pool and the listener will, so that a
// DSN that cannot work fails `caddy validate` rather than every request.
func (s *PostgresStore) Validate() error {
	if s.dsn == "" {
		return errors.New("postgres store: dsn is empty (if it is a placeholder such as {env.KEYGATE_DATABASE_URL}, is the variable set?)")
	}
	if err := postgres.CheckDSN(s.dsn); err != nil {
		return fmt.Errorf("postgres store: %w", err)
	}
	if s.listen == "" {
		return errors.New("postgres store: listen is empty (if it is a placeholder, is the variable set?)")
	}
	if err := postgres.CheckDSN(s.listen); err != nil {
		return fmt.Errorf("postgres store: listen: %w", err)
	}
	return nil
}

// Open returns the shared pool's store. The pool dials lazily, so this
// succeeds with the database down.
func (s *PostgresStore) Open() (store.Store, error) {
	st, err := sharedStore(s.id, func() (store.Store, error) {
		// A listen DSN of its own is a session connection: the rotation
		// lock, held across transactions, needs one too.
		var opts []postgres.Option
		if s.listen != s.dsn {
			opts = append(opts, postgres.WithSessionDSN(s.listen))
		}
		return postgres.Open(context.Background(), s.dsn, opts...) // not a config's context: the pool outlives configs
	})
	if err != nil {
		return nil, fmt.Errorf("opening postgres store: %w", err)
	}
	s.opened = true
	return st, nil
}

// ID identifies the database by the hash of its DSN.
func (s *PostgresStore) ID() string { return s.id }

// ListenDSN returns the connection string of the key event listener.
func (s *PostgresStore) ListenDSN() string { return s.listen }

// Local reports false: a Postgres store may be shared by a fleet.
func (s *PostgresStore) Local() bool { return false }

// Describe names the database without its password.
func (s *PostgresStore) Describe() string { return postgres.DescribeDSN(s.dsn) }

// Cleanup releases this config's share of the pool.
func (s *PostgresStore) Cleanup() error { return release(&s.opened, s.id) }

// UnmarshalCaddyfile sets up the store from Caddyfile tokens. Syntax:
//
//	store postgres <dsn> [{
//		listen <dsn>
//	}]
//
//	store postgres {
//		dsn    <dsn>
//		listen <dsn>
//	}
func (s *PostgresStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	if d.NextArg() {
		s.DSN = d.Val()
		if d.NextArg() {
			return d.Errf("unexpected %q after the postgres DSN; quote a DSN that contains spaces", d.Val())
		}
	}
	for d.NextBlock(d.Nesting()) {
		switch d.Val() {
		case "dsn":
			if !d.AllArgs(&s.DSN) {
				return d.Errf("dsn takes one value, for example: dsn {env.KEYGATE_DATABASE_URL}")
			}
		case "listen":
			if !d.AllArgs(&s.Listen) {
				return d.Errf("listen takes one value, for example: listen {env.KEYGATE_LISTEN_URL}")
			}
		default:
			return caddyconf.UnknownOption(d, "postgres store", "dsn", "listen")
		}
	}
	if s.DSN == "" {
		return d.Errf("postgres store needs a DSN, for example: store postgres {env.KEYGATE_DATABASE_URL}")
	}
	return nil
}

// SQLiteStore keeps keys in an SQLite file on this machine: the zero-setup
// default for a single Caddy instance.
type SQLiteStore struct {
	// Path of the database file. Default: keygate/keygate.db in Caddy's data
	// directory.
	Path string `json:"path,omitempty"`

	path   string
	opened bool
}

// CaddyModule returns the Caddy module information.
func (SQLiteStore) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "keygate.stores.sqlite", New: func() caddy.Module { return new(SQLiteStore) }}
}

// Provision resolves the path.
func (s *SQLiteStore) Provision(caddy.Context) error {
	s.path = caddy.NewReplacer().ReplaceKnown(s.Path, "")
	if s.path == "" {
		s.path = filepath.Join(caddy.AppDataDir(), "keygate", "keygate.db")
	}
	abs, err := filepath.Abs(s.path)
	if err != nil {
		return fmt.Errorf("sqlite store: resolving path: %w", err)
	}
	s.path = abs
	return nil
}

// Open opens the file, creating it (0600) if needed.
func (s *SQLiteStore) Open() (store.Store, error) {
	st, err := sharedStore(s.ID(), func() (store.Store, error) {
		return sqlite.Open(context.Background(), s.path)
	})
	if err != nil {
		return nil, fmt.Errorf("opening sqlite store %s: %w", s.path, err)
	}
	s.opened = true
	return st, nil
}

// ID identifies the database by its absolute path.
func (s *SQLiteStore) ID() string { return "sqlite:" + s.path }

// Local reports true.
func (s *SQLiteStore) Local() bool { return true }

// Describe names the file.
func (s *SQLiteStore) Describe() string { return "sqlite " + s.path }

// Cleanup releases this config's share of the database.
func (s *SQLiteStore) Cleanup() error { return release(&s.opened, s.ID()) }

// UnmarshalCaddyfile sets up the store from Caddyfile tokens. Syntax:
//
//	store sqlite [<path>]
func (s *SQLiteStore) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	if d.NextArg() {
		s.Path = d.Val()
		if d.NextArg() {
			return d.Errf("unexpected %q after the sqlite path; quote a path that contains spaces", d.Val())
		}
	}
	for d.NextBlock(d.Nesting()) {
		switch d.Val() {
		case "path":
			if !d.AllArgs(&s.Path) {
				return d.Errf("path takes one value, for example: path /var/lib/keygate/keygate.db")
			}
		default:
			return caddyconf.UnknownOption(d, "sqlite store", "path")
		}
	}
	return nil
}

func release(opened *bool, id string) error {
	if !*opened {
		return nil
	}
	*opened = false
	_, err := stores.Delete(id)
	return err
}

// Interface guards
var (
	_ StoreModule           = (*PostgresStore)(nil)
	_ caddy.Provisioner     = (*PostgresStore)(nil)
	_ caddy.Validator       = (*PostgresStore)(nil)
	_ caddy.CleanerUpper    = (*PostgresStore)(nil)
	_ caddyfile.Unmarshaler = (*PostgresStore)(nil)
	_ StoreModule           = (*SQLiteStore)(nil)
	_ caddy.Provisioner     = (*SQLiteStore)(nil)
	_ caddy.CleanerUpper    = (*SQLiteStore)(nil)
	_ caddyfile.Unmarshaler = (*SQLiteStore)(nil)
)
