package e2e

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	osexec "os/exec"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/keygate/keygate/caddymodule/auth"
	"github.com/keygate/keygate/caddymodule/internal/pgtest"
	"github.com/keygate/keygate/caddymodule/keys"
	"github.com/keygate/keygate/caddymodule/store/postgres"
)

// The secrets of BenchmarkRekey: A made the keys, B replaces it.
const (
	rekeySecretA = "rekey-bench-secret-A-0123456789abcdefghijklmnopqrstuvwxyz"
	rekeySecretB = "rekey-bench-secret-B-0123456789abcdefghijklmnopqrstuvwxyz"
)

// BenchmarkRekey measures `keygate secret rotate` on the Postgres store:
// 1 000 000 keys made with secret A, in 1 000 accounts, are re-keyed under
// secret B by the real command (batches of 500) while a keygate node with
// B as its secret and A in previous_secrets serves a client that sends
// 1 000 of those keys in turn at a steady 200 requests/s, and the same
// requests to a plain reverse_proxy site of the same Caddy (the control:
// what the rotation's CPU and I/O cost any site on this machine). It
// reports keys re-keyed per second (keys over the command's wall time),
// the client's p50 and p99 before, during and after the rotation, the
// ratio of p99 during to before for keygate and for the control, and
// the errors: any answer but 200 fails it, since a key must pass
// throughout a rotation. The node's cache_ttl is 1s, so that nearly every
// request looks its key up in the store while the rotation writes to it;
// with the default of 1m the client would be answered from the cache.
// Run it once (about 5 minutes with 1 000 000 keys on 2 cores):
//
//	go test -run '^$' -bench Rekey -benchtime 1x -timeout 60m ./caddymodule/e2e
//
// KEYGATE_REKEY_KEYS sets how many keys the store holds (20000 for a quick
// run), KEYGATE_REKEY_BATCH the command's --batch and
// KEYGATE_REKEY_CACHE_TTL the node's cache_ttl.
func BenchmarkRekey(b *testing.B) {
	const (
		accounts    = 1000
		clientKeys  = 1000
		rate        = 200 // requests per second to each site
		warmUp      = 3 * time.Second
		phaseLen    = 15 * time.Second
		rotateLimit = 40 * time.Minute
	)
	total := envInt(b, "KEYGATE_REKEY_KEYS", 1_000_000)
	batch := envInt(b, "KEYGATE_REKEY_BATCH", auth.DefaultRotateBatch)
	cacheTTL := cmp.Or(os.Getenv("KEYGATE_REKEY_CACHE_TTL"), "1s")
	if total < clientKeys {
		b.Fatalf("KEYGATE_REKEY_KEYS must be at least %d", clientKeys)
	}
	began := time.Now()
	dsn := pgtest.DSN(b)
	seed := time.Now()
	plain := seedRekeyKeys(b, dsn, total, accounts, clientKeys)
	seeded := time.Since(seed)
	sizeBefore := tableSize(b, dsn)
	b.Logf("stored %d keys made with secret A in %d accounts in %v (%.0f keys/s); api_keys %s",
		total, accounts, seeded.Round(time.Millisecond), float64(total)/seeded.Seconds(), sizeBefore)

	up := newUpstream(b)
	control := freeAddr(b)
	n := newNode(b, nodeConfig{
		global: "\t\tstore postgres " + strconv.Quote(dsn) + "\n" +
			"\t\tsecret {env.KEYGATE_SECRET}\n\t\tprevious_secrets {env.KEYGATE_PREVIOUS_SECRET}\n" +
			"\t\tcache_ttl " + cacheTTL,
		upstream: up.addr(),
		extra:    "\nhttp://" + control + " {\n\tbind 127.0.0.1\n\treverse_proxy " + up.addr() + "\n}\n",
	})
	n.extraEnv = []string{"KEYGATE_SECRET=" + rekeySecretB, "KEYGATE_PREVIOUS_SECRET=" + rekeySecretA}
	n.start()
	n.waitFollowing()

	auths := make([]string, len(plain))
	for i, k := range plain {
		auths[i] = bearer(k)
	}
	runs := 0
	for b.Loop() {
		if runs++; runs > 1 {
			b.Fatal("BenchmarkRekey rotates its store once: run it with -benchtime 1x")
		}
		l := newRekeyLoad([2]string{n.addr, control}, auths)
		// The store lookups and the machine's load average when each
		// phase ends: a load well above 2 while no rotation runs means
		// that something else used the CPU, and the run is disturbed.
		var lookups [numRekeyPhases + 1]int
		var load [numRekeyPhases + 1]string
		mark := func(p int) { lookups[p], load[p] = storeLookups(b, n), loadAverage(b) }
		mark(phaseWarmUp)
		l.start(rate)
		time.Sleep(warmUp)
		enter := func(p int) {
			mark(p)
			l.enter(p)
		}
		enter(phaseBefore)
		time.Sleep(phaseLen)
		enter(phaseDuring)
		wal := walPosition(b, dsn)
		elapsed, out, err := rotateSecret(b, n, batch, rotateLimit)
		wal = walPosition(b, dsn) - wal
		enter(phaseAfter)
		time.Sleep(phaseLen)
		l.stop()
		mark(numRekeyPhases)
		if err != nil {
			b.Fatalf("keygate secret rotate --batch %d after %v: %v\n%s", batch, elapsed, err, out)
		}
		sizeAfter := tableSize(b, dsn)
		rekeyed := countKeysOf(b, dsn, keysFingerprint(b, rekeySecretB))
		if rekeyed != total {
			b.Errorf("%d of %d keys are made with secret B after the rotation", rekeyed, total)
		}

		var tab strings.Builder
		w := tabwriter.NewWriter(&tab, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(w, "phase\tseconds\tkeygate requests\tp50 ms\tp99 ms\tmax ms\terrors\tstore lookups\tcontrol requests\tp50 ms\tp99 ms\terrors\tload at end\t")
		stats := [numRekeyPhases][2]latencies{}
		for p := phaseBefore; p < numRekeyPhases; p++ {
			kg, ctl := l.latencies(p, 0), l.latencies(p, 1)
			stats[p] = [2]latencies{kg, ctl}
			fmt.Fprintf(w, "%s\t%.1f\t%d\t%.2f\t%.2f\t%.2f\t%d\t%d\t%d\t%.2f\t%.2f\t%d\t%s\t\n", rekeyPhases[p], l.seconds(p),
				len(kg), ms(kg.p(0.5)), ms(kg.p(0.99)), ms(kg.p(1)), l.errs[p][0], lookups[p+1]-lookups[p],
				len(ctl), ms(ctl.p(0.5)), ms(ctl.p(0.99)), l.errs[p][1], load[p+1])
		}
		w.Flush()
		errs := l.errors()
		rateKeys := float64(total) / elapsed.Seconds()
		ratio := float64(stats[phaseDuring][0].p(0.99)) / float64(stats[phaseBefore][0].p(0.99))
		ctlRatio := float64(stats[phaseDuring][1].p(0.99)) / float64(stats[phaseBefore][1].p(0.99))
		b.Logf("keygate secret rotate --batch %d re-keyed %d keys in %v: %.0f keys/s (its last line: %s)\n%s"+
			"p99 during/before: keygate %.2fx, control %.2fx; errors %d; %d requests skipped while %d were in flight; api_keys %s before, %s after; %s; "+
			"WAL written by the server during the rotation %.0f MiB (%.1f KiB per key); whole run %v",
			batch, total, elapsed.Round(time.Millisecond), rateKeys, lastProgress(out), tab.String(),
			ratio, ctlRatio, errs, l.skipped.Load(), maxInFlight, sizeBefore, sizeAfter, autovacuums(b, dsn),
			float64(wal)/(1<<20), float64(wal)/1024/float64(total), time.Since(began).Round(time.Second))
		b.ReportMetric(rateKeys, "keys/s")
		b.ReportMetric(elapsed.Seconds(), "rotate-s")
		for _, p := range []int{phaseBefore, phaseDuring, phaseAfter} {
			b.ReportMetric(ms(stats[p][0].p(0.5)), rekeyPhases[p]+"-p50-ms")
			b.ReportMetric(ms(stats[p][0].p(0.99)), rekeyPhases[p]+"-p99-ms")
		}
		b.ReportMetric(ratio, "p99-ratio")
		b.ReportMetric(ctlRatio, "control-p99-ratio")
		b.ReportMetric(float64(errs), "errors")
		b.ReportMetric(float64(sizeBefore.total)/(1<<20), "table-MB-before")
		b.ReportMetric(float64(sizeAfter.total)/(1<<20), "table-MB-after")
		b.ReportMetric(float64(wal)/(1<<20), "WAL-MB")
		if errs > 0 {
			b.Errorf("%d requests were not answered 200; the first: %s", errs, l.firstErr)
		}
	}
}

// The phases of BenchmarkRekey's load.
const (
	phaseWarmUp = iota // not counted
	phaseBefore
	phaseDuring
	phaseAfter
	numRekeyPhases
)

var rekeyPhases = [numRekeyPhases]string{"warm-up", "before", "during", "after"}

// maxInFlight bounds the requests in flight to each site: past it a tick
// is skipped (and counted), so that a stalled node cannot pile up
// goroutines and connections.
const maxInFlight = 64

// rekeyLoad sends the same requests at a steady rate to two sites, keygate
// (0) and the control (1), and keeps their latencies by phase.
type rekeyLoad struct {
	addrs    [2]string
	auths    []string
	client   *http.Client
	phase    atomic.Int32
	done     chan struct{}
	wg       sync.WaitGroup
	skipped  atomic.Int64
	mu       sync.Mutex
	lat      [numRekeyPhases][2]latencies
	errs     [numRekeyPhases][2]int
	firstErr string
	at       [numRekeyPhases + 1]time.Time // when each phase began, and when the load stopped
}

func newRekeyLoad(addrs [2]string, auths []string) *rekeyLoad {
	tr := &http.Transport{MaxIdleConnsPerHost: maxInFlight, DisableCompression: true}
	return &rekeyLoad{
		addrs:  addrs,
		auths:  auths,
		client: &http.Client{Transport: tr, Timeout: 10 * time.Second},
		done:   make(chan struct{}),
	}
}

// start sends rate requests per second to each site until stop.
func (l *rekeyLoad) start(rate int) {
	l.at[phaseWarmUp] = time.Now()
	for site := range l.addrs {
		l.wg.Go(func() {
			sem := make(chan struct{}, maxInFlight)
			tick := time.NewTicker(time.Second / time.Duration(rate))
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-l.done:
					return
				case <-tick.C:
				}
				select {
				case sem <- struct{}{}:
				default:
					l.skipped.Add(1)
					continue
				}
				l.wg.Go(func() {
					defer func() { <-sem }()
					l.send(site, l.auths[i%len(l.auths)])
				})
			}
		})
	}
}

