// Package e2e runs the keygate binary, a real Caddy, as separate processes
// in front of a stub upstream, against real SQLite files and the real
// Postgres. It fails, never skips, when Caddy or Postgres cannot start.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keygate/keygate/caddymodule/internal/pgtest"
)

var keygateBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "keygate-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	keygateBin = filepath.Join(dir, "keygate")
	// Built with the race detector for the tests: the processes serve real
	// concurrent traffic, and a data race in them fails the test that saw
	// it. Benchmarks measure the binary as it ships.
	flag.Parse()
	args := []string{"build", "-race", "-o", keygateBin, "github.com/keygate/keygate/cmd/keygate"}
	if f := flag.Lookup("test.bench"); f != nil && f.Value.String() != "" {
		args = []string{"build", "-trimpath", "-o", keygateBin, "github.com/keygate/keygate/cmd/keygate"}
	}
	build := osexec.Command("go", args...)
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building keygate:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// issuedKeys collects every key the tests created, so that each Caddy's
// log can be checked for all of them.
var issuedKeys struct {
	sync.Mutex
	list []string
}

func rememberKey(k string) {
	issuedKeys.Lock()
	issuedKeys.list = append(issuedKeys.list, k)
	issuedKeys.Unlock()
}

// node is one keygate process with its own home, config and ports.
type node struct {
	t         testing.TB
	dir       string // HOME and XDG directories live here
	config    string // path of the Caddyfile
	adminAddr string
	addr      string // the guarded site
	cmd       *osexec.Cmd
	out       *syncBuffer
	exited    chan struct{}
	extraEnv  []string // more environment for the process and the command line
}

// site is the guarded site's Caddyfile block body; global the keygate
// global option's body (empty: no keygate option at all).
type nodeConfig struct {
	global   string
	site     string
	upstream string
	extra    string // more site blocks
	options  string // more global options, such as servers { ... }
}

func (c nodeConfig) render(adminAddr, addr string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\n\tadmin %s\n\tauto_https off\n\tgrace_period 1s\n\tlog {\n\t\tlevel DEBUG\n\t}\n%s", adminAddr, c.options)
	if c.global != "" {
		fmt.Fprintf(&b, "\tkeygate {\n%s\n\t}\n", c.global)
	}
	b.WriteString("}\n\n")
	site := c.site
	if site == "" {
		site = "keygate"
	}
	// The access log with the filter the README recommends for keys that
	// clients put in URLs.
	fmt.Fprintf(&b, "http://%s {\n\tbind 127.0.0.1\n\tlog {\n\t\tformat filter {\n\t\t\trequest>uri query {\n\t\t\t\tdelete api_key\n\t\t\t}\n\t\t}\n\t}\n\t%s\n\treverse_proxy %s\n}\n", addr, site, c.upstream)
	b.WriteString(c.extra)
	return b.String()
}

// newNode writes the config but does not start the process, so that the
// command line can prepare the store first.
func newNode(t testing.TB, cfg nodeConfig) *node {
	t.Helper()
	n := &node{t: t, dir: t.TempDir(), adminAddr: freeAddr(t), addr: freeAddr(t)}
	n.config = filepath.Join(n.dir, "Caddyfile")
	n.writeConfig(cfg)
	return n
}

