package relay_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/relayq/relay"
	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/relaytest"
)

// Tests of CompleteTx, Checkpoint, outputs, binary payloads and events.

// ---------------------------------------------------------------------------------------
// CompleteTx

// CompleteTx in the handler's transaction makes the job's success and the handler's
// writes one commit: before it, the job is running and the writes invisible to others;
// after it, both are there. What the handler returns after the commit — an error, even a
// panic — no longer changes the job: it ran once, succeeded, with one attempt in its
// history, and the event says so.
func TestCompleteTxCommitsTheJobWithTheHandlersWrites(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("invoice")
	b := setup(t)
	effects := b.effectsTable()
	c := b.client(relay.Config{})
	events := b.subscribe(c, 16)

	type inside struct {
		state relay.JobState // as the handler's transaction sees the job
		err   error
	}
	runs := make(chan int64, 10)
	seenInside := make(chan inside, 1)
	commit := make(chan struct{})
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		runs <- job.ID
		tx, err := b.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if err := insertEffect(ctx, tx, effects, job.ID, job.Attempt, "invoiced"); err != nil {
			return err
		}
		if err := relay.CompleteTx(ctx, tx, job); err != nil {
			return err
		}
		if job.Args.N == 1 {
			rec, err := relay.GetJob(ctx, tx, job.ID, relay.Schema(b.Schema))
			in := inside{err: err}
			if err == nil {
				in.state = rec.State
			}
			seenInside <- in
			<-commit // the test looks from outside the transaction first
		}
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		if job.Args.N == 2 {
			panic("after the commit")
		}
		return errors.New("an error after the commit")
	})
	b.start(c)

	first := enqueue(b, kind, numArgs{N: 1})
	recv(t, runs, "the first job to run")
	in := recv(t, seenInside, "the handler to complete the job in its transaction")
	if in.err != nil || in.state != relay.StateSucceeded {
		t.Errorf("inside its transaction, after CompleteTx, GetJob says %s (error %v); want succeeded", in.state, in.err)
	}
	// Not committed yet: others see the job running and none of its writes.
	if rec := b.record(first); rec.State != relay.StateRunning {
		t.Errorf("before the commit the job is %s to others, want running", rec.State)
	}
	if got := b.effects(effects); len(got) != 0 {
		t.Errorf("before the commit others see the effects %v", got)
	}
	close(commit)

	second := enqueue(b, kind, numArgs{N: 2})
	recv(t, runs, "the second job to run")
	got := b.eventsOf(events, 2, first, second)
	b.stop(c) // every handler has returned and every outcome is written
	noMore(t, runs, "run")

	for _, id := range []int64{first, second} {
		if es := got[id]; len(es) != 1 || es[0].State != relay.StateSucceeded || !es[0].CompletedTx || es[0].Attempt != 1 ||
			es[0].Reason != "" || es[0].Error != "" {
			var s []string
			for _, e := range es {
				s = append(s, eventString(e))
			}
			t.Errorf("job %d: events %v; want one: attempt 1 succeeded with CompletedTx and no error", id, s)
		}
		rec := b.record(id)
		if rec.State != relay.StateSucceeded || rec.Attempt != 1 || rec.FinishedAt.IsZero() {
			t.Errorf("job %d is %s after attempt %d (finished %v); want succeeded after attempt 1", id, rec.State, rec.Attempt, rec.FinishedAt)
		}
		if len(rec.Attempts) != 1 || rec.Attempts[0].Number != 1 || rec.Attempts[0].Outcome != "succeeded" ||
			rec.Attempts[0].Client != c.ID() || rec.Attempts[0].Reason != "" || rec.Attempts[0].Error != "" {
			t.Errorf("job %d history %s; want one successful attempt by %s", id, historyString(rec.Attempts), c.ID())
		}
	}
	want := []string{fmt.Sprintf("%d/1/invoiced", first), fmt.Sprintf("%d/1/invoiced", second)}
	if got := b.effects(effects); !slices.Equal(got, want) {
		t.Errorf("effects %v, want %v", got, want)
	}
}

// A transaction that called CompleteTx but did not commit — rolled back explicitly, or
// left to a deferred Rollback by a handler that returns nil — completes nothing: the
// attempt is recorded as failed with an error saying the transaction did not commit (and
// the handler's own error, if any), its writes are gone, and the job is retried.
func TestCompleteTxRolledBackIsRetried(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("charge")
	b := setup(t)
	effects := b.effectsTable()
	c := b.client(relay.Config{})
	events := b.subscribe(c, 32)
	completed := make(chan error, 10) // what CompleteTx returned on each attempt
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		tx, err := b.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if err := insertEffect(ctx, tx, effects, job.ID, job.Attempt, "charged"); err != nil {
			return err
		}
		err = relay.CompleteTx(ctx, tx, job)
		completed <- err
		if err != nil {
			return err
		}
		if job.Attempt > 1 {
			return tx.Commit(ctx)
		}
		switch job.Args.N {
		case 1: // rolls back and says why
			if err := tx.Rollback(ctx); err != nil {
				return err
			}
			return errors.New("the payment provider refused")
		default: // forgets to commit: the deferred Rollback runs
			return nil
		}
	}, retryFast...)
	b.start(c)

	explicit := enqueue(b, kind, numArgs{N: 1})
	forgot := enqueue(b, kind, numArgs{N: 2})
	got := b.eventsOf(events, 4, explicit, forgot)
	b.stop(c)
	for range 4 {
		if err := recv(t, completed, "CompleteTx results"); err != nil {
			t.Errorf("CompleteTx: %v", err)
		}
	}
	noMore(t, completed, "CompleteTx call")

	for _, id := range []int64{explicit, forgot} {
		rec := b.record(id)
		if rec.State != relay.StateSucceeded || rec.Attempt != 2 || len(rec.Attempts) != 2 {
			t.Fatalf("job %d is %s after attempt %d with history %s; want succeeded at attempt 2 after one failure",
				id, rec.State, rec.Attempt, historyString(rec.Attempts))
		}
		a := rec.Attempts[0]
		if a.Number != 1 || a.Outcome != "pending" || a.Reason != relay.ReasonError || !strings.Contains(a.Error, "did not commit") {
			t.Errorf("job %d attempt 1 recorded as %s; want pending (error) saying the transaction did not commit", id, historyString(rec.Attempts[:1]))
		}
		if id == explicit && !strings.Contains(a.Error, "the payment provider refused") {
			t.Errorf("job %d attempt 1 error %q does not include the handler's error", id, a.Error)
		}
		es := got[id]
		if len(es) != 2 || es[0].State != relay.StatePending || es[0].Reason != relay.ReasonError || es[0].CompletedTx ||
			!strings.Contains(es[0].Error, "did not commit") || es[0].RetryAt.IsZero() ||
			es[1].State != relay.StateSucceeded || !es[1].CompletedTx || es[1].Attempt != 2 {
			var s []string
			for _, e := range es {
				s = append(s, eventString(e))
			}
			t.Errorf("job %d: events %v; want attempt 1 pending (error, did not commit, with RetryAt), then attempt 2 succeeded with CompletedTx", id, s)
		}
	}
	// Only the committed attempts' writes exist.
	want := []string{fmt.Sprintf("%d/2/charged", explicit), fmt.Sprintf("%d/2/charged", forgot)}
	gotEffects := b.effects(effects)
	if !slices.Equal(slices.Sorted(slices.Values(gotEffects)), slices.Sorted(slices.Values(want))) {
		t.Errorf("effects %v, want only those of the committed attempts %v", gotEffects, want)
	}
}

