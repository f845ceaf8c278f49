package relay_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/internal/loadavg"
	"github.com/relayq/relay/relaytest"
)

// stopProbe is a context for Client.Stop that reports when Stop first asks for Done,
// which it does only once it has stopped claiming and is waiting for running handlers.
// This lets a test act while Stop is certainly in progress, without sleeping.
type stopProbe struct {
	context.Context
	once    sync.Once
	waiting chan struct{}
}

func newStopProbe(ctx context.Context) *stopProbe {
	return &stopProbe{Context: ctx, waiting: make(chan struct{})}
}

func (p *stopProbe) Done() <-chan struct{} {
	p.once.Do(func() { close(p.waiting) })
	return p.Context.Done()
}

// awaitStopWaiting waits until Stop, running with probe and reporting on stopped, waits
// for the handlers, which are all blocked. Stop returning first fails the test.
func awaitStopWaiting(t testing.TB, probe *stopProbe, stopped chan error) {
	t.Helper()
	select {
	case <-probe.waiting:
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while handlers were still running", err)
	case <-time.After(waitTimeout):
		t.Fatal("Stop neither returned nor waited for the running handlers")
	}
	select {
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while handlers were still running", err)
	default:
	}
}

// ---------------------------------------------------------------------------------------

// A job enqueued in a committed transaction runs; one in a rolled-back transaction never
// exists and never runs.
func TestCommitRunsRollbackRunsNothing(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("tx")
	b := setup(t)
	ctx := context.Background()
	c := b.client(relay.Config{})
	ran := make(chan int64, 10)
	handle(t, c, kind, reportIDs(ran))
	b.start(c)

	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rolledBack, err := relay.Enqueue(ctx, tx, kind, numArgs{N: 1}, relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	committed, _ := enqueueTx(b, kind, numArgs{N: 2})

	// Jobs are claimed oldest first, so a surviving rolled-back job (the older one) would
	// have been claimed no later than the committed one.
	if got := recv(t, ran, "the committed job to run"); got != committed {
		t.Fatalf("ran job %d, want the committed job %d (rolled back: %d)", got, committed, rolledBack)
	}
	b.waitState("succeeded", committed)
	b.stop(c) // waits for every handler, so anything else that ran is in the channel now
	select {
	case id := <-ran:
		t.Fatalf("job %d ran too; only the committed job %d should have", id, committed)
	default:
	}
	jobs := relaytest.Jobs(t, b.DB)
	if len(jobs) != 1 || jobs[0].ID != committed {
		t.Fatalf("table holds %+v, want only the committed job %d (the rolled-back one was %d)", jobs, committed, rolledBack)
	}
}

// With the fallback poll at one hour, a committed job is picked up within 100 ms: only the
// NOTIFY sent by the enqueue can have woken the client.
func TestNotifyWakesClientWithin100ms(t *testing.T) {
	// Not parallel: a latency bound is only meaningful without the load of the other tests.
	kind := relay.NewKind[numArgs]("fast")
	b := setup(t)
	c := b.client(relay.Config{})
	startedAt := make(chan time.Time, 10)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		startedAt <- time.Now()
		return nil
	})
	b.start(c)

	// The first job may be found by the claim every dispatcher makes when it starts; after
	// it the client is idle and only a wakeup can make it claim again.
	first, _ := enqueueTx(b, kind, numArgs{})
	recv(t, startedAt, "the first job")
	b.waitState("succeeded", first)

	for i := range 5 {
		stalls := loadavg.MeasureStalls()
		id, committedAt := enqueueTx(b, kind, numArgs{N: i})
		latency := recv(t, startedAt, "a job woken by NOTIFY").Sub(committedAt)
		t.Logf("job %d: commit to handler start %v", id, latency)
		// 100 ms on a machine with a core to spare; CI runs other packages' tests (a browser
		// among them) beside this one, which delays every step as much.
		if bound := loadavg.Scaled(100*time.Millisecond) + stalls.Stop(); latency > bound {
			t.Errorf("job %d started %v after its commit; want within 100ms (×%.1f for the machine's load, + stalls: %v)", id, latency, loadavg.Overload(), bound)
		}
		b.waitState("succeeded", id)
	}
}

