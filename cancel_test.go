package relay_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/relayq/relay"
)

// Cancelled pending and scheduled jobs never run.
func TestCancelledPendingAndScheduledJobsNeverRun(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	opt := relay.Schema(b.Schema)

	// Due now, but no client runs yet.
	pending := enqueue(b, testKind, numArgs{N: 1})
	if rec := b.record(pending); rec.State != relay.StatePending {
		t.Fatalf("job is %s, want pending", rec.State)
	}
	if err := relay.Cancel(ctx, b, pending, opt); err != nil {
		t.Fatalf("Cancel of a pending job: %v", err)
	}

	c := b.client(relay.Config{})
	ran := make(chan int64, 10)
	handle(t, c, testKind, reportIDs(ran))
	b.start(c)

	scheduled := enqueue(b, testKind, numArgs{N: 2}, relay.RunIn(600*time.Millisecond))
	if rec := b.record(scheduled); rec.State != relay.StateScheduled {
		t.Fatalf("job is %s, want scheduled", rec.State)
	}
	if err := relay.Cancel(ctx, b, scheduled, opt); err != nil {
		t.Fatalf("Cancel of a scheduled job: %v", err)
	}
	// Due after the cancelled ones: once it has run, they would have been claimed too.
	sentinel := enqueue(b, testKind, numArgs{N: 3}, relay.RunIn(800*time.Millisecond))
	if got := recv(t, ran, "the sentinel job"); got != sentinel {
		t.Fatalf("ran job %d, want only the sentinel %d (cancelled: %d, %d)", got, sentinel, pending, scheduled)
	}
	b.waitState("succeeded", sentinel)
	b.stop(c)
	if len(ran) != 0 {
		t.Errorf("a cancelled job ran: %d", <-ran)
	}
	for _, id := range []int64{pending, scheduled} {
		rec := b.record(id)
		if rec.State != relay.StateCancelled || rec.Attempt != 0 || rec.FinishedAt.IsZero() || len(rec.Attempts) != 0 {
			t.Errorf("cancelled job %d: %s, attempt %d, finished %v, history %s; want cancelled, never attempted, finished",
				id, rec.State, rec.Attempt, rec.FinishedAt, historyString(rec.Attempts))
		}
	}
}

// Cancel of a running job marks it cancelled at once and cancels its handler's context
// by NOTIFY, within milliseconds (cause ErrCancelled): the fallback poll is an hour and
// the next lease renewal seconds away, so nothing else could. The handler's return writes
// nothing.
func TestCancelOfARunningJobCancelsItsHandlerByNotify(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("long")
	b := setup(t)
	ctx := context.Background()
	c := b.client(relay.Config{LeaseTTL: time.Minute, LeaseRenewal: 20 * time.Second})
	started := make(chan int64, 1)
	ended := make(chan ctxEnd, 1)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started <- job.ID
		select {
		case <-ctx.Done():
		case <-time.After(time.Minute):
		}
		ended <- ctxEnd{job.Attempt, context.Cause(ctx), time.Now()}
		return nil // as if it finished its work: must not be recorded
	})
	b.start(c)
	id := enqueue(b, kind, numArgs{})
	recv(t, started, "the job to start")

	cancelled := time.Now()
	if err := relay.Cancel(ctx, b, id, relay.Schema(b.Schema)); err != nil {
		t.Fatalf("Cancel of a running job: %v", err)
	}
	if rec := b.record(id); rec.State != relay.StateCancelled {
		t.Errorf("right after Cancel the job is %s, want cancelled", rec.State)
	}
	e := recv(t, ended, "the handler's context to be cancelled")
	took := e.at.Sub(cancelled)
	t.Logf("handler cancelled %v after Cancel", took)
	if !errors.Is(e.err, relay.ErrCancelled) {
		t.Errorf("handler's context ended with %v, want ErrCancelled", e.err)
	}
	if took > time.Second {
		t.Errorf("handler was cancelled %v after Cancel, want within milliseconds", took)
	}
	b.stop(c) // every outcome the client had is written by now
	rec := b.record(id)
	if rec.State != relay.StateCancelled || len(rec.Attempts) != 1 || rec.Attempts[0].Reason != relay.ReasonCancelled ||
		rec.Attempts[0].Outcome != "cancelled" || rec.Attempts[0].Number != 1 || rec.Attempts[0].Client != c.ID() {
		t.Errorf("job is %s with history %s; want cancelled, attempt 1 by %s recorded as cancelled", rec.State, historyString(rec.Attempts), c.ID())
	}
}