// A handler that called CompleteTx and returned while its transaction stays open holds the
// job's row: the attempt's outcome cannot be written, and the client gives up on it after a
// while, says why, and reports nothing of the attempt, which it cannot know the end of. The
// job is left to its lease: once the transaction ends (here it rolls back), it is rescued
// and runs again. No event, and no "attempt failed" line, tells of an outcome that was
// never written.
func TestCompleteTxLeftOpenIsLeftToItsLease(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("charge-left-open")
	b := setup(t)
	gaveUp := make(chan struct{}, 1)
	failed := make(chan struct{}, 1)
	kept := b.keptLogger().Handler()
	c := b.client(withShortLeases(relay.Config{Logger: slog.New(logHook(func(r slog.Record) {
		ch, msg := gaveUp, struct{}{}
		switch {
		case strings.Contains(r.Message, "could not record the outcome of a job that called CompleteTx"):
		case strings.Contains(r.Message, "job attempt failed"):
			ch = failed
		default:
			ch = nil
		}
		select {
		case ch <- msg:
		default: // the test has seen one already
		}
		_ = kept.Handle(context.Background(), r)
	}))}))
	events := b.subscribe(c, 32)
	open := make(chan pgx.Tx, 1)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		tx, err := b.Begin(context.WithoutCancel(ctx))
		if err != nil {
			return err
		}
		if err := relay.CompleteTx(ctx, tx, job); err != nil {
			tx.Rollback(ctx)
			return err
		}
		if job.Attempt > 1 {
			return tx.Commit(ctx)
		}
		open <- tx // returns with the transaction open: the test ends it
		return nil
	}, retryFast...)
	b.start(c)

	id := enqueue(b, kind, numArgs{N: 1})
	tx := recv(t, open, "the attempt that leaves its transaction open")
	recv(t, gaveUp, "the client giving up on the attempt's outcome")
	if rec := b.record(id); rec.State != relay.StateRunning || rec.Attempt != 1 {
		t.Fatalf("job is %s at attempt %d while its transaction is open; want running at attempt 1", rec.State, rec.Attempt)
	}
	if err := tx.Rollback(context.Background()); err != nil {
		t.Fatal(err)
	}

	got := b.eventsOf(events, 2, id)[id]
	if got[0].Attempt != 1 || got[0].Reason != relay.ReasonLostLease || got[1].Attempt != 2 || got[1].State != relay.StateSucceeded {
		t.Errorf("events %s, %s; want attempt 1 lost its lease (rescued), then attempt 2 succeeded", eventString(got[0]), eventString(got[1]))
	}
	noMore(t, failed, `"job attempt failed" line`)
}

// CompleteTx twice in one transaction: the second call is refused with ErrJobNotHeld (the
// attempt no longer holds a running job) and writes nothing; the transaction stays usable
// and its commit completes the job once. Checkpoint after CompleteTx is refused alike.
func TestCompleteTxTwiceInOneTransaction(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("twice")
	b := setup(t)
	c := b.client(relay.Config{})
	type result struct{ first, second, checkpoint, commit error }
	results := make(chan result, 10)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		tx, err := b.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		var r result
		r.first = relay.CompleteTx(ctx, tx, job)
		r.second = relay.CompleteTx(ctx, tx, job)
		r.checkpoint = relay.Checkpoint(ctx, tx, job, map[string]int{"done": 1})
		r.commit = tx.Commit(ctx)
		results <- r
		return nil
	})
	b.start(c)
	id := enqueue(b, kind, numArgs{})
	r := recv(t, results, "the handler")
	if r.first != nil {
		t.Fatalf("first CompleteTx: %v", r.first)
	}
	if !errors.Is(r.second, relay.ErrJobNotHeld) {
		t.Errorf("second CompleteTx in the same transaction: %v; want an error wrapping ErrJobNotHeld", r.second)
	}
	if !errors.Is(r.checkpoint, relay.ErrJobNotHeld) {
		t.Errorf("Checkpoint after CompleteTx: %v; want an error wrapping ErrJobNotHeld", r.checkpoint)
	}
	if r.commit != nil {
		t.Errorf("the refused calls broke the transaction: Commit: %v", r.commit)
	}
	b.stop(c)
	rec := b.record(id)
	if rec.State != relay.StateSucceeded || rec.Attempt != 1 || len(rec.Attempts) != 1 || rec.Checkpoint != nil {
		t.Errorf("job is %s after attempt %d, history %s, checkpoint %s; want succeeded once, no checkpoint",
			rec.State, rec.Attempt, historyString(rec.Attempts), rec.Checkpoint)
	}
	noMore(t, results, "second run")
}

// A Job that no client runs — built by hand, or by relaytest.Work — cannot be completed,
// checkpointed or given an output: each call returns an error, and the stored job of the
// same id is left alone.
func TestCompleteTxOnAJobNotRunByAClient(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("manual")
	b := setup(t)
	ctx := context.Background()
	id := enqueue(b, kind, numArgs{N: 1})
	job := &relay.Job[numArgs]{ID: id, Kind: "manual", Queue: relay.DefaultQueue, Args: numArgs{N: 1}, Attempt: 1, MaxAttempts: 1}

	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if err := relay.CompleteTx(ctx, tx, job); err == nil {
		t.Error("CompleteTx of a hand-built Job succeeded")
	} else {
		t.Logf("CompleteTx of a hand-built Job: %v", err)
	}
	if err := relay.Checkpoint(ctx, tx, job, 1); err == nil {
		t.Error("Checkpoint of a hand-built Job succeeded")
	}
	if err := job.SetOutput("x"); err == nil {
		t.Error("SetOutput of a hand-built Job succeeded")
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("the refused calls broke the transaction: %v", err)
	}
	if rec := b.record(id); rec.State != relay.StatePending || rec.Attempt != 0 || rec.Checkpoint != nil || rec.Output != nil {
		t.Errorf("stored job %d changed: %s, attempt %d, checkpoint %s, output %s", id, rec.State, rec.Attempt, rec.Checkpoint, rec.Output)
	}

	err = relaytest.Work(ctx, t, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		return relay.CompleteTx(ctx, b, job)
	}, numArgs{N: 2})
	if err == nil {
		t.Error("CompleteTx in a handler run by relaytest.Work succeeded")
	}
}

