package pgtest

import "os"

// BaseURL returns the test database's URL, for tests that look at the
// server as a whole (pg_stat_activity) rather than at their schema.
func BaseURL() string {
	if u := os.Getenv(EnvVar); u != "" {
		return u
	}
	return DefaultURL
}
