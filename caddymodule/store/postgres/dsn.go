package postgres

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// dsnExample is what a well-formed DSN looks like, for error messages.
const dsnExample = "postgres://user:password@db.internal:5432/keygate"

// CheckDSN parses a connection string as Open will and says what is wrong
// with it. The error never repeats the string, which may hold a password.
func CheckDSN(dsn string) error {
	dsn = strings.TrimSpace(dsn)
	if dsn == "" {
		return errors.New("the DSN is empty")
	}
	if scheme, _, isURL := strings.Cut(dsn, "://"); isURL {
		if scheme != "postgres" && scheme != "postgresql" {
			if len(scheme) > 20 {
				scheme = scheme[:20] + "…"
			}
			return fmt.Errorf("the DSN's scheme is %q; use postgres:// or postgresql://, as in %s", scheme, dsnExample)
		}
		u, err := url.Parse(dsn)
		if err != nil {
			return fmt.Errorf("the DSN is not a valid URL (percent-encode special characters in the user name and password), as in %s", dsnExample)
		}
		if u.Host == "" && u.Query().Get("host") == "" && os.Getenv("PGHOST") == "" {
			return fmt.Errorf("the DSN names no host: give one, as in %s, or host=/var/run/postgresql in the query for a local socket", dsnExample)
		}
	} else if !strings.Contains(dsn, "=") {
		return fmt.Errorf("the DSN is neither a URL (%s) nor key=value pairs (host=db.internal dbname=keygate user=keygate)", dsnExample)
	}
	if _, err := pgxpool.ParseConfig(dsn); err != nil {
		return fmt.Errorf("the DSN cannot be used: %s", parseProblem(dsn, err))
	}
	return nil
}

// parseProblem is pgx's reason for refusing dsn without the DSN itself,
// which pgx quotes (redacting passwords only on a best-effort basis).
func parseProblem(dsn string, err error) string {
	msg := err.Error()
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) {
		// "cannot parse `<dsn>`: <problem>"
		if i := strings.Index(msg, "`: "); i >= 0 {
			msg = msg[i+3:]
		}
	}
	for _, secret := range append(passwords(dsn), dsn) {
		if secret != "" && strings.Contains(msg, secret) {
			return "malformed (details withheld: they would show the password)"
		}
	}
	return msg
}

var kvPassword = regexp.MustCompile(`password\s*=\s*('(?:[^'\\]|\\.)*'|\S+)`)

// passwords returns the password a DSN holds, as written and decoded.
func passwords(dsn string) []string {
	var pw []string
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		if p, ok := u.User.Password(); ok {
			pw = append(pw, p, url.QueryEscape(p))
		}
	}
	for _, m := range kvPassword.FindAllStringSubmatch(dsn, -1) {
		pw = append(pw, strings.Trim(m[1], "'"))
	}
	return pw
}

// DescribeDSN says, for people, which database a DSN points at: hosts,
// database, user and search_path, never the password.
func DescribeDSN(dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "postgres (a DSN that does not parse)"
	}
	hosts := []string{hostPort(cfg.Host, cfg.Port)}
	for _, f := range cfg.Fallbacks {
		if h := hostPort(f.Host, f.Port); h != hosts[len(hosts)-1] {
			hosts = append(hosts, h)
		}
	}
	s := fmt.Sprintf("postgres database %q on %s as %s", cfg.Database, strings.Join(hosts, ","), cfg.User)
	if sp := cfg.RuntimeParams["search_path"]; sp != "" {
		s += ", search_path " + sp
	}
	return s
}

func hostPort(host string, port uint16) string {
	if strings.HasPrefix(host, "/") { // a socket directory
		return fmt.Sprintf("%s (port %d)", host, port)
	}
	return fmt.Sprintf("%s:%d", host, port)
}
