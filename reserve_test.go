package relay_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// Tests of reservations (relay.Reserved, relay.CommitJobs, relay.ExtendReservation): a held
// job keeps its place — its ordered key waits behind it, its unique key is taken — but never
// runs until it is committed; a reservation nobody commits expires, on one client, promptly,
// and its key moves on.
//
// Every test name starts with TestReserv: go test -run Reserv runs them all.

// expiryBound bounds how long after its deadline a lapsed reservation may end. Expirers
// wake within milliseconds of a deadline they know of; the bound is generous because the
// machine the tests run on is shared and often loaded, and it only needs to tell an
// expiry at the deadline from one at a poll (an hour in these tests: see bundle.client).
const expiryBound = 5 * time.Second

// ledger is the ordered queue of the tests.
const ledger = "ledger"

// startLedger makes the queue ledger ordered, and starts a client that serves it with a
// handler of kind that records each start.
func (b *bundle) startLedger(kind relay.Kind[orderedArgs]) *recorder {
	b.t.Helper()
	b.setQueue(ledger, relay.QueueSettings{Ordered: true})
	rec := newRecorder()
	c := b.client(relay.Config{Queues: queues(4, ledger)})
	handle(b.t, c, kind, rec.handler(0, nil))
	b.start(c)
	return rec
}

// reserve enqueues a reservation of kind held for within, in a transaction of its own.
func reserve[T any](b *bundle, kind relay.Kind[T], args T, within time.Duration, opts ...relay.EnqueueOption) int64 {
	b.t.Helper()
	return enqueue(b, kind, args, append(opts, relay.Reserved(within))...)
}

// commit commits the reservations ids on db, failing the test on an error.
func (b *bundle) commit(db relay.DB, ids ...int64) {
	b.t.Helper()
	if err := relay.CommitJobs(context.Background(), db, ids, relay.Schema(b.Schema)); err != nil {
		b.t.Fatalf("CommitJobs(%v): %v", ids, err)
	}
}

// expectHeld fails the test unless each job is held and has never run.
func (b *bundle) expectHeld(why string, ids ...int64) {
	b.t.Helper()
	for _, id := range ids {
		if rec := b.record(id); rec.State != relay.StateHeld || rec.Attempt != 0 || rec.HeldUntil.IsZero() {
			b.t.Errorf("%s: job %d is %s at attempt %d, held until %v; want held, never attempted",
				why, id, rec.State, rec.Attempt, rec.HeldUntil)
		}
	}
}

// expectExpired fails the test unless job id ended as an expired reservation that never
// ran — if prompt, within expiryBound of its deadline — and returns its record.
func (b *bundle) expectExpired(id int64, prompt bool) *relay.JobRecord {
	b.t.Helper()
	rec := b.waitRecord(id, relay.StateCancelled)
	if len(rec.Attempts) != 1 || rec.Attempts[0].Reason != relay.ReasonExpired || rec.Attempts[0].Number != 0 ||
		rec.Attempts[0].Outcome != string(relay.StateCancelled) || rec.Attempt != 0 || !rec.CommittedAt.IsZero() {
		b.t.Errorf("expired job %d: attempt %d, committed at %v, history %s; want one entry, reason expired, no attempt",
			id, rec.Attempt, rec.CommittedAt, historyString(rec.Attempts))
	}
	if late := rec.FinishedAt.Sub(rec.HeldUntil); late < 0 || (prompt && late > expiryBound) {
		b.t.Errorf("job %d expired %v after its deadline %v; want at or after it, within %v", id, late, rec.HeldUntil, expiryBound)
	}
	return rec
}