// In an ordered queue, the commit of CompleteTx frees the key and wakes the next job of
// the key at once, while the first job's handler is still running: with a one-hour poll
// nothing else could start it, and the handler's outcome (written later) changes nothing
// and so would wake nothing.
func TestCompleteTxInAnOrderedQueueWakesTheNextJobOfTheKey(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("step")
	b := setup(t)
	ctx := context.Background()
	const queue = "cpl-ordered"
	b.setQueue(queue, relay.QueueSettings{Ordered: true})
	c := b.client(relay.Config{Queues: queues(2, queue)})
	var firstCommitted atomic.Bool
	secondStarted := make(chan struct{})
	secondSawFirstCommitted := make(chan bool, 1)
	firstSawSecond := make(chan bool, 1)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		if job.Args.N == 2 {
			secondSawFirstCommitted <- firstCommitted.Load()
			close(secondStarted)
			return nil
		}
		tx, err := b.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if err := relay.CompleteTx(ctx, tx, job); err != nil {
			return err
		}
		firstCommitted.Store(true) // set just before: the next job may start as the commit lands
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		// Still running: only the commit's wakeup can start the next job now.
		select {
		case <-secondStarted:
			firstSawSecond <- true
		case <-time.After(waitTimeout):
			firstSawSecond <- false
		}
		return nil
	})
	b.start(c)
	ids, err := relay.EnqueueMany(ctx, b, []relay.JobSpec{
		kind.Job(numArgs{N: 1}),
		kind.Job(numArgs{N: 2}),
	}, relay.Queue(queue), relay.OrderKey("account-7"), relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	if !recv(t, firstSawSecond, "the first job's handler") {
		t.Fatal("the next job of the key did not start while the first job's handler was still running after its CompleteTx commit")
	}
	if !recv(t, secondSawFirstCommitted, "the second job") {
		t.Error("the second job of the key started before the first committed (before its handler even began to commit)")
	}
	b.waitState("succeeded", ids...)
}

// ---------------------------------------------------------------------------------------
// Checkpoint

type progress struct{ Done int }

// A checkpoint saved by a failing attempt reaches the next one: Resume reports none on
// the first attempt, decodes the last saved state on the next, and GetJob shows it, while
// the job runs and after it ends.
func TestCheckpointResumesTheNextAttempt(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("import")
	b := setup(t)
	c := b.client(relay.Config{})
	type seen struct {
		attempt int
		resumed bool
		state   progress
		err     error
	}
	seenCh := make(chan seen, 10)
	saved := make(chan struct{}, 1)
	proceed := make(chan struct{})
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		var p progress
		ok, err := job.Resume(&p)
		seenCh <- seen{job.Attempt, ok, p, err}
		if job.Attempt > 1 {
			return relay.Checkpoint(ctx, b, job, progress{Done: job.Args.N})
		}
		for _, done := range []int{3, 5} {
			if err := relay.Checkpoint(ctx, b, job, progress{Done: done}); err != nil {
				return err
			}
		}
		// The attempt sees its own latest checkpoint.
		ok, err = job.Resume(&p)
		seenCh <- seen{job.Attempt, ok, p, err}
		saved <- struct{}{}
		<-proceed
		return errors.New("the connection dropped halfway")
	}, retryFast...)
	b.start(c)
	id := enqueue(b, kind, numArgs{N: 10})

	if s := recv(t, seenCh, "attempt 1 to start"); s.attempt != 1 || s.resumed || s.err != nil || s.state != (progress{}) {
		t.Errorf("attempt 1 resumed %+v; want no checkpoint", s)
	}
	if s := recv(t, seenCh, "attempt 1 to save progress"); !s.resumed || s.err != nil || s.state.Done != 5 {
		t.Errorf("after saving, attempt 1's Resume gives %+v; want its latest checkpoint Done=5", s)
	}
	recv(t, saved, "attempt 1 to save progress")
	if rec := b.record(id); rec.State != relay.StateRunning || !jsonEqual(rec.Checkpoint, `{"Done":5}`) {
		t.Errorf("while attempt 1 runs, GetJob says %s with checkpoint %s; want running with {\"Done\":5}", rec.State, rec.Checkpoint)
	}
	close(proceed)
	if s := recv(t, seenCh, "attempt 2"); s.attempt != 2 || !s.resumed || s.err != nil || s.state.Done != 5 {
		t.Errorf("attempt 2 resumed %+v; want attempt 2 resuming from Done=5", s)
	}
	rec := b.waitRecord(id, relay.StateSucceeded)
	if !jsonEqual(rec.Checkpoint, `{"Done":10}`) || rec.Attempt != 2 {
		t.Errorf("succeeded at attempt %d with checkpoint %s; want attempt 2 with the last saved {\"Done\":10}", rec.Attempt, rec.Checkpoint)
	}
}

// A checkpoint saved in the handler's transaction commits or rolls back with the work it
// describes: invisible to others until the commit, gone with a rollback, and the next
// attempt resumes from the committed one with exactly the committed work done.
func TestCheckpointInTheWorksTransactionCommitsOrRollsBackWithIt(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("batches")
	b := setup(t)
	effects := b.effectsTable()
	c := b.client(relay.Config{})
	type seen struct {
		attempt     int
		resumed     progress
		outsideSeen json.RawMessage // the checkpoint others see before the commit
		err         error
	}
	seenCh := make(chan seen, 10)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		var p progress
		if _, err := job.Resume(&p); err != nil {
			return err
		}
		s := seen{attempt: job.Attempt, resumed: p}
		defer func() { seenCh <- s }()
		// One transaction per batch: the batch's rows and the checkpoint after it.
		for batch := p.Done + 1; batch <= 3; batch++ {
			tx, err := b.Begin(ctx)
			if err != nil {
				return err
			}
			if err := insertEffect(ctx, tx, effects, job.ID, job.Attempt, fmt.Sprintf("batch %d", batch)); err != nil {
				tx.Rollback(ctx)
				return err
			}
			if err := relay.Checkpoint(ctx, tx, job, progress{Done: batch}); err != nil {
				tx.Rollback(ctx)
				return err
			}
			if job.Attempt == 1 && batch == 1 {
				rec, err := relay.GetJob(ctx, b, job.ID, relay.Schema(b.Schema))
				if err != nil {
					s.err = err
				} else {
					s.outsideSeen = rec.Checkpoint
				}
			}
			if job.Attempt == 1 && batch == 2 {
				tx.Rollback(ctx) // batch 2 fails: its rows and its checkpoint go
				return errors.New("batch 2 failed")
			}
			if err := tx.Commit(ctx); err != nil {
				return err
			}
		}
		return nil
	}, retryFast...)
	b.start(c)
	id := enqueue(b, kind, numArgs{})

	s1 := recv(t, seenCh, "attempt 1")
	if s1.err != nil || s1.outsideSeen != nil {
		t.Errorf("before its transaction committed, others saw the checkpoint %s (error %v); want none", s1.outsideSeen, s1.err)
	}
	s2 := recv(t, seenCh, "attempt 2")
	if s2.attempt != 2 || s2.resumed.Done != 1 {
		t.Errorf("attempt %d resumed from %+v; want attempt 2 resuming after batch 1, the last committed", s2.attempt, s2.resumed)
	}
	rec := b.waitRecord(id, relay.StateSucceeded)
	if !jsonEqual(rec.Checkpoint, `{"Done":3}`) {
		t.Errorf("final checkpoint %s, want {\"Done\":3}", rec.Checkpoint)
	}
	want := []string{fmt.Sprintf("%d/1/batch 1", id), fmt.Sprintf("%d/2/batch 2", id), fmt.Sprintf("%d/2/batch 3", id)}
	if got := b.effects(effects); !slices.Equal(got, want) {
		t.Errorf("effects %v, want each batch exactly once: %v", got, want)
	}
}

