package e2e

import (
	"encoding/json"
	"os"
	osexec "os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/keygate/keygate/caddymodule/internal/pgtest"
)

// deployDir holds the alert rules and the Grafana dashboard keygate ships.
const deployDir = "../../deploy"

// promtool runs Prometheus's promtool (Debian's prometheus package, which
// .ci/run installs): the test fails, never skips, without it.
func promtool(t *testing.T, dir string, args ...string) string {
	t.Helper()
	path, err := osexec.LookPath("promtool")
	if err != nil {
		t.Fatalf("the alert rules are checked with promtool (Debian's prometheus package: apt-get install prometheus; .ci/run installs it): %v", err)
	}
	cmd := osexec.Command(path, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestMonitoring checks the shipped alert rules with promtool (syntax and
// their unit tests), every query of the Grafana dashboard with promtool,
// and that every metric the rules and the dashboard name is exported by a
// running keygate.
func TestMonitoring(t *testing.T) {
	t.Parallel()
	rulesDir := filepath.Join(deployDir, "prometheus")
	promtool(t, rulesDir, "check", "rules", "keygate-alerts.yml")
	if out := promtool(t, rulesDir, "test", "rules", "keygate-alerts.test.yml"); !strings.Contains(out, "SUCCESS") {
		t.Fatalf("promtool test rules:\n%s", out)
	}
	rules, err := os.ReadFile(filepath.Join(rulesDir, "keygate-alerts.yml"))
	if err != nil {
		t.Fatal(err)
	}

	// The dashboard's queries, made into recording rules so that promtool
	// parses each one, with Grafana's variables given values.
	raw, err := os.ReadFile(filepath.Join(deployDir, "grafana", "keygate-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("the Grafana dashboard is not JSON: %v", err)
	}
	vars := strings.NewReplacer("$__rate_interval", "1m", "$job", ".*", "$instance", ".*")
	var rec strings.Builder
	rec.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			n++
			rec.WriteString("      - record: keygate:dashboard_query_" + strconv.Itoa(n) + "\n        expr: " + strconv.Quote(vars.Replace(tg.Expr)) + "\n")
		}
	}
	if n < 10 {
		t.Fatalf("the dashboard has %d queries", n)
	}
	tmp := t.TempDir()
	if err := os.WriteFile(filepath.Join(tmp, "dashboard.yml"), []byte(rec.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	promtool(t, tmp, "check", "rules", "dashboard.yml")

	// What a running keygate (the fleet store, which has every metric)
	// exports, after a few requests.
	dsn := pgtest.DSN(t)
	node := newNode(t, nodeConfig{global: "\t\tstore postgres " + strconv.Quote(dsn) + "\n\t\tsecret {env.KEYGATE_SECRET}", upstream: newUpstream(t).addr()})
	node.start()
	node.waitFollowing()
	key := node.key(node.account("acme"), "monitoring", "")
	node.do("GET", "/api/servers", "Authorization", "Bearer "+key)
	node.do("GET", "/api/servers", "Authorization", "Bearer kg_000000000000000000000000000000000000")
	exported := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^# TYPE (caddy_keygate_\w+) (\w+)$`).FindAllStringSubmatch(node.adminGet("/metrics"), -1) {
		exported[m[1]] = true
		if m[2] == "histogram" {
			for _, s := range []string{"_bucket", "_count", "_sum"} {
				exported[m[1]+s] = true
			}
		}
	}
	named := regexp.MustCompile(`\bcaddy_keygate_\w+`)
	used := append(named.FindAllString(string(rules), -1), named.FindAllString(string(raw), -1)...)
	slices.Sort(used)
	used = slices.Compact(used)
	for _, m := range used {
		if !exported[m] {
			t.Errorf("%s is named by the alert rules or the dashboard, but a running keygate does not export it", m)
		}
	}
	if len(used) < 8 {
		t.Fatalf("only %d metrics named: %v", len(used), used)
	}
}
