package relay_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
)

// Races around queue settings, leases, cancels and transactional completion, each found
// in review as a defect; the tests keep them fixed.

// raceKind is the kind of most jobs of these tests.
var raceKind = relay.NewKind[numArgs]("rv")

// A job that failed (or was cancelled) while its queue was plain has no order key. Once the
// queue is ordered, relay.Retry must give it the queue's key: claimGated claims only heads
// of keys, and a keyless job would never run.
func TestRetriedJobFromBeforeTheQueueWasOrderedRuns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	q := "rv-retry-" + randomHex()

	id := enqueue(b, raceKind, numArgs{1}, relay.Queue(q))
	if err := relay.Cancel(ctx, b, id, relay.Schema(b.Schema)); err != nil {
		t.Fatal(err)
	}
	b.setQueue(q, relay.QueueSettings{Ordered: true})
	if err := relay.Retry(ctx, b, id, relay.Schema(b.Schema)); err != nil {
		t.Fatal(err)
	}

	mustRun(b, q, id)
}

// The same keyless job, by a race: an enqueue whose transaction is open while SetQueue
// makes the queue ordered reads the queue as plain, and SetQueue's alignment cannot see the
// uncommitted row. Claims soon after a change of settings give such jobs the key.
func TestJobEnqueuedWhileTheQueueBecameOrderedRuns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	q := "rv-race-" + randomHex()
	id, commit := enqueueWhileBecomingOrdered(b, q)
	commit()
	mustRun(b, q, id)
}

// The same race on a queue a client already claims from. Its claims look for such jobs once
// a second, not at every claim: a claim after the change looks while the job is still
// uncommitted, and a later one must find it once it commits.
func TestJobEnqueuedWhileAServedQueueBecameOrderedRuns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	q := "rv-served-" + randomHex()
	ran := startOrdered(b, q)
	stray, commit := enqueueWhileBecomingOrdered(b, q)
	// A keyed job that runs proves a claim of the ordered queue after the change: one that
	// looked for keyless jobs while the stray was not yet committed.
	keyed := enqueue(b, raceKind, numArgs{2}, relay.Queue(q), relay.OrderKey("k"))
	if got := recv(t, ran, "the keyed job"); got != keyed {
		t.Fatalf("job %d ran; want the keyed job %d", got, keyed)
	}
	commit()
	runsSoon(b, ran, stray)
}

// enqueueWhileBecomingOrdered enqueues a keyless job into q in a transaction that is still
// open while SetQueue makes q ordered; commit commits it.
func enqueueWhileBecomingOrdered(b *bundle, q string) (id int64, commit func()) {
	t := b.t
	t.Helper()
	ctx := context.Background()
	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback(ctx) })
	if id, err = relay.Enqueue(ctx, tx, raceKind, numArgs{1}, relay.Queue(q), relay.Schema(b.Schema)); err != nil {
		t.Fatal(err)
	}
	b.setQueue(q, relay.QueueSettings{Ordered: true}) // commits while tx is open
	return id, func() {
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// startOrdered starts a client on ordered queue q, polling every 100 ms; the ids of the
// jobs it runs come on the channel it returns.
func startOrdered(b *bundle, q string) <-chan int64 {
	ran := make(chan int64, 4)
	c := b.client(relay.Config{Queues: queues(2, q), PollInterval: 100 * time.Millisecond})
	handle(b.t, c, raceKind, reportIDs(ran))
	b.start(c)
	return ran
}

// mustRun starts a client on ordered queue q and fails the test if job id does not run
// soon (runsSoon).
func mustRun(b *bundle, q string, id int64) {
	b.t.Helper()
	runsSoon(b, startOrdered(b, q), id)
}

// runsSoon fails the test unless job id is the next to come from ran, within 3 s: thirty
// polls of startOrdered's client.
func runsSoon(b *bundle, ran <-chan int64, id int64) {
	t := b.t
	t.Helper()
	select {
	case got := <-ran:
		if got != id {
			t.Fatalf("job %d ran; want %d", got, id)
		}
	case <-time.After(3 * time.Second):
		rec := b.record(id)
		t.Fatalf("job %d never ran: state %s, order key %v (ordered queue, 100 ms poll)", id, rec.State, rec.OrderKey)
	}
}

// In an ordered queue whose Workers are all busy, the wakeup sent when a handler's
// CompleteTx transaction commits arrives while the handler still holds its worker slot.
// The slot freed when the handler returns must then claim (the job's own outcome is a
// no-op and sends no wakeup), or the next job of the key waits for the poll (here 1 h).
func TestOrderedHandOffAfterCompleteTxNeedsNoPoll(t *testing.T) {
	t.Parallel()
	b := setup(t)
	q := "rv-handoff-" + randomHex()
	b.setQueue(q, relay.QueueSettings{Ordered: true})

	started := make(chan int64, 4)
	c := b.client(relay.Config{Queues: queues(1, q)}) // 1 h poll
	handle(t, c, raceKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started <- job.ID
		tx, err := b.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if err := relay.CompleteTx(ctx, tx, job); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		time.Sleep(200 * time.Millisecond) // a little work after the commit (logging, a metric, …)
		return nil
	})
	first := enqueue(b, raceKind, numArgs{1}, relay.Queue(q))
	second := enqueue(b, raceKind, numArgs{2}, relay.Queue(q))
	b.start(c)

	recv(t, started, "first job")
	select {
	case <-started:
	case <-time.After(3 * time.Second):
		t.Fatalf("job %d succeeded (CompleteTx) but the next job %d of its key did not start within 3 s: %s / %s",
			first, second, b.record(first).State, b.record(second).State)
	}
}

