package e2e

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keygate/keygate/cmd/inboxsim/sim"
)

// TestExampleConfig runs Caddyfile.example, the config `make run` starts,
// on ephemeral ports: whatever name a client reaches it by, the guarded
// API asks for a key and the dashboard for a login. An unmatched name
// would get Caddy's empty 200, which looks like a bypass.
func TestExampleConfig(t *testing.T) {
	t.Parallel()
	inboxes := sim.New(sim.Options{})
	api := httptest.NewServer(inboxes)
	t.Cleanup(api.Close)

	n := newNode(t, nodeConfig{})
	example, err := os.ReadFile(filepath.Join("..", "..", "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.config, example, 0o600); err != nil {
		t.Fatal(err)
	}
	dashboard := freeAddr(t)
	port := func(addr string) string { return addr[strings.LastIndexByte(addr, ':')+1:] }
	n.extraEnv = []string{
		"KEYGATE_ADMIN_PORT=" + port(n.adminAddr),
		"KEYGATE_PORT=" + port(n.addr),
		"KEYGATE_DASHBOARD_PORT=" + port(dashboard),
		"KEYGATE_UPSTREAM_PORT=" + port(api.Listener.Addr().String()),
	}
	hash, _, err := n.run("hash-password", "--plaintext", "demo-password")
	if err != nil {
		t.Fatalf("hash-password: %v", err)
	}
	n.extraEnv = append(n.extraEnv, "KEYGATE_ADMIN_HASH="+hash)
	acct := n.account("demo")
	inboxes.AddServer(acct, "Staging")
	key := n.key(acct, "example", "")
	n.start()

	send := func(addr, host, auth string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+"/api/servers", nil)
		req.Host = host
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET with Host %q: %v", host, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, host := range []string{"localhost:" + port(n.addr), n.addr, "127.0.0.1", "api.example.com", "LOCALHOST", "[::1]:" + port(n.addr)} {
		if s, body := send(n.addr, host, ""); s != http.StatusUnauthorized {
			t.Errorf("the guarded API reached as %q without a key: %d %q", host, s, body)
		}
		if s, body := send(n.addr, host, basicUser(key)); s != http.StatusOK || !strings.Contains(body, "Staging") {
			t.Errorf("the guarded API reached as %q with a key: %d %q", host, s, body)
		}
		if s, _ := send(dashboard, host, ""); s != http.StatusUnauthorized {
			t.Errorf("the dashboard reached as %q without a login: %d", host, s)
		}
	}
}
