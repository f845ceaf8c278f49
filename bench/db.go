package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/pgtest"
)

// appName tags every connection the benchmark opens through its pools, so that it can
// wait for exactly those backends to exit (and flush their statistics) after a workload.
const appName = "relay-bench"

// database is the server the benchmark runs against, with one administrative connection
// that resets the schema, polls counts and reads statistics. It is used by one goroutine
// at a time.
type database struct {
	log    *slog.Logger
	url    string
	schema string
	srv    *pgtest.Server // nil when DATABASE_URL was given
	admin  *pgx.Conn      // on url, never through the bouncer
	// bouncer is a PgBouncer in transaction mode (-via-pgbouncer, and the poolers
	// workload), nil without; while via, every pool goes through it.
	bouncer *pgtest.Bouncer
	via     bool

	versionNum int // server_version_num
	// adminStatements counts statements run on admin, so that their transactions can be
	// taken out of pg_stat_database deltas.
	adminStatements int64
}

// openDatabase connects to url, or starts a throwaway durable server when url is "".
func openDatabase(ctx context.Context, log *slog.Logger, url, schema string, pgss, viaPgBouncer bool) (*database, error) {
	d := &database{log: log, url: url, schema: schema}
	if url == "" {
		start := time.Now()
		// track_wal_io_timing: how long WAL flushes take, which a shared disk makes vary
		// from run to run (see walMetrics).
		settings := map[string]string{"max_connections": "300", "track_wal_io_timing": "on"}
		if pgss {
			settings["shared_preload_libraries"] = "pg_stat_statements"
			settings["pg_stat_statements.track_planning"] = "on"
		}
		srv, err := pgtest.Start(ctx, pgtest.Options{
			Durable:  true, // PostgreSQL's defaults: fsync, synchronous_commit, full_page_writes on
			Settings: settings,
			Logf: func(format string, args ...any) {
				log.Debug(fmt.Sprintf(format, args...))
			},
		})
		if err != nil {
			return nil, err
		}
		d.srv, d.url = srv, srv.URL()
		log.Info("started a throwaway PostgreSQL", "url", d.url, "took", time.Since(start).Round(time.Millisecond))
	}
	var err error
	if viaPgBouncer {
		if err := d.startBouncer(ctx); err != nil {
			d.close()
			return nil, err
		}
		d.via = true
	}
	if d.admin, err = pgx.Connect(ctx, d.url); err != nil {
		d.close()
		return nil, fmt.Errorf("connect: %w", err)
	}
	if err := d.admin.QueryRow(ctx, "SELECT current_setting('server_version_num')::int").Scan(&d.versionNum); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// startBouncer starts the PgBouncer the pools go through while d.via.
func (d *database) startBouncer(ctx context.Context) error {
	if d.bouncer != nil {
		return nil
	}
	// Room for every pool of the widest workload (two clients with their producers).
	var err error
	d.bouncer, err = pgtest.StartBouncer(ctx, d.url, pgtest.BouncerOptions{PoolSize: 100,
		Logf: func(format string, args ...any) { d.log.Debug(fmt.Sprintf(format, args...)) }})
	if err != nil {
		return err
	}
	d.log.Info("started PgBouncer in transaction mode in front of PostgreSQL", "port", d.bouncer.Port())
	return nil
}

func (d *database) close() {
	if d.admin != nil {
		d.admin.Close(context.Background())
	}
	if d.bouncer != nil {
		d.bouncer.Stop()
	}
	if d.srv != nil {
		if err := d.srv.Stop(); err != nil {
			d.log.Warn("stopping the throwaway server", "error", err)
		}
	}
}

func (d *database) throwaway() bool { return d.srv != nil }

func (d *database) quotedSchema() string { return pgx.Identifier{d.schema}.Sanitize() }

func (d *database) jobsTable() string { return d.quotedSchema() + ".jobs" }

// relayRelations are the tables and views relay's migrations create (see schema.sql).
var relayRelations = []string{"jobs", "schema_migrations", "clients", "queues", "client_status", "unhandled_jobs"}

// checkSafe refuses to run against a schema that holds jobs or anything that is not
// relay's, unless reset is set (then the schema is dropped and re-created).
func (d *database) checkSafe(ctx context.Context, reset bool) error {
	switch s := strings.ToLower(d.schema); {
	case s == "public", s == "information_schema", strings.HasPrefix(s, "pg_"):
		return fmt.Errorf("refusing to use schema %q: the benchmark drops and re-creates its schema; pick a dedicated one with -schema", d.schema)
	}
	var exists bool
	if err := d.admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)", d.schema).Scan(&exists); err != nil {
		return err
	}
	if !exists || reset {
		return nil
	}
	var foreign []string
	rows, err := d.admin.Query(ctx, `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = $1 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
		AND c.relname <> ALL ($2) ORDER BY 1`, d.schema, relayRelations)
	if err != nil {
		return err
	}
	if foreign, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		return err
	}
	if len(foreign) > 0 {
		return fmt.Errorf("schema %q holds tables that are not relay's (%s); refusing to drop it without -reset", d.schema, strings.Join(foreign, ", "))
	}
	var hasJobs bool
	if err := d.admin.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", d.jobsTable()).Scan(&hasJobs); err != nil {
		return err
	}
	if !hasJobs {
		return nil
	}
	var n int64
	if err := d.admin.QueryRow(ctx, "SELECT count(*) FROM "+d.jobsTable()).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return fmt.Errorf("schema %q holds %d jobs; refusing to touch it (pass -reset to drop and re-migrate it, or pick another -schema)", d.schema, n)
	}
	return nil
}