// A held head blocks its ordered key: the jobs enqueued behind it stay pending, never
// started, while another key of the queue runs; the held job itself is never claimed. Once
// the producer commits it, atomically with its own write, the head runs, then the jobs
// behind it, in order. The held job reads as held, with its deadline, in GetJob, ListJobs,
// CountJobs and QueueDepths.
func TestReservedHeadBlocksItsKeyUntilCommitted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kind := relay.NewKind[orderedArgs]("ledger-entry")
	b := setup(t)
	rec := b.startLedger(kind)

	before := b.now()
	head := reserve(b, kind, orderedArgs{Key: "acct-1", N: 0}, time.Hour, relay.Queue(ledger), relay.OrderKey("acct-1"))
	behind := []int64{enqueueOrdered(b, kind, ledger, "acct-1", 1), enqueueOrdered(b, kind, ledger, "acct-1", 2)}
	// Another key runs meanwhile: by the time it has succeeded, a claim that could have
	// taken the head or the jobs behind it has come and gone.
	other := enqueueOrdered(b, kind, ledger, "acct-2", 0)
	b.waitState(relay.StateSucceeded, other)
	b.expectHeld("before the commit", head)
	b.expectPending("behind a held head", behind...)
	if got := rec.startsOf("acct-1"); len(got) != 0 {
		t.Fatalf("key acct-1 started %v while its head was held", got)
	}

	held := b.record(head)
	if d := held.HeldUntil.Sub(before); d < 59*time.Minute || d > time.Hour+expiryBound {
		t.Errorf("HeldUntil = %v, %v after the reservation began; want an hour", held.HeldUntil, d)
	}
	page, err := relay.ListJobs(ctx, b, relay.ListFilter{States: []relay.JobState{relay.StateHeld}}, relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Jobs) != 1 || page.Jobs[0].ID != head || !page.Jobs[0].HeldUntil.Equal(held.HeldUntil) {
		t.Errorf("ListJobs of held jobs = %d jobs; want the head alone, with its deadline", len(page.Jobs))
	}
	counts, err := relay.CountJobs(ctx, b, relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	if counts.Queues[ledger].Held != 1 || counts.All.Get(relay.StateHeld) != 1 || counts.All.Pending != 2 {
		t.Errorf("CountJobs = %+v; want 1 held and 2 pending", counts.All)
	}
	depths, err := relay.QueueDepths(ctx, b, relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	if depths[ledger].Held != 1 {
		t.Errorf("QueueDepths = %+v; want 1 held", depths[ledger])
	}

	// The producer's own write and the commit, in one transaction.
	effects := b.effectsTable()
	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := insertEffect(ctx, tx, effects, head, 0, "ledger row"); err != nil {
		t.Fatal(err)
	}
	b.commit(tx, head)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	b.waitState(relay.StateSucceeded, append(behind, head)...)
	if got, want := rec.startsOf("acct-1"), firstAttempts("acct-1", 0, 2); !slices.Equal(got, want) {
		t.Errorf("key acct-1 started %v; want %v", got, want)
	}
	if got := rec.maxRunning("acct-1"); got != 1 {
		t.Errorf("up to %d jobs of key acct-1 ran at once; want 1", got)
	}
	if r := b.record(head); r.CommittedAt.IsZero() || !r.HeldUntil.Equal(held.HeldUntil) {
		t.Errorf("the committed head has CommittedAt %v, HeldUntil %v; want the commit's time and the deadline it had", r.CommittedAt, r.HeldUntil)
	}
	if got := b.effects(effects); !slices.Equal(got, []string{fmt.Sprintf("%d/0/ledger row", head)}) {
		t.Errorf("effects = %v", got)
	}
}

// A held job of a plain queue is never claimed, while jobs enqueued after it run; its
// unique key is taken: an enqueue with the key returns the held job as the duplicate.
func TestReservedJobIsNeverClaimedAndHoldsItsUniqueKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ran := make(chan int64, 10)
	c := b.client(relay.Config{})
	handle(t, c, testKind, reportIDs(ran))
	b.start(c)

	held := reserve(b, testKind, numArgs{N: 1}, time.Hour, relay.Unique("invoice-7"))
	dup := enqueueJob(b, testKind, numArgs{N: 2}, relay.Unique("invoice-7"))
	if !dup.Duplicate || dup.ID != held {
		t.Errorf("an enqueue with the held job's unique key = %+v; want a duplicate of %d", dup, held)
	}
	dups := b.enqueueMany([]relay.JobSpec{testKind.Job(numArgs{N: 3}, relay.Unique("invoice-7"))})
	if dups[0] != held {
		t.Errorf("EnqueueMany with the held job's unique key = %v; want %d", dups, held)
	}
	after := enqueue(b, testKind, numArgs{N: 4})
	if id := recv(t, ran, "the job enqueued after the held one to run"); id != after {
		t.Fatalf("job %d ran; want %d, the only one that is not held", id, after)
	}
	b.expectHeld("while a later job of its queue ran", held)

	b.commit(b, held)
	if id := recv(t, ran, "the committed job to run"); id != held {
		t.Fatalf("job %d ran; want the committed %d", id, held)
	}
	b.waitState(relay.StateSucceeded, held)
	noMore(t, ran, "job run")
}