// A checkpoint saved before the client lost the job (cut off from the database, its lease
// expired and the job rescued) reaches the attempt that runs it next, on another client;
// the cut-off attempt can no longer save one.
func TestCheckpointSurvivesALostLease(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("long")
	b := setup(t)
	// One worker, kept busy by the cut-off handler: c1 cannot claim the rescued job again.
	c1 := b.client(withShortLeases(relay.Config{Queues: queues(1, relay.DefaultQueue)}))
	saved := make(chan struct{}, 1)
	tryStale := b.gate()
	staleErr := make(chan error, 1)
	handle(t, c1, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		if err := relay.Checkpoint(context.Background(), b, job, progress{Done: 7}); err != nil {
			return err
		}
		saved <- struct{}{}
		<-ctx.Done()
		tryStale.wait()
		staleErr <- relay.Checkpoint(context.Background(), b, job, progress{Done: 8})
		return nil
	})
	b.start(c1)
	id := enqueue(b, kind, numArgs{})
	recv(t, saved, "the first attempt to save progress")

	c2 := b.client(withShortLeases(relay.Config{}))
	type seen struct {
		attempt int
		resumed bool
		p       progress
	}
	resumed := make(chan seen, 1)
	release2 := b.gate()
	handle(t, c2, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		var p progress
		ok, err := job.Resume(&p)
		if err != nil {
			return err
		}
		resumed <- seen{job.Attempt, ok, p}
		release2.wait()
		return nil
	})
	b.start(c2)
	relay.PauseLeaseRenewal(c1, true)

	s := relaytest.Receive(t, resumed, shortTTL+waitTimeout, "the other client to rescue and run the job")
	if s.attempt != 2 || !s.resumed || s.p.Done != 7 {
		t.Errorf("the rescuing attempt saw %+v; want attempt 2 resuming from Done=7", s)
	}
	tryStale.open()
	if err := recv(t, staleErr, "the cut-off attempt's checkpoint"); !errors.Is(err, relay.ErrJobNotHeld) {
		t.Errorf("Checkpoint of the cut-off attempt: %v; want an error wrapping ErrJobNotHeld", err)
	}
	if rec := b.record(id); !jsonEqual(rec.Checkpoint, `{"Done":7}`) {
		t.Errorf("checkpoint is %s after the cut-off attempt tried to save; want still {\"Done\":7}", rec.Checkpoint)
	}
	release2.open()
	b.waitState("succeeded", id)
}

// State that does not encode as JSON is refused before anything is written.
func TestCheckpointOfUnencodableStateIsRefused(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("bad")
	b := setup(t)
	c := b.client(relay.Config{})
	errs := make(chan error, 1)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		errs <- relay.Checkpoint(ctx, b, job, map[string]any{"ch": make(chan int)})
		return nil
	})
	b.start(c)
	id := enqueue(b, kind, numArgs{})
	if err := recv(t, errs, "the handler"); err == nil || errors.Is(err, relay.ErrJobNotHeld) {
		t.Errorf("Checkpoint of a channel: %v; want an encoding error", err)
	}
	if rec := b.waitRecord(id, relay.StateSucceeded); rec.Checkpoint != nil {
		t.Errorf("checkpoint %s stored", rec.Checkpoint)
	}
}

// ---------------------------------------------------------------------------------------
// Outputs

type resizeArgs struct {
	URL   string
	Width int
}

type thumb struct {
	Path  string
	Bytes int64
}

// HandleWithOutput stores what the handler returns; GetJobOf gives back the args and the
// output typed. A failed attempt's output is not stored; a job that has not run has none.
func TestOutputOfHandleWithOutputIsReadBackTyped(t *testing.T) {
	t.Parallel()
	resizeKind := relay.NewKind[resizeArgs]("resize")
	nobodyHandlesThisKind := relay.NewKind[resizeArgs]("nobody-handles-this")
	b := setup(t)
	ctx := context.Background()
	c := b.client(relay.Config{})
	err := relay.HandleWithOutput(c, resizeKind, func(ctx context.Context, job *relay.Job[resizeArgs]) (thumb, error) {
		if job.Attempt == 1 {
			return thumb{Path: "partial"}, errors.New("out of memory")
		}
		return thumb{Path: fmt.Sprintf("/thumbs/%d.jpg", job.Args.Width), Bytes: 2048}, nil
	}, retryFast...)
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.HandleWithOutput[resizeArgs, thumb](c, relay.NewKind[resizeArgs]("nil"), nil); !errors.Is(err, relay.ErrInvalidConfig) {
		t.Errorf("HandleWithOutput with a nil handler: %v, want ErrInvalidConfig", err)
	}
	b.start(c)
	args := resizeArgs{URL: "https://example.com/cat.png", Width: 320}
	id := enqueue(b, resizeKind, args)
	notRun := enqueue(b, nobodyHandlesThisKind, args)
	b.waitState("succeeded", id)

	rec, err := relay.GetJobOf[resizeArgs, thumb](ctx, b, id, relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Args != args {
		t.Errorf("GetJobOf args %+v, want %+v", rec.Args, args)
	}
	if want := (thumb{Path: "/thumbs/320.jpg", Bytes: 2048}); rec.Output == nil || *rec.Output != want {
		t.Errorf("GetJobOf output %v, want %+v (the failed attempt's output is not stored)", rec.Output, want)
	}
	if rec.State != relay.StateSucceeded || rec.Attempt != 2 || !jsonEqual(rec.JobRecord.Output, `{"Path":"/thumbs/320.jpg","Bytes":2048}`) {
		t.Errorf("record: %s, attempt %d, output %s", rec.State, rec.Attempt, rec.JobRecord.Output)
	}

	pending, err := relay.GetJobOf[resizeArgs, thumb](ctx, b, notRun, relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	if pending.Output != nil || pending.JobRecord.Output != nil || pending.Args != args {
		t.Errorf("a job that never ran: output %v (%s), args %+v; want no output", pending.Output, pending.JobRecord.Output, pending.Args)
	}
	// An output that does not decode into O is an error, not a zero value.
	if _, err := relay.GetJobOf[resizeArgs, int](ctx, b, id, relay.Schema(b.Schema)); err == nil {
		t.Error("GetJobOf with an output type the output does not decode into succeeded")
	}
	if _, err := relay.GetJobOf[resizeArgs, thumb](ctx, b, id+1000, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrJobNotFound) {
		t.Errorf("GetJobOf of an unknown id: %v, want ErrJobNotFound", err)
	}
}

// SetOutput in a plain handler: the last value set is stored; a value that cannot be
// encoded is refused and leaves the previous one.
func TestOutputSetOutputInAPlainHandler(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("report")
	b := setup(t)
	c := b.client(relay.Config{})
	errs := make(chan error, 3)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		errs <- job.SetOutput("a first draft")
		errs <- job.SetOutput(map[string]int{"rows": job.Args.N})
		errs <- job.SetOutput(make(chan int))
		return nil
	})
	b.start(c)
	id := enqueue(b, kind, numArgs{N: 42})
	for i := range 2 {
		if err := recv(t, errs, "SetOutput"); err != nil {
			t.Errorf("SetOutput #%d: %v", i+1, err)
		}
	}
	if err := recv(t, errs, "SetOutput of a channel"); err == nil {
		t.Error("SetOutput of a channel succeeded")
	}
	rec := b.waitRecord(id, relay.StateSucceeded)
	if !jsonEqual(rec.Output, `{"rows":42}`) {
		t.Errorf("output %s, want the last encodable value {\"rows\":42}", rec.Output)
	}
	typed, err := relay.GetJobOf[numArgs, map[string]int](context.Background(), b, id, relay.Schema(b.Schema))
	if err != nil || typed.Output == nil || (*typed.Output)["rows"] != 42 || typed.Args.N != 42 {
		t.Errorf("GetJobOf: %+v, %v", typed, err)
	}
}

