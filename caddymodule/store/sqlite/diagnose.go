package sqlite

import (
	"errors"
	"io/fs"
	"strings"
	"syscall"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/keygate/keygate/caddymodule/store"
)

const fixAccess = "give the user running Caddy read and write access to the database file, its -wal and -shm files and its directory"

// resultCodes explains SQLite's primary result codes that mean the file
// cannot serve keygate.
var resultCodes = map[int]store.Diagnosis{
	sqlite3.SQLITE_CANTOPEN: {Kind: store.KindUnopenable, Permanent: true,
		Fix: "check that the store's path is right and that its directory exists; " + fixAccess},
	sqlite3.SQLITE_READONLY: {Kind: store.KindReadOnly, Permanent: true, Fix: fixAccess},
	sqlite3.SQLITE_PERM:     {Kind: store.KindPermissionDenied, Permanent: true, Fix: fixAccess},
	sqlite3.SQLITE_AUTH:     {Kind: store.KindPermissionDenied, Permanent: true, Fix: fixAccess},
	sqlite3.SQLITE_NOTADB: {Kind: store.KindCorrupt, Permanent: true,
		Fix: "the store's path names a file that is not a keygate database: correct the path, or restore the file from a backup"},
	sqlite3.SQLITE_CORRUPT: {Kind: store.KindCorrupt, Permanent: true, Fix: "restore the database file from a backup"},
	sqlite3.SQLITE_FULL:    {Kind: store.KindDiskFull, Permanent: true, Fix: "free disk space where the database file lives"},
	sqlite3.SQLITE_IOERR: {Kind: store.KindIOError, Permanent: true,
		Fix: "check the disk and file system that hold the database file"},
	sqlite3.SQLITE_BUSY: {Kind: store.KindBusy,
		Fix: "another connection held the write lock too long: look for a long transaction or a backup holding the file"},
	sqlite3.SQLITE_LOCKED: {Kind: store.KindBusy},
}

// Diagnose explains an error of this store: SQLite's result codes and
// file errors first, then what every store shares.
func (s *Store) Diagnose(err error) store.Diagnosis {
	var e *sqlite.Error
	switch {
	case errors.As(err, &e):
		msg := e.Error()
		if code := e.Code() & 0xff; code == sqlite3.SQLITE_ERROR && (strings.Contains(msg, "no such table") || strings.Contains(msg, "no such column")) {
			return store.Diagnosis{Kind: store.KindNotMigrated, Permanent: true, Cause: "SQLite: " + msg, Fix: store.FixMigrate, Detail: err.Error()}
		} else if d, ok := resultCodes[code]; ok {
			d.Cause, d.Detail = "SQLite: "+msg, err.Error()
			return d
		}
	case errors.Is(err, syscall.ENOTDIR), errors.Is(err, syscall.EISDIR), errors.Is(err, fs.ErrNotExist):
		d := resultCodes[sqlite3.SQLITE_CANTOPEN]
		d.Cause, d.Detail = "the store's path cannot hold a database file", err.Error()
		return d
	case errors.Is(err, fs.ErrPermission):
		return store.Diagnosis{Kind: store.KindPermissionDenied, Permanent: true,
			Cause: "the database file or its directory may not be opened by this user", Fix: fixAccess, Detail: err.Error()}
	}
	return store.Diagnose(err)
}