// 10,000 jobs enqueued at once all run exactly once when two clients share their queue,
// and every one ends succeeded.
func TestEnqueueMany10000RunExactlyOnceOnTwoClients(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("bulk")
	const n = 10_000
	b := setup(t)

	var (
		mu       sync.Mutex
		runs     = make(map[int64]int, n)
		byClient [2]int
		total    atomic.Int64
		allRan   = make(chan struct{})
	)
	clients := make([]*relay.Client, 2)
	for i, pool := range []*pgxpool.Pool{b.Pool, b.NewPool(t)} {
		c := b.client(relay.Config{})
		handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
			mu.Lock()
			runs[job.ID]++
			byClient[i]++
			mu.Unlock()
			if total.Add(1) == n {
				close(allRan)
			}
			return nil
		})
		b.startOn(c, pool)
		clients[i] = c
	}

	began := time.Now()
	ids := b.enqueueN(kind, n)
	if len(ids) != n {
		t.Fatalf("EnqueueMany returned %d ids, want %d", len(ids), n)
	}
	select {
	case <-allRan:
	case <-time.After(2 * time.Minute):
		t.Fatalf("only %d of %d jobs ran", total.Load(), n)
	}
	t.Logf("%d jobs ran in %v", n, time.Since(began))
	relaytest.WaitFor(t, time.Minute, "every job to be succeeded", func() bool {
		return b.count("succeeded") == n
	})
	for _, c := range clients {
		b.stop(c) // every handler has returned: runs is final
	}

	if got := total.Load(); got != n {
		t.Errorf("handlers ran %d times for %d jobs", got, n)
	}
	for _, id := range ids {
		if runs[id] != 1 {
			t.Errorf("job %d ran %d times, want once", id, runs[id])
		}
	}
	if len(runs) != n {
		t.Errorf("handlers saw %d distinct job ids, want %d", len(runs), n)
	}
	if b.count("") != n {
		t.Errorf("table holds %d jobs, want %d", b.count(""), n)
	}
	t.Logf("jobs run per client: %v", byClient)
	if byClient[0] == 0 || byClient[1] == 0 {
		t.Errorf("one client did all the work: %v", byClient)
	}
	// The table agrees with the handlers on who ran what.
	rows, err := b.Query(context.Background(), `SELECT attempted_by, count(*) FROM `+b.table("jobs")+` GROUP BY attempted_by`)
	if err != nil {
		t.Fatal(err)
	}
	perClient, err := pgx.CollectRows(rows, pgx.RowToStructByPos[struct {
		By string
		N  int
	}])
	if err != nil {
		t.Fatal(err)
	}
	for _, pc := range perClient {
		switch pc.By {
		case clients[0].ID():
			if pc.N != byClient[0] {
				t.Errorf("table says client 0 ran %d jobs, its handler counted %d", pc.N, byClient[0])
			}
		case clients[1].ID():
			if pc.N != byClient[1] {
				t.Errorf("table says client 1 ran %d jobs, its handler counted %d", pc.N, byClient[1])
			}
		default:
			t.Errorf("%d jobs attempted by unknown client %q", pc.N, pc.By)
		}
	}
}

