// Command bench measures relay's pickup latency and throughput against PostgreSQL.
//
//	go run ./bench                       # every workload, on a throwaway durable server
//	go run ./bench -workload latency -rate 100 -duration 5s -runs 3 -json /tmp/b.json -plot /tmp/plots
//
// Without -database-url (or DATABASE_URL) it starts a throwaway PostgreSQL with PostgreSQL's
// default durability (fsync and synchronous_commit on). Every workload runs in a schema of
// its own (default relay_bench) that is dropped and migrated again before each run, and
// dropped at the end. It uses only relay's public API, as an application would.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/cpustat"
	"github.com/relayq/relay/internal/fleet"
	"github.com/relayq/relay/internal/tool"
)

type options struct {
	workload    string
	rates       []int
	duration    time.Duration
	runs        int
	jsonPath    string
	plotDir     string
	databaseURL string
	schema      string
	reset       bool
	keep        bool
	analyze     bool
	verbose     bool
	cpuProfile  string
	pgss        bool
	telemetry   string // "" or one of telemetryVariants: run every workload with relayotel

	viaPgBouncer bool          // the pools go through PgBouncer in transaction mode; listeners direct
	pollOnly     bool          // clients run with Config.PollOnly
	pollInterval time.Duration // clients' Config.PollInterval; 0: relay's default

	poolConns     int // the client's pool
	producers     int // sustained and queues producer goroutines
	backlog       int // sustained: most enqueued-but-not-started jobs
	sustainedRate int // sustained: most jobs/s the producers offer

	retentionRate     int           // retention: jobs/s offered
	retentionDuration time.Duration // retention: each phase
	retentionKeep     time.Duration // retention: the retention of the pruning phase
	pruneBacklog      int64         // prune-backlog: finished jobs to delete
	pruneRate         int           // prune-backlog: jobs/s of the latency workload meanwhile
	clients           int           // scaleout: client processes sharing the workers
	jobWork           workRange     // scaleout: how long each job's handler works
	unique            bool          // enqueue: every job with a unique key
}