func (l *rekeyLoad) send(site int, authorization string) {
	p := l.phase.Load()
	req, _ := http.NewRequest("GET", "http://"+l.addrs[site]+"/api/servers", nil)
	req.Header.Set("Authorization", authorization)
	start := time.Now()
	resp, err := l.client.Do(req)
	var status int
	var body []byte
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		status = resp.StatusCode
	}
	d := time.Since(start)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil || status != http.StatusOK {
		l.errs[p][site]++
		if l.firstErr == "" {
			l.firstErr = fmt.Sprintf("%s to %s: status %d, error %v, body %.200q", rekeyPhases[p], l.addrs[site], status, err, body)
		}
		return
	}
	l.lat[p][site] = append(l.lat[p][site], d)
}

func (l *rekeyLoad) enter(p int) {
	l.mu.Lock()
	l.at[p] = time.Now()
	l.mu.Unlock()
	l.phase.Store(int32(p))
}

// stop ends the load and waits for the requests in flight.
func (l *rekeyLoad) stop() {
	close(l.done)
	l.wg.Wait()
	l.at[numRekeyPhases] = time.Now()
	l.client.CloseIdleConnections()
}

func (l *rekeyLoad) seconds(p int) float64 { return l.at[p+1].Sub(l.at[p]).Seconds() }

