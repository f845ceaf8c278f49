package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// crashKind is the kind of the job the "crash" worker process runs until it is killed.
var crashKind = relay.NewKind[numArgs]("crash")

// crashWorker is the role "crash" of a worker process (see workerRoles): its client, with
// short leases, says "started <id>" when a job starts; the job then runs until the
// process dies.
func crashWorker(w *workerSide) (*relay.Client, error) {
	c := relay.New(withShortLeases(w.cfg))
	return c, relay.Handle(c, crashKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		w.say("started %d", job.ID)
		<-ctx.Done() // until SIGKILL
		return ctx.Err()
	})
}

// A worker process killed with SIGKILL while it runs a job: another client runs the job
// again within LeaseTTL + 1 s of the kill, and the first attempt is recorded as lost by the
// dead worker with reason "lost lease".
func TestKilledWorkerProcessJobRunsAgainOnAnotherClient(t *testing.T) {
	t.Parallel()
	b := setup(t)
	workerID := "worker-process-" + randomHex()
	worker := b.startWorker("crash", map[string]string{"ID": workerID})
	worker.waitReady()

	id := enqueue(b, crashKind, numArgs{N: 7})
	if line := worker.nextLine("the worker to start the job"); line != fmt.Sprintf("started %d", id) {
		t.Fatalf("worker said %q, want %q", line, fmt.Sprintf("started %d", id))
	}
	if rec := b.record(id); rec.State != relay.StateRunning || rec.AttemptedBy != workerID {
		t.Fatalf("job is %s, attempted by %q; want running in the worker %q", rec.State, rec.AttemptedBy, workerID)
	}

	// This process's client is running before the kill; the job is not its to take yet.
	c := b.client(withShortLeases(relay.Config{}))
	type run struct {
		attempt int
		at      time.Time
	}
	ran := make(chan run, 10)
	handle(t, c, crashKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		ran <- run{job.Attempt, time.Now()}
		return nil
	})
	b.start(c)

	killed := time.Now()
	worker.kill()
	r := relaytest.Receive(t, ran, shortTTL+5*time.Second, "the job to run again after the worker was killed")
	took := r.at.Sub(killed)
	t.Logf("job ran again %v after SIGKILL (LeaseTTL %v, renewal %v)", took, shortTTL, shortRenewal)
	if took > shortTTL+time.Second {
		t.Errorf("job ran again %v after the worker was killed; want within LeaseTTL + 1s = %v", took, shortTTL+time.Second)
	}
	if r.attempt != 2 {
		t.Errorf("the rerun is attempt %d, want 2", r.attempt)
	}
	rec := b.waitRecord(id, relay.StateSucceeded)
	if len(rec.Attempts) != 2 || rec.Attempts[0].Reason != relay.ReasonLostLease || rec.Attempts[0].Number != 1 ||
		rec.Attempts[0].Client != workerID || rec.Attempts[1].Client != c.ID() {
		t.Errorf("history %s; want attempt 1 by %s lost (%q), then attempt 2 by %s", historyString(rec.Attempts), workerID, relay.ReasonLostLease, c.ID())
	}
	var alive bool
	if err := b.QueryRow(context.Background(), `SELECT alive FROM `+b.table("client_status")+` WHERE id = $1`, workerID).Scan(&alive); err != nil {
		t.Fatal(err)
	}
	if alive {
		t.Errorf("client_status says the killed worker is alive")
	}
}