var workloadNames = []string{"latency", "drain", "sustained", "burst", "sparse", "scheduled", "queues", "ordered", "limited", "enqueue", "sql-enqueue", "overhead", "poolers", "fresh-conns", "retention", "prune-backlog", "scaleout"}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.StringVar(&o.workload, "workload", "all", "workload to run: "+strings.Join(workloadNames, "|")+"|all (all but fresh-conns, and overhead, poolers, retention, prune-backlog and scaleout, which take minutes)")
	rate := fs.String("rate", "", "latency: jobs/s, or a comma-separated list (default 100,1000)")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "measured time of latency and sustained (queues, ordered and limited run half of it)")
	fs.IntVar(&o.runs, "runs", 1, "repeat each workload N times and report the median and range")
	fs.StringVar(&o.jsonPath, "json", "", "write all results as JSON to this file")
	fs.StringVar(&o.plotDir, "plot", "", "write a latency CDF plot (PNG) per workload into this directory")
	fs.StringVar(&o.databaseURL, "database-url", "", "PostgreSQL to run against (default $DATABASE_URL, else a throwaway server)")
	fs.StringVar(&o.schema, "schema", "relay_bench", "schema the benchmark owns: dropped and re-created for every run")
	fs.BoolVar(&o.reset, "reset", false, "drop the schema even if it holds jobs")
	fs.BoolVar(&o.keep, "keep", false, "keep the schema (with the last workload's jobs) at the end")
	fs.BoolVar(&o.analyze, "analyze", false, "drain: ANALYZE the jobs table once the backlog is in; ordered and limited: put 200,000 finished jobs in it and ANALYZE it first — as autovacuum has in a database that has run for a while (by default they run on a never-analyzed table, as a new deployment has)")
	fs.BoolVar(&o.verbose, "v", false, "debug logs, relay's included")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the benchmark process to this file")
	fs.StringVar(&o.telemetry, "telemetry", "", "run the workloads with relayotel: on (traces, every span recorded, and metrics), sampled (traces sampled at 1 %, this run's among the 99 % not recorded, and metrics), metrics, or metadata (no relayotel: only a trace context stored with every job); the overhead workload compares off with this (default on)")
	fs.BoolVar(&o.pgss, "pgss", false, "diagnostics: load pg_stat_statements (with track_planning) into the throwaway server and report each run's costliest statements")
	fs.BoolVar(&o.viaPgBouncer, "via-pgbouncer", false, "run every pool through a PgBouncer in transaction mode that the benchmark starts (its statements unprepared: default_query_exec_mode=exec), each client's listener connected to PostgreSQL itself (Config.ListenerConnString)")
	fs.BoolVar(&o.pollOnly, "poll-only", false, "run the clients with Config.PollOnly: no listener, every queue claims each -poll-interval")
	fs.DurationVar(&o.pollInterval, "poll-interval", 0, "the clients' Config.PollInterval (default relay's: 2s, or 250ms with -poll-only)")
	fs.IntVar(&o.poolConns, "pool-conns", 20, "MaxConns of the client's pgxpool")
	fs.IntVar(&o.producers, "producers", 4, "producer goroutines of sustained and queues")
	fs.IntVar(&o.backlog, "backlog", 5000, "sustained: bound on enqueued-but-not-started jobs")
	fs.IntVar(&o.sustainedRate, "sustained-rate", 50000, "sustained: most jobs/s offered")
	fs.IntVar(&o.retentionRate, "retention-rate", 2000, "retention: jobs/s offered")
	fs.DurationVar(&o.retentionDuration, "retention-duration", 3*time.Minute, "retention: length of each phase (kept, then pruned)")
	fs.DurationVar(&o.retentionKeep, "retention-keep", 30*time.Second, "retention: how long finished jobs are kept in the pruning phase")
	fs.Int64Var(&o.pruneBacklog, "prune-backlog", 10_000_000, "prune-backlog: finished jobs to delete")
	fs.IntVar(&o.pruneRate, "prune-rate", 1000, "prune-backlog: jobs/s of the latency workload that runs meanwhile")
	fs.IntVar(&o.clients, "clients", 10, "scaleout: client processes that share 200 workers, against 1 with all of them")
	fs.Var(&o.jobWork, "job-ms", "scaleout: each job's handler works MIN-MAX milliseconds (uniform), then leaves an effect, half with a plain INSERT and half with CompleteTx, as the fault-injection run of issue 12 ran them; the backlog is then 20,000 jobs (default 0: 50,000 no-op jobs)")
	fs.BoolVar(&o.unique, "unique", false, "enqueue: give every job a unique key of its own (relay.Unique), and the baseline's INSERT the same key with ON CONFLICT DO NOTHING on the same partial unique index")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.workload != "all" && !slices.Contains(workloadNames, o.workload) {
		return o, fmt.Errorf("unknown -workload %q (want %s or all)", o.workload, strings.Join(workloadNames, ", "))
	}
	if *rate == "" {
		o.rates = []int{100, 1000}
	} else {
		for f := range strings.SplitSeq(*rate, ",") {
			r, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || r <= 0 {
				return o, fmt.Errorf("bad -rate %q", f)
			}
			o.rates = append(o.rates, r)
		}
	}
	switch {
	case o.duration < time.Second:
		return o, errors.New("-duration must be at least 1s")
	case o.runs < 1:
		return o, errors.New("-runs must be at least 1")
	case o.telemetry != "" && !slices.Contains(telemetryVariants, o.telemetry):
		return o, fmt.Errorf("bad -telemetry %q (want %s)", o.telemetry, strings.Join(telemetryVariants, ", "))
	case o.poolConns < 2 || o.producers < 1 || o.backlog < 100 || o.sustainedRate < 100:
		return o, errors.New("-pool-conns ≥ 2, -producers ≥ 1, -backlog ≥ 100, -sustained-rate ≥ 100")
	case o.clients < 2 || o.clients > scaleoutWorkers:
		return o, fmt.Errorf("-clients must be 2 to %d", scaleoutWorkers)
	case o.retentionRate < 100 || o.retentionDuration < 30*time.Second || o.retentionKeep < time.Second || o.pruneBacklog < 1 || o.pruneRate < 1:
		return o, errors.New("-retention-rate ≥ 100, -retention-duration ≥ 30s, -retention-keep ≥ 1s, -prune-backlog ≥ 1, -prune-rate ≥ 1")
	}
	if o.databaseURL == "" {
		o.databaseURL = os.Getenv("DATABASE_URL")
	}
	return o, nil
}

