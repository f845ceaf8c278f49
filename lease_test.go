package relay_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// A client cut off from the database (its renewals paused) while its handler runs loses
// the job: another client rescues it and runs it, the cut-off handler's context is
// cancelled with a lease cause, and its late return — while the other client still runs
// the job — writes nothing. The job ends succeeded once, with the lost-lease attempt and
// then the success in its history.
func TestPartitionedClientsJobIsRescuedAndRunByAnother(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("partitioned")
	b := setup(t)
	c1 := b.client(withShortLeases(relay.Config{Queues: queues(1, relay.DefaultQueue)}))
	started1 := make(chan int64, 1)
	causes1 := make(chan ctxEnd, 1)
	release1 := b.gate()
	handle(t, c1, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started1 <- job.ID
		<-ctx.Done()
		causes1 <- ctxEnd{job.Attempt, context.Cause(ctx), time.Now()}
		release1.wait() // returns late, while the other client runs the job
		return nil
	})
	b.start(c1)

	id := enqueue(b, kind, numArgs{N: 1})
	if got := recv(t, started1, "the job to start on the first client"); got != id {
		t.Fatalf("first client ran job %d, want %d", got, id)
	}

	// The second client starts only now so that the first certainly claimed the job.
	c2 := b.client(withShortLeases(relay.Config{}))
	type run struct {
		attempt int
		at      time.Time
	}
	ran2 := make(chan run, 10)
	release2 := b.gate()
	handle(t, c2, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		ran2 <- run{job.Attempt, time.Now()}
		select {
		case <-release2.ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		return nil
	})
	b.start(c2)

	relay.PauseLeaseRenewal(c1, true)
	paused := time.Now()
	r := relaytest.Receive(t, ran2, shortTTL+2*time.Second, "the second client to rescue and run the job")
	t.Logf("second client ran the job %v after the first was cut off", r.at.Sub(paused))
	if r.attempt != 2 {
		t.Errorf("second client ran attempt %d, want 2", r.attempt)
	}
	c := relaytest.Receive(t, causes1, shortTTL+2*time.Second, "the cut-off handler's context to be cancelled")
	t.Logf("cut-off handler cancelled %v after the renewals stopped (cause %v)", c.at.Sub(paused), c.err)
	if !errors.Is(c.err, relay.ErrLeaseExpired) && !errors.Is(c.err, relay.ErrLostLease) {
		t.Errorf("cut-off handler's context ended with %v, want ErrLeaseExpired or ErrLostLease", c.err)
	}

	// The cut-off handler returns nil, late, while attempt 2 runs; stopping its client
	// writes whatever it still had to write.
	release1.open()
	b.stop(c1)
	rec := b.record(id)
	if rec.State != relay.StateRunning || rec.Attempt != 2 || rec.AttemptedBy != c2.ID() || len(rec.Attempts) != 1 {
		t.Fatalf("after the cut-off handler returned, the job is %s at attempt %d by %q with history %s; want still running attempt 2 on %s",
			rec.State, rec.Attempt, rec.AttemptedBy, historyString(rec.Attempts), c2.ID())
	}

	release2.open()
	rec = b.waitRecord(id, relay.StateSucceeded)
	b.stop(c2)
	select {
	case r := <-ran2:
		t.Errorf("the job ran again on the second client (attempt %d)", r.attempt)
	default:
	}
	if rec.Attempt != 2 || rec.AttemptedBy != c2.ID() {
		t.Errorf("job succeeded after attempt %d by %q; want attempt 2 by %q", rec.Attempt, rec.AttemptedBy, c2.ID())
	}
	if len(rec.Attempts) != 2 ||
		rec.Attempts[0].Number != 1 || rec.Attempts[0].Client != c1.ID() || rec.Attempts[0].Reason != relay.ReasonLostLease || rec.Attempts[0].Outcome != "pending" ||
		rec.Attempts[1].Number != 2 || rec.Attempts[1].Client != c2.ID() || rec.Attempts[1].Outcome != "succeeded" {
		t.Errorf("history %s; want attempt 1 by %s lost (lost lease), then attempt 2 by %s succeeded", historyString(rec.Attempts), c1.ID(), c2.ID())
	}
}

