package main

// The processes under test: one upstream and four Caddy processes from the
// keygate binary, each with its own config, home and data directory.

import (
	"bufio"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Scenario names. plain is the reference every other scenario is paired
// with in the same round.
const (
	scPlain     = "plain"
	scPlainAA   = "plain-aa"
	scKeygate   = "keygate"
	scBasicAuth = "basic_auth"
)

// scenario is one Caddy process under load.
type scenario struct {
	name string
	what string // one line for the report
	site string // directives before reverse_proxy in the site block
	dir  string // HOME, XDG_* and the Caddyfile live here
	addr string // 127.0.0.1:port of the site
	proc *child
}

func (s *scenario) config() string { return filepath.Join(s.dir, "Caddyfile") }

// env gives the process a home of its own, so that each Caddy (and the
// keygate CLI run against it) has its own data directory: the default
// keygate store is an SQLite file there, with a generated secret beside it.
func (s *scenario) env() []string {
	return append(os.Environ(),
		"HOME="+s.dir,
		"XDG_DATA_HOME="+filepath.Join(s.dir, "data"),
		"XDG_CONFIG_HOME="+filepath.Join(s.dir, "config"),
	)
}

// caddyfile renders a config with what docs/benchmarking.md asks of every
// Caddy in the benchmark: no admin endpoint, no automatic HTTPS, the logger
// at ERROR, no access log (no `log` in the site), loopback only. The site
// has no host name, so no host matcher runs; only `site` differs between
// scenarios.
func caddyfile(addr, upstream, site string) string {
	_, port, _ := net.SplitHostPort(addr)
	var b strings.Builder
	b.WriteString("{\n\tadmin off\n\tauto_https off\n\tgrace_period 1s\n\tlog {\n\t\tlevel ERROR\n\t}\n}\n\n")
	fmt.Fprintf(&b, "http://:%s {\n\tbind 127.0.0.1\n", port)
	for line := range strings.Lines(site) {
		if line = strings.TrimSpace(line); line != "" {
			fmt.Fprintf(&b, "\t%s\n", line)
		}
	}
	fmt.Fprintf(&b, "\treverse_proxy %s\n}\n", upstream)
	return b.String()
}

// setup creates the four scenarios under root, prepares keygate's store (an
// account and a key) and basic_auth's hash, and starts them. It returns the
// scenarios in their base order and the Authorization value every request
// carries.
func setup(ctx context.Context, bin, root, upstream string, procs *children) ([]*scenario, string, error) {
	scs := []*scenario{
		{name: scPlain, what: "reverse_proxy only"},
		{name: scPlainAA, what: "a second, identical plain Caddy (A/A control)"},
		{name: scKeygate, what: "keygate (embedded SQLite store, key cached) then reverse_proxy", site: "keygate"},
		{name: scBasicAuth, what: "basic_auth (bcrypt, hash cache) then reverse_proxy"},
	}
	for _, s := range scs {
		s.dir = filepath.Join(root, s.name)
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			return nil, "", fmt.Errorf("creating the %s directory: %w", s.name, err)
		}
		addr, err := freeAddr()
		if err != nil {
			return nil, "", fmt.Errorf("picking a port for %s: %w", s.name, err)
		}
		s.addr = addr
	}
	kg, ba := scs[2], scs[3]

	// keygate: the CLI creates the store, an account and a key in the same
	// data directory the server will use.
	if err := os.WriteFile(kg.config(), []byte(caddyfile(kg.addr, upstream, kg.site)), 0o600); err != nil {
		return nil, "", fmt.Errorf("writing the keygate Caddyfile: %w", err)
	}
	acct, err := cli(ctx, bin, kg, "account", "create", "loadbench")
	if err != nil {
		return nil, "", err
	}
	key, err := cli(ctx, bin, kg, "key", "create", acct, "loadbench")
	if err != nil {
		return nil, "", err
	}
	if strings.ContainsAny(key, " \t\n:") || key == "" {
		return nil, "", fmt.Errorf("keygate key create printed %q, not a key", key)
	}

	// basic_auth cannot have an empty password, so the user is "api" and
	// the password is the key: `Basic base64("api:<key>")`, a form keygate
	// accepts too. Every scenario gets this very header, so the request
	// bytes are identical (the plain ones ignore it).
	hash, err := cli(ctx, bin, nil, "hash-password", "--plaintext", key)
	if err != nil {
		return nil, "", err
	}
	ba.site = fmt.Sprintf("basic_auth {\n\tapi %s\n}", hash)
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("api:"+key))

	for _, s := range scs {
		if s != kg {
			if err := os.WriteFile(s.config(), []byte(caddyfile(s.addr, upstream, s.site)), 0o600); err != nil {
				return nil, "", fmt.Errorf("writing the %s Caddyfile: %w", s.name, err)
			}
		}
		cmd := exec.Command(bin, "run", "--config", s.config(), "--adapter", "caddyfile")
		cmd.Env = s.env()
		cmd.Dir = s.dir
		c, err := procs.start(s.name, cmd)
		if err != nil {
			return nil, "", err
		}
		s.proc = c
		if err := c.waitListening(s.addr, 30*time.Second); err != nil {
			return nil, "", err
		}
	}
	return scs, auth, nil
}