// A running job cancelled while its client's listener was away (its wakeup never heard;
// here cancelled by hand in the table, which sends none) has its handler cancelled at the
// client's next lease renewal, with ErrCancelled, and reports a cancelled attempt to the
// client's subscribers, as if the wakeup had come: not a lost lease, which reports nothing.
func TestCancelWhoseWakeupIsNotHeardEndsTheHandlerAtTheNextRenewal(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("long")
	b := setup(t)
	c := b.client(relay.Config{LeaseTTL: 10 * time.Second, LeaseRenewal: 100 * time.Millisecond})
	started := make(chan int64, 1)
	ended := make(chan ctxEnd, 1)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started <- job.ID
		<-ctx.Done()
		ended <- ctxEnd{job.Attempt, context.Cause(ctx), time.Now()}
		return nil // as if it finished its work: must not be recorded
	})
	events := b.subscribe(c, 10)
	b.start(c)
	id := enqueue(b, kind, numArgs{})
	recv(t, started, "the job to start")

	// What relay.Cancel writes, without its NOTIFY.
	if _, err := b.Exec(context.Background(), "UPDATE "+b.table("jobs")+
		" SET state = 'cancelled', finished_at = now(), lease_expires_at = NULL, attempts = "+b.table("append_attempt")+"(attempts, "+
		b.table("attempt_entry")+"(attempt, attempted_at, now(), attempted_by, 'cancelled', 'cancelled', NULL, NULL)) WHERE id = $1", id); err != nil {
		t.Fatal(err)
	}
	if e := recv(t, ended, "the handler's context to be cancelled"); !errors.Is(e.err, relay.ErrCancelled) {
		t.Errorf("handler's context ended with %v, want ErrCancelled", e.err)
	}
	e := b.eventsOf(events, 1, id)[id][0]
	if e.Outcome() != relay.OutcomeCancelled || e.State != relay.StateCancelled || e.Attempt != 1 {
		t.Errorf("the attempt's event says %s (job %s, attempt %d); want cancelled, attempt 1", e.Outcome(), e.State, e.Attempt)
	}
}

// The errors of Cancel, Retry and GetJob: finished jobs cannot be cancelled, only failed
// and cancelled jobs can be retried, and an unknown id is not found.
func TestCancelRetryAndGetJobErrors(t *testing.T) {
	t.Parallel()
	otherKind := relay.NewKind[numArgs]("other")
	b := setup(t)
	ctx := context.Background()
	opt := relay.Schema(b.Schema)
	c := b.client(relay.Config{})
	running := make(chan int64, 1)
	release := b.gate()
	handle(t, c, testKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		switch job.Args.N {
		case 1:
			return errors.New("fails")
		case 2:
			running <- job.ID
			select {
			case <-release.ch:
			case <-ctx.Done():
			}
		}
		return nil
	})
	b.start(c)

	succeeded := enqueue(b, testKind, numArgs{N: 0})
	failed := enqueue(b, testKind, numArgs{N: 1}, relay.MaxAttempts(1))
	cancelled := enqueue(b, testKind, numArgs{N: 0}, relay.RunIn(time.Hour))
	pending := enqueue(b, otherKind, numArgs{})
	scheduled := enqueue(b, testKind, numArgs{N: 0}, relay.RunIn(time.Hour))
	run := enqueue(b, testKind, numArgs{N: 2})
	b.waitState("succeeded", succeeded)
	b.waitState("failed", failed)
	if err := relay.Cancel(ctx, b, cancelled, opt); err != nil {
		t.Fatal(err)
	}
	recv(t, running, "the job to be running")

	for name, id := range map[string]int64{"succeeded": succeeded, "failed": failed, "cancelled": cancelled} {
		if err := relay.Cancel(ctx, b, id, opt); !errors.Is(err, relay.ErrJobFinished) {
			t.Errorf("Cancel of a %s job: %v, want ErrJobFinished", name, err)
		}
	}
	for name, id := range map[string]int64{"pending": pending, "scheduled": scheduled, "running": run, "succeeded": succeeded} {
		if err := relay.Retry(ctx, b, id, opt); !errors.Is(err, relay.ErrJobNotRetryable) {
			t.Errorf("Retry of a %s job: %v, want ErrJobNotRetryable", name, err)
		}
	}
	unknown := run + 1000
	if err := relay.Cancel(ctx, b, unknown, opt); !errors.Is(err, relay.ErrJobNotFound) {
		t.Errorf("Cancel of an unknown id: %v, want ErrJobNotFound", err)
	}
	if err := relay.Retry(ctx, b, unknown, opt); !errors.Is(err, relay.ErrJobNotFound) {
		t.Errorf("Retry of an unknown id: %v, want ErrJobNotFound", err)
	}
	if rec, err := relay.GetJob(ctx, b, unknown, opt); !errors.Is(err, relay.ErrJobNotFound) || rec != nil {
		t.Errorf("GetJob of an unknown id: %v, %v; want nil, ErrJobNotFound", rec, err)
	}

	// None of the refused calls changed anything.
	for id, want := range map[int64]relay.JobState{succeeded: relay.StateSucceeded, failed: relay.StateFailed,
		cancelled: relay.StateCancelled, pending: relay.StatePending, scheduled: relay.StateScheduled, run: relay.StateRunning} {
		if rec := b.record(id); rec.State != want {
			t.Errorf("job %d is %s after the refused calls, want %s", id, rec.State, want)
		}
	}
	release.open()
	b.waitState("succeeded", run)
}

