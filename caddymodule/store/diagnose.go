package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
)

// ErrNotMigrated: the schema is missing or older than this keygate needs.
// Ready returns it (wrapped) for a store whose migrations were not applied.
var ErrNotMigrated = errors.New("schema not migrated")

// CheckSchema is Ready's rule for every store: the schema version found
// must be at least the newest migration this keygate ships.
func CheckSchema(have, want int) error {
	if have < want {
		return fmt.Errorf("checking readiness: %w: schema version %d, this keygate needs %d", ErrNotMigrated, have, want)
	}
	return nil
}

// Kinds of store problem, a Diagnosis's Kind: short, stable names for
// logs, readiness answers and alerts.
const (
	// Permanent: an operator must act; retrying will not help.
	KindBadDSN           = "bad_dsn"
	KindUnknownHost      = "unknown_host"
	KindDatabaseMissing  = "database_missing"
	KindSchemaMissing    = "schema_missing"
	KindAuthFailed       = "auth_failed"
	KindLoginRefused     = "login_refused"
	KindPermissionDenied = "permission_denied"
	KindNotMigrated      = "not_migrated"
	KindReadOnly         = "read_only"
	KindCorrupt          = "corrupt"
	KindDiskFull         = "disk_full"
	KindUnopenable       = "cannot_open"
	KindIOError          = "io_error"
	KindPooler           = "pooler" // a transaction pooler between keygate and Postgres needs a setting

	// Transient: the store may answer again by itself.
	KindUnreachable        = "unreachable"
	KindConnectionLost     = "connection_lost"
	KindServerUnavailable  = "server_unavailable"
	KindTooManyConnections = "too_many_connections"
	KindTimeout            = "timeout"
	KindBusy               = "busy"
	KindCanceled           = "canceled"
	KindOther              = "other"
)

// Diagnosis explains a store error to an operator: what is wrong and what
// to do about it. None of its text holds a password.
type Diagnosis struct {
	Kind string
	// Permanent says that an operator must act: the store will keep
	// failing until then. A transient problem may clear by itself.
	Permanent bool
	// Cause says what is wrong, in words.
	Cause string
	// Fix says what to do; empty when waiting is all there is to do.
	Fix string
	// Detail is the error's own text, or a note that it was withheld
	// because it could hold a password.
	Detail string
}

// Fixes that more than one store gives.
const (
	FixMigrate     = "run `keygate migrate` with this config (or set `migrate auto` and restart); if the schema was migrated elsewhere, check that the store points at the same database and schema"
	fixUnreachable = "check that the database server is running and that the DSN's host and port are right"
	fixUnknownHost = "check the host name in the DSN, and that this machine can resolve it"
)

// Diagnose explains the errors every store shares: ErrNotMigrated,
// timeouts and network failures. A store's own Diagnose tries what only it
// knows first, then this. An unknown error is KindOther, transient, with
// its text as the cause.
func Diagnose(err error) Diagnosis {
	detail := ""
	if err != nil {
		detail = err.Error()
	}
	d := diagnoseCommon(err)
	d.Detail = detail
	return d
}

func diagnoseCommon(err error) Diagnosis {
	var dnsErr *net.DNSError
	var netErr net.Error
	switch {
	case err == nil:
		return Diagnosis{Kind: KindOther, Cause: "no error"}
	case errors.Is(err, ErrNotMigrated):
		return Diagnosis{Kind: KindNotMigrated, Permanent: true,
			Cause: "the store's schema is missing or older than this keygate needs", Fix: FixMigrate}
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return Diagnosis{Kind: KindTimeout,
			Cause: "the store did not answer in time",
			Fix:   "if it persists, check the database server's load and the network to it, or raise store_timeout"}
	case errors.Is(err, context.Canceled):
		return Diagnosis{Kind: KindCanceled, Cause: "the request was canceled before the store answered"}
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return Diagnosis{Kind: KindUnknownHost, Permanent: true,
			Cause: "the database host name does not resolve: " + dnsErr.Name, Fix: fixUnknownHost}
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return Diagnosis{Kind: KindUnreachable, Cause: "nothing accepts connections at the database's address", Fix: fixUnreachable}
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return Diagnosis{Kind: KindConnectionLost, Cause: "the connection to the database was lost"}
	}
	return Diagnosis{Kind: KindOther, Cause: err.Error()}
}