// reset drops the schema and migrates it again, so that a workload starts from empty
// tables and indexes.
func (d *database) reset(ctx context.Context) error {
	if _, err := d.admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+d.quotedSchema()+" CASCADE"); err != nil {
		return fmt.Errorf("drop schema %q: %w", d.schema, err)
	}
	// Exactly what a new deployment has: freshly migrated, never analyzed tables.
	return relay.Migrate(ctx, d.admin, relay.Schema(d.schema))
}

// historyJobs is how many finished jobs -analyze puts behind the ordered and limited
// workloads: a table that has run for a while.
const historyJobs = 200_000

// withHistory gives the jobs table historyJobs finished jobs, in a queue of their own, and
// statistics, as autovacuum has taken them in a database that has run for a while.
func (d *database) withHistory(ctx context.Context) error {
	if _, err := d.admin.Exec(ctx, "INSERT INTO "+d.jobsTable()+" (kind, queue, args, state, attempt, finished_at) "+
		"SELECT 'history', 'bench-history', '{}', 'succeeded', 1, now() FROM generate_series(1, $1::integer)", historyJobs); err != nil {
		return fmt.Errorf("insert finished jobs: %w", err)
	}
	if _, err := d.admin.Exec(ctx, "ANALYZE "+d.jobsTable()); err != nil {
		return fmt.Errorf("analyze the jobs table: %w", err)
	}
	return nil
}

func (d *database) drop(ctx context.Context) error {
	_, err := d.admin.Exec(ctx, "DROP SCHEMA IF EXISTS "+d.quotedSchema()+" CASCADE")
	return err
}

// newPool opens a pool of up to maxConns connections and opens them all at once, so that
// no workload measures connection set-up.
func (d *database) newPool(ctx context.Context, maxConns int) (*pgxpool.Pool, error) {
	url := d.url
	if d.via {
		url = d.bouncer.Via(url)
	}
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if d.via {
		// PgBouncer before 1.21 keeps no prepared statement from one transaction to the next.
		cfg.ConnConfig.DefaultQueryExecMode = pgx.QueryExecModeExec
	}
	cfg.MaxConns = int32(maxConns)
	cfg.ConnConfig.RuntimeParams["application_name"] = appName
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	conns := make([]*pgxpool.Conn, 0, maxConns)
	defer func() {
		for _, c := range conns {
			c.Release()
		}
	}()
	for range maxConns {
		c, err := pool.Acquire(ctx)
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("warm the pool: %w", err)
		}
		conns = append(conns, c)
	}
	return pool, nil
}

