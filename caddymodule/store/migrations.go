package store

import (
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// Migration is one schema change of a store: a file NNNN_description.sql
// that the store's Migrate runs once, in version order. A released file is
// never edited: changes go in a new file.
type Migration struct {
	Version int    // NNNN, from 1
	Name    string // the file's name, for errors
	SQL     string // the file's statements, in the store's dialect
}

// ParseMigrations reads the migrations in dir of fsys (a store's embedded
// files) and returns them in version order, so that every store names,
// numbers and orders its migrations alike and differs only in how it runs
// them. A file whose name is not NNNN_description.sql, or two files with
// one version, make it fail: a migration that could be skipped or run
// twice is a bug to catch before any of them runs.
func ParseMigrations(fsys fs.FS, dir string) ([]Migration, error) {
	entries, err := fs.ReadDir(fsys, dir)
	if err != nil {
		return nil, fmt.Errorf("reading migrations: %w", err)
	}
	var ms []Migration
	seen := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		prefix, _, ok := strings.Cut(name, "_")
		version, err := strconv.Atoi(prefix)
		if !ok || err != nil || version <= 0 || path.Ext(name) != ".sql" {
			return nil, fmt.Errorf("migration %s: name must be NNNN_description.sql", name)
		}
		if other, dup := seen[version]; dup {
			return nil, fmt.Errorf("migrations %s and %s have the same version", other, name)
		}
		seen[version] = name
		b, err := fs.ReadFile(fsys, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", name, err)
		}
		ms = append(ms, Migration{Version: version, Name: name, SQL: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].Version < ms[j].Version })
	return ms, nil
}