// A reservation nobody commits expires at its deadline, on the client that was running
// when it was made (so it learnt of the deadline by NOTIFY, not by a pass at start): it
// ends cancelled with reason expired, having never run, and the jobs behind it in its key
// run in order. Committing it afterwards, or retrying it, is refused.
func TestReservedLapsedReservationExpiresAndTheKeyMovesOn(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kind := relay.NewKind[orderedArgs]("ledger-entry")
	b := setup(t)
	rec := b.startLedger(kind)

	head := reserve(b, kind, orderedArgs{Key: "acct-1", N: 0}, 300*time.Millisecond, relay.Queue(ledger), relay.OrderKey("acct-1"))
	behind := []int64{enqueueOrdered(b, kind, ledger, "acct-1", 1), enqueueOrdered(b, kind, ledger, "acct-1", 2)}
	b.expectExpired(head, true)
	b.waitState(relay.StateSucceeded, behind...)
	if got, want := rec.startsOf("acct-1"), firstAttempts("acct-1", 1, 2); !slices.Equal(got, want) {
		t.Errorf("key acct-1 started %v; want %v: the expired head never, the rest in order", got, want)
	}

	err := relay.CommitJobs(ctx, b, []int64{head}, relay.Schema(b.Schema))
	if !errors.Is(err, relay.ErrReservationExpired) {
		t.Errorf("CommitJobs of an expired reservation = %v; want ErrReservationExpired", err)
	}
	if err := relay.Retry(ctx, b, head, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrJobNotRetryable) {
		t.Errorf("Retry of an expired reservation = %v; want ErrJobNotRetryable", err)
	}
	if err := relay.ExtendReservation(ctx, b, []int64{head}, time.Hour, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrReservationExpired) {
		t.Errorf("ExtendReservation of an expired reservation = %v; want ErrReservationExpired", err)
	}
}

// A reservation made before any client runs is expired by the first pass of a client
// that starts after its deadline, and one whose deadline is ahead by the pass that pass
// scheduled. Cancelling a held job gives it up at once.
func TestReservedExpiryOfReservationsMadeBeforeTheClientStarted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	lapsed := reserve(b, testKind, numArgs{N: 1}, time.Millisecond)
	soon := reserve(b, testKind, numArgs{N: 2}, 500*time.Millisecond)
	cancelled := reserve(b, testKind, numArgs{N: 3}, time.Hour)
	if err := relay.Cancel(ctx, b, cancelled, relay.Schema(b.Schema)); err != nil {
		t.Fatalf("Cancel of a held job: %v", err)
	}
	if rec := b.record(cancelled); rec.State != relay.StateCancelled || len(rec.Attempts) != 0 {
		t.Errorf("the cancelled held job is %s with history %s; want cancelled, no entry", rec.State, historyString(rec.Attempts))
	}
	if err := relay.CommitJobs(ctx, b, []int64{cancelled}, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrJobFinished) {
		t.Errorf("CommitJobs of a reservation cancelled before its deadline = %v; want ErrJobFinished", err)
	}

	ran := make(chan int64, 10)
	c := b.client(relay.Config{})
	handle(t, c, testKind, reportIDs(ran))
	b.start(c)
	b.expectExpired(lapsed, false) // it lapsed before any client ran
	b.expectExpired(soon, true)
	noMore(t, ran, "job run")
}