// Client.Subscribe promises that "an event never reports what the database does not hold".
// An attempt that called CompleteTx whose transaction then rolled back — here because the
// job was cancelled meanwhile — must be reported cancelled, not succeeded.
func TestCompleteTxEventOfACancelledJobSaysCancelled(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	q := "rv-event-" + randomHex()

	completed := make(chan struct{})
	proceed := make(chan struct{})
	cancelCommitted := make(chan struct{})
	c := b.client(relay.Config{Queues: queues(1, q)})
	handle(t, c, raceKind, func(hctx context.Context, job *relay.Job[numArgs]) error {
		tx, err := b.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if err := relay.CompleteTx(ctx, tx, job); err != nil {
			return err
		}
		close(completed)
		<-proceed
		err = tx.Rollback(ctx) // e.g. a later statement of the transaction failed
		// Return only once the Cancel waiting for the row has committed: otherwise the
		// attempt's own outcome (a retry) may take the freed row first, and the event would
		// rightly say pending, the state the database held until the Cancel.
		<-cancelCommitted
		return err
	})
	events := b.subscribe(c, 16)
	id := enqueue(b, raceKind, numArgs{1}, relay.Queue(q))
	b.start(c)

	recv(t, completed, "CompleteTx")
	cancelled := make(chan error, 1)
	go func() { cancelled <- relay.Cancel(ctx, b, id, relay.Schema(b.Schema)) }() // waits for the row
	b.waitForALockWait("Cancel to wait for the row the handler's transaction holds", "")
	close(proceed)
	if err := recv(t, cancelled, "Cancel"); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	close(cancelCommitted)
	ev := recv(t, events, "event")
	rec := b.waitRecord(id, relay.StateCancelled)
	if ev.State != rec.State {
		t.Fatalf("event says job %d is %s (CompletedTx %v); the database holds %s", id, ev.State, ev.CompletedTx, rec.State)
	}
}