// A job that fails keeps no output, whether it was set before an error (its attempts used
// up) or a Discard; nor does a later success that sets none inherit a failed attempt's.
func TestOutputOfAFailedJobIsNotStored(t *testing.T) {
	t.Parallel()
	failsKind := relay.NewKind[numArgs]("fails")
	laterSilentKind := relay.NewKind[numArgs]("later-silent")
	b := setup(t)
	c := b.client(relay.Config{})
	handle(t, c, failsKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		if err := job.SetOutput(fmt.Sprintf("from attempt %d", job.Attempt)); err != nil {
			return err
		}
		switch {
		case job.Args.N == 1:
			return errors.New("always fails")
		case job.Args.N == 2:
			return relay.Discard(errors.New("bad input"))
		case job.Attempt == 1:
			return errors.New("fails once")
		}
		return nil
	}, relay.MaxAttempts(2), relay.Backoff(backoff.Policy{Initial: time.Millisecond, Multiplier: 1, Max: time.Millisecond}))
	handle(t, c, laterSilentKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		if job.Attempt == 1 {
			if err := job.SetOutput("from the failed attempt"); err != nil {
				return err
			}
			return errors.New("fails once")
		}
		return nil
	}, retryFast...)
	b.start(c)
	exhausted := enqueue(b, failsKind, numArgs{N: 1})
	discarded := enqueue(b, failsKind, numArgs{N: 2})
	retried := enqueue(b, failsKind, numArgs{N: 3})
	silent := enqueue(b, laterSilentKind, numArgs{})

	for _, id := range []int64{exhausted, discarded} {
		rec := b.waitRecord(id, relay.StateFailed)
		if rec.Output != nil {
			t.Errorf("failed job %d has output %s", id, rec.Output)
		}
		typed, err := relay.GetJobOf[numArgs, string](context.Background(), b, id, relay.Schema(b.Schema))
		if err != nil || typed.Output != nil {
			t.Errorf("GetJobOf of failed job %d: output %v, error %v; want no output", id, typed.Output, err)
		}
	}
	if rec := b.waitRecord(retried, relay.StateSucceeded); !jsonEqual(rec.Output, `"from attempt 2"`) {
		t.Errorf("job retried once has output %s, want the successful attempt's \"from attempt 2\"", rec.Output)
	}
	if rec := b.waitRecord(silent, relay.StateSucceeded); rec.Output != nil {
		t.Errorf("a success that set no output has output %s from its failed attempt", rec.Output)
	}
}

// An output set before CompleteTx is stored by it, in the handler's transaction, and is
// there the moment the job is succeeded. One set after CompleteTx replaces it once the
// handler has returned.
func TestOutputWithCompleteTx(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("tx-output")
	b := setup(t)
	c := b.client(relay.Config{})
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		tx, err := b.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if err := job.SetOutput(map[string]int{"invoice": job.Args.N}); err != nil {
			return err
		}
		if err := relay.CompleteTx(ctx, tx, job); err != nil {
			return err
		}
		if err := job.SetOutput("too late"); err != nil {
			return err
		}
		return tx.Commit(ctx)
	})
	b.start(c)
	id := enqueue(b, kind, numArgs{N: 9})
	b.waitState("succeeded", id)
	// Committed with the job: the output set before CompleteTx, visible with the success.
	if rec := b.record(id); !jsonEqual(rec.Output, `{"invoice":9}`) && !jsonEqual(rec.Output, `"too late"`) {
		t.Errorf("output once succeeded %s, want {\"invoice\":9} (or already the later one)", rec.Output)
	}
	b.stop(c) // the handler's return has been recorded by now
	// A later SetOutput replaces it once the handler has returned.
	if rec := b.record(id); !jsonEqual(rec.Output, `"too late"`) {
		t.Errorf("output %s, want \"too late\", set after CompleteTx", rec.Output)
	}
}