// A keep-alive: a reservation extended before its deadline outlives it; one extended to
// an earlier deadline, while the expirer sleeps until a later one, expires at the earlier
// one, which the expirer learns of by NOTIFY. The extension moves HeldUntil.
func TestReservedExtendReservation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	c := b.client(relay.Config{})
	handle(t, c, testKind, func(context.Context, *relay.Job[numArgs]) error { return nil })
	b.start(c)

	shortened := reserve(b, testKind, numArgs{N: 1}, time.Hour)
	// Once a later reservation has expired, the expirer has seen shortened's deadline and
	// sleeps until it, an hour away: only the extension's announcement can wake it sooner.
	first := reserve(b, testKind, numArgs{N: 4}, 100*time.Millisecond)
	b.expectExpired(first, true)
	if err := relay.ExtendReservation(ctx, b, []int64{shortened}, 300*time.Millisecond, relay.Schema(b.Schema)); err != nil {
		t.Fatalf("ExtendReservation to an earlier deadline: %v", err)
	}
	b.expectExpired(shortened, true)

	kept := reserve(b, testKind, numArgs{N: 2}, 300*time.Millisecond)
	if err := relay.ExtendReservation(ctx, b, []int64{kept}, time.Hour, relay.Schema(b.Schema)); err != nil {
		t.Fatalf("ExtendReservation: %v", err)
	}
	// A reservation made after the extension, due after kept's first deadline: once it
	// has expired, the expirer has passed that deadline.
	marker := reserve(b, testKind, numArgs{N: 3}, 400*time.Millisecond)
	b.expectExpired(marker, true)
	b.expectHeld("after its first deadline passed, extended", kept)
	if d := time.Until(b.record(kept).HeldUntil); d < 50*time.Minute {
		t.Errorf("the extended reservation is held for %v more; want about an hour", d)
	}

	if err := relay.ExtendReservation(ctx, b, []int64{kept}, 0, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrInvalidJob) {
		t.Errorf("ExtendReservation by 0 = %v; want ErrInvalidJob", err)
	}
	b.commit(b, kept)
	if err := relay.ExtendReservation(ctx, b, []int64{kept}, time.Hour, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrNotHeld) {
		t.Errorf("ExtendReservation of a committed job = %v; want ErrNotHeld", err)
	}
}

// Committing inside a transaction that rolls back commits nothing: the job stays held and
// never runs (a later job of its queue runs meanwhile), and a later commit still works.
// Committing twice is a no-op.
func TestReservedCommitInRolledBackTransactionCommitsNothing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	ran := make(chan int64, 10)
	c := b.client(relay.Config{})
	handle(t, c, testKind, reportIDs(ran))
	b.start(c)

	held := reserve(b, testKind, numArgs{N: 1}, time.Hour)
	effects := b.effectsTable()
	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := insertEffect(ctx, tx, effects, held, 0, "ledger row"); err != nil {
		t.Fatal(err)
	}
	b.commit(tx, held)
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	after := enqueue(b, testKind, numArgs{N: 2})
	if id := recv(t, ran, "the later job to run"); id != after {
		t.Fatalf("job %d ran; want %d: the rolled-back commit must not have made %d runnable", id, after, held)
	}
	b.expectHeld("after its commit rolled back", held)
	if got := b.effects(effects); len(got) != 0 {
		t.Errorf("effects = %v after the rollback", got)
	}

	b.commit(b, held)
	if id := recv(t, ran, "the committed job to run"); id != held {
		t.Fatalf("job %d ran; want %d", id, held)
	}
	b.waitState(relay.StateSucceeded, held)
	b.commit(b, held, held) // committed already (and run since): a no-op
	noMore(t, ran, "job run")
}