// The keeper renews the leases of rows held by handlers' transactions (the Checkpoint-in-tx
// pattern of the README) on their own, off its tick: waiting for many of them in turn would
// let the leases of every other running job lapse, and those jobs would run twice.
func TestLockedRowsDoNotStallOtherLeaseRenewals(t *testing.T) {
	t.Parallel()
	lockedKind := relay.NewKind[numArgs]("locked")
	plainKind := relay.NewKind[numArgs]("plain")
	b := setup(t)
	pool := b.pool(func(cfg *pgxpool.Config) { cfg.MaxConns = 40 })
	const locked = 16 // 16 × lockWait (125 ms with a 1 s lease) = 2 s > LeaseTTL
	lq, pq := "rv-locked-"+randomHex(), "rv-plain-"+randomHex()

	var plainRuns atomic.Int32
	var lostCause sync.Map
	c := b.client(withShortLeases(relay.Config{Queues: map[string]relay.QueueConfig{
		lq: {Workers: locked}, pq: {Workers: 1},
	}}))
	handle(t, c, lockedKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		if job.Attempt > 1 {
			return nil
		}
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(context.Background())
		if err := relay.Checkpoint(ctx, tx, job, 1); err != nil {
			return err
		}
		time.Sleep(2500 * time.Millisecond) // the work the checkpoint describes
		return tx.Commit(ctx)
	})
	handle(t, c, plainKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		plainRuns.Add(1)
		select {
		case <-ctx.Done():
			lostCause.Store(job.Attempt, context.Cause(ctx))
		case <-time.After(2 * time.Second):
		}
		return nil
	})
	for i := range locked {
		enqueue(b, lockedKind, numArgs{i}, relay.Queue(lq))
	}
	id := enqueue(b, plainKind, numArgs{0}, relay.Queue(pq))
	b.startOn(c, pool)

	rec := b.waitRecord(id, relay.StateSucceeded)
	if n := plainRuns.Load(); n != 1 || len(rec.Attempts) != 1 {
		var causes []any
		lostCause.Range(func(k, v any) bool { causes = append(causes, k, v); return true })
		t.Fatalf("a plain job whose handler ran 2 s (lease 1 s, renewal every 200 ms) ran %d times; history %s; causes %v",
			n, historyString(rec.Attempts), causes)
	}
}

// Checkpoint extends its lease to at least LeaseTTL from the clock, not from now(), the
// start of the handler's transaction: a handler that checkpoints step after step in one
// transaction (the README's loop) must keep its lease past the transaction's first TTL.
func TestCheckpointInALongTransactionExtendsTheLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	q := "rv-ckpt-" + randomHex()
	type result struct {
		step    int
		expired bool
		err     error
	}
	results := make(chan result, 1)
	c := b.client(withShortLeases(relay.Config{Queues: queues(1, q)}))
	handle(t, c, raceKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		tx, err := b.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(context.Background())
		for step := 1; step <= 8; step++ {
			time.Sleep(250 * time.Millisecond) // the step's work, in tx
			if err := relay.Checkpoint(ctx, tx, job, step); err != nil {
				results <- result{step: step, err: err}
				return err
			}
			var expired bool
			if err := tx.QueryRow(ctx, `SELECT lease_expires_at < clock_timestamp() FROM `+b.table("jobs")+` WHERE id = $1`,
				job.ID).Scan(&expired); err != nil {
				return err
			}
			if expired {
				results <- result{step: step, expired: true}
				return tx.Commit(ctx)
			}
		}
		results <- result{}
		return tx.Commit(ctx)
	})
	enqueue(b, raceKind, numArgs{1}, relay.Queue(q))
	b.start(c)
	r := recv(t, results, "handler result")
	if r.err != nil || r.expired {
		t.Fatalf("right after Checkpoint of step %d (%v elapsed in the transaction), the job's lease had expired (err %v)",
			r.step, time.Duration(r.step)*250*time.Millisecond, r.err)
	}
}

// Cancel of a running head frees its key at once — the next job starts without waiting for
// the cancelled handler, whose context is cancelled with ErrCancelled — as the README says
// (one at a time holds for handlers that honour their context).
func TestCancelledHeadFreesItsKeyAtOnce(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[orderedArgs]("rv")
	b := setup(t)
	ctx := context.Background()
	q := "rv-overlap-" + randomHex()
	b.setQueue(q, relay.QueueSettings{Ordered: true})

	started := make(chan int64, 4)
	cause := make(chan error, 1)
	release := b.gate()
	c := b.client(relay.Config{Queues: queues(4, q)})
	handle(t, c, kind, func(hctx context.Context, job *relay.Job[orderedArgs]) error {
		started <- job.ID
		if job.Args.N == 1 {
			<-hctx.Done()
			cause <- context.Cause(hctx)
			release.wait() // still running, as a handler cleaning up would be
		}
		return nil
	})
	first := enqueueOrdered(b, kind, q, "k", 1)
	second := enqueueOrdered(b, kind, q, "k", 2)
	b.start(c)
	if got := recv(t, started, "first job"); got != first {
		t.Fatalf("started %d first", got)
	}
	if err := relay.Cancel(ctx, b, first, relay.Schema(b.Schema)); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, started, "second job"); got != second {
		t.Fatalf("started %d after the cancel, want %d", got, second)
	}
	if err := recv(t, cause, "the cancelled handler's context"); !errors.Is(err, relay.ErrCancelled) {
		t.Fatalf("cancelled handler's context ended with %v, want ErrCancelled", err)
	}
}