// bench is what every workload runs with.
type bench struct {
	log  *slog.Logger
	db   *database
	opts options
	base time.Time // origin of the recorders' monotonic timestamps
	// tel, when set, instruments every client and enqueue as an application would (the
	// overhead workload); telStops undo the clients' instrumentation.
	tel      *telemetry
	telStops []func()
}

// workload is one line of the plan: a name, the plot it belongs to, and a run.
type workload struct {
	name  string
	group string
	run   func(ctx context.Context, b *bench) (*RunResult, error)
}

// RunResult is what one run of a workload reports.
type RunResult struct {
	Metrics []Metric       `json:"metrics"`
	Notes   []string       `json:"notes,omitempty"`
	Details map[string]any `json:"details,omitempty"`
	Elapsed float64        `json:"elapsed_s"`
	// Statements are the run's costliest statements, with -pgss.
	Statements []statement `json:"statements,omitempty"`
	series     []series    // latency histograms for the plot
}

type series struct {
	label string
	hist  histogram
}

func plan(o options) []workload {
	var ws []workload
	add := func(name, group string, run func(context.Context, *bench) (*RunResult, error)) {
		if o.workload == "all" || o.workload == group {
			ws = append(ws, workload{name: name, group: group, run: run})
		}
	}
	for _, r := range o.rates {
		add(fmt.Sprintf("latency R=%d", r), "latency", func(ctx context.Context, b *bench) (*RunResult, error) {
			return runLatency(ctx, b, r)
		})
	}
	add("drain", "drain", runDrain)
	add("sustained", "sustained", runSustained)
	add("burst-after-idle", "burst", runBurst)
	add("sparse", "sparse", runSparse)
	add("scheduled", "scheduled", runScheduled)
	add("queues", "queues", runQueues)
	add("ordered", "ordered", runOrdered)
	add("limited", "limited", runLimited)
	add("enqueue", "enqueue", runEnqueue)
	add("sql-enqueue", "sql-enqueue", runSQLEnqueue)
	// Not part of "all": overhead repeats drain and latency, and the retention workloads
	// run for minutes each.
	if o.workload == "overhead" {
		add("overhead (telemetry off vs on)", "overhead", runOverhead)
	}
	if o.workload == "fresh-conns" {
		add("fresh connections (claims on a new connection)", "fresh-conns", runFresh)
	}
	if o.workload == "poolers" {
		add("poolers (direct vs PgBouncer vs poll-only)", "poolers", runPoolers)
	}
	if o.workload == "retention" {
		ws = append(ws, workload{name: "retention", group: "retention", run: runRetention})
	}
	if o.workload == "scaleout" { // starts worker processes for a minute or more
		add(fmt.Sprintf("scaleout (1 vs %d client processes)", o.clients), "scaleout", runScaleout)
	}
	if o.workload == "prune-backlog" {
		ws = append(ws, workload{name: "prune backlog", group: "prune-backlog", run: runPruneBacklog})
	}
	return ws
}

func main() {
	fleet.Main() // a worker process of the scaleout workload runs here, and exits
	os.Exit(run())
}