// Retry of a failed job runs it again now, with one more attempt, and it can succeed;
// Retry of a job cancelled while it ran runs it again too.
func TestRetryRunsAFailedOrCancelledJobAgain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	opt := relay.Schema(b.Schema)
	c := b.client(relay.Config{})
	type run struct {
		id               int64
		attempt, maxSeen int
	}
	runs := make(chan run, 10)
	handle(t, c, testKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		runs <- run{job.ID, job.Attempt, job.MaxAttempts}
		switch {
		case job.Args.N == 1 && job.Attempt == 1:
			return errors.New("fails the first time")
		case job.Args.N == 2 && job.Attempt == 1:
			<-ctx.Done() // cancelled
		}
		return nil
	})
	b.start(c)

	failed := enqueue(b, testKind, numArgs{N: 1}, relay.MaxAttempts(1))
	recv(t, runs, "the failing attempt")
	b.waitRecord(failed, relay.StateFailed)
	if err := relay.Retry(ctx, b, failed, opt); err != nil {
		t.Fatalf("Retry of a failed job: %v", err)
	}
	if r := recv(t, runs, "the retried job"); r.id != failed || r.attempt != 2 || r.maxSeen != 2 {
		t.Errorf("retry ran job %d attempt %d of %d, want job %d attempt 2 of 2", r.id, r.attempt, r.maxSeen, failed)
	}
	rec := b.waitRecord(failed, relay.StateSucceeded)
	if len(rec.Attempts) != 2 || rec.Attempts[0].Outcome != "failed" || rec.Attempts[1].Outcome != "succeeded" || !rec.FinishedAt.After(rec.Attempts[0].EndedAt) {
		t.Errorf("retried job's history %s, finished %v; want the failure then the success", historyString(rec.Attempts), rec.FinishedAt)
	}

	interrupted := enqueue(b, testKind, numArgs{N: 2})
	recv(t, runs, "the job to be cancelled")
	if err := relay.Cancel(ctx, b, interrupted, opt); err != nil {
		t.Fatal(err)
	}
	if err := relay.Retry(ctx, b, interrupted, opt); err != nil {
		t.Fatalf("Retry of a cancelled job: %v", err)
	}
	if r := recv(t, runs, "the retried cancelled job"); r.id != interrupted || r.attempt != 2 {
		t.Errorf("retry ran job %d attempt %d, want job %d attempt 2", r.id, r.attempt, interrupted)
	}
	rec = b.waitRecord(interrupted, relay.StateSucceeded)
	if len(rec.Attempts) != 2 || rec.Attempts[0].Reason != relay.ReasonCancelled {
		t.Errorf("history %s; want the cancelled attempt then the success", historyString(rec.Attempts))
	}
}

// A job cancelled before it ever ran, enqueued without MaxAttempts, keeps its kind's
// MaxAttempts when retried: it has used none of its attempts.
//
// Guards Retry's max_attempts = greatest(max_attempts, attempt + 1): greatest ignores the
// NULL of a job whose kind default was never filled in, which once gave such a job
// max_attempts 1, failing it for good on its first error.
func TestRetryOfANeverRunJobKeepsItsKindsMaxAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	opt := relay.Schema(b.Schema)
	c := b.client(relay.Config{Backoff: fastBackoff})
	runs := make(chan int, 10)
	handle(t, c, testKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		runs <- job.MaxAttempts
		return errors.New("always fails")
	}, relay.MaxAttempts(3))
	b.start(c)

	id := enqueue(b, testKind, numArgs{}, relay.RunIn(time.Hour))
	if err := relay.Cancel(ctx, b, id, opt); err != nil {
		t.Fatal(err)
	}
	if err := relay.Retry(ctx, b, id, opt); err != nil {
		t.Fatal(err)
	}
	rec := b.waitRecord(id, relay.StateFailed)
	if rec.Attempt != 3 || rec.MaxAttempts != 3 || len(rec.Attempts) != 3 {
		t.Errorf("retried job failed after attempt %d of %d (history %s); want 3 attempts, the kind's MaxAttempts(3)",
			rec.Attempt, rec.MaxAttempts, historyString(rec.Attempts))
	}
	if m := recv(t, runs, "the first run"); m != 3 {
		t.Errorf("the handler saw MaxAttempts %d, want the kind's 3", m)
	}
}