// Every client receives a cancel notification; one that does not hold the job remembers it
// as a tombstone for a lease's time. Tombstones name the attempt, so an operator who
// cancels a job stuck on a dead client and retries it at once does not see the retried
// attempt cancelled on claim.
func TestRetryAfterCancelIsNotCancelledByAStaleTombstone(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	q := "rv-tomb-" + randomHex()

	type entry struct {
		id      int64
		attempt int
		cause   error
	}
	entries := make(chan entry, 8)
	c := b.client(relay.Config{Queues: queues(2, q)})
	handle(t, c, raceKind, func(hctx context.Context, job *relay.Job[numArgs]) error {
		entries <- entry{job.ID, job.Attempt, context.Cause(hctx)}
		return nil
	})
	b.start(c)

	// A job that another client, now hung or dead, claimed: running, leased to it.
	id := enqueue(b, raceKind, numArgs{1}, relay.Queue("elsewhere-"+randomHex()))
	if _, err := b.Exec(ctx, `UPDATE `+b.table("jobs")+` SET queue = $2, state = 'running', attempt = 1,
		attempted_at = now(), attempted_by = 'ghost', lease_expires_at = now() + interval '1 hour' WHERE id = $1`, id, q); err != nil {
		t.Fatal(err)
	}
	if err := relay.Cancel(ctx, b, id, relay.Schema(b.Schema)); err != nil {
		t.Fatal(err)
	}
	// Notifications arrive in commit order: once a job enqueued after the cancel has run,
	// the client has seen the cancel notification too.
	probe := enqueue(b, raceKind, numArgs{2}, relay.Queue(q))
	if e := recv(t, entries, "the probe job"); e.id != probe {
		t.Fatalf("job %d ran before the probe %d", e.id, probe)
	}
	if err := relay.Retry(ctx, b, id, relay.Schema(b.Schema)); err != nil {
		t.Fatal(err)
	}
	e := recv(t, entries, "the retried attempt")
	if e.cause != nil {
		rec := b.record(id)
		t.Fatalf("retried job %d (attempt %d) started with its context already cancelled: %v; job is now %s",
			id, e.attempt, e.cause, rec.State)
	}
}

// After CompleteTx's transaction commits, the handler may still have work to do. The next
// keep-alive tick no longer finds the job running; it must not cancel the handler's
// context with ErrLostLease, since the job simply succeeded.
func TestHandlerAfterCompleteTxCommitIsNotCancelledAsLostLease(t *testing.T) {
	t.Parallel()
	b := setup(t)
	q := "rv-after-" + randomHex()
	causes := make(chan error, 1)
	c := b.client(withShortLeases(relay.Config{Queues: queues(1, q)}))
	handle(t, c, raceKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		tx, err := b.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(context.Background())
		if err := relay.CompleteTx(ctx, tx, job); err != nil {
			return err
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		select { // post-commit work: send the e-mail the committed row describes, say
		case <-ctx.Done():
			causes <- context.Cause(ctx)
		case <-time.After(time.Second):
			causes <- nil
		}
		return nil
	})
	enqueue(b, raceKind, numArgs{1}, relay.Queue(q))
	b.start(c)
	if cause := recv(t, causes, "handler"); cause != nil {
		t.Fatalf("handler's context was cancelled after its CompleteTx committed: %v (lost lease: %v)", cause, errors.Is(cause, relay.ErrLostLease))
	}
}
