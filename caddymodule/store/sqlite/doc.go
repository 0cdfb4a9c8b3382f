// Package sqlite implements store.Store on an SQLite file, for a single
// keygate node. It uses modernc.org/sqlite, which needs no cgo.
//
// The database runs in WAL mode, so lookups are not blocked by writes, and
// every write transaction begins IMMEDIATE, so that concurrent writers wait
// for the lock (up to the busy timeout) instead of failing midway.
//
// A deleted key leaves no copy in the files: secure_delete zeroes deleted
// rows, and DeleteKey checkpoints and truncates the WAL, whose frames
// hold the row's older page versions.
package sqlite