// A client whose every database connection (its pool's and its listener's) is terminated
// while handlers run carries on without a restart: the running jobs' outcomes are written,
// jobs enqueued afterwards run, and nothing runs or is recorded twice.
func TestClientRecoversWhenAllItsConnectionsAreKilled(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("victim")
	b := setup(t)
	ctx := context.Background()
	app := "relaytest-victim-" + randomHex()
	pool := b.pool(func(cfg *pgxpool.Config) {
		cfg.ConnConfig.RuntimeParams["application_name"] = app
		cfg.MaxConns = 4
	})

	c := b.client(withShortLeases(relay.Config{Backoff: fastBackoff}))
	type key struct {
		id      int64
		attempt int
	}
	var (
		mu   sync.Mutex
		runs = map[key]int{}
	)
	inFlight := make(chan int64, 10)
	release := b.gate()
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		mu.Lock()
		runs[key{job.ID, job.Attempt}]++
		mu.Unlock()
		if job.Args.N < 0 && job.Attempt == 1 { // in flight while the connections die
			inFlight <- job.ID
			select {
			case <-release.ch:
			case <-ctx.Done():
				return fmt.Errorf("cancelled while in flight: %w", context.Cause(ctx))
			}
			if job.Args.N == -1 {
				return errors.New("first attempt fails")
			}
		}
		return nil
	})
	b.startOn(c, pool)

	// -1: fails once, then succeeds; -2: succeeds.
	specs := []relay.JobSpec{kind.Job(numArgs{N: -1}), kind.Job(numArgs{N: -2}),
		kind.Job(numArgs{N: -1}), kind.Job(numArgs{N: -2})}
	first, err := relay.EnqueueMany(ctx, b, specs, relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	for range first {
		recv(t, inFlight, "the first jobs to be running")
	}

	// Kill every backend of the client: its pool's and its listener's.
	listenerApp := relay.ListenerApplicationName(c.ID())
	rows, err := b.Query(ctx, `SELECT application_name, pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE application_name IN ($1, $2)`, app, listenerApp)
	if err != nil {
		t.Fatal(err)
	}
	killed := map[string]int{}
	for rows.Next() {
		var name string
		var ok bool
		if err := rows.Scan(&name, &ok); err != nil {
			t.Fatal(err)
		}
		if ok {
			killed[name]++
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if killed[app] == 0 || killed[listenerApp] != 1 {
		t.Fatalf("terminated %v; want the pool's connections and the listener's", killed)
	}
	t.Logf("terminated %d pool connections and the listener", killed[app])

	release.open() // the in-flight handlers end now, with every connection gone
	b.waitState("succeeded", first...)

	// Jobs enqueued now, with the client idle, can only be woken by a NOTIFY (the fallback
	// poll is an hour): the listener must have reconnected by itself.
	var later []int64
	for i := range 20 {
		later = append(later, enqueue(b, kind, numArgs{N: i}))
	}
	all := append(append([]int64{}, first...), later...)
	b.waitCount("succeeded", len(all))
	b.stop(c)

	for _, id := range all {
		rec := b.record(id)
		var args numArgs
		if err := json.Unmarshal(rec.Args, &args); err != nil {
			t.Fatal(err)
		}
		n := args.N
		wantAttempts := 1
		if n == -1 {
			wantAttempts = 2
		}
		if rec.State != relay.StateSucceeded || rec.Attempt != wantAttempts {
			t.Errorf("job %d (N=%d) is %s after attempt %d, want succeeded after attempt %d", id, n, rec.State, rec.Attempt, wantAttempts)
		}
		if len(rec.Attempts) != wantAttempts {
			t.Errorf("job %d (N=%d) has history %s, want %d entries", id, n, historyString(rec.Attempts), wantAttempts)
		} else if wantAttempts == 2 && (rec.Attempts[0].Number != 1 || rec.Attempts[0].Reason != relay.ReasonError) {
			t.Errorf("job %d (N=%d) has history %s, want attempt 1 failed with reason error", id, n, historyString(rec.Attempts))
		}
		for a := 1; a <= wantAttempts; a++ {
			if got := runs[key{id, a}]; got != 1 {
				t.Errorf("attempt %d of job %d ran %d times, want once", a, id, got)
			}
		}
	}
	if len(runs) != len(all)+2 {
		t.Errorf("handlers ran %d distinct attempts, want %d", len(runs), len(all)+2)
	}
}

// PostgreSQL crashes and restarts (pg_ctl restart -m immediate, on a server of this test's
// own) while a producer enqueues continuously: the client is not restarted, its pool and
// listener reconnect by themselves, and every job whose enqueue committed runs to success
// afterwards (some may run twice: a claim lost in the crash is claimed again).
func TestClientCarriesOnThroughAPostgresCrashRestart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv, b := onServerOfItsOwn(t)
	clientPool, producerPool, schema := b.pool(nil), b.Pool, b.Schema
	startCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	var (
		mu   sync.Mutex
		runs = map[int64]int{}
	)
	ran := make(chan int64, 100_000)
	c := b.client(withShortLeases(relay.Config{Backoff: fastBackoff})) // fallback poll: one hour
	handle(t, c, crashLoadKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		mu.Lock()
		runs[job.ID]++
		mu.Unlock()
		ran <- job.ID
		return nil
	})
	b.startOn(c, clientPool)

	// The producer enqueues one job per transaction until told to stop, keeping the ids
	// whose Commit succeeded.
	var (
		committed   []int64
		committedMu sync.Mutex
		failures    atomic.Int64
		count       atomic.Int64
	)
	produce, stopProducing := context.WithCancel(ctx)
	produced := make(chan struct{})
	go func() {
		defer close(produced)
		for i := 0; produce.Err() == nil; i++ {
			id, err := enqueueCommitted(produce, producerPool, schema, i)
			if err != nil {
				failures.Add(1)
				select { // pace retries while the server is down
				case <-produce.Done():
				case <-time.After(20 * time.Millisecond):
				}
				continue
			}
			committedMu.Lock()
			committed = append(committed, id)
			committedMu.Unlock()
			count.Add(1)
		}
	}()
	t.Cleanup(func() { stopProducing(); <-produced })

	const before, after = 150, 150
	relaytest.WaitFor(t, 30*time.Second, "jobs to be enqueued before the crash", func() bool { return count.Load() >= before })
	restarted := time.Now()
	if err := srv.Restart(startCtx, "immediate"); err != nil {
		t.Fatal(err)
	}
	atRestart := count.Load()
	t.Logf("server restarted in %v with %d jobs committed", time.Since(restarted), atRestart)
	relaytest.WaitFor(t, 30*time.Second, "jobs to be enqueued after the restart", func() bool { return count.Load() >= atRestart+after })
	stopProducing()
	<-produced
	committedMu.Lock()
	ids := append([]int64{}, committed...)
	committedMu.Unlock()
	t.Logf("%d jobs committed, %d enqueues failed during the outage", len(ids), failures.Load())

	var done int
	relaytest.WaitFor(t, time.Minute, "every committed job to succeed", func() bool {
		err := producerPool.QueryRow(ctx, `SELECT count(*) FROM `+b.table("jobs")+` WHERE id = ANY($1) AND state = 'succeeded'`, ids).Scan(&done)
		return err == nil && done == len(ids)
	})

	// The listener is back: with the poll at an hour, only its NOTIFY can wake the client.
	for len(ran) > 0 {
		<-ran
	}
	last, err := enqueueCommitted(ctx, producerPool, schema, -1)
	if err != nil {
		t.Fatal(err)
	}
	committedAt := time.Now()
	for got := recv(t, ran, "a job enqueued after the recovery"); got != last; got = recv(t, ran, "a job enqueued after the recovery") {
	}
	if took := time.Since(committedAt); took > time.Second {
		t.Errorf("a job enqueued after the recovery started %v after its commit; want promptly", took)
	}
	b.stop(c)

	twice := 0
	for _, id := range ids {
		switch n := runs[id]; {
		case n == 0:
			t.Errorf("job %d succeeded but its handler never ran", id)
		case n > 1:
			twice++
		}
	}
	t.Logf("%d of %d jobs ran more than once (claims lost in the crash)", twice, len(ids))
}

// crashLoadKind is the kind of the jobs enqueued through a PostgreSQL crash.
var crashLoadKind = relay.NewKind[numArgs]("load")

// enqueueCommitted enqueues one crashLoadKind job in its own transaction and returns its id
// once Commit has succeeded.
func enqueueCommitted(ctx context.Context, pool *pgxpool.Pool, schema string, n int) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	id, err := relay.Enqueue(ctx, tx, crashLoadKind, numArgs{N: n}, relay.Schema(schema))
	if err != nil {
		return 0, err
	}
	return id, tx.Commit(ctx)
}