// HandleWithOutput with a handler that completes its job with CompleteTx: the value it
// returns is recorded only after CompleteTx ran, so it cannot be part of the transaction.
// HandleWithOutput documents "on success, out is stored with the job"; this test checks
// that promise for the CompleteTx case.
func TestOutputOfHandleWithOutputAndCompleteTx(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("tx-returns")
	b := setup(t)
	c := b.client(relay.Config{})
	err := relay.HandleWithOutput(c, kind, func(ctx context.Context, job *relay.Job[numArgs]) (thumb, error) {
		tx, err := b.Begin(ctx)
		if err != nil {
			return thumb{}, err
		}
		defer tx.Rollback(ctx)
		if err := relay.CompleteTx(ctx, tx, job); err != nil {
			return thumb{}, err
		}
		return thumb{Path: "/out", Bytes: int64(job.Args.N)}, tx.Commit(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	b.start(c)
	id := enqueue(b, kind, numArgs{N: 5})
	b.waitState("succeeded", id)
	b.stop(c)
	rec, err := relay.GetJobOf[numArgs, thumb](context.Background(), b, id, relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Output == nil || *rec.Output != (thumb{Path: "/out", Bytes: 5}) {
		t.Errorf("job succeeded by CompleteTx in a HandleWithOutput handler has output %v (raw %s); want the returned {/out 5}",
			rec.Output, rec.JobRecord.Output)
	}
}

// ---------------------------------------------------------------------------------------
// Binary payloads

type blob struct {
	id   int64
	data []byte
}

// []byte args are stored as they are, whatever the bytes (not UTF-8, not JSON, empty,
// nil), by Enqueue and EnqueueMany alike, and a Handle[[]byte] handler receives exactly
// them. GetJob shows them as Payload with Args null; GetJobOf[[]byte] decodes them.
func TestBinaryPayloadsReachAByteHandlerExactly(t *testing.T) {
	t.Parallel()
	blobKind := relay.NewKind[[]byte]("blob")
	jsonKind := relay.NewKind[numArgs]("json")
	b := setup(t)
	ctx := context.Background()
	c := b.client(relay.Config{})
	got := make(chan blob, 20)
	handle(t, c, blobKind, func(ctx context.Context, job *relay.Job[[]byte]) error {
		got <- blob{job.ID, bytes.Clone(job.Args)}
		return nil
	})
	jsonRan := make(chan int64, 1)
	handle(t, c, jsonKind, reportIDs(jsonRan))
	b.start(c)

	payloads := map[string][]byte{
		"not UTF-8":       {0xff, 0xfe, 0x00, 0x80, 0xc3, 0x28},
		"NUL bytes":       {0, 0, 0},
		"looks like JSON": []byte(`{"N":1}`),
		"JSON null":       []byte(`null`),
		"empty":           {},
		"nil":             nil,
		"protobuf-ish":    {0x08, 0x96, 0x01, 0x12, 0x07, 't', 'e', 's', 't', 'i', 'n', 'g'},
	}
	want := map[int64][]byte{}
	names := map[int64]string{}
	for name, p := range payloads {
		id := enqueue(b, blobKind, p)
		want[id], names[id] = p, "Enqueue "+name
	}
	var specs []relay.JobSpec
	var specPayloads [][]byte
	var specNames []string
	for name, p := range payloads {
		specs = append(specs, blobKind.Job(p))
		specPayloads = append(specPayloads, p)
		specNames = append(specNames, "EnqueueMany "+name)
	}
	specs = append(specs, jsonKind.Job(numArgs{N: 5})) // a JSON job in the same batch
	ids := b.enqueueMany(specs)
	jsonID := ids[len(ids)-1]
	for i, id := range ids[:len(ids)-1] {
		want[id], names[id] = specPayloads[i], specNames[i]
	}

	received := map[int64][]byte{}
	for range len(want) {
		r := recv(t, got, "the binary jobs to run")
		if _, dup := received[r.id]; dup {
			t.Errorf("job %d ran twice", r.id)
		}
		received[r.id] = r.data
	}
	if got := recv(t, jsonRan, "the JSON job of the batch"); got != jsonID {
		t.Errorf("JSON job %d ran, want %d", got, jsonID)
	}
	for id, w := range want {
		if r, ok := received[id]; !ok || !bytes.Equal(r, w) {
			t.Errorf("%s: handler received %x (ran: %v), want %x", names[id], r, ok, w)
		}
		b.waitState("succeeded", id)
		rec := b.record(id)
		if rec.Payload == nil || !bytes.Equal(rec.Payload, w) {
			t.Errorf("%s: GetJob Payload %x (nil: %v), want %x", names[id], rec.Payload, rec.Payload == nil, w)
		}
		if string(rec.Args) != "null" {
			t.Errorf("%s: GetJob Args %s, want null", names[id], rec.Args)
		}
		typed, err := relay.GetJobOf[[]byte, struct{}](ctx, b, id, relay.Schema(b.Schema))
		if err != nil {
			t.Errorf("%s: GetJobOf: %v", names[id], err)
		} else if !bytes.Equal(typed.Args, w) {
			t.Errorf("%s: GetJobOf Args %x, want %x", names[id], typed.Args, w)
		}
	}
	b.waitState("succeeded", jsonID)
	if rec := b.record(jsonID); rec.Payload != nil || !jsonEqual(rec.Args, `{"N":5}`) {
		t.Errorf("JSON job of the batch: Payload %x, Args %s; want no payload, JSON args", rec.Payload, rec.Args)
	}
}

// Which handler types take which args: JSON args reach a []byte handler with JSON's own
// decoding (a base64 string decodes, an object fails the job with reason decode at once);
// raw []byte args reach no other handler type (reason decode, no retries) and GetJobOf of
// another type refuses them; json.RawMessage args are JSON, not raw bytes. The producers
// that disagree with a handler use kinds of the same name and another type, as a program
// that declared the kind differently (or another language) would.
func TestBinaryPayloadAndJSONArgsAcrossHandlerTypes(t *testing.T) {
	t.Parallel()
	blobKind := relay.NewKind[[]byte]("blob")
	numKind := relay.NewKind[numArgs]("num")
	b := setup(t)
	ctx := context.Background()
	c := b.client(relay.Config{})
	blobs := make(chan blob, 10)
	handle(t, c, blobKind, func(ctx context.Context, job *relay.Job[[]byte]) error {
		blobs <- blob{job.ID, bytes.Clone(job.Args)}
		return nil
	})
	nums := make(chan numArgs, 10)
	handle(t, c, numKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		nums <- job.Args
		return nil
	})
	b.start(c)

	base64JSON := enqueue(b, relay.NewKind[string]("blob"), "aGVsbG8=") // the JSON string "aGVsbG8=": base64 of hello
	if r := recv(t, blobs, "the base64 JSON job"); r.id != base64JSON || string(r.data) != "hello" {
		t.Errorf("[]byte handler got %q for JSON args \"aGVsbG8=\", want \"hello\"", r.data)
	}
	rawMessage := enqueue(b, relay.NewKind[json.RawMessage]("num"), json.RawMessage(`{"N":5}`))
	if n := recv(t, nums, "the json.RawMessage job"); n.N != 5 {
		t.Errorf("json.RawMessage args reached the handler as %+v, want {N:5}", n)
	}
	if rec := b.waitRecord(rawMessage, relay.StateSucceeded); rec.Payload != nil {
		t.Errorf("json.RawMessage args were stored as a raw payload %x", rec.Payload)
	}

	objectToBlob := enqueue(b, relay.NewKind[numArgs]("blob"), numArgs{N: 1})
	rawToNum := enqueue(b, relay.NewKind[[]byte]("num"), []byte{0xca, 0xfe})
	for _, id := range []int64{objectToBlob, rawToNum} {
		rec := b.waitRecord(id, relay.StateFailed)
		if rec.Attempt != 1 || len(rec.Attempts) != 1 || rec.Attempts[0].Reason != relay.ReasonDecode {
			t.Errorf("job %d: attempt %d, history %s; want failed at once with reason decode", id, rec.Attempt, historyString(rec.Attempts))
		}
	}
	if rec := b.record(rawToNum); len(rec.Attempts) == 1 && !strings.Contains(rec.Attempts[0].Error, "[]byte") {
		t.Errorf("decode error of raw args in a numArgs handler %q does not say they need a []byte handler", rec.Attempts[0].Error)
	}
	if _, err := relay.GetJobOf[numArgs, struct{}](ctx, b, rawToNum, relay.Schema(b.Schema)); err == nil {
		t.Error("GetJobOf[numArgs] of a job with raw args succeeded")
	}
	noMore(t, blobs, "[]byte handler call")
	noMore(t, nums, "numArgs handler call")
}

// ---------------------------------------------------------------------------------------
// Events

// Subscribe reports each ended attempt once its outcome is committed: a success with its
// timings, a retry (pending, reason error, RetryAt), a discard (failed), a snooze
// (pending, reason snoozed), a cancel of a running job, and a CompleteTx success.
func TestEventsReportEachOutcome(t *testing.T) {
	t.Parallel()
	okKind := relay.NewKind[numArgs]("ok")
	retryKind := relay.NewKind[numArgs]("retry")
	discardKind := relay.NewKind[numArgs]("discard")
	snoozeKind := relay.NewKind[numArgs]("snooze")
	cancelKind := relay.NewKind[numArgs]("cancel")
	txKind := relay.NewKind[numArgs]("tx")
	b := setup(t)
	ctx := context.Background()
	c := b.client(relay.Config{})
	events := b.subscribe(c, 16)

	type span struct{ from, to time.Time }
	spans := make(chan span, 1)
	release := b.gate()
	handle(t, c, okKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		from := time.Now()
		release.wait()
		spans <- span{from, time.Now()}
		return nil
	})
	handle(t, c, retryKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		return relay.RetryAfter(time.Hour, errors.New("upstream answered 503"))
	})
	handle(t, c, discardKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		return relay.Discard(errors.New("malformed address"))
	})
	handle(t, c, snoozeKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		return relay.Snooze(time.Hour)
	})
	cancelStarted := make(chan struct{}, 1)
	handle(t, c, cancelKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		cancelStarted <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	})
	handle(t, c, txKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		return b.completeInTx(ctx, job)
	})
	b.start(c)

	next := func(id int64, kind string) relay.Event {
		t.Helper()
		e := recv(t, events, "the event of "+kind)
		if e.JobID != id || e.Kind != kind || e.Queue != relay.DefaultQueue {
			t.Fatalf("event for job %d (%s, queue %s), want job %d (%s, default queue)", e.JobID, e.Kind, e.Queue, id, kind)
		}
		if e.StartedAt.IsZero() || e.EndedAt.Before(e.StartedAt) || e.ScheduledAt.IsZero() || e.Wait() < 0 || e.Ran() < 0 {
			t.Errorf("%s: timings scheduled %v, started %v, ended %v", kind, e.ScheduledAt, e.StartedAt, e.EndedAt)
		}
		b.assertCommitted(e)
		return e
	}

	// A success, with timings that bracket what the handler saw.
	before := time.Now()
	id := enqueue(b, okKind, numArgs{})
	release.open()
	sp := recv(t, spans, "the handler")
	e := next(id, "ok")
	received := time.Now()
	rec := b.record(id)
	if e.State != relay.StateSucceeded || e.Attempt != 1 || e.Reason != "" || e.Error != "" || !e.RetryAt.IsZero() || e.CompletedTx {
		t.Errorf("success reported as %s, RetryAt %v", eventString(e), e.RetryAt)
	}
	if e.StartedAt.After(sp.from) || e.EndedAt.Before(sp.to) || e.Ran() < sp.to.Sub(sp.from) {
		t.Errorf("handler ran from %v to %v, event says %v to %v (ran %v)", sp.from, sp.to, e.StartedAt, e.EndedAt, e.Ran())
	}
	if !e.ScheduledAt.Equal(rec.ScheduledAt) || e.ScheduledAt.Before(before.Truncate(time.Microsecond)) || e.EndedAt.After(received) {
		t.Errorf("event scheduled at %v (record: %v), ended %v; want the job's run_at, after %v, and an end before it was received at %v",
			e.ScheduledAt, rec.ScheduledAt, e.EndedAt, before, received)
	}
	if e.Wait() > received.Sub(before) {
		t.Errorf("event says the job waited %v, longer than it existed (%v)", e.Wait(), received.Sub(before))
	}
	if !rec.FinishedAt.Equal(e.EndedAt.Truncate(time.Microsecond)) {
		t.Errorf("event ended at %v, record finished at %v", e.EndedAt, rec.FinishedAt)
	}

	// A retry.
	id = enqueue(b, retryKind, numArgs{})
	e = next(id, "retry")
	if e.State != relay.StatePending || e.Reason != relay.ReasonError || e.Error != "upstream answered 503" || e.Attempt != 1 || e.RetryAt.Sub(e.EndedAt) != time.Hour {
		t.Errorf("retry reported as %s, RetryAt %v after the end; want pending (error) in an hour", eventString(e), e.RetryAt.Sub(e.EndedAt))
	}
	if rec := b.record(id); rec.State != relay.StateScheduled || !rec.ScheduledAt.Equal(e.RetryAt.Truncate(time.Microsecond)) {
		t.Errorf("after the retry event the job is %s at %v; want scheduled at the event's RetryAt %v", rec.State, rec.ScheduledAt, e.RetryAt)
	}

	// A discard.
	id = enqueue(b, discardKind, numArgs{})
	e = next(id, "discard")
	if e.State != relay.StateFailed || e.Reason != relay.ReasonDiscarded || !strings.Contains(e.Error, "malformed address") || !e.RetryAt.IsZero() {
		t.Errorf("discard reported as %s, RetryAt %v; want failed (discarded)", eventString(e), e.RetryAt)
	}
	if rec := b.record(id); !rec.FinishedAt.Equal(e.EndedAt.Truncate(time.Microsecond)) {
		t.Errorf("discard event ended at %v, record finished at %v", e.EndedAt, rec.FinishedAt)
	}

	// A snooze.
	id = enqueue(b, snoozeKind, numArgs{})
	e = next(id, "snooze")
	if e.State != relay.StatePending || e.Reason != relay.ReasonSnoozed || e.RetryAt.Sub(e.EndedAt) != time.Hour {
		t.Errorf("snooze reported as %s, RetryAt %v after the end; want pending (snoozed) in an hour", eventString(e), e.RetryAt.Sub(e.EndedAt))
	}
	if rec := b.record(id); rec.State != relay.StateScheduled {
		t.Errorf("after the snooze event the job is %s, want scheduled", rec.State)
	}

	// A cancel of a running job.
	id = enqueue(b, cancelKind, numArgs{})
	recv(t, cancelStarted, "the job to be cancelled to start")
	if err := relay.Cancel(ctx, b, id, relay.Schema(b.Schema)); err != nil {
		t.Fatal(err)
	}
	e = next(id, "cancel")
	if e.State != relay.StateCancelled || e.Reason != relay.ReasonCancelled || e.Attempt != 1 {
		t.Errorf("cancel reported as %s; want cancelled (cancelled)", eventString(e))
	}

	// A success by CompleteTx.
	id = enqueue(b, txKind, numArgs{})
	e = next(id, "tx")
	if e.State != relay.StateSucceeded || !e.CompletedTx || e.Reason != "" || e.Error != "" || e.Attempt != 1 {
		t.Errorf("CompleteTx success reported as %s; want succeeded with CompletedTx", eventString(e))
	}

	b.stop(c)
	noMore(t, events, "event")
	if d := c.Dropped(); d != 0 {
		t.Errorf("Dropped = %d with a subscriber that kept up", d)
	}
}

