package relay_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/internal/pgtest"
	"github.com/relayq/relay/relaytest"
)

// The test bundle of the root package's tests: what a test needs of its database and its
// clients, made per test by setup, and the kinds, handlers and channel helpers that go
// with it. Worker processes are in harness_test.go.
//
// Every helper fails the test on an error, so a test reads as what it does. Those that
// need a type parameter (enqueue, handle, recv) are functions, since Go has no generic
// methods; the rest are methods of the bundle.

// waitTimeout bounds every wait for something that should happen promptly; it only
// matters when a test is about to fail.
const waitTimeout = 15 * time.Second

// Short leases keep the tests of lost and rescued jobs fast.
const (
	shortTTL     = time.Second
	shortRenewal = 200 * time.Millisecond
)

// numArgs is the args type of most test jobs.
type numArgs struct{ N int }

// testKind is the kind of tests that need one and do not care which.
var testKind = relay.NewKind[numArgs]("k")

// fastBackoff retries after 1 ms, 2 ms, 4 ms… up to 10 ms, without jitter.
var fastBackoff = backoff.Policy{Initial: time.Millisecond, Multiplier: 2, Max: 10 * time.Millisecond}

// retryFast makes a kind retry within milliseconds, up to three attempts.
var retryFast = []relay.HandleOption{relay.MaxAttempts(3), relay.Backoff(fastBackoff)}

// bundle is one test's database (embedded: b.Pool, b.Schema, b.Exec… and b itself as a
// relay.DB) with the helpers bound to it and to its test.
type bundle struct {
	*relaytest.DB
	t testing.TB

	mu    sync.Mutex
	gates []*gate // opened when the test ends, before its clients stop
}

// setup gives the test a database of its own (see relaytest.NewDB) and returns its bundle.
func setup(t testing.TB, opts ...relaytest.Option) *bundle {
	t.Helper()
	return newBundle(t, relaytest.NewDB(t, opts...))
}

// newBundle returns a bundle on db for test t: for a database reached through another
// pool or schema, or on a server of the test's own.
func newBundle(t testing.TB, db *relaytest.DB) *bundle {
	return &bundle{DB: db, t: t}
}

// onServerOfItsOwn starts a PostgreSQL server for the test alone, for tests that crash,
// restart or stop it (commits survive a crash, as in production: synchronous_commit on),
// migrates a schema on it and returns the server and a bundle on it: b.Pool is a
// two-connection pool for the test's own statements; b.pool opens others. The server is
// stopped when the test ends. On a machine without server binaries (DATABASE_URL given)
// the test is skipped.
func onServerOfItsOwn(t *testing.T) (*pgtest.Server, *bundle) {
	t.Helper()
	return onServerWith(t, nil)
}

// onServerWith is onServerOfItsOwn with settings of the server's own besides.
func onServerWith(t *testing.T, settings map[string]string) (*pgtest.Server, *bundle) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	all := map[string]string{"synchronous_commit": "on"}
	maps.Copy(all, settings)
	srv, err := pgtest.Start(ctx, pgtest.Options{Settings: all})
	if errors.Is(err, pgtest.ErrNoPostgres) && os.Getenv("DATABASE_URL") != "" {
		t.Skip("no server binaries to start a server of the test's own:", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Logf("stop the test's server: %v", err)
		}
	})
	cfg, err := pgxpool.ParseConfig(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 2
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	schema := "own_" + randomHex()
	if err := relay.Migrate(ctx, pool, relay.Schema(schema)); err != nil {
		t.Fatal(err)
	}
	return srv, newBundle(t, &relaytest.DB{Pool: pool, Schema: schema, URL: srv.URL()})
}

// inSchemaOfItsOwn migrates a schema of the test's own in b's database and returns a
// bundle on it: for a test that needs relay's per-schema state in the process (its
// statements, Store.Insert's memory of each queue's last enqueue) untouched by the tests
// running beside it, which all use relay's default schema.
func (b *bundle) inSchemaOfItsOwn() *bundle {
	b.t.Helper()
	schema := "own_" + randomHex()
	if err := relay.Migrate(context.Background(), b.Pool, relay.Schema(schema)); err != nil {
		b.t.Fatal(err)
	}
	return newBundle(b.t, &relaytest.DB{Pool: b.Pool, Schema: schema, URL: b.URL})
}