// cli runs a command of the keygate binary and returns its trimmed standard
// output. With s it runs against s's config and home, as an operator would.
func cli(ctx context.Context, bin string, s *scenario, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if s != nil {
		args = append(args, "--config", s.config(), "--adapter", "caddyfile")
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	setDeathSignal(cmd)
	if s != nil {
		cmd.Env = s.env()
		cmd.Dir = s.dir
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("running keygate %s: %v\n%s%s", args[0], err, stdout.String(), stderr.String())
	}
	return strings.TrimSpace(stdout.String()), nil
}

// verify checks, before any load, that every scenario answers the
// benchmark's request with 200 and that the guards guard: keygate and
// basic_auth answer 401 without the header. keygate's first 200 also puts
// the key in its cache, so the rounds measure cache hits.
func verify(ctx context.Context, scs []*scenario, path, auth string) error {
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(s *scenario, withAuth bool) (int, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.addr+path, nil)
		if err != nil {
			return 0, "", err
		}
		if withAuth {
			req.Header.Set("Authorization", auth)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return resp.StatusCode, string(body), nil
	}
	for _, s := range scs {
		// keygate answers 503 until its app has started, which can be a
		// moment after the listener is up: retry for a while.
		deadline := time.Now().Add(15 * time.Second)
		for {
			status, body, err := get(s, true)
			if err == nil && status == http.StatusOK {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				if err != nil {
					return fmt.Errorf("verifying %s: GET %s with the key: %w", s.name, path, err)
				}
				return fmt.Errorf("verifying %s: GET %s with the key answered %d, want 200: %s\n%s", s.name, path, status, body, s.proc.output())
			}
			time.Sleep(200 * time.Millisecond)
		}
		if s.name == scKeygate || s.name == scBasicAuth {
			status, body, err := get(s, false)
			if err != nil {
				return fmt.Errorf("verifying %s: GET %s without a key: %w", s.name, path, err)
			}
			if status != http.StatusUnauthorized {
				return fmt.Errorf("verifying %s: GET %s without a key answered %d, want 401: %s", s.name, path, status, body)
			}
		}
		if err := s.proc.alive(); err != nil {
			return err
		}
	}
	return nil
}

// freeAddr returns a loopback address whose port was free a moment ago.
// Caddy has to bind it itself, so there is a small window in which someone
// else could take it; then Caddy exits and waitListening says so.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// The upstream is a tiny Go HTTP server in a child process: this very
// binary, re-executed with upstreamEnv set. A child rather than a goroutine
// of loadbench, so that its CPU is not mixed with the load generator's and
// can be read from /proc on its own; a few lines of net/http rather than a
// fourth Caddy with `respond`, so that it costs as little as possible of the
// two cores the Caddy under test shares with it and with wrk. It binds
// 127.0.0.1:0 itself and prints the address, so its port cannot be raced.
const upstreamEnv = "KEYGATE_LOADBENCH_UPSTREAM"

// serveUpstream is the upstream child's main.
func serveUpstream() error {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("upstream: listening: %w", err)
	}
	fmt.Println(l.Addr().String()) // the parent waits for this line
	// The parent holds our stdin open; EOF means it is gone, however it
	// died, and we must not outlive it.
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	body := []byte("ok")
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h["Content-Type"] = []string{"text/plain; charset=utf-8"}
			h["Content-Length"] = []string{"2"}
			w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	return srv.Serve(l)
}