// anyUnfinished tells whether a job is pending or running, through the partial indexes
// of each state (jobs_claim_idx, jobs_lease_idx): cheap however many jobs finished.
func (d *database) anyUnfinished(ctx context.Context) (bool, error) {
	d.adminStatements++
	var left bool
	err := d.admin.QueryRow(ctx, "SELECT EXISTS (SELECT FROM "+d.jobsTable()+" WHERE state = 'pending') OR EXISTS (SELECT FROM "+
		d.jobsTable()+" WHERE state = 'running')").Scan(&left)
	return left, err
}

// countSucceeded counts the jobs whose success is committed.
func (d *database) countSucceeded(ctx context.Context) (int64, error) {
	d.adminStatements++
	var n int64
	err := d.admin.QueryRow(ctx, "SELECT count(*) FROM "+d.jobsTable()+" WHERE state = 'succeeded'").Scan(&n)
	return n, err
}

// waitBackendsGone waits until every connection of the benchmark's pools and the
// listeners of the given clients has exited: a backend flushes its statistics when it
// exits, so only then do the pg_stat views hold all of its work.
func (d *database) waitBackendsGone(ctx context.Context, clientIDs ...string) error {
	names := []string{appName}
	for _, id := range clientIDs {
		names = append(names, relay.ListenerApplicationName(id))
	}
	return d.waitGone(ctx, names)
}