// in returns a bundle on b's database for t, a subtest of b's test: a helper must fail the
// test whose goroutine calls it.
func (b *bundle) in(t testing.TB) *bundle { return newBundle(t, b.DB) }

// ---------------------------------------------------------------------------------------
// Clients

// client returns a client on b's schema with test defaults for what cfg leaves zero: a
// one-hour fallback poll, so that any job picked up promptly was woken by a NOTIFY (or the
// start-up claim), and a logger that keeps relay's warnings and errors and shows them if
// the test fails — a job stuck in a state often has its reason there.
func (b *bundle) client(cfg relay.Config) *relay.Client {
	b.t.Helper()
	if cfg.Schema == "" {
		cfg.Schema = b.Schema
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = b.keptLogger()
	}
	return relay.New(cfg)
}

// keptLogger logs warnings and errors to memory, and to the test if it fails: writing to
// the test directly would panic for a record logged after it ended.
func (b *bundle) keptLogger() *slog.Logger {
	var (
		mu     sync.Mutex
		lines  []string // distinct, in order
		counts = map[string]int{}
	)
	t := b.t
	// Registered before the client's start, so it runs after the client stopped.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		for _, l := range lines {
			t.Logf("relay logged (%d×): %s", counts[l], l)
		}
	})
	return slog.New(logHook(func(r slog.Record) {
		var s strings.Builder
		s.WriteString(r.Level.String() + " " + r.Message)
		r.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&s, " %s=%v", a.Key, a.Value)
			return true
		})
		mu.Lock()
		defer mu.Unlock()
		if counts[s.String()]++; counts[s.String()] == 1 && len(lines) < 20 {
			lines = append(lines, s.String())
		}
	}))
}

// logHook is a slog.Handler that calls its function with every warning and error.
type logHook func(slog.Record)

func (h logHook) Enabled(_ context.Context, l slog.Level) bool  { return l >= slog.LevelWarn }
func (h logHook) Handle(_ context.Context, r slog.Record) error { h(r); return nil }
func (h logHook) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h logHook) WithGroup(string) slog.Handler                 { return h }

// withShortLeases sets cfg's LeaseTTL and LeaseRenewal to shortTTL and shortRenewal.
func withShortLeases(cfg relay.Config) relay.Config {
	cfg.LeaseTTL, cfg.LeaseRenewal = shortTTL, shortRenewal
	return cfg
}

// queues is a client's Config.Queues: each named queue with workers workers.
func queues(workers int, names ...string) map[string]relay.QueueConfig {
	m := map[string]relay.QueueConfig{}
	for _, q := range names {
		m[q] = relay.QueueConfig{Workers: workers}
	}
	return m
}

// start starts c on b's pool; see startOn.
func (b *bundle) start(c *relay.Client) {
	b.t.Helper()
	b.startOn(c, b.Pool)
}

// startOn starts c on pool. When the test ends, b's gates are opened and then c is
// stopped, so that Stop waits for no handler held at a gate.
func (b *bundle) startOn(c *relay.Client, pool *pgxpool.Pool) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.Start(ctx, pool); err != nil {
		b.t.Fatalf("Start: %v", err)
	}
	b.t.Cleanup(func() {
		b.openGates()
		b.stop(c)
	})
}

// stop stops c, failing the test if it cannot.
func (b *bundle) stop(c *relay.Client) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.Stop(ctx); err != nil {
		b.t.Errorf("Stop: %v", err)
	}
}