// No queue ever runs more jobs at once than its Workers, and each reaches its limit.
func TestQueueWorkersLimitIsNeverExceeded(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("gated")
	b := setup(t)
	limits := map[string]int{"narrow": 2, "wide": 3}
	const perQueue = 10

	type queueGauge struct {
		gauge
		started chan int64
		release *gate
	}
	gauges := map[string]*queueGauge{}
	qs := map[string]relay.QueueConfig{}
	for q, limit := range limits {
		gauges[q] = &queueGauge{started: make(chan int64, perQueue), release: b.gate()}
		qs[q] = relay.QueueConfig{Workers: limit}
	}
	c := b.client(relay.Config{Queues: qs})
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		g := gauges[job.Queue]
		g.enter()
		g.started <- job.ID
		select {
		case <-g.release.ch:
		case <-ctx.Done():
		}
		g.leave()
		return nil
	})
	b.start(c)

	var specs []relay.JobSpec
	for q := range limits {
		for i := range perQueue {
			specs = append(specs, kind.Job(numArgs{N: i}, relay.Queue(q)))
		}
	}
	b.enqueueMany(specs)

	for q, limit := range limits {
		g := gauges[q]
		// The queue fills up to its limit while every handler blocks...
		for range limit {
			recv(t, g.started, "queue "+q+" to fill its workers")
		}
		// ...and each released slot lets exactly one more job in.
		for range perQueue - limit {
			g.release.one(t)
			recv(t, g.started, "a freed slot of queue "+q+" to take the next job")
		}
		for range limit {
			g.release.one(t)
		}
	}
	b.waitCount("succeeded", len(specs))
	for q, limit := range limits {
		if got := gauges[q].max.Load(); got != int64(limit) {
			t.Errorf("queue %q ran up to %d jobs at once, want exactly its limit %d", q, got, limit)
		}
	}
}

// Stop waits for the handlers that are running, and their outcomes are written before it
// returns.
func TestStopWaitsForRunningJobsAndWritesTheirOutcomes(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("slow")
	const n = 5
	b := setup(t)
	c := b.client(relay.Config{})
	started := make(chan int64, n)
	release := b.gate()
	ctxErrs := make(chan error, n)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started <- job.ID
		release.wait()
		ctxErrs <- ctx.Err()
		return nil
	})
	b.start(c)

	ids := b.enqueueN(kind, n)
	for range n {
		recv(t, started, "every job to start")
	}

	probe := newStopProbe(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- c.Stop(probe) }()
	awaitStopWaiting(t, probe, stopped)
	// Stopping has stopped claiming: a job enqueued now is left for another client.
	left := enqueue(b, kind, numArgs{N: -1})
	// A second Stop meanwhile waits for the first.
	stoppedAgain := make(chan error, 1)
	go func() { stoppedAgain <- c.Stop(context.Background()) }()
	select {
	case err := <-stoppedAgain:
		t.Fatalf("a second Stop returned (%v) while the first was still waiting for handlers", err)
	case err := <-stopped:
		t.Fatalf("Stop returned (%v) while handlers were still running", err)
	default:
	}
	release.open()
	if err := recv(t, stopped, "Stop to return"); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := recv(t, stoppedAgain, "the second Stop to return"); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	for range n {
		if err := recv(t, ctxErrs, "handler"); err != nil {
			t.Errorf("a handler's context ended (%v) during a graceful stop", err)
		}
	}
	// No waiting: Stop has written every outcome by the time it returns.
	for _, j := range relaytest.Jobs(t, b.DB) {
		switch {
		case j.ID == left:
			if j.State != "pending" || j.Attempt != 0 {
				t.Errorf("job %d enqueued during Stop is %s after attempt %d, want pending and never claimed", j.ID, j.State, j.Attempt)
			}
		case j.State != "succeeded":
			t.Errorf("job %d is %s right after Stop, want succeeded", j.ID, j.State)
		}
	}
	if got := b.count("succeeded"); got != len(ids) {
		t.Errorf("%d of %d jobs succeeded", got, len(ids))
	}
}