// An attempt whose lease was lost while its handler ignores its context must not disturb
// the next attempt of the same job when that lands on the same client: the stale handler
// is told it lost the job, and when it finally returns the new attempt's lease is still
// renewed, so the job is not rescued (and run a third time) while attempt 2 runs.
//
// Guards the Keeper's bookkeeping by attempt: when it keyed leases by job id alone, Hold of
// attempt 2 replaced attempt 1's entry without cancelling it, and Release of attempt 1
// deleted attempt 2's.
func TestStaleAttemptDoesNotDisturbTheNextAttemptOnTheSameClient(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("stubborn")
	b := setup(t)
	c := b.client(withShortLeases(relay.Config{Queues: queues(2, relay.DefaultQueue)}))
	started := make(chan int, 10)
	causes := make(chan ctxEnd, 10)
	release := map[int]chan struct{}{1: make(chan struct{}), 2: make(chan struct{}), 3: make(chan struct{})}
	testDone := b.gate()
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started <- job.Attempt
		rel := release[job.Attempt]
		select {
		case <-ctx.Done():
			causes <- ctxEnd{job.Attempt, context.Cause(ctx), time.Now()}
		case <-rel:
			return nil
		case <-testDone.ch:
			return nil
		}
		select { // ignores its context: works on until released
		case <-rel:
		case <-testDone.ch:
		}
		return nil
	})
	b.start(c)

	id := enqueue(b, kind, numArgs{})
	if a := recv(t, started, "attempt 1"); a != 1 {
		t.Fatalf("attempt %d started, want 1", a)
	}
	// Cut off until the job is rescued and claimed again, here, as attempt 2.
	relay.PauseLeaseRenewal(c, true)
	if a := relaytest.Receive(t, started, shortTTL+2*time.Second, "attempt 2 after the lease was lost"); a != 2 {
		t.Fatalf("attempt %d started, want 2", a)
	}
	relay.PauseLeaseRenewal(c, false)

	select {
	case got := <-causes:
		if got.attempt != 1 || (!errors.Is(got.err, relay.ErrLeaseExpired) && !errors.Is(got.err, relay.ErrLostLease)) {
			t.Errorf("attempt %d's context ended with %v; want attempt 1's, with a lease cause", got.attempt, got.err)
		}
	case <-time.After(shortTTL):
		t.Errorf("attempt 1's handler was never told it lost the job, while attempt 2 of the same job runs on the same client")
	}

	// The stale handler returns; attempt 2 must keep its lease.
	close(release[1])
	from := b.now()
	want := from.Add(shortTTL + 2*shortRenewal) // only renewals after the return reach this far
	relaytest.WaitFor(t, shortTTL+2*time.Second, "attempt 2's lease to be renewed after attempt 1 returned", func() bool {
		rec := b.record(id)
		if rec.State != relay.StateRunning || rec.Attempt != 2 {
			t.Fatalf("after attempt 1 returned, the job became %s at attempt %d while attempt 2 still runs; history %s",
				rec.State, rec.Attempt, historyString(rec.Attempts))
		}
		return rec.LeaseExpiresAt.After(want)
	})
	select {
	case got := <-causes:
		t.Fatalf("attempt %d's context ended (%v) although it holds the job", got.attempt, got.err)
	case a := <-started:
		t.Fatalf("attempt %d started while attempt 2 holds the job", a)
	default:
	}

	close(release[2])
	rec := b.waitRecord(id, relay.StateSucceeded)
	if rec.Attempt != 2 || len(rec.Attempts) != 2 || rec.Attempts[0].Reason != relay.ReasonLostLease {
		t.Errorf("job succeeded after attempt %d with history %s; want attempt 1 lost (lost lease), attempt 2 succeeded", rec.Attempt, historyString(rec.Attempts))
	}
}