// pool returns a pool of its own on b's database (eight connections, like b.Pool), as
// configure leaves it, closed when the test ends.
func (b *bundle) pool(configure func(*pgxpool.Config)) *pgxpool.Pool {
	b.t.Helper()
	cfg, err := pgxpool.ParseConfig(b.URL)
	if err != nil {
		b.t.Fatal(err)
	}
	cfg.MaxConns = 8
	if configure != nil {
		configure(cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(pool.Close)
	return pool
}

// handle registers fn for kind on c, failing the test on error.
func handle[T any](t testing.TB, c *relay.Client, kind relay.Kind[T], fn relay.HandlerFunc[T], opts ...relay.HandleOption) {
	t.Helper()
	if err := relay.Handle(c, kind, fn, opts...); err != nil {
		t.Fatalf("Handle(%q): %v", kind, err)
	}
}

// reportIDs is a handler that sends each job's id to ch and succeeds.
func reportIDs(ch chan<- int64) relay.HandlerFunc[numArgs] {
	return func(_ context.Context, job *relay.Job[numArgs]) error {
		ch <- job.ID
		return nil
	}
}

// ---------------------------------------------------------------------------------------
// Enqueueing, each job in a transaction of its own unless said otherwise

// enqueue enqueues one job on b's schema with relay.Enqueue.
func enqueue[T any](b *bundle, kind relay.Kind[T], args T, opts ...relay.EnqueueOption) int64 {
	b.t.Helper()
	id, err := relay.Enqueue(context.Background(), b, kind, args, append(opts, relay.Schema(b.Schema))...)
	if err != nil {
		b.t.Fatalf("Enqueue(%q): %v", kind, err)
	}
	return id
}

// enqueueJob enqueues one job on b's schema with relay.EnqueueJob.
func enqueueJob[T any](b *bundle, kind relay.Kind[T], args T, opts ...relay.EnqueueOption) relay.Enqueued {
	b.t.Helper()
	e, err := relay.EnqueueJob(context.Background(), b, kind, args, append(opts, relay.Schema(b.Schema))...)
	if err != nil {
		b.t.Fatalf("EnqueueJob(%q): %v", kind, err)
	}
	return e
}

// enqueueTx enqueues one job in an explicit transaction and returns its id and when
// Commit returned.
func enqueueTx[T any](b *bundle, kind relay.Kind[T], args T, opts ...relay.EnqueueOption) (int64, time.Time) {
	b.t.Helper()
	return enqueueIn(b, pgx.ReadCommitted, nil, kind, args, opts...)
}

// enqueueIn enqueues one job in an explicit transaction at iso, runs beforeCommit (if set)
// in it last, and returns the job's id and when Commit returned.
func enqueueIn[T any](b *bundle, iso pgx.TxIsoLevel, beforeCommit func(pgx.Tx), kind relay.Kind[T], args T, opts ...relay.EnqueueOption) (int64, time.Time) {
	b.t.Helper()
	ctx := context.Background()
	tx, err := b.BeginTx(ctx, pgx.TxOptions{IsoLevel: iso})
	if err != nil {
		b.t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	id, err := relay.Enqueue(ctx, tx, kind, args, append(opts, relay.Schema(b.Schema))...)
	if err != nil {
		b.t.Fatalf("Enqueue(%q): %v", kind, err)
	}
	if beforeCommit != nil {
		beforeCommit(tx)
	}
	if err := tx.Commit(ctx); err != nil {
		b.t.Fatal(err)
	}
	return id, time.Now()
}

// enqueueMany enqueues specs on b's schema in one relay.EnqueueMany.
func (b *bundle) enqueueMany(specs []relay.JobSpec, opts ...relay.EnqueueOption) []int64 {
	b.t.Helper()
	ids, err := relay.EnqueueMany(context.Background(), b, specs, append(opts, relay.Schema(b.Schema))...)
	if err != nil {
		b.t.Fatalf("EnqueueMany: %v", err)
	}
	return ids
}

// enqueueN enqueues n jobs of kind, numbered 0 to n-1, in one relay.EnqueueMany.
func (b *bundle) enqueueN(kind relay.Kind[numArgs], n int, opts ...relay.EnqueueOption) []int64 {
	b.t.Helper()
	specs := make([]relay.JobSpec, n)
	for i := range specs {
		specs[i] = kind.Job(numArgs{N: i})
	}
	return b.enqueueMany(specs, opts...)
}

// ---------------------------------------------------------------------------------------
// Jobs as stored, and waiting for them

// record returns relay.GetJob of id.
func (b *bundle) record(id int64) *relay.JobRecord {
	b.t.Helper()
	rec, err := relay.GetJob(context.Background(), b, id, relay.Schema(b.Schema))
	if err != nil {
		b.t.Fatalf("GetJob(%d): %v", id, err)
	}
	return rec
}

// stored returns the row of job id as relaytest.Jobs sees it.
func (b *bundle) stored(id int64) relaytest.StoredJob {
	b.t.Helper()
	for _, j := range relaytest.Jobs(b.t, b.DB) {
		if j.ID == id {
			return j
		}
	}
	b.t.Fatalf("no job %d in %s.jobs", id, b.Schema)
	panic("unreachable")
}

// count counts b's jobs in state, or all of them for "".
func (b *bundle) count(state relay.JobState) int {
	b.t.Helper()
	var n int
	err := b.QueryRow(context.Background(),
		`SELECT count(*) FROM `+b.table("jobs")+` WHERE $1 = '' OR state = $1`, string(state)).Scan(&n)
	if err != nil {
		b.t.Fatal(err)
	}
	return n
}

// waitState waits until every listed job is in state.
func (b *bundle) waitState(state relay.JobState, ids ...int64) {
	b.t.Helper()
	relaytest.WaitFor(b.t, waitTimeout, fmt.Sprintf("jobs %v to be %s", ids, state), func() bool {
		byID := map[int64]string{}
		for _, j := range relaytest.Jobs(b.t, b.DB) {
			byID[j.ID] = j.State
		}
		for _, id := range ids {
			if byID[id] != string(state) {
				return false
			}
		}
		return true
	})
}

// waitForALockWait waits until a backend waits for a lock in a statement whose text holds
// b's schema name and text ("" for any).
func (b *bundle) waitForALockWait(what, text string) {
	b.t.Helper()
	relaytest.WaitFor(b.t, waitTimeout, what, func() bool {
		var waiting bool
		err := b.QueryRow(context.Background(), `SELECT count(*) > 0 FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND position($1 in query) > 0 AND position($2 in query) > 0`, b.Schema, text).Scan(&waiting)
		return err == nil && waiting
	})
}

// waitCount waits until n of b's jobs are in state.
func (b *bundle) waitCount(state relay.JobState, n int) {
	b.t.Helper()
	relaytest.WaitFor(b.t, waitTimeout, fmt.Sprintf("%d jobs to be %s", n, state), func() bool {
		return b.count(state) == n
	})
}

// waitRecord waits until job id is in state and returns its record.
func (b *bundle) waitRecord(id int64, state relay.JobState) *relay.JobRecord {
	b.t.Helper()
	var rec *relay.JobRecord
	relaytest.WaitFor(b.t, waitTimeout, fmt.Sprintf("job %d to be %s", id, state), func() bool {
		rec = b.record(id)
		return rec.State == state
	})
	return rec
}

// waitAttempts waits until job id has at least n ended attempts in its history.
func (b *bundle) waitAttempts(id int64, n int) *relay.JobRecord {
	b.t.Helper()
	var rec *relay.JobRecord
	relaytest.WaitFor(b.t, waitTimeout, fmt.Sprintf("job %d to have %d ended attempts", id, n), func() bool {
		rec = b.record(id)
		return len(rec.Attempts) >= n
	})
	return rec
}

// expectPending fails the test unless each job is pending, never attempted and not
// blocking (say, behind its key's head, or in a paused queue); why says when.
func (b *bundle) expectPending(why string, ids ...int64) {
	b.t.Helper()
	for _, id := range ids {
		rec := b.record(id)
		if rec.State != relay.StatePending || rec.Attempt != 0 || rec.Blocking {
			b.t.Errorf("%s: job %d is %s at attempt %d (blocking %v, history %s); want pending, never attempted",
				why, id, rec.State, rec.Attempt, rec.Blocking, historyString(rec.Attempts))
		}
	}
}

// historyString renders attempts for failure messages.
func historyString(as []relay.Attempt) string {
	var s strings.Builder
	for i, a := range as {
		if i > 0 {
			s.WriteString("; ")
		}
		fmt.Fprintf(&s, "#%d by %s → %s", a.Number, a.Client, a.Outcome)
		if a.Reason != "" {
			fmt.Fprintf(&s, " (%s: %.60q)", a.Reason, a.Error)
		}
	}
	return "[" + s.String() + "]"
}

// table is the quoted name of one of the tables or views in b's schema.
func (b *bundle) table(name string) string {
	return pgx.Identifier{b.Schema, name}.Sanitize()
}

// now is the database's clock.
func (b *bundle) now() time.Time {
	b.t.Helper()
	var now time.Time
	if err := b.QueryRow(context.Background(), `SELECT clock_timestamp()`).Scan(&now); err != nil {
		b.t.Fatal(err)
	}
	return now
}

// ---------------------------------------------------------------------------------------
// Queue settings

// setQueue stores settings for queue.
func (b *bundle) setQueue(queue string, settings relay.QueueSettings) {
	b.t.Helper()
	if err := relay.SetQueue(context.Background(), b, queue, settings, relay.Schema(b.Schema)); err != nil {
		b.t.Fatalf("SetQueue(%q, %+v): %v", queue, settings, err)
	}
}

// queue returns relay.GetQueue of queue.
func (b *bundle) queue(queue string) relay.QueueInfo {
	b.t.Helper()
	info, err := relay.GetQueue(context.Background(), b, queue, relay.Schema(b.Schema))
	if err != nil {
		b.t.Fatalf("GetQueue(%q): %v", queue, err)
	}
	return info
}

// pauseQueue pauses queue for every client.
func (b *bundle) pauseQueue(queue string) {
	b.t.Helper()
	if err := relay.PauseQueue(context.Background(), b, queue, relay.Schema(b.Schema)); err != nil {
		b.t.Fatalf("PauseQueue(%q): %v", queue, err)
	}
}

// resumeQueue resumes queue.
func (b *bundle) resumeQueue(queue string) {
	b.t.Helper()
	if err := relay.ResumeQueue(context.Background(), b, queue, relay.Schema(b.Schema)); err != nil {
		b.t.Fatalf("ResumeQueue(%q): %v", queue, err)
	}
}

// ---------------------------------------------------------------------------------------
// Events

// subscribe subscribes to c's events, until the test ends.
func (b *bundle) subscribe(c *relay.Client, buffer int) <-chan relay.Event {
	events, unsubscribe := c.Subscribe(buffer)
	b.t.Cleanup(unsubscribe)
	return events
}

// eventsOf receives n events, all of jobs in ids, checking each against the table as it
// arrives (assertCommitted), and returns them by job, each job's in attempt order. (That
// they also arrive in that order is TestEventsOfOneJobArriveInAttemptOrder's business.)
func (b *bundle) eventsOf(events <-chan relay.Event, n int, ids ...int64) map[int64][]relay.Event {
	b.t.Helper()
	want := map[int64]bool{}
	for _, id := range ids {
		want[id] = true
	}
	got := map[int64][]relay.Event{}
	for range n {
		e := recv(b.t, events, fmt.Sprintf("%d events of jobs %v", n, ids))
		if !want[e.JobID] {
			b.t.Fatalf("event for job %d, which is none of %v: %+v", e.JobID, ids, e)
		}
		b.assertCommitted(e)
		got[e.JobID] = append(got[e.JobID], e)
	}
	for _, es := range got {
		slices.SortStableFunc(es, func(x, y relay.Event) int { return x.Attempt - y.Attempt })
	}
	return got
}

// assertCommitted checks that what event e reports is already in the database: an event
// must never report an outcome that is not committed.
func (b *bundle) assertCommitted(e relay.Event) *relay.JobRecord {
	b.t.Helper()
	rec := b.record(e.JobID)
	switch e.State {
	case relay.StateSucceeded, relay.StateCancelled:
		if rec.State != e.State {
			b.t.Errorf("event says job %d attempt %d is %s, but the table holds %s", e.JobID, e.Attempt, e.State, rec.State)
		}
	case relay.StateFailed, relay.StatePending:
		// The attempt must be in the history by now (a retried job may already run again).
		found := false
		for _, a := range rec.Attempts {
			if a.Number == e.Attempt && a.Outcome == string(e.State) && a.Reason == e.Reason {
				found = true
			}
		}
		if !found {
			b.t.Errorf("event says job %d attempt %d ended %s (%s), but its history is %s",
				e.JobID, e.Attempt, e.State, e.Reason, historyString(rec.Attempts))
		}
		if e.State == relay.StateFailed && rec.State != relay.StateFailed {
			b.t.Errorf("event says job %d failed, but the table holds %s", e.JobID, rec.State)
		}
	default:
		b.t.Errorf("event of job %d has state %q", e.JobID, e.State)
	}
	return rec
}

// eventString renders an event for failure messages.
func eventString(e relay.Event) string {
	s := fmt.Sprintf("#%d %s", e.Attempt, e.State)
	if e.Reason != "" {
		s += fmt.Sprintf(" (%s: %.60q)", e.Reason, e.Error)
	}
	if e.CompletedTx {
		s += " [CompletedTx]"
	}
	return s
}

// ---------------------------------------------------------------------------------------
// Effects: what handlers write beside their jobs

// effectsTable creates a table in b's schema that handlers write their effects to (with
// insertEffect), and returns its quoted name.
func (b *bundle) effectsTable() string {
	b.t.Helper()
	name := b.table("effects")
	if _, err := b.Exec(context.Background(),
		`CREATE TABLE `+name+` (job_id bigint NOT NULL, attempt int NOT NULL, note text NOT NULL DEFAULT '')`); err != nil {
		b.t.Fatal(err)
	}
	return name
}

// insertEffect writes one effect row on db: a handler's transaction, say.
func insertEffect(ctx context.Context, db relay.DB, table string, id int64, attempt int, note string) error {
	_, err := db.Exec(ctx, `INSERT INTO `+table+` (job_id, attempt, note) VALUES ($1, $2, $3)`, id, attempt, note)
	return err
}

// effects lists the rows of the effects table as "job/attempt/note", in insertion order.
func (b *bundle) effects(table string) []string {
	b.t.Helper()
	rows, err := b.Query(context.Background(), `SELECT job_id, attempt, note FROM `+table+` ORDER BY ctid`)
	if err != nil {
		b.t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var (
			id      int64
			attempt int
			note    string
		)
		err := r.Scan(&id, &attempt, &note)
		return fmt.Sprintf("%d/%d/%s", id, attempt, note), err
	})
	if err != nil {
		b.t.Fatal(err)
	}
	return out
}

// ---------------------------------------------------------------------------------------
// Channels, gates and gauges

// recv returns the next value from ch, failing the test if none comes within waitTimeout.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	return relaytest.Receive(t, ch, waitTimeout, what)
}

// noMore fails the test if ch holds a value now (a closed channel holds none): call it
// once every sender has finished.
func noMore[T any](t testing.TB, ch <-chan T, what string) {
	t.Helper()
	select {
	case v, ok := <-ch:
		if ok {
			t.Errorf("unexpected %s: %+v", what, v)
		}
	default:
	}
}

// gate holds handlers until the test lets them go: one at a time (one), or all for good
// (open). A handler waits with wait, or selects on ch. Opening it again does nothing, so a
// handler run more often than it should be fails its test instead of panicking.
type gate struct {
	ch   chan struct{}
	once sync.Once
}

// gate returns a shut gate, which b opens when the test ends before it stops its clients.
func (b *bundle) gate() *gate {
	g := &gate{ch: make(chan struct{})}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gates = append(b.gates, g)
	return g
}

func (b *bundle) openGates() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, g := range b.gates {
		g.open()
	}
}

func (g *gate) wait() { <-g.ch }
func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// one lets one waiting handler go, failing the test if none is waiting.
func (g *gate) one(t testing.TB) {
	t.Helper()
	select {
	case g.ch <- struct{}{}:
	case <-time.After(waitTimeout):
		t.Fatal("no handler was waiting to be released")
	}
}

// openedWithin waits up to d for g to open, reporting whether it did: for handlers, which
// must not stop their test.
func (g *gate) openedWithin(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-g.ch:
		return true
	case <-timer.C:
		return false
	}
}

// gauge counts the handlers running at once and remembers the most.
type gauge struct{ now, max atomic.Int64 }

// enter counts a handler in and returns how many run now.
func (g *gauge) enter() int64 {
	n := g.now.Add(1)
	for m := g.max.Load(); n > m && !g.max.CompareAndSwap(m, n); m = g.max.Load() {
	}
	return n
}

func (g *gauge) leave() { g.now.Add(-1) }

// ---------------------------------------------------------------------------------------

// ctxEnd is why a handler's context ended, and when.
type ctxEnd struct {
	attempt int
	err     error
	at      time.Time
}

// randomHex is ten random hex digits, for names that must not collide.
func randomHex() string {
	b := make([]byte, 5)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