// When Stop's context ends first, the handlers' context is cancelled and their jobs go
// back to pending, due now, with the error recorded; another client then runs them.
func TestStopDeadlineCancelsHandlersAndRequeuesTheirJobs(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("stubborn")
	const n = 3
	b := setup(t)
	c := b.client(relay.Config{})
	started := make(chan int64, n)
	cancelled := make(chan int64, n)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started <- job.ID
		<-ctx.Done()
		cancelled <- job.ID
		return ctx.Err()
	})
	b.start(c)

	ids := b.enqueueN(kind, n)
	for range n {
		recv(t, started, "every job to start")
	}

	before := time.Now()
	deadline, expire := context.WithCancel(context.Background())
	probe := newStopProbe(deadline)
	stopped := make(chan error, 1)
	go func() { stopped <- c.Stop(probe) }()
	awaitStopWaiting(t, probe, stopped)
	select {
	case id := <-cancelled:
		t.Fatalf("job %d's context was cancelled before Stop's deadline", id)
	default:
	}
	expire()
	for range n {
		recv(t, cancelled, "the handlers' context to be cancelled")
	}
	if err := recv(t, stopped, "Stop to return"); err != nil {
		t.Fatalf("Stop: %v (every handler returned once cancelled)", err)
	}
	if took := time.Since(before); took > 4*time.Second {
		t.Errorf("Stop took %v although the handlers returned as soon as they were cancelled", took)
	}
	after := time.Now()
	for _, j := range relaytest.Jobs(t, b.DB) {
		if j.State != "pending" || j.Attempt != 1 {
			t.Errorf("job %d is %s after attempt %d, want pending after attempt 1", j.ID, j.State, j.Attempt)
		}
		if len(j.Errors) != 1 || j.Errors[0] != context.Canceled.Error() {
			t.Errorf("job %d has errors %q, want [%q]", j.ID, j.Errors, context.Canceled)
		}
		if j.RunAt.Before(before.Truncate(time.Microsecond)) || j.RunAt.After(after) {
			t.Errorf("job %d is due at %v, want now (between %v and %v)", j.ID, j.RunAt, before, after)
		}
	}

	// Not stuck: a new client runs them at once.
	c2 := b.client(relay.Config{})
	again := make(chan int, n)
	handle(t, c2, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		again <- job.Attempt
		return nil
	})
	b.start(c2)
	for range n {
		if a := recv(t, again, "a requeued job to run on another client"); a != 2 {
			t.Errorf("requeued job ran as attempt %d, want 2", a)
		}
	}
	b.waitState("succeeded", ids...)
}

// Two clients on two schemas each run only their own schema's jobs.
func TestSchemasDoNotSeeEachOthersJobs(t *testing.T) {
	t.Parallel()
	type origin struct{ Schema string }
	type run struct{ client, schema string }
	kind := relay.NewKind[origin]("iso")
	b := setup(t)
	other := newBundle(t, &relaytest.DB{Pool: b.Pool, Schema: "relay_other", URL: b.URL})
	if err := relay.Migrate(context.Background(), other, relay.Schema(other.Schema)); err != nil {
		t.Fatal(err)
	}
	bundles := []*bundle{b, other}
	runs := make(chan run, 20)
	clients := make([]*relay.Client, len(bundles))
	for i, sb := range bundles {
		c := sb.client(relay.Config{})
		handle(t, c, kind, func(ctx context.Context, job *relay.Job[origin]) error {
			runs <- run{client: sb.Schema, schema: job.Args.Schema}
			return nil
		})
		sb.start(c)
		clients[i] = c
	}
	const perSchema = 5
	for range perSchema {
		for _, sb := range bundles {
			enqueue(sb, kind, origin{Schema: sb.Schema})
		}
	}
	counts := map[string]int{}
	for range perSchema * len(bundles) {
		r := recv(t, runs, "jobs to run")
		if r.client != r.schema {
			t.Errorf("the client of schema %s ran a job of schema %s", r.client, r.schema)
		}
		counts[r.client]++
	}
	for i, sb := range bundles {
		if counts[sb.Schema] != perSchema {
			t.Errorf("client of %s ran %d jobs, want %d", sb.Schema, counts[sb.Schema], perSchema)
		}
		relaytest.WaitFor(t, waitTimeout, "jobs to succeed", func() bool { return sb.count("succeeded") == perSchema })
		for _, j := range relaytest.Jobs(t, sb.DB) {
			if j.AttemptedBy != clients[i].ID() {
				t.Errorf("job %d of %s was attempted by %q, want its own client %q", j.ID, sb.Schema, j.AttemptedBy, clients[i].ID())
			}
		}
	}
}