// A running client has an alive row in client_status whose heartbeat advances; a pending
// job of a kind it does not handle stays pending and is listed in unhandled_jobs, while
// the kinds it handles are not. Once it stops, it is no longer alive.
func TestClientStatusAndUnhandledJobsViews(t *testing.T) {
	t.Parallel()
	handledKind := relay.NewKind[numArgs]("handled")
	orphanKind := relay.NewKind[numArgs]("orphan")
	b := setup(t)
	ctx := context.Background()
	c := b.client(withShortLeases(relay.Config{}))
	ran := make(chan int64, 10)
	handle(t, c, handledKind, reportIDs(ran))
	b.start(c)

	orphan := enqueue(b, orphanKind, numArgs{})
	later := enqueue(b, handledKind, numArgs{}, relay.RunIn(time.Hour)) // pending, handled: not listed
	handled := enqueue(b, handledKind, numArgs{})
	if got := recv(t, ran, "the handled job"); got != handled {
		t.Fatalf("ran job %d, want %d", got, handled)
	}
	b.waitState("succeeded", handled)

	type status struct {
		alive       bool
		heartbeat   time.Time
		stopped     *time.Time
		kinds       []string
		queues      []string
		running     int64
		ttl         time.Duration
		startedAt   time.Time
		clientFound bool
	}
	statusOf := func(id string) status {
		var s status
		err := b.QueryRow(ctx, `SELECT alive, heartbeat_at, stopped_at, kinds, queues, running_jobs, lease_ttl, started_at FROM `+
			b.table("client_status")+` WHERE id = $1`, id).Scan(&s.alive, &s.heartbeat, &s.stopped, &s.kinds, &s.queues, &s.running, &s.ttl, &s.startedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			return s
		}
		if err != nil {
			t.Fatal(err)
		}
		s.clientFound = true
		return s
	}
	var first status
	relaytest.WaitFor(t, waitTimeout, "the client's status row", func() bool {
		first = statusOf(c.ID())
		return first.clientFound
	})
	if !first.alive || first.stopped != nil || !slices.Equal(first.kinds, []string{"handled"}) ||
		!slices.Equal(first.queues, []string{relay.DefaultQueue}) || first.ttl != shortTTL {
		t.Errorf("status of the running client: %+v; want alive, not stopped, kinds [handled], queues [default], TTL %v", first, shortTTL)
	}
	relaytest.WaitFor(t, waitTimeout, "the heartbeat to advance", func() bool {
		return statusOf(c.ID()).heartbeat.After(first.heartbeat)
	})

	type unhandled struct {
		queue, kind string
		jobs        int64
	}
	listUnhandled := func() []unhandled {
		rows, err := b.Query(ctx, `SELECT queue, kind, jobs FROM `+b.table("unhandled_jobs")+` ORDER BY queue, kind`)
		if err != nil {
			t.Fatal(err)
		}
		list, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (unhandled, error) {
			var u unhandled
			return u, r.Scan(&u.queue, &u.kind, &u.jobs)
		})
		if err != nil {
			t.Fatal(err)
		}
		return list
	}
	if got, want := listUnhandled(), []unhandled{{relay.DefaultQueue, "orphan", 1}}; !slices.Equal(got, want) {
		t.Errorf("unhandled_jobs while the client runs: %+v, want %+v", got, want)
	}
	if rec := b.record(orphan); rec.State != relay.StatePending || rec.Attempt != 0 {
		t.Errorf("the unhandled job is %s at attempt %d, want pending and never claimed", rec.State, rec.Attempt)
	}

	b.stop(c)
	if s := statusOf(c.ID()); s.alive || s.stopped == nil {
		t.Errorf("status of the stopped client: %+v; want not alive, stopped", s)
	}
	// With no live client, the scheduled handled job is unhandled too.
	if got, want := listUnhandled(), []unhandled{{relay.DefaultQueue, "handled", 1}, {relay.DefaultQueue, "orphan", 1}}; !slices.Equal(got, want) {
		t.Errorf("unhandled_jobs once the client stopped: %+v, want %+v (job %d)", got, want, later)
	}
}