// CommitJobs is all or nothing, and says why each job it refused could not be committed.
func TestReservedCommitJobsRefusesWhatCannotBeCommitted(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t) // no client: nothing runs, nothing expires
	good := reserve(b, testKind, numArgs{N: 1}, time.Hour)
	plain := enqueue(b, testKind, numArgs{N: 2})
	lapsed := reserve(b, testKind, numArgs{N: 3}, time.Millisecond)
	b.waitDeadline(lapsed)
	const missing = 1 << 40

	err := relay.CommitJobs(ctx, b, []int64{good, plain, lapsed, missing}, relay.Schema(b.Schema))
	for _, want := range []error{relay.ErrNotHeld, relay.ErrReservationExpired, relay.ErrJobNotFound} {
		if !errors.Is(err, want) {
			t.Errorf("CommitJobs = %v; want it to wrap %v", err, want)
		}
	}
	for _, id := range []int64{plain, lapsed, missing} {
		if !strings.Contains(fmt.Sprint(err), "job "+strconv.FormatInt(id, 10)+":") {
			t.Errorf("CommitJobs = %v; want it to name job %d", err, id)
		}
	}
	b.expectHeld("after a refused commit of a batch it was in", good)
	b.expectHeld("lapsed, with no client to expire it", lapsed)
	if err := relay.CommitJobs(ctx, b, nil, relay.Schema(b.Schema)); err != nil {
		t.Errorf("CommitJobs of no jobs = %v", err)
	}
	if err := relay.CommitJobs(ctx, nil, []int64{good}); !errors.Is(err, relay.ErrNilDB) {
		t.Errorf("CommitJobs on a nil db = %v; want ErrNilDB", err)
	}
	if _, err := relay.Enqueue(ctx, b, testKind, numArgs{}, relay.Reserved(-time.Second), relay.Schema(b.Schema)); !errors.Is(err, relay.ErrInvalidJob) {
		t.Errorf("Reserved(-1s) = %v; want ErrInvalidJob", err)
	}
	b.commit(b, good)
	if rec := b.record(good); rec.State != relay.StatePending || rec.CommittedAt.IsZero() {
		t.Errorf("the committed job is %s, committed at %v; want pending, with its time", rec.State, rec.CommittedAt)
	}
}

// waitDeadline waits until the deadline of reservation id has passed on the database's
// clock.
func (b *bundle) waitDeadline(id int64) {
	b.t.Helper()
	deadline := b.record(id).HeldUntil
	relaytest.WaitFor(b.t, waitTimeout, "the reservation's deadline to pass", func() bool { return b.now().After(deadline) })
}

// Many reservations lapse at once on three running clients, more than one expiry pass
// takes, so that the clients' passes overlap: each expires exactly once — one history
// entry each — and none ever runs.
func TestReservedExpiryAcrossClientsHappensExactlyOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ran := make(chan int64, 10)
	for i := range 3 {
		pool := b.Pool
		if i > 0 {
			pool = b.NewPool(t) // each client on connections of its own, like separate processes
		}
		c := b.client(relay.Config{ID: fmt.Sprintf("expirer-%d", i)})
		handle(t, c, testKind, reportIDs(ran))
		b.startOn(c, pool)
	}
	const n = 1500
	specs := make([]relay.JobSpec, n)
	for i := range specs {
		specs[i] = testKind.Job(numArgs{N: i})
	}
	ids := b.enqueueMany(specs, relay.Reserved(500*time.Millisecond))
	b.waitCount(relay.StateCancelled, n)
	byClient := map[string]int{}
	for _, id := range ids {
		rec := b.expectExpired(id, true)
		if len(rec.Attempts) == 1 {
			byClient[rec.Attempts[0].Client]++
		}
	}
	t.Logf("reservations expired per client: %v", byClient)
	noMore(t, ran, "job run")
}

// reserveWorker is the worker role of a producer: on "reserve <queue> <key> <ms>" it
// enqueues a reservation in that key of an ordered queue, held for that many milliseconds,
// and says "reserved <id>"; on "commit <id>" it begins a transaction, commits the
// reservation in it, says "committing <id>" and waits, the transaction open, to be killed.
// Its client handles the kind, as a producer's process may, but never gets a job of it.
func reserveWorker(w *workerSide) (*relay.Client, error) {
	c := relay.New(w.cfg)
	go func() {
		ctx := context.Background()
		schema := relay.Schema(w.cfg.Schema)
		for line := range w.commands {
			f := strings.Fields(line)
			switch {
			case len(f) == 4 && f[0] == "reserve":
				ms, _ := strconv.Atoi(f[3])
				id, err := relay.Enqueue(ctx, w.pool, reserveKind, orderedArgs{Key: f[2]}, relay.Queue(f[1]), relay.OrderKey(f[2]),
					relay.Reserved(time.Duration(ms)*time.Millisecond), schema)
				if err != nil {
					w.say("error %v", err)
					continue
				}
				w.say("reserved %d", id)
			case len(f) == 2 && f[0] == "commit":
				id, _ := strconv.ParseInt(f[1], 10, 64)
				tx, err := w.pool.Begin(ctx)
				if err == nil {
					err = relay.CommitJobs(ctx, tx, []int64{id}, schema)
				}
				if err != nil {
					w.say("error %v", err)
					continue
				}
				w.say("committing %d", id) // and never commits: the test kills the process
			}
		}
	}()
	return c, relay.Handle(c, reserveKind, func(context.Context, *relay.Job[orderedArgs]) error { return nil })
}