// waitGone waits until no connection whose application_name is LIKE one of patterns is
// left, then a moment more for their statistics (see waitBackendsGone).
func (d *database) waitGone(ctx context.Context, patterns []string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		n, err := d.countBackends(ctx, patterns)
		if err != nil {
			return err
		}
		if n == 0 {
			// The backend leaves pg_stat_activity and flushes its stats in the same exit
			// path; a moment's grace covers the order of the two.
			time.Sleep(50 * time.Millisecond)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d benchmark connections still open after 15 s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// countBackends counts the connections whose application_name is LIKE one of patterns
// (a plain name is a pattern that matches itself, "_" aside).
func (d *database) countBackends(ctx context.Context, patterns []string) (int, error) {
	d.adminStatements++
	var n int
	err := d.admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name LIKE ANY ($1)`, patterns).Scan(&n)
	return n, err
}

// pgStats is a reading of the counters the per-job database work is computed from.
type pgStats struct {
	Xacts        int64 // xact_commit + xact_rollback of the current database
	TupIns       int64 // of the schema's tables
	TupUpd       int64
	TupHotUpd    int64
	TupDel       int64
	adminAtStart int64 // statements run on the admin connection before this reading
}

// snapshot reads the statistics counters after making this session's own counters
// visible. Other sessions' counters must already be flushed (see waitBackendsGone).
func (d *database) snapshot(ctx context.Context) (pgStats, error) {
	if d.versionNum >= 150000 {
		d.adminStatements++
		if _, err := d.admin.Exec(ctx, "SELECT pg_stat_force_next_flush()"); err != nil {
			return pgStats{}, err
		}
	} else {
		// Before PostgreSQL 15 a statistics collector process receives counters every
		// 500 ms; give it time.
		time.Sleep(time.Second)
	}
	d.adminStatements++
	if _, err := d.admin.Exec(ctx, "SELECT pg_stat_clear_snapshot()"); err != nil {
		return pgStats{}, err
	}
	var s pgStats
	s.adminAtStart = d.adminStatements
	d.adminStatements++
	err := d.admin.QueryRow(ctx, `SELECT
		(SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()),
		coalesce(sum(n_tup_ins), 0)::bigint, coalesce(sum(n_tup_upd), 0)::bigint,
		coalesce(sum(n_tup_hot_upd), 0)::bigint, coalesce(sum(n_tup_del), 0)::bigint
		FROM pg_stat_user_tables WHERE schemaname = $1`, d.schema).
		Scan(&s.Xacts, &s.TupIns, &s.TupUpd, &s.TupHotUpd, &s.TupDel)
	return s, err
}

// walSample is what pg_stat_wal has counted (PostgreSQL 14 and later): flushes of WAL to
// disk, and the time they took if track_wal_io_timing is on. Backends report theirs within
// a second, or as they exit.
type walSample struct {
	ok, timed     bool
	syncs         int64
	syncMs, bytes float64
	// fpi are the full-page images written: a page's first change after a checkpoint
	// writes the whole page, so a checkpoint during a run makes its WAL, and its flushes,
	// larger. checkpoints are those begun (pg_stat_bgwriter).
	fpi, checkpoints int64
}

func (d *database) walSample(ctx context.Context) walSample {
	if d.versionNum < 140000 {
		return walSample{}
	}
	d.adminStatements++
	s := walSample{ok: true}
	if err := d.admin.QueryRow(ctx, `SELECT wal_sync, wal_sync_time, wal_bytes::float8, current_setting('track_wal_io_timing')::boolean,
			wal_fpi, (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter) FROM pg_stat_wal`).
		Scan(&s.syncs, &s.syncMs, &s.bytes, &s.timed, &s.fpi, &s.checkpoints); err != nil {
		d.log.Warn("read pg_stat_wal", "error", err)
		return walSample{}
	}
	return s
}

// walMetrics says how often jobs waited for a flush of WAL, and how long a flush took: a
// slow disk (on a shared machine, another tenant's) slows every commit, which no CPU row
// shows.
func walMetrics(a, b walSample, jobs int) []Metric {
	if !a.ok || !b.ok || jobs == 0 {
		return nil
	}
	n := b.syncs - a.syncs
	ms := []Metric{
		{Name: "WAL: kB per job", Unit: unitFloat, Value: (b.bytes - a.bytes) / 1024 / float64(jobs)},
		{Name: "WAL: flushes to disk per job", Unit: unitFloat, Value: float64(n) / float64(jobs)},
		{Name: "WAL: full-page images per job", Unit: unitFloat, Value: float64(b.fpi-a.fpi) / float64(jobs)},
		{Name: "WAL: checkpoints begun", Unit: unitCount, Value: float64(b.checkpoints - a.checkpoints)},
	}
	if a.timed && b.timed && n > 0 {
		ms = append(ms, Metric{Name: "WAL: ms per flush", Unit: unitFloat, Value: (b.syncMs - a.syncMs) / float64(n)})
	}
	return ms
}

// dbWork is the database work done between two snapshots.
type dbWork struct {
	Xacts                         int64 // less the benchmark's own monitoring statements
	Inserted, Updated, HotUpdated int64
	Deleted                       int64
	MonitorStatementsSubtracted   int64
}

func (w dbWork) rows() int64 { return w.Inserted + w.Updated + w.Deleted }

func workBetween(a, b pgStats) dbWork {
	admin := b.adminAtStart - a.adminAtStart
	return dbWork{
		Xacts:    b.Xacts - a.Xacts - admin,
		Inserted: b.TupIns - a.TupIns, Updated: b.TupUpd - a.TupUpd, HotUpdated: b.TupHotUpd - a.TupHotUpd,
		Deleted: b.TupDel - a.TupDel, MonitorStatementsSubtracted: admin,
	}
}

// workMetrics turns database work into per-job metrics named with prefix.
func workMetrics(prefix string, w dbWork, jobs int64) []Metric {
	if jobs <= 0 {
		return nil
	}
	n := float64(jobs)
	return []Metric{
		{Name: prefix + "transactions/job", Unit: unitFloat, Value: float64(w.Xacts) / n},
		{Name: prefix + "rows written/job", Unit: unitFloat, Value: float64(w.rows()) / n},
		{Name: prefix + "  inserted/job", Unit: unitFloat, Value: float64(w.Inserted) / n},
		{Name: prefix + "  updated/job", Unit: unitFloat, Value: float64(w.Updated) / n},
		{Name: prefix + "    of which HOT", Unit: unitFloat, Value: float64(w.HotUpdated) / n},
		{Name: prefix + "  deleted/job", Unit: unitFloat, Value: float64(w.Deleted) / n},
	}
}

// serverInfo describes the server for the report header.
type serverInfo struct {
	Version           string `json:"version"`
	Throwaway         bool   `json:"throwaway"`
	Fsync             string `json:"fsync"`
	SynchronousCommit string `json:"synchronous_commit"`
	FullPageWrites    string `json:"full_page_writes"`
	SharedBuffers     string `json:"shared_buffers"`
	MaxConnections    string `json:"max_connections"`
	WalSyncMethod     string `json:"wal_sync_method"`
}

func (d *database) info(ctx context.Context) (serverInfo, error) {
	i := serverInfo{Throwaway: d.throwaway()}
	err := d.admin.QueryRow(ctx, `SELECT current_setting('server_version'), current_setting('fsync'),
		current_setting('synchronous_commit'), current_setting('full_page_writes'),
		current_setting('shared_buffers'), current_setting('max_connections'), current_setting('wal_sync_method')`).
		Scan(&i.Version, &i.Fsync, &i.SynchronousCommit, &i.FullPageWrites, &i.SharedBuffers, &i.MaxConnections, &i.WalSyncMethod)
	return i, err
}

// statement is one line of pg_stat_statements: where the server's time went.
type statement struct {
	Calls      int64   `json:"calls"`
	TotalMs    float64 `json:"total_ms"` // planning + execution
	MeanExecMs float64 `json:"mean_exec_ms"`
	MeanPlanMs float64 `json:"mean_plan_ms"`
	Rows       int64   `json:"rows"`
	Blocks     int64   `json:"blocks,omitempty"` // shared buffers read or hit (statementsMatching only)
	Query      string  `json:"query"`
}

// enableStatements creates pg_stat_statements (the server must preload it).
func (d *database) enableStatements(ctx context.Context) error {
	_, err := d.admin.Exec(ctx, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
	return err
}

func (d *database) resetStatements(ctx context.Context) error {
	_, err := d.admin.Exec(ctx, "SELECT pg_stat_statements_reset()")
	return err
}

// statementsMatching sums the pg_stat_statements lines whose query text, its whitespace
// collapsed to single spaces, matches the regular expression re: their calls, execution
// time and shared buffers used, so far.
func (d *database) statementsMatching(ctx context.Context, re string) (statement, error) {
	var s statement
	err := d.admin.QueryRow(ctx, `SELECT coalesce(sum(calls), 0)::bigint, coalesce(sum(total_exec_time), 0),
		coalesce(sum(shared_blks_hit + shared_blks_read), 0)::bigint
		FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		AND regexp_replace(query, '\s+', ' ', 'g') ~ $1`, re).Scan(&s.Calls, &s.TotalMs, &s.Blocks)
	s.Query = re
	return s, err
}

// topStatements returns the n statements that took the most planning + execution time.
func (d *database) topStatements(ctx context.Context, n int) ([]statement, error) {
	rows, err := d.admin.Query(ctx, `SELECT calls, total_plan_time + total_exec_time,
		total_exec_time / greatest(calls, 1), total_plan_time / greatest(calls, 1), rows, query
		FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		ORDER BY total_plan_time + total_exec_time DESC LIMIT $1`, n)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (statement, error) {
		var s statement
		err := r.Scan(&s.Calls, &s.TotalMs, &s.MeanExecMs, &s.MeanPlanMs, &s.Rows, &s.Query)
		s.Query = strings.Join(strings.Fields(s.Query), " ")
		return s, err
	})
}