// A client started again under the same ID (Config.ID set, as a deployment does) with a
// different set of kinds must show its new kinds, queues and TTL in client_status, and
// unhandled_jobs must judge by them.
//
// Guards the heartbeat's upsert (renewLeases in internal/store/queries.sql), which once
// updated only heartbeat_at and stopped_at on conflict, so the row kept the first run's
// kinds, queues, lease_ttl and started_at forever.
func TestClientStatusShowsTheKindsOfAClientRestartedUnderTheSameID(t *testing.T) {
	t.Parallel()
	oldKind := relay.NewKind[numArgs]("old-kind")
	newKind := relay.NewKind[numArgs]("new-kind")
	b := setup(t)
	ctx := context.Background()
	id := "fixed-id-" + randomHex()
	noop := func(ctx context.Context, job *relay.Job[numArgs]) error { return nil }

	first := b.client(withShortLeases(relay.Config{ID: id}))
	handle(t, first, oldKind, noop)
	b.start(first)
	relaytest.WaitFor(t, waitTimeout, "the first run's status row", func() bool {
		var n int
		_ = b.QueryRow(ctx, `SELECT count(*) FROM `+b.table("clients")+` WHERE id = $1`, id).Scan(&n)
		return n == 1
	})
	b.stop(first)

	second := b.client(relay.Config{ID: id, LeaseTTL: 3 * time.Second, LeaseRenewal: time.Second,
		Queues: queues(1, "other")})

	handle(t, second, newKind, noop)
	b.start(second)
	pending := enqueue(b, newKind, numArgs{}, relay.Queue("other"), relay.RunIn(time.Hour))

	var (
		kinds, queues []string
		ttl           time.Duration
		alive         bool
	)
	relaytest.WaitFor(t, waitTimeout, "the second run's heartbeat", func() bool {
		err := b.QueryRow(ctx, `SELECT kinds, queues, lease_ttl, alive FROM `+b.table("client_status")+` WHERE id = $1`, id).
			Scan(&kinds, &queues, &ttl, &alive)
		if err != nil {
			t.Fatal(err)
		}
		return alive
	})
	if !slices.Equal(kinds, []string{"new-kind"}) || !slices.Equal(queues, []string{"other"}) || ttl != 3*time.Second {
		t.Errorf("client_status of the restarted client: kinds %v, queues %v, TTL %v; want [new-kind], [other], 3s", kinds, queues, ttl)
	}
	var listed int
	if err := b.QueryRow(ctx, `SELECT count(*) FROM `+b.table("unhandled_jobs")+` WHERE kind = 'new-kind'`).Scan(&listed); err != nil {
		t.Fatal(err)
	}
	if listed != 0 {
		t.Errorf("unhandled_jobs lists kind new-kind (job %d) although a live client handles it on its queue", pending)
	}
}

// A lease renewal waits for the client's outcome batch in flight, so that it never locks a
// job the batch makes pending (a claim woken for it would skip it), but not for longer
// than a quarter of the lease, at most a second: a batch held up by a locked row does not
// stop the heartbeat.
func TestRenewalWaitsForAnOutcomeBatchButNotForLong(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	release := b.gate()
	started := make(chan int64, 1)
	c := b.client(relay.Config{ID: "renews", LeaseTTL: 4 * time.Second, LeaseRenewal: 50 * time.Millisecond,
		Queues: queues(1, relay.DefaultQueue)})
	handle(t, c, testKind, func(_ context.Context, job *relay.Job[numArgs]) error {
		started <- job.ID
		release.wait()
		return nil
	})
	b.start(c)
	id := enqueue(b, testKind, numArgs{})
	recv(t, started, "the job")
	locker, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Rollback(ctx)
	if _, err := locker.Exec(ctx, "SELECT FROM "+b.table("jobs")+" WHERE id = $1 FOR UPDATE", id); err != nil {
		t.Fatal(err)
	}
	release.open()
	b.waitForALockWait("the outcome batch to wait for the locked row", "jobs")

	// Renewals every 50 ms would beat three times in 150 ms; each waits a second instead.
	heartbeat := func() (at time.Time) {
		if err := b.QueryRow(ctx, "SELECT heartbeat_at FROM "+b.table("clients")+" WHERE id = 'renews'").Scan(&at); err != nil {
			t.Fatal(err)
		}
		return at
	}
	began, last, beats := time.Now(), heartbeat(), 0
	relaytest.WaitFor(t, waitTimeout, "three heartbeats while the batch waits", func() bool {
		if at := heartbeat(); at.After(last) {
			last, beats = at, beats+1
		}
		return beats == 3
	})
	if took := time.Since(began); took < 1500*time.Millisecond {
		t.Errorf("three heartbeats came within %v while an outcome batch was in flight; want each renewal to wait for it up to a second", took)
	}
	if err := locker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	b.waitRecord(id, relay.StateSucceeded)
}
