package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/cpustat"
	"github.com/relayq/relay/internal/fleet"
	"github.com/relayq/relay/internal/pgtest"
)

// suiteApp is the application_name of the suite's own connections: never a fault's target.
const suiteApp = "relay-chaos-suite"

// workerApp starts the application_name of every worker's connections.
const workerApp = "relay-chaos-w"

// suite is what every scenario runs with: the server, the options, and the timings of
// the mode (full or quick).
type suite struct {
	log  *slog.Logger
	opts options
	url  string
	srv  *pgtest.Server // nil on -database-url: faults of the server are skipped
	pool *pgxpool.Pool  // the suite's own: producer, monitor, faults, verification
	t    timings
}

// timings are the lengths of a scenario's phases and faults.
type timings struct {
	warmup   time.Duration // producing before the fault: the baseline
	after    time.Duration // producing after the fault
	outage   time.Duration // PostgreSQL down; connections killed
	kills    time.Duration // repeated SIGKILLs
	killGap  time.Duration // between them
	idleTx   time.Duration // a snapshot held open
	backlog  int           // jobs of the large backlog
	burst    int           // jobs of the burst on exhausted pools
	leaseTTL time.Duration // the workers' (relay's default when zero)
	drainMax time.Duration // how long the workers may take to finish every job after
}

func timingsFor(o options) timings {
	if o.quick {
		return timings{warmup: 2 * time.Second, after: 3 * time.Second, outage: 3 * time.Second,
			kills: 4 * time.Second, killGap: time.Second, idleTx: 5 * time.Second,
			backlog: 5_000, burst: 1_000, leaseTTL: o.leaseTTL, drainMax: time.Minute}
	}
	return timings{warmup: 5 * time.Second, after: 10 * time.Second, outage: 20 * time.Second,
		kills: 30 * time.Second, killGap: 2 * time.Second, idleTx: 60 * time.Second,
		backlog: 100_000, burst: 5_000, leaseTTL: o.leaseTTL, drainMax: 3 * time.Minute}
}

// lease is the workers' lease TTL as it takes effect.
func (t timings) lease() time.Duration {
	if t.leaseTTL == 0 {
		return relay.DefaultLeaseTTL
	}
	return t.leaseTTL
}

func newSuite(ctx context.Context, log *slog.Logger, o options) (*suite, error) {
	s := &suite{log: log, opts: o, url: o.databaseURL, t: timingsFor(o)}
	if s.url == "" {
		began := time.Now()
		srv, err := pgtest.Start(ctx, pgtest.Options{
			Durable:  true, // PostgreSQL's defaults: a crash loses no commit
			Settings: map[string]string{"max_connections": "400"},
			Logf:     func(format string, args ...any) { log.Debug(fmt.Sprintf(format, args...)) },
		})
		if err != nil {
			return nil, err
		}
		s.srv, s.url = srv, srv.URL()
		log.Info("started a throwaway PostgreSQL", "url", s.url, "took", time.Since(began).Round(time.Millisecond))
	}
	cfg, err := pgxpool.ParseConfig(s.url)
	if err != nil {
		s.close()
		return nil, err
	}
	cfg.MaxConns = 12
	cfg.ConnConfig.RuntimeParams["application_name"] = suiteApp
	if s.pool, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		s.close()
		return nil, err
	}
	if err := s.pool.Ping(ctx); err != nil {
		s.close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	if o.logDir != "" {
		if err := os.MkdirAll(o.logDir, 0o755); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

func (s *suite) close() {
	if s.pool != nil {
		s.pool.Close()
	}
	if s.srv != nil {
		if err := s.srv.Stop(); err != nil {
			s.log.Warn("stopping the throwaway server", "error", err)
		}
	}
}

// postmasterPID is the throwaway server's, or 0.
func (s *suite) postmasterPID() int {
	if s.srv == nil {
		return 0
	}
	return cpustat.PostmasterPID(s.srv.DataDir())
}

// report starts the report of this run of the suite.
func (s *suite) report() *report {
	var version string
	_ = s.pool.QueryRow(context.Background(), "SELECT current_setting('server_version')").Scan(&version)
	return &report{
		Started: time.Now(), Quick: s.opts.quick, Server: version, Throwaway: s.srv != nil,
		Processes: s.opts.processes, Workers: s.opts.workers, PoolConns: s.opts.poolConns, Rate: s.opts.rate,
		LeaseTTL: s.t.lease().String(),
	}
}

// run runs one scenario in a schema of its own, and returns what it found.
func (s *suite) run(ctx context.Context, sc *scenario) *Result {
	res := &Result{Name: sc.name, Proves: sc.proves}
	if sc.ownServer && s.srv == nil {
		res.Skipped = "it restarts or stops PostgreSQL: it runs only on a server the suite started itself (without -database-url)"
		s.log.Info("scenario skipped", "name", sc.name, "why", res.Skipped)
		return res
	}
	s.log.Info("scenario", "name", sc.name)
	began := time.Now()
	r := &run{s: s, sc: sc, res: res, schema: "relay_chaos_" + strings.ReplaceAll(sc.name, "-", "_"), queue: "chaos"}
	if err := r.execute(ctx); err != nil {
		res.Errors = append(res.Errors, err.Error())
		s.log.Error("scenario failed to run", "name", sc.name, "error", err)
	}
	r.cleanup()
	res.Seconds = time.Since(began).Seconds()
	s.log.Info("scenario done", "name", sc.name, "took", time.Since(began).Round(time.Millisecond),
		"lost", res.Lost, "dup_plain", res.DupPlain, "dup_tx", res.DupTx)
	return res
}

// workerURL is the database URL for a worker, through addr (host:port) if not empty.
func (s *suite) workerURL(addr string) (string, error) {
	if addr == "" {
		return s.url, nil
	}
	u, err := url.Parse(s.url)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("a partition needs a database URL of the form postgres://host:port/…: %q", s.url)
	}
	u.Host = addr
	return u.String(), nil
}

// serverAddr is the host:port of the database, for proxies.
func (s *suite) serverAddr() (string, error) {
	cfg, err := pgx.ParseConfig(s.url)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(cfg.Host, "/") {
		return "", fmt.Errorf("a partition needs a TCP database URL, not a socket (%s)", cfg.Host)
	}
	return net.JoinHostPort(cfg.Host, fmt.Sprint(cfg.Port)), nil
}

// workerLog is where a worker's relay log goes: a file in -logs, else nowhere.
func (s *suite) workerLog(scenario, id string) (io.WriteCloser, error) {
	if s.opts.logDir == "" {
		return nopCloser{io.Discard}, nil
	}
	return os.Create(filepath.Join(s.opts.logDir, scenario+"-"+id+".log"))
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// spec is a worker's fleet.Spec with the suite's settings.
func (s *suite) spec(r *run, id string, dbURL string) fleet.Spec {
	spec := fleet.Spec{
		URL: dbURL, Schema: r.schema, ID: workerApp + id, App: workerApp + id,
		PoolConns: int32(s.opts.poolConns), Queue: r.queue, Workers: s.opts.workers,
		LeaseTTL: s.t.leaseTTL, Effects: r.effects(), Debug: s.opts.verbose,
	}
	if s.t.leaseTTL != 0 {
		spec.LeaseRenewal = s.t.leaseTTL / 4
	}
	return spec
}