// Outcomes are written in batches: however many jobs end together, each event arrives
// after its outcome is committed, and every job gets exactly one.
func TestEventsArriveOnlyOnceTheOutcomeIsCommitted(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("burst")
	const n = 200
	b := setup(t)
	c := b.client(relay.Config{Queues: queues(20, relay.DefaultQueue)})
	events := b.subscribe(c, n)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		if job.Args.N%3 == 0 {
			return relay.Discard(errors.New("every third fails"))
		}
		return nil
	})
	b.start(c)
	ids := b.enqueueN(kind, n)
	got := b.eventsOf(events, n, ids...)
	for i, id := range ids {
		want := relay.StateSucceeded
		if i%3 == 0 {
			want = relay.StateFailed
		}
		if es := got[id]; len(es) != 1 || es[0].State != want {
			t.Errorf("job %d: %d events, first %+v; want one, %s", id, len(es), es, want)
		}
	}
	b.stop(c)
	noMore(t, events, "event")
}

// Unsubscribe closes the channel and ends delivery to it (calling it again is harmless);
// other subscribers go on. A subscriber that does not keep up misses events, counted by
// Dropped, without holding the client up.
func TestEventsUnsubscribeClosesTheChannel(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(relay.Config{})
	handle(t, c, testKind, func(ctx context.Context, job *relay.Job[numArgs]) error { return nil })
	first, unsubscribeFirst := c.Subscribe(8)
	second, unsubscribeSecond := c.Subscribe(8)
	defer unsubscribeSecond()
	_, unsubscribeStalled := c.Subscribe(0) // never read: every event to it is dropped
	b.start(c)

	jobA := enqueue(b, testKind, numArgs{N: 1})
	if e := recv(t, first, "the first subscriber's event"); e.JobID != jobA {
		t.Errorf("first subscriber got job %d, want %d", e.JobID, jobA)
	}
	if e := recv(t, second, "the second subscriber's event"); e.JobID != jobA {
		t.Errorf("second subscriber got job %d, want %d", e.JobID, jobA)
	}
	unsubscribeFirst()
	unsubscribeFirst()
	if e, ok := <-first; ok {
		t.Fatalf("the channel is open after unsubscribe: got %+v", e)
	}

	jobB := enqueue(b, testKind, numArgs{N: 2})
	if e := recv(t, second, "the second subscriber's event"); e.JobID != jobB {
		t.Errorf("second subscriber got job %d, want %d", e.JobID, jobB)
	}
	// Unsubscribing waits for an event being delivered to finish: after it, the stalled
	// subscriber has certainly missed both.
	unsubscribeStalled()
	if d := c.Dropped(); d != 2 {
		t.Errorf("Dropped = %d, want 2 (two events to a subscriber that never read)", d)
	}
	b.stop(c)
	if e, ok := <-first; ok {
		t.Errorf("unsubscribed channel delivered %+v", e)
	}
	noMore(t, second, "event")
}

