package store

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestParseMigrations(t *testing.T) {
	fsys := fstest.MapFS{
		"m/0010_later.sql":  {Data: []byte("create table b ();")},
		"m/0002_second.sql": {Data: []byte("create table a ();")},
		"m/0001_init.sql":   {Data: []byte("create schema x;")},
	}
	ms, err := ParseMigrations(fsys, "m")
	if err != nil {
		t.Fatalf("ParseMigrations: %v", err)
	}
	want := []Migration{
		{Version: 1, Name: "0001_init.sql", SQL: "create schema x;"},
		{Version: 2, Name: "0002_second.sql", SQL: "create table a ();"},
		{Version: 10, Name: "0010_later.sql", SQL: "create table b ();"},
	}
	if len(ms) != len(want) {
		t.Fatalf("ParseMigrations = %+v; want %+v", ms, want)
	}
	for i := range want {
		if ms[i] != want[i] {
			t.Errorf("migration %d = %+v; want %+v", i, ms[i], want[i])
		}
	}
}

func TestParseMigrationsRejects(t *testing.T) {
	for _, tc := range []struct {
		what  string
		files []string
		want  string // in the error
	}{
		{"no directory", nil, "reading migrations"},
		{"no underscore", []string{"0001.sql"}, "name must be NNNN_description.sql"},
		{"no number", []string{"init_tables.sql"}, "name must be NNNN_description.sql"},
		{"version 0", []string{"0000_init.sql"}, "name must be NNNN_description.sql"},
		{"negative version", []string{"-1_init.sql"}, "name must be NNNN_description.sql"},
		{"not .sql", []string{"0001_init.txt"}, "name must be NNNN_description.sql"},
		{"same version twice", []string{"0001_init.sql", "0002_a.sql", "002_b.sql"}, "have the same version"},
	} {
		fsys := fstest.MapFS{}
		for _, f := range tc.files {
			fsys["m/"+f] = &fstest.MapFile{Data: []byte("select 1;")}
		}
		ms, err := ParseMigrations(fsys, "m")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: ParseMigrations = %+v, %v; want an error saying %q", tc.what, ms, err, tc.want)
		}
	}
}
