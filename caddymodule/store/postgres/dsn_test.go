package postgres

import (
	"strings"
	"testing"
)

func TestCheckDSN(t *testing.T) {
	t.Setenv("PGHOST", "")
	const pw = "s3cret-pw"
	cases := []struct {
		dsn  string
		want string // "" for a DSN that is fine
	}{
		{"postgres://u:" + pw + "@db.internal:5432/keygate?sslmode=disable", ""},
		{"postgresql://u@db.internal/keygate", ""},
		{"host=db.internal dbname=keygate user=u password=" + pw, ""},
		{"postgres:///keygate?host=/var/run/postgresql", ""},
		{"postgres://db1.internal,db2.internal/keygate?target_session_attrs=read-write", ""},
		{"", "empty"},
		{"postgress://u:" + pw + "@db.internal/keygate", `scheme is "postgress"`},
		{"mysql://u:" + pw + "@db/keygate", `scheme is "mysql"`},
		{"this is not a dsn", "neither a URL"},
		{"postgres://u:" + pw + "@/keygate", "names no host"},
		{"postgres://u:" + pw + "@db.internal:notaport/keygate", "not a valid URL"},
		{"postgres://u:" + pw + "@db.internal/keygate?sslmode=sometimes", "sslmode"},
		{"postgres://u:" + pw + "@db.internal/keygate?pool_max_conns=many", "pool_max_conns"},
		{"host=db.internal port=x password=" + pw, "cannot be used"},
	}
	for _, c := range cases {
		err := CheckDSN(c.dsn)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("CheckDSN(%q): %v", c.dsn, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("CheckDSN(%q) = %v; want an error saying %q", c.dsn, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), pw) {
			t.Errorf("CheckDSN(%q) repeats the password: %v", c.dsn, err)
		}
	}
}

func TestDescribeDSN(t *testing.T) {
	got := DescribeDSN("postgres://keygate:pw-s3cret@db.internal:6432/keys?search_path=tenant1")
	want := `postgres database "keys" on db.internal:6432 as keygate, search_path tenant1`
	if got != want {
		t.Errorf("DescribeDSN = %q; want %q", got, want)
	}
	got = DescribeDSN("postgres://u@db1:5432,db2:5433/k")
	if !strings.Contains(got, "db1:5432,db2:5433") {
		t.Errorf("DescribeDSN of two hosts = %q", got)
	}
	if got := DescribeDSN("host=db password=pw-s3cret port=x"); strings.Contains(got, "pw-s3cret") {
		t.Errorf("DescribeDSN repeats a password: %q", got)
	}
}