// latencies returns a phase's latencies at a site, sorted.
func (l *rekeyLoad) latencies(p, site int) latencies {
	ds := l.lat[p][site]
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds
}

func (l *rekeyLoad) errors() int {
	n := 0
	for p := range l.errs {
		n += l.errs[p][0] + l.errs[p][1]
	}
	return n
}

// latencies are sorted durations.
type latencies []time.Duration

// p returns the q-quantile (0 when there is none).
func (ds latencies) p(q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return ds[int(q*float64(len(ds)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// seedRekeyKeys migrates the store, records secret A as its current one,
// and stores total standard keys made with it, spread over accounts,
// COPYing them from one connection per core (each making its own keys).
// It returns the plaintexts of want of them, spread over the id space.
func seedRekeyKeys(b *testing.B, dsn string, total, accounts, want int) []string {
	b.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), 30*time.Minute)
	defer cancel()
	st, err := postgres.Open(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	if err := st.Migrate(ctx); err != nil {
		b.Fatalf("migrating: %v", err)
	}
	kr, err := keys.NewKeyring([]byte(rekeySecretA))
	if err != nil {
		b.Fatal(err)
	}
	secret := kr.Current()
	if _, err := st.InitSecret(ctx, secret.Fingerprint()); err != nil {
		b.Fatal(err)
	}
	accts := make([]string, accounts)
	for i := range accts {
		a, err := st.CreateAccount(ctx, fmt.Sprintf("rekey-%04d", i))
		if err != nil {
			b.Fatal(err)
		}
		accts[i] = a.ID
	}

	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Close()
	var (
		mu     sync.Mutex
		picked []string
	)
	every := total / want
	workers := max(2, runtime.NumCPU())
	now := time.Now().UTC()
	columns := []string{"id", "account_id", "name", "type", "server_id", "display", "digest", "sealed", "created_at", "created_by", "secret"}
	g, gctx := errgroup.WithContext(ctx)
	for w := range workers {
		g.Go(func() error {
			i, end := w*total/workers, (w+1)*total/workers
			rows := pgx.CopyFromFunc(func() ([]any, error) {
				if i == end {
					return nil, nil
				}
				defer func() { i++ }()
				k, err := keys.New()
				if err != nil {
					return nil, err
				}
				id, err := keys.NewID("key")
				if err != nil {
					return nil, err
				}
				account := accts[i%accounts]
				sealed, err := secret.Seal(k, account, id)
				if err != nil {
					return nil, err
				}
				if i%every == 0 {
					mu.Lock()
					if len(picked) < want {
						picked = append(picked, k.Secret())
					}
					mu.Unlock()
				}
				d := secret.Digest([]byte(k))
				return []any{id, account, "key " + strconv.Itoa(i), "standard", nil, k.Display(), d[:], sealed, now, "rekey-bench", secret.Fingerprint()}, nil
			})
			_, err := pool.CopyFrom(gctx, pgx.Identifier{"api_keys"}, columns, rows)
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatalf("storing keys: %v", err)
	}
	// As autovacuum would soon: the planner sees the table as it is.
	if _, err := pool.Exec(ctx, "analyze api_keys"); err != nil {
		b.Fatal(err)
	}
	if len(picked) != want {
		b.Fatalf("kept %d keys for the client, not %d", len(picked), want)
	}
	return picked
}

// rotateSecret runs `keygate secret rotate` as an operator would, and
// returns its wall time and output.
func rotateSecret(b *testing.B, n *node, batch int, limit time.Duration) (time.Duration, string, error) {
	ctx, cancel := context.WithTimeout(b.Context(), limit)
	defer cancel()
	cmd := osexec.CommandContext(ctx, keygateBin, "keygate", "secret", "rotate", "--batch", strconv.Itoa(batch), "--config", n.config, "--adapter", "caddyfile")
	cmd.Env = n.env()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	return time.Since(start), out.String(), err
}

var progressLine = regexp.MustCompile(`re-keyed \d+ of \d+ keys \([^)]*\), \d+ keys/s`)

// lastProgress returns the rotate command's last progress line.
func lastProgress(out string) string {
	all := progressLine.FindAllString(out, -1)
	if len(all) == 0 {
		return "none"
	}
	return all[len(all)-1]
}

// relationSize is a table's size on disk.
type relationSize struct{ heap, total int64 }

func (s relationSize) String() string {
	return fmt.Sprintf("%.0f MiB (table %.0f MiB, indexes and TOAST %.0f MiB)",
		float64(s.total)/(1<<20), float64(s.heap)/(1<<20), float64(s.total-s.heap)/(1<<20))
}

func tableSize(b *testing.B, dsn string) relationSize {
	b.Helper()
	var s relationSize
	queryRow(b, dsn, `select pg_relation_size('api_keys'), pg_total_relation_size('api_keys')`, nil, &s.heap, &s.total)
	return s
}

// autovacuums says how often autovacuum and autoanalyze ran on api_keys,
// which after a rotation's updates they do while the client measures.
func autovacuums(b *testing.B, dsn string) string {
	b.Helper()
	var vacuums, analyzes, dead int64
	queryRow(b, dsn, `select autovacuum_count, autoanalyze_count, n_dead_tup from pg_stat_user_tables where relid = 'api_keys'::regclass`, nil, &vacuums, &analyzes, &dead)
	return fmt.Sprintf("autovacuum ran %d times and autoanalyze %d times on api_keys, %d dead rows left", vacuums, analyzes, dead)
}

// walPosition returns the server's current WAL position in bytes: the
// difference of two is the WAL written between them, by every database of
// the server.
func walPosition(b *testing.B, dsn string) int64 {
	b.Helper()
	var pos int64
	queryRow(b, dsn, `select pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint`, nil, &pos)
	return pos
}

// loadAverage returns the machine's load average over the last minute.
func loadAverage(b *testing.B) string {
	b.Helper()
	avg, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		b.Fatal(err)
	}
	return strings.Fields(string(avg))[0]
}

func countKeysOf(b *testing.B, dsn, fingerprint string) int {
	b.Helper()
	var n int
	queryRow(b, dsn, `select count(*) from api_keys where secret = $1`, []any{fingerprint}, &n)
	return n
}

func queryRow(b *testing.B, dsn, sql string, args []any, dest ...any) {
	b.Helper()
	ctx, cancel := context.WithTimeout(b.Context(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(context.Background())
	if err := conn.QueryRow(ctx, sql, args...).Scan(dest...); err != nil {
		b.Fatalf("%s: %v", sql, err)
	}
}

func keysFingerprint(b *testing.B, secret string) string {
	b.Helper()
	s, err := keys.NewSecret([]byte(secret))
	if err != nil {
		b.Fatal(err)
	}
	return s.Fingerprint()
}

// envInt reads a positive integer from the environment, or returns def.
func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(strings.ReplaceAll(v, "_", ""))
	if err != nil || n <= 0 {
		b.Fatalf("%s must be a positive integer, not %q", name, v)
	}
	return n
}