func run() int {
	began := time.Now()
	opts, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	log := tool.Logger(opts.verbose)
	slog.SetDefault(log)

	if opts.cpuProfile != "" {
		f, err := os.Create(opts.cpuProfile)
		if err != nil {
			log.Error("cpu profile", "error", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Error("cpu profile", "error", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	db, err := openDatabase(ctx, log, opts.databaseURL, opts.schema, opts.pgss, opts.viaPgBouncer)
	if err != nil {
		log.Error("database", "error", err)
		return 1
	}
	defer db.close()
	if err := db.checkSafe(ctx, opts.reset); err != nil {
		log.Error("database", "error", err)
		return 1
	}
	if opts.pgss {
		if err := db.enableStatements(ctx); err != nil {
			log.Error("pg_stat_statements", "error", err)
			return 1
		}
	}
	info, err := db.info(ctx)
	if err != nil {
		log.Error("database", "error", err)
		return 1
	}
	b := &bench{log: log, db: db, opts: opts, base: time.Now()}
	runCtx := ctx
	if opts.telemetry != "" && opts.workload != "overhead" {
		tel, err := newTelemetry(ctx, b)
		if err != nil {
			log.Error("telemetry", "error", err)
			return 1
		}
		defer tel.close()
		b.tel, runCtx = tel, tel.ctx
	}

	report := &report{
		Started: began, Server: info, Schema: opts.schema,
		GoVersion: runtime.Version(), GOMAXPROCS: runtime.GOMAXPROCS(0), CPUs: runtime.NumCPU(),
		ClientPoolConns: opts.poolConns, Runs: opts.runs, Duration: opts.duration.String(),
		Settings: map[string]any{
			"workload": opts.workload, "rates": opts.rates, "producers": opts.producers,
			"sustained_backlog_bound": opts.backlog, "sustained_max_rate": opts.sustainedRate,
			"via_pgbouncer": opts.viaPgBouncer, "poll_only": opts.pollOnly,
			"relay_poll_interval": pollInterval(opts).String(), "workers_per_queue": "100 (queues: 10 × 100 queues; ordered: 100 × 2 clients; limited: 50 × 2 clients)",
		},
	}
	failed := false
	pgPID := db.postmasterPID()
	if l, err := os.ReadFile("/proc/loadavg"); err == nil {
		log.Info("machine load before the first workload", "loadavg", strings.TrimSpace(string(l)))
	}
	for _, w := range plan(opts) {
		wr := workloadReport{Name: w.name, Group: w.group}
		for i := range opts.runs {
			if ctx.Err() != nil {
				break
			}
			log.Info("workload", "name", w.name, "run", fmt.Sprintf("%d/%d", i+1, opts.runs))
			if err := db.reset(ctx); err != nil {
				log.Error("reset schema", "error", err)
				return 1
			}
			if opts.pgss {
				if err := db.resetStatements(ctx); err != nil {
					log.Warn("pg_stat_statements", "error", err)
				}
			}
			t := time.Now()
			cpu0 := cpustat.Take(pgPID)
			res, err := w.run(runCtx, b)
			if err != nil {
				log.Error("workload failed", "name", w.name, "error", err)
				failed = true
				wr.Errors = append(wr.Errors, err.Error())
				continue
			}
			res.Elapsed = time.Since(t).Seconds()
			// The run's pools are closed; once their backends have exited (and been reaped),
			// the server's CPU time is all in the postmaster's counters.
			if err := db.waitBackendsGone(ctx); err != nil {
				log.Warn("waiting for the run's connections to close", "error", err)
			}
			cpu := cpuMetrics(cpu0, cpustat.Take(pgPID))
			res.Metrics = append(res.Metrics, cpu...)
			if len(cpu) == 4 { // the server's own CPU is known: "other" is really others
				if other := cpu[len(cpu)-1].Value; other > 0.2 {
					note := fmt.Sprintf("other processes on this machine used %.2f cores (of %d) during this run: its numbers are not relay's alone", other, runtime.NumCPU())
					res.Notes = append(res.Notes, note)
					log.Warn(note, "workload", w.name)
				}
			}
			if opts.pgss {
				top, err := db.topStatements(ctx, 8)
				if err != nil {
					log.Warn("pg_stat_statements", "error", err)
				}
				res.Statements = top
			}
			log.Info("workload done", "name", w.name, "took", time.Since(t).Round(time.Millisecond))
			wr.Runs = append(wr.Runs, res)
		}
		wr.Summary = aggregateRuns(wr.Runs)
		report.Workloads = append(report.Workloads, wr)
	}
	if !opts.keep {
		if err := db.drop(context.WithoutCancel(ctx)); err != nil {
			log.Warn("drop schema", "error", err)
		}
	}
	report.TotalSeconds = time.Since(began).Seconds()
	report.print(os.Stdout)

	if opts.jsonPath != "" {
		if err := report.writeJSON(opts.jsonPath); err != nil {
			log.Error("json", "error", err)
			failed = true
		} else {
			log.Info("wrote results", "json", opts.jsonPath)
		}
	}
	if opts.plotDir != "" {
		files, err := writePlots(opts.plotDir, report.Workloads)
		if err != nil {
			log.Error("plot", "error", err)
			failed = true
		}
		for _, f := range files {
			log.Info("wrote plot", "file", f)
		}
	}
	if failed || ctx.Err() != nil {
		return 1
	}
	return 0
}

// ---- helpers shared by the workloads ----

// seqArgs are the args of every benchmark job: its sequence number.
type seqArgs struct {
	Seq int64 `json:"s"`
}

// benchKind is the kind of every benchmark job.
var benchKind = relay.NewKind[seqArgs]("bench")

const benchQueue = "bench"

// startClient starts a client with relay's defaults except for the queues, whose handler
// for benchKind is fn, and what configure changes.
func (b *bench) startClient(ctx context.Context, pool *pgxpool.Pool, queues map[string]relay.QueueConfig, fn relay.HandlerFunc[seqArgs], configure ...func(*relay.Config)) (*relay.Client, error) {
	logger := b.log
	if !b.opts.verbose {
		// relay's own logs only from warnings up, unless -v.
		logger = slog.New(levelFilter{b.log.Handler(), slog.LevelWarn})
	}
	cfg := relay.Config{Schema: b.opts.schema, Queues: queues, Logger: logger,
		PollOnly: b.opts.pollOnly, PollInterval: b.opts.pollInterval}
	if b.db.via && !b.opts.pollOnly {
		cfg.ListenerConnString = b.db.url // the pools go through the bouncer, the listener not
	}
	if b.tel != nil && b.tel.tel != nil {
		cfg.Middleware = []relay.Middleware{b.tel.tel.Middleware()}
	}
	for _, f := range configure {
		f(&cfg)
	}
	c := relay.New(cfg)
	if err := relay.Handle(c, benchKind, fn); err != nil {
		return nil, err
	}
	if b.tel != nil && b.tel.tel != nil {
		stop, err := b.tel.tel.Instrument(c)
		if err != nil {
			return nil, err
		}
		b.telStops = append(b.telStops, stop)
	}
	if err := c.Start(ctx, pool); err != nil {
		return nil, err
	}
	return c, nil
}

// pollInterval is the clients' poll interval, as relay fills it in.
func pollInterval(o options) time.Duration {
	switch {
	case o.pollInterval > 0:
		return o.pollInterval
	case o.pollOnly:
		return relay.DefaultPollOnlyInterval
	}
	return relay.DefaultPollInterval
}

// startClients starts n clients as startClient does, each with a pool of -pool-conns
// connections of its own, as n processes would have. stopAll stops them (waiting up to
// 30 s for their handlers) and closes their pools; it may be called more than once.
func (b *bench) startClients(ctx context.Context, n int, queues map[string]relay.QueueConfig, fn relay.HandlerFunc[seqArgs]) (clients []*relay.Client, stopAll func(), err error) {
	var pools []*pgxpool.Pool
	var once sync.Once
	stopAll = func() {
		once.Do(func() {
			for _, c := range clients {
				if err := stopClient(ctx, c); err != nil {
					b.log.Warn("stop client", "error", err)
				}
			}
			for _, p := range pools {
				p.Close()
			}
		})
	}
	for range n {
		pool, err := b.db.newPool(ctx, b.opts.poolConns)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		pools = append(pools, pool)
		c, err := b.startClient(ctx, pool, queues, fn)
		if err != nil {
			stopAll()
			return nil, nil, err
		}
		clients = append(clients, c)
	}
	return clients, stopAll, nil
}

// pools opens the client's pool (-pool-conns connections) and a separate one of
// producerConns for the producers, so that producing never waits for the client's
// connections. closeAll closes both.
func (b *bench) pools(ctx context.Context, producerConns int) (client, producer *pgxpool.Pool, closeAll func(), err error) {
	if client, err = b.db.newPool(ctx, b.opts.poolConns); err != nil {
		return nil, nil, nil, err
	}
	if producer, err = b.db.newPool(ctx, producerConns); err != nil {
		client.Close()
		return nil, nil, nil, err
	}
	return client, producer, func() { producer.Close(); client.Close() }, nil
}

// enqueueOne enqueues job seq in a transaction of its own and records when its Commit
// returned, which it returns with the job's id.
func enqueueOne(ctx context.Context, pool *pgxpool.Pool, rec *recorder, seq int64, opts []relay.EnqueueOption) (time.Time, int64, error) {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return time.Time{}, 0, err
	}
	defer tx.Rollback(ctx)
	id, err := relay.Enqueue(ctx, tx, benchKind, seqArgs{Seq: seq}, opts...)
	if err != nil {
		return time.Time{}, 0, err
	}
	if err := tx.Commit(ctx); err != nil {
		return time.Time{}, 0, err
	}
	now := time.Now()
	rec.committed(seq, now)
	return now, id, nil
}

// idleClient starts a client of 100 workers on benchQueue that records its jobs in rec,
// with a pool of its own, and returns a pool of producerConns for the producers; stop
// stops the client and closes both pools, once however often it is called.
func (b *bench) idleClient(ctx context.Context, rec *recorder, producerConns int) (producers *pgxpool.Pool, stop func(), err error) {
	clientPool, prodPool, closePools, err := b.pools(ctx, producerConns)
	if err != nil {
		return nil, nil, err
	}
	c, err := b.startClient(ctx, clientPool, map[string]relay.QueueConfig{benchQueue: {Workers: 100}}, rec.handler)
	if err != nil {
		closePools()
		return nil, nil, err
	}
	var once sync.Once
	return prodPool, func() {
		once.Do(func() {
			if err := stopClient(ctx, c); err != nil {
				b.log.Warn("stop client", "error", err)
			}
			closePools()
		})
	}, nil
}

// stopClient stops c, waiting up to 30 s for its handlers.
func stopClient(ctx context.Context, c *relay.Client) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return c.Stop(ctx)
}

// enqueueOpts are the options every benchmark enqueue passes.
func (b *bench) enqueueOpts(queue string) []relay.EnqueueOption {
	opts := []relay.EnqueueOption{relay.Schema(b.opts.schema), relay.Queue(queue)}
	if b.tel != nil {
		opts = append(opts, b.tel.enqueue)
	}
	return opts
}

// progress logs line() every second until the returned stop is called.
func (b *bench) progress(name string, line func(elapsed time.Duration) []any) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(finished)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				el := time.Since(start)
				b.log.Info(name, append([]any{"elapsed", el.Round(time.Second)}, line(el)...)...)
			}
		}
	}()
	return func() { close(done); <-finished }
}

// sleepUntil sleeps until t, or returns at once if t has passed or ctx ended.
func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-timer.C:
	}
}

// waitFor polls cond every interval until it holds, ctx ends or timeout passes.
func waitFor(ctx context.Context, timeout, interval time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if ctx.Err() != nil || time.Now().After(deadline) {
			return false
		}
		time.Sleep(interval)
	}
	return true
}

// levelFilter drops records below min before they reach the handler.
type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (f levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= f.min && f.Handler.Enabled(ctx, l)
}

func (f levelFilter) WithAttrs(a []slog.Attr) slog.Handler {
	return levelFilter{f.Handler.WithAttrs(a), f.min}
}

func (f levelFilter) WithGroup(n string) slog.Handler {
	return levelFilter{f.Handler.WithGroup(n), f.min}
}