// startUpstream starts the upstream child and returns its address.
func startUpstream(procs *children) (*child, string, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, "", fmt.Errorf("finding loadbench's own executable to start the upstream: %w", err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, "", err
	}
	inR, inW, err := os.Pipe()
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), upstreamEnv+"=1")
	cmd.Stdout, cmd.Stdin = outW, inR
	c, err := procs.start("upstream", cmd)
	outW.Close()
	inR.Close()
	if err != nil {
		outR.Close()
		inW.Close()
		return nil, "", err
	}
	c.stdin = inW

	line := make(chan string, 1)
	go func() {
		br := bufio.NewReader(outR)
		s, _ := br.ReadString('\n')
		line <- strings.TrimSpace(s)
		io.Copy(c.out, br)
		outR.Close()
	}()
	select {
	case addr := <-line:
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, "", fmt.Errorf("starting the upstream: it printed %q, not an address\n%s", addr, c.output())
		}
		return c, addr, nil
	case <-time.After(10 * time.Second):
		return nil, "", fmt.Errorf("starting the upstream: no address within 10s\n%s", c.output())
	}
}

// child is a process loadbench started and must stop.
type child struct {
	name   string
	cmd    *exec.Cmd
	out    *tailBuffer
	stdin  io.Closer // the upstream's lifeline; nil for Caddy
	exited chan struct{}
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) output() string { return c.out.String() }

// alive returns an error if the process has exited.
func (c *child) alive() error {
	select {
	case <-c.exited:
		return fmt.Errorf("%s (pid %d) exited: %v\n%s", c.name, c.pid(), c.cmd.ProcessState, c.output())
	default:
		return nil
	}
}

// waitListening waits until addr accepts connections, failing early if the
// process exits (a port taken in the meantime, a config error).
func (c *child) waitListening(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := c.alive(); err != nil {
			return fmt.Errorf("starting %s: %w", c.name, err)
		}
		if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			conn.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("starting %s: not listening on %s after %s\n%s", c.name, addr, timeout, c.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// children are all the processes loadbench started, so that every exit
// path, an error or SIGINT included, stops them. setDeathSignal covers the
// paths that cannot run Go code (SIGKILL, a crash).
type children struct {
	mu   sync.Mutex
	list []*child
}

func (cs *children) start(name string, cmd *exec.Cmd) (*child, error) {
	c := &child{name: name, cmd: cmd, out: &tailBuffer{max: 64 << 10}, exited: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = c.out
	}
	cmd.Stderr = c.out
	setDeathSignal(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", name, cmd.Path, err)
	}
	go func() {
		cmd.Wait()
		close(c.exited)
	}()
	cs.mu.Lock()
	cs.list = append(cs.list, c)
	cs.mu.Unlock()
	return c, nil
}

// all returns the processes started so far.
func (cs *children) all() []*child {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return append([]*child(nil), cs.list...)
}

// stopAll asks every process to stop (SIGINT: Caddy shuts down gracefully,
// within its 1 s grace period) and kills whatever is still running 10 s
// later.
func (cs *children) stopAll() {
	list := cs.all()
	for _, c := range list {
		if c.stdin != nil {
			c.stdin.Close()
		}
		c.cmd.Process.Signal(os.Interrupt)
	}
	deadline := time.After(10 * time.Second)
	for _, c := range list {
		select {
		case <-c.exited:
		case <-deadline:
			for _, c := range list {
				c.cmd.Process.Kill()
			}
			for _, c := range list {
				<-c.exited
			}
			return
		}
	}
}

// tailBuffer keeps the last max bytes written to it: enough of a child's
// output to explain a failure, never unbounded.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}
