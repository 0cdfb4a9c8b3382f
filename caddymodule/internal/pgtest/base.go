package pgtest

import (
	"os"
	"testing"
)

// BaseURL returns the test database's URL, for tests that look at the
// server as a whole (pg_stat_activity) rather than at their schema.
func BaseURL() string {
	if u := os.Getenv(EnvVar); u != "" {
		return u
	}
	return DefaultURL
}

// Exec runs one statement on the test server's base database, for tests
// that set the server up (databases, roles) rather than their schema.
func Exec(t testing.TB, sql string) {
	t.Helper()
	if err := exec(BaseURL(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}