func (n *node) writeConfig(cfg nodeConfig) {
	if err := os.WriteFile(n.config, []byte(cfg.render(n.adminAddr, n.addr)), 0o600); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) env() []string {
	return append(append(os.Environ(),
		"HOME="+n.dir,
		"XDG_DATA_HOME="+filepath.Join(n.dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(n.dir, "config"),
		"KEYGATE_SECRET=e2e-secret-0123456789abcdefghijklmnopqrstuvwxyz",
		fastExit(),
	), n.extraEnv...)
}

// fastExit spares each race-enabled process its second of sleep at exit
// (ThreadSanitizer's atexit_sleep_ms): the tests run many command lines.
// A data race is still reported, and still fails the process.
func fastExit() string {
	return "GORACE=" + strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0")
}

// start runs Caddy and waits until it serves, failing the test if it does
// not within 30 s.
func (n *node) start() {
	t := n.t
	t.Helper()
	n.out = &syncBuffer{}
	n.cmd = osexec.Command(keygateBin, "run", "--config", n.config, "--adapter", "caddyfile")
	n.cmd.Env = n.env()
	n.cmd.Stdout, n.cmd.Stderr = n.out, n.out
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("starting keygate: %v", err)
	}
	n.exited = make(chan struct{})
	go func() { n.cmd.Wait(); close(n.exited) }()
	t.Cleanup(n.stop)

	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-n.exited:
			t.Fatalf("keygate exited during start-up:\n%s", n.out.String())
		default:
		}
		if resp, err := http.Get("http://" + n.adminAddr + "/config/"); err == nil {
			resp.Body.Close()
			if c, err := net.Dial("tcp", n.addr); err == nil {
				c.Close()
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("keygate did not serve within 30s:\n%s", n.out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitFollowing waits until the node follows the fleet's key events
// (Postgres store): its first catch-up empties the cache, so a test that
// relies on what it cached must fill the cache after that.
func (n *node) waitFollowing() {
	n.t.Helper()
	waitFor(n.t, "keygate to follow the key events", 30*time.Second, func() bool {
		return strings.Contains(n.adminGet("/metrics"), "\ncaddy_keygate_listener_up 1\n")
	}, nil)
}

// waitFor polls cond until it holds, failing the test after limit with
// what was awaited and, if given, the last state seen.
func waitFor(t testing.TB, what string, limit time.Duration, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			if state != nil {
				t.Fatalf("timed out after %v waiting for %s: %s", limit, what, state())
			}
			t.Fatalf("timed out after %v waiting for %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (n *node) stop() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	select {
	case <-n.exited:
	default:
		n.cmd.Process.Signal(os.Interrupt)
		select {
		case <-n.exited:
		case <-time.After(10 * time.Second):
			n.cmd.Process.Kill()
			<-n.exited
		}
	}
	// No key may ever reach a log line, at any level.
	logs := n.out.String()
	if strings.Contains(logs, "WARNING: DATA RACE") {
		n.t.Errorf("the race detector found a data race in keygate:\n%s", logs[strings.Index(logs, "WARNING: DATA RACE"):])
	}
	issuedKeys.Lock()
	defer issuedKeys.Unlock()
	for _, k := range issuedKeys.list {
		if strings.Contains(logs, k) || strings.Contains(logs, k[10:]) {
			n.t.Errorf("a key (%s…) appears in keygate's log", k[:8])
		}
	}
	n.cmd = nil
}

// cli runs an operator command against this node's config and returns its
// standard output, failing the test on error.
func (n *node) cli(args ...string) string {
	n.t.Helper()
	out, err := n.cliErr(args...)
	if err != nil {
		n.t.Fatalf("keygate %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (n *node) cliErr(args ...string) (string, error) {
	cmd := osexec.Command(keygateBin, append(args, "--config", n.config, "--adapter", "caddyfile")...)
	cmd.Env = n.env()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String() + stderr.String(), err
	}
	return strings.TrimSpace(stdout.String()), nil
}

// account creates an account with an admin and returns its id.
func (n *node) account(name string) string {
	id := n.cli("account", "create", name)
	n.cli("member", "add", id, name+"-admin", "--role", "admin")
	return id
}

// key creates a key (restricted when server is given) and returns it.
func (n *node) key(account, name, server string) string {
	args := []string{"key", "create", account, name}
	if server != "" {
		args = append(args, "--server", server)
	}
	k := n.cli(args...)
	rememberKey(k)
	return k
}

// load replaces the running config through the admin API.
func (n *node) load(cfg nodeConfig) {
	n.t.Helper()
	n.loadCaddyfile(cfg.render(n.adminAddr, n.addr))
}

// loadCaddyfile replaces the running config with a Caddyfile, gracefully.
func (n *node) loadCaddyfile(body string) {
	n.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://"+n.adminAddr+"/load", strings.NewReader(body))
	req.Header.Set("Content-Type", "text/caddyfile")
	resp, err := controlClient.Do(req)
	if err != nil {
		n.t.Fatalf("reloading: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		n.t.Fatalf("reloading: %s: %s", resp.Status, b)
	}
}

// controlClient calls dashboards and admin endpoints: with a timeout, so
// that a hung process fails the test rather than the whole run.
var controlClient = &http.Client{Timeout: 30 * time.Second}

// dashboardRequest sends one JSON request to a dashboard at base as user.
func dashboardRequest(t testing.TB, base, user, password, method, path, body, token string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, base+path, rd)
	req.SetBasicAuth(user, password)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-CSRF-Token", token)
	resp, err := controlClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// response is what a client saw.
type response struct {
	status int
	header http.Header
	body   string
}

// do sends a request to the guarded site with the given headers.
func (n *node) do(method, path string, header ...string) response {
	n.t.Helper()
	req, err := http.NewRequest(method, "http://"+n.addr+path, nil)
	if err != nil {
		n.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

func (n *node) adminGet(path string) string {
	n.t.Helper()
	resp, err := http.Get("http://" + n.adminAddr + path)
	if err != nil {
		n.t.Fatalf("GET admin %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		n.t.Fatalf("GET admin %s: %s", path, resp.Status)
	}
	return string(b)
}

// upstream is a stub inbox API that records what reached it, trailers
// included.
type upstream struct {
	*httptest.Server
	mu   sync.Mutex
	seen []*http.Request
}

func newUpstream(t testing.TB) *upstream {
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body) // r.Trailer is filled in at the end of the body
		u.mu.Lock()
		u.seen = append(u.seen, r.Clone(context.Background()))
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"items": []any{}})
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) addr() string { return strings.TrimPrefix(u.URL, "http://") }

func (u *upstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.seen)
}

func (u *upstream) last(t testing.TB) *http.Request {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.seen) == 0 {
		t.Fatal("nothing reached the upstream")
	}
	return u.seen[len(u.seen)-1]
}

// freeAddr returns a loopback address with a free port (pgtest.FreePort:
// one registry of ports for the test servers, Caddy and Postgres alike).
func freeAddr(t testing.TB) string {
	t.Helper()
	return "127.0.0.1:" + strconv.Itoa(pgtest.FreePort(t))
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func exec(t testing.TB, name string, args ...string) (string, error) {
	t.Helper()
	out, err := osexec.Command(name, args...).CombinedOutput()
	return string(out), err
}