// reserveKind is the kind the reserve worker reserves.
var reserveKind = relay.NewKind[orderedArgs]("reserved-entry")

// A producer killed with SIGKILL between reserving and committing — in the middle of its
// commit, its transaction open — leaves a reservation that expires at its deadline on
// another client: it never runs, and the job behind it in its key runs.
func TestReservedProducerKilledBeforeCommittingLeavesAReservationThatExpires(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec := b.startLedger(reserveKind)

	producer := b.startWorker("reserve", nil)
	producer.waitReady()
	// Long enough for the kill to come before the deadline, as a producer's death usually
	// does; a kill after it only delays the expiry until the dead transaction's lock goes.
	producer.send(fmt.Sprintf("reserve %s acct-1 %d", ledger, 4000))
	line := producer.nextLine("the producer to reserve")
	head, err := strconv.ParseInt(strings.TrimPrefix(line, "reserved "), 10, 64)
	if err != nil {
		t.Fatalf("the producer said %q", line)
	}
	behind := enqueueOrdered(b, reserveKind, ledger, "acct-1", 1)
	producer.send(fmt.Sprintf("commit %d", head))
	if line := producer.nextLine("the producer to commit"); line != fmt.Sprintf("committing %d", head) {
		t.Fatalf("the producer said %q", line)
	}
	producer.kill()

	b.expectExpired(head, true)
	b.waitState(relay.StateSucceeded, behind)
	if got, want := rec.startsOf("acct-1"), firstAttempts("acct-1", 1, 1); !slices.Equal(got, want) {
		t.Errorf("key acct-1 started %v; want %v: never the reservation", got, want)
	}
}

// A held head given up at once — deleted, or cancelled in bulk — frees its key at once:
// the job behind it runs, without waiting for the reservation's deadline.
func TestReservedHeadDeletedOrCancelledFreesItsKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	kind := relay.NewKind[orderedArgs]("ledger-entry")
	b := setup(t)
	rec := b.startLedger(kind)

	deleted := reserve(b, kind, orderedArgs{Key: "acct-1", N: 0}, time.Hour, relay.Queue(ledger), relay.OrderKey("acct-1"))
	behindDeleted := enqueueOrdered(b, kind, ledger, "acct-1", 1)
	if err := relay.DeleteJob(ctx, b, deleted, relay.Schema(b.Schema)); err != nil {
		t.Fatalf("DeleteJob of a held job: %v", err)
	}
	b.waitState(relay.StateSucceeded, behindDeleted)

	cancelled := reserve(b, kind, orderedArgs{Key: "acct-2", N: 0}, time.Hour, relay.Queue(ledger), relay.OrderKey("acct-2"))
	behindCancelled := enqueueOrdered(b, kind, ledger, "acct-2", 1)
	n, err := relay.CancelJobs(ctx, b, relay.ListFilter{States: []relay.JobState{relay.StateHeld}}, relay.Schema(b.Schema))
	if err != nil || n != 1 {
		t.Fatalf("CancelJobs of held jobs = %d, %v; want 1", n, err)
	}
	b.waitState(relay.StateSucceeded, behindCancelled)
	if r := b.record(cancelled); r.State != relay.StateCancelled || r.Attempt != 0 {
		t.Errorf("the cancelled reservation is %s at attempt %d; want cancelled, never run", r.State, r.Attempt)
	}
	if got := rec.startsOf("acct-1"); !slices.Equal(got, firstAttempts("acct-1", 1, 1)) {
		t.Errorf("key acct-1 started %v; want only the job behind the deleted reservation", got)
	}
}
