package postgres

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/keygate/keygate/caddymodule/store"
)

// errNoSchema: the DSN's search_path names no schema that exists.
var errNoSchema = errors.New("no schema on the search_path exists")

// withheld stands for the text of an error that may quote the DSN.
const withheld = "details withheld: they may contain the DSN's password"

// fixPooler is the fix for prepared statements that a transaction pooler
// lost or mixed up.
const fixPooler = "the DSN goes through a transaction pooler (PgBouncer in transaction mode) that does not keep prepared statements: " +
	"add default_query_exec_mode=cache_describe to the DSN, or, with PgBouncer 1.21 or later, set max_prepared_statements (e.g. 200) in pgbouncer.ini"

const fixSearchPath = "; check that the DSN's search_path names the schema keygate was migrated into"

// sqlStates explains the SQLSTATEs that mean the store is set up wrong, or
// that say more than "it failed". The cause is the server's message.
var sqlStates = map[string]store.Diagnosis{
	"3D000": {Kind: store.KindDatabaseMissing, Permanent: true,
		Fix: "create the database (CREATE DATABASE, as a role allowed to) or correct the database name in the DSN; then run `keygate migrate`"},
	"3F000": {Kind: store.KindSchemaMissing, Permanent: true,
		Fix: "create the schema, or correct search_path in the DSN; then run `keygate migrate`"},
	"28P01": {Kind: store.KindAuthFailed, Permanent: true,
		Fix: "check the role's password in the DSN (or in the password file it names), and the auth method pg_hba.conf sets for this host"},
	"28000": {Kind: store.KindLoginRefused, Permanent: true,
		Fix: "check that the DSN's role exists and may log in (ALTER ROLE … LOGIN), and that pg_hba.conf admits this host, role, database and SSL mode"},
	"42501": {Kind: store.KindPermissionDenied, Permanent: true,
		Fix: "grant the DSN's role CONNECT on the database, USAGE on keygate's schema and SELECT, INSERT, UPDATE, DELETE on its tables, or use the role that ran `keygate migrate`"},
	"42P01": {Kind: store.KindNotMigrated, Permanent: true, Fix: store.FixMigrate + fixSearchPath},
	"42703": {Kind: store.KindNotMigrated, Permanent: true, Fix: store.FixMigrate + fixSearchPath},
	"42883": {Kind: store.KindNotMigrated, Permanent: true, Fix: store.FixMigrate + fixSearchPath},
	"25006": {Kind: store.KindReadOnly, Permanent: true,
		Fix: "point the DSN at the primary server, not a standby (target_session_attrs=read-write picks it among several hosts)"},
	"53100": {Kind: store.KindDiskFull, Permanent: true, Fix: "free disk space on the database server"},
	"XX001": {Kind: store.KindCorrupt, Permanent: true, Fix: "restore the database from a backup"},
	"XX002": {Kind: store.KindCorrupt, Permanent: true, Fix: "rebuild the damaged index (REINDEX) or restore the database from a backup"},
	// A prepared statement missing, or already made by another client, on
	// the server connection a transaction pooler handed out: pgx's
	// statement cache assumes one session per connection.
	"26000": {Kind: store.KindPooler, Permanent: true, Fix: fixPooler},
	"42P05": {Kind: store.KindPooler, Permanent: true, Fix: fixPooler},
	"53300": {Kind: store.KindTooManyConnections,
		Fix: "raise the server's max_connections, or lower pool_max_conns in the DSN of every instance"},
	// A transaction rolled back because it ran into another: written
	// again, it goes through.
	"40P01": {Kind: store.KindBusy},
	"40001": {Kind: store.KindBusy},
	"57P01": {Kind: store.KindServerUnavailable},
	"57P02": {Kind: store.KindServerUnavailable},
	"57P03": {Kind: store.KindServerUnavailable},
}

// Diagnose explains an error of this store: SQLSTATEs and pgx's own
// errors first, then what every store shares. Its text never holds the
// DSN's password: the text of an error that may quote the DSN is withheld.
func (s *Store) Diagnose(err error) store.Diagnosis {
	var parseErr *pgconn.ParseConfigError
	var pgErr *pgconn.PgError
	switch {
	case errors.As(err, &parseErr):
		return store.Diagnosis{Kind: store.KindBadDSN, Permanent: true,
			Cause:  "a connection string is malformed",
			Fix:    "correct the DSN (dsn or listen): a postgres:// URL or key=value pairs, with special characters in the password percent-encoded",
			Detail: withheld}
	case errors.Is(err, errNoSchema):
		return store.Diagnosis{Kind: store.KindSchemaMissing, Permanent: true,
			Cause:  "the DSN's search_path names no schema that exists",
			Fix:    "create the schema, or correct search_path in the DSN; then run `keygate migrate`",
			Detail: err.Error()}
	case errors.As(err, &pgErr):
		d, ok := sqlStates[pgErr.Code]
		if !ok {
			switch {
			case strings.HasPrefix(pgErr.Code, "08"):
				d = store.Diagnosis{Kind: store.KindConnectionLost}
			case strings.HasPrefix(pgErr.Code, "28"):
				d = sqlStates["28000"]
			}
			// PgBouncer passes on no startup parameter it does not know.
			if pgErr.Code == "08P01" && strings.Contains(pgErr.Message, "unsupported startup parameter") {
				d = store.Diagnosis{Kind: store.KindPooler, Permanent: true,
					Fix: "a pooler (PgBouncer) refuses a setting of the DSN, such as search_path: remove it from the DSN and set it for the role instead (ALTER ROLE … SET search_path TO …), or list it in PgBouncer's ignore_startup_parameters if the server's default is right"}
			}
		}
		if d.Kind != "" {
			d.Cause = "Postgres: " + pgErr.Message
			d.Detail = err.Error()
			if d.Kind == store.KindServerUnavailable && d.Fix == "" {
				d.Cause += " (the server is starting, stopping or recovering)"
			}
			return d
		}
	}
	if errors.Is(err, pgconn.ErrConnClosed) {
		// Used after the server went away (a failover, a restart): what a
		// statement on it did, if it was sent at all, is not known.
		return store.Diagnosis{Kind: store.KindConnectionLost, Cause: "the connection to Postgres was closed", Detail: err.Error()}
	}
	d := store.Diagnose(err)
	if d.Kind == store.KindUnreachable {
		d.Cause = "nothing accepts connections at the Postgres address in the DSN"
	}
	return d
}