// The events of one job arrive in the order of its attempts: a subscriber that keeps the
// latest event of each job (a dashboard, a test waiting for the final state) must not see
// an earlier attempt's failure after the job's success.
//
// Here attempt 1 fails and attempt 2 succeeds by CompleteTx. The client logs the failure
// once it is written, just before reporting it; a logger slow on that one record (held
// for up to two seconds) widens the window between the commit of attempt 1's outcome and
// its event, in which attempt 2 can run. Without the slow logger the window is short but
// real: under -race it was hit about one run in six.
func TestEventsOfOneJobArriveInAttemptOrder(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("pay")
	b := setup(t)
	release := b.gate()
	var held atomic.Bool
	logger := slog.New(logHook(func(r slog.Record) {
		if r.Level >= slog.LevelWarn && held.CompareAndSwap(false, true) {
			select {
			case <-release.ch:
			case <-time.After(2 * time.Second):
			}
		}
	}))
	c := b.client(relay.Config{Logger: logger})
	events := b.subscribe(c, 8)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		if job.Attempt == 1 {
			return errors.New("gateway timeout")
		}
		return b.completeInTx(ctx, job)
	}, retryFast...)
	b.start(c)
	id := enqueue(b, kind, numArgs{})

	first := recv(t, events, "the first event")
	release.open()
	second := recv(t, events, "the second event")
	if first.JobID != id || second.JobID != id || first.Attempt != 1 || second.Attempt != 2 {
		t.Errorf("events arrived as [%s, %s]; want attempt 1's failure, then attempt 2's success",
			eventString(first), eventString(second))
	}
}

// ---------------------------------------------------------------------------------------

// completeInTx completes job with CompleteTx in a transaction of its own, and commits it:
// the handler of an exactly-once job with no effect of its own.
func (b *bundle) completeInTx(ctx context.Context, job *relay.Job[numArgs]) error {
	tx, err := b.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if err := relay.CompleteTx(ctx, tx, job); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// jsonEqual reports whether got is the JSON value want (jsonb does not keep formatting).
func jsonEqual(got json.RawMessage, want string) bool {
	if got == nil {
		return false
	}
	var g, w any
	if json.Unmarshal(got, &g) != nil || json.Unmarshal([]byte(want), &w) != nil {
		return false
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	return bytes.Equal(gb, wb)
}

// Once the attempt that completed its job with CompleteTx has reported, its lease is no
// longer held: the outcome the client then had nothing to write is not left to a lease,
// as one PostgreSQL refused is, to be renewed until the next keep-alive tick (an hour here).
func TestCompleteTxLeavesNoLeaseHeld(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(relay.Config{LeaseTTL: 2 * time.Hour, LeaseRenewal: time.Hour})
	events := b.subscribe(c, 4)
	handle(t, c, testKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		return b.completeInTx(ctx, job)
	})
	b.start(c)
	id := enqueue(b, testKind, numArgs{N: 1})
	if e := recv(t, events, "the completed attempt"); e.JobID != id || e.State != relay.StateSucceeded {
		t.Fatalf("event %s; want job %d succeeded", eventString(e), id)
	}
	if n := relay.HeldLeases(c); n != 0 {
		t.Errorf("the keeper holds %d leases after the job completed; want none", n)
	}
}