// A job of a kind no running client handles is left pending, unclaimed, and runs once a
// client that handles it starts.
func TestUnhandledKindWaitsForAClientThatHandlesIt(t *testing.T) {
	t.Parallel()
	knownKind := relay.NewKind[numArgs]("known")
	unknownKind := relay.NewKind[numArgs]("unknown")
	b := setup(t)
	known := make(chan int64, 1)
	c := b.client(relay.Config{})
	handle(t, c, knownKind, reportIDs(known))
	b.start(c)

	// Both in one transaction: the unknown job is older, so a claim that could take it
	// would take it no later than the known one.
	ctx := context.Background()
	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	unknownID, err := relay.Enqueue(ctx, tx, unknownKind, numArgs{N: 1}, relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	knownID, err := relay.Enqueue(ctx, tx, knownKind, numArgs{N: 2}, relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	recv(t, known, "the known job")
	b.waitState("succeeded", knownID)
	j := b.stored(unknownID)
	if j.State != "pending" || j.Attempt != 0 || j.AttemptedBy != "" {
		t.Fatalf("unhandled job is %s, attempt %d, attempted by %q; want pending and never claimed", j.State, j.Attempt, j.AttemptedBy)
	}

	c2 := b.client(relay.Config{})
	unknown := make(chan int64, 1)
	handle(t, c2, unknownKind, reportIDs(unknown))
	b.start(c2)
	if got := recv(t, unknown, "the waiting job to run on the client that handles it"); got != unknownID {
		t.Fatalf("ran job %d, want %d", got, unknownID)
	}
	b.waitState("succeeded", unknownID)
	if j := b.stored(unknownID); j.AttemptedBy != c2.ID() || j.Attempt != 1 {
		t.Errorf("job ran as attempt %d by %q, want attempt 1 by %q", j.Attempt, j.AttemptedBy, c2.ID())
	}
}

// The errors of the client's lifecycle.
func TestClientLifecycleErrors(t *testing.T) {
	t.Parallel()
	lateKind := relay.NewKind[numArgs]("late")
	b := setup(t)
	ctx := context.Background()
	noop := func(ctx context.Context, job *relay.Job[numArgs]) error { return nil }

	t.Run("Handle twice for a kind", func(t *testing.T) {
		b := b.in(t)
		c := b.client(relay.Config{})
		handle(t, c, testKind, noop)
		if err := relay.Handle(c, testKind, noop); !errors.Is(err, relay.ErrDuplicateKind) {
			t.Fatalf("second Handle: %v, want ErrDuplicateKind", err)
		}
		if err := relay.Handle(c, relay.NewKind[numArgs](""), noop); !errors.Is(err, relay.ErrInvalidJob) {
			t.Errorf("Handle with an empty kind: %v, want ErrInvalidJob", err)
		}
		if err := relay.Handle(c, relay.NewKind[numArgs](string(make([]byte, relay.MaxNameLen+1))), noop); !errors.Is(err, relay.ErrInvalidJob) {
			t.Errorf("Handle with an over-long kind: %v, want ErrInvalidJob", err)
		}
		if err := relay.Handle(c, relay.NewKind[numArgs]("nil"), nil); !errors.Is(err, relay.ErrInvalidConfig) {
			t.Errorf("Handle with a nil handler: %v, want ErrInvalidConfig", err)
		}
	})

	t.Run("Start twice and Handle after Start", func(t *testing.T) {
		b := b.in(t)
		c := b.client(relay.Config{})
		handle(t, c, testKind, noop)
		b.start(c)
		if err := c.Start(ctx, b.Pool); !errors.Is(err, relay.ErrAlreadyStarted) {
			t.Errorf("second Start: %v, want ErrAlreadyStarted", err)
		}
		if err := relay.Handle(c, lateKind, noop); !errors.Is(err, relay.ErrAlreadyStarted) {
			t.Errorf("Handle after Start: %v, want ErrAlreadyStarted", err)
		}
	})

	t.Run("Start without handlers", func(t *testing.T) {
		b := b.in(t)
		c := b.client(relay.Config{})
		if err := c.Start(ctx, b.Pool); !errors.Is(err, relay.ErrNoHandlers) {
			t.Fatalf("Start: %v, want ErrNoHandlers", err)
		}
	})

	t.Run("Start on an unmigrated schema", func(t *testing.T) {
		b := b.in(t)
		c := b.client(relay.Config{Schema: b.Schema + "_missing"})
		handle(t, c, testKind, noop)
		err := c.Start(ctx, b.Pool)
		if !errors.Is(err, relay.ErrNotMigrated) {
			t.Fatalf("Start on a missing schema: %v, want ErrNotMigrated", err)
		}
		// The message names the missing schema, and so do the commands it suggests: those
		// for the default schema would migrate the wrong one.
		for _, want := range []string{`schema "relay_missing"`, `relay.Schema("relay_missing")`, "--schema relay_missing"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("Start on a missing schema: %q does not say %s", err, want)
			}
		}
		// A schema whose version table lacks a migration is not migrated either.
		partial := b.Schema + "_partial"
		q := pgx.Identifier{partial}.Sanitize()
		t.Cleanup(func() { b.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+q+" CASCADE") })
		if _, err := b.Exec(ctx, "CREATE SCHEMA "+q+"; CREATE TABLE "+q+".schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"); err != nil {
			t.Fatal(err)
		}
		c = b.client(relay.Config{Schema: partial})
		handle(t, c, testKind, noop)
		if err := c.Start(ctx, b.Pool); !errors.Is(err, relay.ErrNotMigrated) {
			t.Fatalf("Start on a schema without migrations: %v, want ErrNotMigrated", err)
		}
	})

	t.Run("Start after Stop", func(t *testing.T) {
		b := b.in(t)
		c := b.client(relay.Config{})
		handle(t, c, testKind, noop)
		b.start(c)
		b.stop(c)
		if err := c.Start(ctx, b.Pool); !errors.Is(err, relay.ErrClientStopped) {
			t.Errorf("Start after Stop: %v, want ErrClientStopped", err)
		}
		if err := c.Stop(ctx); err != nil {
			t.Errorf("second Stop: %v, want nil", err)
		}
		// A client that never started cannot start after Stop either.
		c = b.client(relay.Config{})
		handle(t, c, testKind, noop)
		if err := c.Stop(ctx); err != nil {
			t.Fatalf("Stop before Start: %v", err)
		}
		if err := c.Start(ctx, b.Pool); !errors.Is(err, relay.ErrClientStopped) {
			t.Errorf("Start after Stop of an unstarted client: %v, want ErrClientStopped", err)
		}
	})

	t.Run("invalid config", func(t *testing.T) {
		b := b.in(t)
		for name, cfg := range map[string]relay.Config{
			"zero workers":              {Queues: queues(0, "q")},
			"empty queue":               {Queues: queues(1, "")},
			"negative poll":             {PollInterval: -time.Second},
			"bad backoff":               {Backoff: backoff.Policy{Initial: time.Second, Multiplier: 0.5, Max: time.Second}},
			"over-long schema":          {Schema: strings.Repeat("s", 100)},
			"poll-only with a listener": {PollOnly: true, ListenerConnString: b.URL},
			"bad listener conn string":  {ListenerConnString: "postgres://%zz"},
		} {
			c := b.client(cfg)
			handle(t, c, testKind, noop)
			if err := c.Start(ctx, b.Pool); !errors.Is(err, relay.ErrInvalidConfig) {
				t.Errorf("%s: Start: %v, want ErrInvalidConfig", name, err)
			}
		}
		c := b.client(relay.Config{})
		handle(t, c, testKind, noop)
		if err := c.Start(ctx, nil); !errors.Is(err, relay.ErrInvalidConfig) {
			t.Errorf("Start with a nil pool: %v, want ErrInvalidConfig", err)
		}
	})
}
