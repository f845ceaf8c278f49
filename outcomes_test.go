package relay_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/relayq/relay"
	"github.com/relayq/relay/backoff"
)

// attemptRun is what a handler saw on one attempt, and when.
type attemptRun struct {
	id          int64
	attempt     int
	maxAttempts int
	scheduledAt time.Time
	start, end  time.Time
}

// A panicking handler's attempt is recorded with reason panic and the panic's stack, and
// the job is retried.
func TestPanicIsRecordedWithItsStackAndRetried(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("panics")
	b := setup(t)
	c := b.client(relay.Config{Backoff: fastBackoff})
	runs := make(chan int, 10)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		runs <- job.Attempt
		if job.Attempt == 1 {
			panicInHandler(job.ID)
		}
		return nil
	})
	b.start(c)
	id := enqueue(b, kind, numArgs{})
	recv(t, runs, "attempt 1")
	if a := recv(t, runs, "the retry after the panic"); a != 2 {
		t.Fatalf("attempt %d ran after the panic, want 2", a)
	}
	rec := b.waitRecord(id, relay.StateSucceeded)
	if len(rec.Attempts) != 2 {
		t.Fatalf("history %s, want the panic and the success", historyString(rec.Attempts))
	}
	a := rec.Attempts[0]
	if a.Reason != relay.ReasonPanic || a.Outcome != "pending" || a.Number != 1 || !strings.Contains(a.Error, fmt.Sprintf("handler blew up on job %d", id)) {
		t.Errorf("panicked attempt recorded as %+v; want reason panic, outcome pending, the panic value in the error", a)
	}
	if !strings.Contains(a.Stack, "panicInHandler") || !strings.Contains(a.Stack, "goroutine") {
		t.Errorf("recorded stack does not show the panicking function:\n%s", a.Stack)
	}
	if rec.Attempts[1].Stack != "" || rec.Attempts[1].Reason != "" {
		t.Errorf("the success has reason %q and a stack", rec.Attempts[1].Reason)
	}
}

func panicInHandler(id int64) { panic(fmt.Sprintf("handler blew up on job %d", id)) }

// Timeouts, from the job, its kind or its queue: the handler's context is cancelled with
// cause ErrTimeout after the timeout and the attempt ends with reason timeout, even when
// the handler ignores its context and returns nil.
func TestTimeouts(t *testing.T) {
	t.Parallel()
	slowKind := relay.NewKind[numArgs]("slow")
	const short = 150 * time.Millisecond
	type timedOut struct {
		cause error
		// timeout is how long after the handler began its context's deadline was (a little
		// under the timeout: the deadline is set just before the handler is called), and
		// late how long after that deadline the context ended.
		timeout, late time.Duration
	}
	// honest waits for its context and returns its error.
	honest := func(got chan<- timedOut) relay.HandlerFunc[numArgs] {
		return func(ctx context.Context, job *relay.Job[numArgs]) error {
			began := time.Now()
			select {
			case <-ctx.Done():
			case <-time.After(waitTimeout):
			}
			deadline, _ := ctx.Deadline()
			got <- timedOut{context.Cause(ctx), deadline.Sub(began), time.Since(deadline)}
			return ctx.Err()
		}
	}
	for _, tc := range []struct {
		name    string
		cfg     relay.Config
		kind    []relay.HandleOption
		job     []relay.EnqueueOption
		handler func(chan<- timedOut) relay.HandlerFunc[numArgs]
	}{
		{name: "per kind", kind: []relay.HandleOption{relay.Timeout(short)}, handler: honest},
		{name: "per job", job: []relay.EnqueueOption{relay.Timeout(short)}, handler: honest},
		{name: "per job over the kind's", kind: []relay.HandleOption{relay.Timeout(time.Hour)}, job: []relay.EnqueueOption{relay.Timeout(short)}, handler: honest},
		{name: "per kind over the queue's", cfg: relay.Config{Queues: map[string]relay.QueueConfig{relay.DefaultQueue: {Workers: 5, JobTimeout: time.Hour}}},
			kind: []relay.HandleOption{relay.Timeout(short)}, handler: honest},
		{name: "queue default", cfg: relay.Config{Queues: map[string]relay.QueueConfig{relay.DefaultQueue: {Workers: 5, JobTimeout: short}}}, handler: honest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			c := b.client(tc.cfg)
			got := make(chan timedOut, 1)
			handle(t, c, slowKind, tc.handler(got), tc.kind...)
			b.start(c)
			id := enqueue(b, slowKind, numArgs{}, append(tc.job, relay.MaxAttempts(1))...)
			to := recv(t, got, "the handler's context to end")
			if !errors.Is(to.cause, relay.ErrTimeout) {
				t.Errorf("handler's context ended with cause %v, want ErrTimeout", to.cause)
			}
			if to.timeout > short || to.timeout < short-time.Second || to.late < 0 || to.late > 2*time.Second {
				t.Errorf("handler's context had a deadline %v after it began and ended %v after it, want %v and just after", to.timeout, to.late, short)
			}
			rec := b.waitRecord(id, relay.StateFailed)
			if len(rec.Attempts) != 1 || rec.Attempts[0].Reason != relay.ReasonTimeout || !strings.Contains(rec.Attempts[0].Error, relay.ErrTimeout.Error()) {
				t.Errorf("history %s, want one attempt failed with reason timeout", historyString(rec.Attempts))
			}
		})
	}

	// A handler that never looks at its context and returns nil after its timeout still
	// ends with reason timeout.
	t.Run("handler ignores its context", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		c := b.client(relay.Config{})
		ctxs := make(chan context.Context, 1)
		release := b.gate()
		handle(t, c, slowKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
			ctxs <- ctx
			release.wait()
			return nil
		}, relay.Timeout(short))
		b.start(c)
		id := enqueue(b, slowKind, numArgs{}, relay.MaxAttempts(1))
		ctx := recv(t, ctxs, "the handler to start")
		recv(t, ctx.Done(), "the handler's context to time out")
		if cause := context.Cause(ctx); !errors.Is(cause, relay.ErrTimeout) {
			t.Errorf("handler's context ended with cause %v, want ErrTimeout", cause)
		}
		if rec := b.record(id); rec.State != relay.StateRunning {
			t.Errorf("job is %s while its handler still runs past its timeout, want running", rec.State)
		}
		release.open() // returns nil, late
		rec := b.waitRecord(id, relay.StateFailed)
		if len(rec.Attempts) != 1 || rec.Attempts[0].Reason != relay.ReasonTimeout {
			t.Errorf("history %s, want one attempt failed with reason timeout", historyString(rec.Attempts))
		}
	})

	// Timeout(0) on the job means none, whatever its kind says.
	t.Run("zero per job overrides the kind's", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		c := b.client(relay.Config{})
		deadlines := make(chan bool, 1)
		handle(t, c, slowKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
			_, has := ctx.Deadline()
			deadlines <- has
			return nil
		}, relay.Timeout(time.Millisecond))
		b.start(c)
		id := enqueue(b, slowKind, numArgs{}, relay.Timeout(0))
		if recv(t, deadlines, "the handler") {
			t.Errorf("the handler of a job enqueued with Timeout(0) has a deadline")
		}
		b.waitRecord(id, relay.StateSucceeded)
	})
}

// A positive per-job timeout under a millisecond must still bound the handler.
//
// The timeout is stored as whole milliseconds (timeoutParam in internal/store/enqueue.go);
// truncating, Timeout(500µs) was once stored as 0, which means "no timeout".
func TestSubMillisecondJobTimeoutIsNotDropped(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("quick")
	b := setup(t)
	c := b.client(relay.Config{})
	deadlines := make(chan bool, 1)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		_, has := ctx.Deadline()
		deadlines <- has
		return nil
	})
	id := enqueue(b, kind, numArgs{}, relay.Timeout(500*time.Microsecond))
	if rec := b.record(id); rec.Timeout == nil || *rec.Timeout <= 0 {
		t.Errorf("GetJob says the job's timeout is %v, want a positive timeout (it was enqueued with Timeout(500µs))", rec.Timeout)
	}
	b.start(c)
	if !recv(t, deadlines, "the handler") {
		t.Errorf("the handler of a job enqueued with Timeout(500µs) runs without a deadline")
	}
}

// An error retries the job with reason error and the error's text.
func TestErrorIsRecordedAndRetried(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("flaky")
	b := setup(t)
	c := b.client(relay.Config{Backoff: fastBackoff})
	runs := make(chan int, 10)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		runs <- job.Attempt
		if job.Attempt < 3 {
			return fmt.Errorf("transient failure %d", job.Attempt)
		}
		return nil
	})
	b.start(c)
	id := enqueue(b, kind, numArgs{}, relay.MaxAttempts(3))
	for want := 1; want <= 3; want++ {
		if a := recv(t, runs, "an attempt"); a != want {
			t.Fatalf("attempt %d ran, want %d", a, want)
		}
	}
	rec := b.waitRecord(id, relay.StateSucceeded)
	if len(rec.Attempts) != 3 {
		t.Fatalf("history %s, want two errors and the success", historyString(rec.Attempts))
	}
	for i, a := range rec.Attempts[:2] {
		if a.Number != i+1 || a.Reason != relay.ReasonError || a.Outcome != "pending" || a.Error != fmt.Sprintf("transient failure %d", i+1) ||
			a.Client != c.ID() || a.EndedAt.Before(a.StartedAt) {
			t.Errorf("attempt %d recorded as %+v", i+1, a)
		}
	}
	if last := rec.Attempts[2]; last.Number != 3 || last.Outcome != "succeeded" {
		t.Errorf("last entry %+v, want attempt 3 succeeded", last)
	}
}

// Discard fails the job at once, with reason discarded, however many attempts it has left.
func TestDiscardFailsAtOnce(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("doomed")
	b := setup(t)
	c := b.client(relay.Config{Backoff: fastBackoff})
	runs := make(chan int, 10)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		runs <- job.Attempt
		return relay.Discard(errors.New("customer no longer exists"))
	})
	b.start(c)
	id := enqueue(b, kind, numArgs{}, relay.MaxAttempts(5))
	recv(t, runs, "the job")
	rec := b.waitRecord(id, relay.StateFailed)
	b.stop(c)
	if len(runs) != 0 {
		t.Errorf("a discarded job ran again")
	}
	if rec.Attempt != 1 || rec.FinishedAt.IsZero() || len(rec.Attempts) != 1 ||
		rec.Attempts[0].Reason != relay.ReasonDiscarded || rec.Attempts[0].Outcome != "failed" || rec.Attempts[0].Error != "customer no longer exists" {
		t.Errorf("discarded job: attempt %d, finished %v, history %s; want failed after attempt 1, reason discarded with the error's text",
			rec.Attempt, rec.FinishedAt, historyString(rec.Attempts))
	}
}

// Snooze runs the job again after d without using up an attempt: a job with one attempt
// can snooze and still run, as attempt 1 again.
func TestSnoozeRunsAgainLaterWithoutUsingAnAttempt(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("sleepy")
	const d = 300 * time.Millisecond
	b := setup(t)
	c := b.client(relay.Config{})
	runs := make(chan attemptRun, 10)
	var calls atomic.Int64
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		r := attemptRun{id: job.ID, attempt: job.Attempt, maxAttempts: job.MaxAttempts, scheduledAt: job.ScheduledAt, start: time.Now()}
		defer func() { runs <- r }()
		if calls.Add(1) == 1 {
			r.end = time.Now()
			return relay.Snooze(d)
		}
		return nil
	})
	b.start(c)
	id := enqueue(b, kind, numArgs{}, relay.MaxAttempts(1))
	first := recv(t, runs, "the first run")
	second := recv(t, runs, "the run after the snooze")
	if gap := second.start.Sub(first.end); gap < d {
		t.Errorf("ran again %v after snoozing for %v", gap, d)
	}
	if first.attempt != 1 || second.attempt != 1 {
		t.Errorf("runs were attempts %d and %d, want 1 and 1: a snooze gives its attempt back", first.attempt, second.attempt)
	}
	rec := b.waitRecord(id, relay.StateSucceeded)
	if rec.Attempt != 1 || len(rec.Attempts) != 2 || rec.Attempts[0].Reason != relay.ReasonSnoozed || rec.Attempts[0].Outcome != "pending" {
		t.Errorf("job succeeded at attempt %d with history %s; want attempt 1, a snooze then the success", rec.Attempt, historyString(rec.Attempts))
	}
}

// RetryAfter retries at the chosen time, not before and not at the backoff's.
func TestRetryAfterRetriesAtTheChosenTime(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("later")
	const d = 400 * time.Millisecond
	b := setup(t)
	c := b.client(relay.Config{Backoff: fastBackoff})
	runs := make(chan attemptRun, 10)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		r := attemptRun{id: job.ID, attempt: job.Attempt, scheduledAt: job.ScheduledAt, start: time.Now()}
		defer func() { runs <- r }()
		if job.Attempt == 1 {
			r.end = time.Now()
			return relay.RetryAfter(d, errors.New("rate limited"))
		}
		return nil
	})
	b.start(c)
	id := enqueue(b, kind, numArgs{})
	first := recv(t, runs, "attempt 1")
	second := recv(t, runs, "attempt 2")
	if gap := second.start.Sub(first.end); gap < d {
		t.Errorf("retried %v after RetryAfter(%v)", gap, d)
	}
	if gap := second.scheduledAt.Sub(first.end); gap < d || gap > d+time.Second {
		t.Errorf("retry was due %v after attempt 1 ended, want %v", gap, d)
	}
	rec := b.waitRecord(id, relay.StateSucceeded)
	if len(rec.Attempts) != 2 || rec.Attempts[0].Reason != relay.ReasonError || rec.Attempts[0].Error != "rate limited" {
		t.Errorf("history %s; want attempt 1 with reason error and the error's text", historyString(rec.Attempts))
	}
}

// A kind's MaxAttempts applies to its jobs enqueued without one; a job's own MaxAttempts
// overrides it.
func TestKindMaxAttemptsAndTheJobsOwn(t *testing.T) {
	t.Parallel()
	limitedKind := relay.NewKind[numArgs]("limited")
	b := setup(t)
	c := b.client(relay.Config{Backoff: fastBackoff})
	runs := make(chan attemptRun, 20)
	handle(t, c, limitedKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		runs <- attemptRun{id: job.ID, attempt: job.Attempt, maxAttempts: job.MaxAttempts}
		return errors.New("always")
	}, relay.MaxAttempts(2))
	byKind := enqueue(b, limitedKind, numArgs{N: 1})
	own := enqueue(b, limitedKind, numArgs{N: 2}, relay.MaxAttempts(4))
	if rec := b.record(byKind); rec.MaxAttempts != 0 {
		t.Errorf("before its first claim, a job enqueued without MaxAttempts has MaxAttempts %d, want 0 (the kind decides)", rec.MaxAttempts)
	}
	b.start(c)
	b.waitState("failed", byKind, own)
	b.stop(c)
	close(runs)
	count := map[int64]int{}
	for r := range runs {
		count[r.id]++
		want := map[int64]int{byKind: 2, own: 4}[r.id]
		if r.maxAttempts != want {
			t.Errorf("job %d attempt %d saw MaxAttempts %d, want %d", r.id, r.attempt, r.maxAttempts, want)
		}
	}
	for id, want := range map[int64]int{byKind: 2, own: 4} {
		rec := b.record(id)
		if count[id] != want || rec.Attempt != want || rec.MaxAttempts != want || len(rec.Attempts) != want {
			t.Errorf("job %d ran %d times, ended at attempt %d of %d with %d entries; want %d of each",
				id, count[id], rec.Attempt, rec.MaxAttempts, len(rec.Attempts), want)
		}
	}
}

// A kind's Backoff spaces its retries instead of the client's.
func TestKindBackoffIsUsed(t *testing.T) {
	t.Parallel()
	ownBackoffKind := relay.NewKind[numArgs]("own-backoff")
	clientBackoffKind := relay.NewKind[numArgs]("client-backoff")
	const kindDelay = 250 * time.Millisecond
	b := setup(t)
	slow := backoff.Policy{Initial: time.Hour, Multiplier: 1, Max: time.Hour}
	c := b.client(relay.Config{Backoff: slow})
	runs := make(chan attemptRun, 10)
	fail := func(ctx context.Context, job *relay.Job[numArgs]) error {
		r := attemptRun{id: job.ID, attempt: job.Attempt, scheduledAt: job.ScheduledAt, start: time.Now()}
		defer func() { runs <- r }()
		if job.Attempt == 1 {
			r.end = time.Now()
			return errors.New("once")
		}
		return nil
	}
	handle(t, c, ownBackoffKind, fail, relay.Backoff(backoff.Policy{Initial: kindDelay, Multiplier: 1, Max: kindDelay}))
	handle(t, c, clientBackoffKind, fail)
	b.start(c)
	own := enqueue(b, ownBackoffKind, numArgs{})
	other := enqueue(b, clientBackoffKind, numArgs{})

	var first, second attemptRun
	for first.id == 0 || second.id == 0 {
		r := recv(t, runs, "the retry of the job with the kind's backoff")
		switch {
		case r.id == own && r.attempt == 1:
			first = r
		case r.id == own && r.attempt == 2:
			second = r
		}
	}
	if gap := second.start.Sub(first.end); gap < kindDelay {
		t.Errorf("retried %v after the failure, before the kind's backoff %v", gap, kindDelay)
	}
	b.waitRecord(own, relay.StateSucceeded)
	// The other kind waits for the client's hour.
	rec := b.waitRecord(other, relay.StateScheduled)
	if rec.ScheduledAt.Before(time.Now().Add(50 * time.Minute)) {
		t.Errorf("the kind without its own backoff is due %v; want about an hour from now", rec.ScheduledAt)
	}
}

// Args that do not decode into the handler's type fail the job at once with reason
// decode, after exactly one attempt, and the handler is never called.
func TestUndecodableArgsFailWithReasonDecode(t *testing.T) {
	t.Parallel()
	typedKind := relay.NewKind[numArgs]("typed")
	b := setup(t)
	var id int64
	// No max_attempts: the kind's default (20) applies, and still only one attempt is made.
	err := b.QueryRow(context.Background(), `INSERT INTO `+b.table("jobs")+
		` (kind, queue, args) VALUES ('typed', 'default', '{"N": [1, 2]}') RETURNING id`).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	c := b.client(relay.Config{Backoff: fastBackoff})
	called := make(chan int64, 10)
	handle(t, c, typedKind, reportIDs(called))
	b.start(c)
	rec := b.waitRecord(id, relay.StateFailed)
	good := enqueue(b, typedKind, numArgs{N: 1}) // the client carries on
	if got := recv(t, called, "the good job"); got != good {
		t.Fatalf("the handler was called with job %d, want only the good job %d", got, good)
	}
	if rec.Attempt != 1 || len(rec.Attempts) != 1 || rec.Attempts[0].Reason != relay.ReasonDecode ||
		rec.Attempts[0].Outcome != "failed" || !strings.Contains(rec.Attempts[0].Error, "numArgs") {
		t.Errorf("undecodable job: attempt %d, history %s; want failed after one attempt, reason decode, naming the type", rec.Attempt, historyString(rec.Attempts))
	}
}

// Invalid options are refused before anything happens: at Enqueue with ErrInvalidJob, at
// Handle and Start with ErrInvalidConfig.
func TestInvalidOptionsAreRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	noop := func(ctx context.Context, job *relay.Job[numArgs]) error { return nil }

	for name, opt := range map[string]relay.EnqueueOption{
		"negative Timeout": relay.Timeout(-time.Second),
		"MaxAttempts(0)":   relay.MaxAttempts(0),
		"MaxAttempts(-1)":  relay.MaxAttempts(-1),
	} {
		if _, err := relay.Enqueue(ctx, b, testKind, numArgs{}, opt, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrInvalidJob) {
			t.Errorf("Enqueue with %s: %v, want ErrInvalidJob", name, err)
		}
		specs := []relay.JobSpec{testKind.Job(numArgs{}), testKind.Job(numArgs{}, opt)}
		if _, err := relay.EnqueueMany(ctx, b, specs, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrInvalidJob) {
			t.Errorf("EnqueueMany with %s on one job: %v, want ErrInvalidJob", name, err)
		}
	}
	if n := b.count(""); n != 0 {
		t.Errorf("%d jobs were inserted by refused enqueues", n)
	}

	for name, opt := range map[string]relay.HandleOption{
		"negative Timeout": relay.Timeout(-time.Second),
		"MaxAttempts(0)":   relay.MaxAttempts(0),
		"bad Backoff":      relay.Backoff(backoff.Policy{Initial: 0, Multiplier: 2, Max: time.Second}),
	} {
		c := b.client(relay.Config{})
		if err := relay.Handle(c, testKind, noop, opt); !errors.Is(err, relay.ErrInvalidConfig) {
			t.Errorf("Handle with %s: %v, want ErrInvalidConfig", name, err)
		}
	}

	for name, cfg := range map[string]relay.Config{
		"LeaseRenewal over half of LeaseTTL": {LeaseTTL: time.Second, LeaseRenewal: 600 * time.Millisecond},
		"LeaseRenewal over half the default": {LeaseRenewal: 10 * time.Second},
		"LeaseTTL under 100ms":               {LeaseTTL: 50 * time.Millisecond, LeaseRenewal: 10 * time.Millisecond},
		"negative LeaseTTL":                  {LeaseTTL: -time.Second},
		"negative LeaseRenewal":              {LeaseRenewal: -time.Second},
		"negative JobTimeout":                {Queues: map[string]relay.QueueConfig{"q": {Workers: 1, JobTimeout: -time.Second}}},
	} {
		c := b.client(cfg)
		handle(t, c, testKind, noop)
		err := c.Start(ctx, b.Pool)
		if !errors.Is(err, relay.ErrInvalidConfig) {
			t.Errorf("Start with %s: %v, want ErrInvalidConfig", name, err)
		}
		if err == nil {
			b.stop(c)
		}
	}
	// At exactly half it is valid.
	c := b.client(relay.Config{LeaseTTL: time.Second, LeaseRenewal: 500 * time.Millisecond})
	handle(t, c, testKind, noop)
	b.start(c)
}

// A job's history keeps its last MaxAttemptHistory attempts: one that snoozes again and
// again does not grow it without end. An error's text is cut to MaxAttemptText bytes.
func TestAttemptHistoryKeepsTheLastAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const snoozes = relay.MaxAttemptHistory + 5
	long := "x" + strings.Repeat("é", relay.MaxAttemptText) // two bytes each, after one: cut mid-way
	var runs atomic.Int64
	c := b.client(relay.Config{PollInterval: time.Hour})
	handle(t, c, testKind, func(context.Context, *relay.Job[numArgs]) error {
		switch n := runs.Add(1); {
		case n <= snoozes:
			return relay.Snooze(0)
		case n == snoozes+1:
			return relay.RetryAfter(0, errors.New(long))
		default:
			return nil
		}
	})
	b.start(c)
	id := enqueue(b, testKind, numArgs{})
	rec := b.waitRecord(id, relay.StateSucceeded)
	// snoozes + 1 ended attempts that did not succeed: the last MaxAttemptHistory of them,
	// then the success.
	if len(rec.Attempts) != relay.MaxAttemptHistory+1 {
		t.Fatalf("%d attempts in the history; want %d and the success", len(rec.Attempts), relay.MaxAttemptHistory)
	}
	first, failed := rec.Attempts[0], rec.Attempts[relay.MaxAttemptHistory-1]
	if first.Reason != relay.ReasonSnoozed || !first.EndedAt.After(time.Time{}) {
		t.Errorf("the oldest entry kept: %+v; want a snooze", first)
	}
	if failed.Reason != relay.ReasonError || rec.Attempts[relay.MaxAttemptHistory].Outcome != string(relay.StateSucceeded) {
		t.Errorf("the history ends with %s; want the error, then the success", historyString(rec.Attempts[relay.MaxAttemptHistory-1:]))
	}
	if n := len(failed.Error); n > relay.MaxAttemptText+30 || n < relay.MaxAttemptText-2 || !utf8.ValidString(failed.Error) ||
		!strings.HasPrefix(failed.Error, "xéé") || !strings.HasSuffix(failed.Error, fmt.Sprintf("(%d bytes cut)", len(long)-relay.MaxAttemptText+1)) {
		t.Errorf("the error's text is %d bytes, ending %q; want it cut to %d, at a character, with a note", n, failed.Error[max(n-40, 0):], relay.MaxAttemptText)
	}
}

// An outcome PostgreSQL refuses (here for a constraint the test adds, where a value relay
// did not foresee would fail the same way) does not hold up the outcomes batched with it:
// they are written, and so is it, without the handler's output, error data and stack (a
// success stays a success). One refused even so is left out, and its job runs again once its
// lease expires. Before, the batch was retried for good, every later outcome queued behind
// it, and at 5,000 the client stopped claiming.
func TestOutcomeThePostgreSQLRefusesDoesNotHoldUpTheOthers(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if _, err := b.Exec(ctx, `ALTER TABLE `+b.table("jobs")+`
		ADD CONSTRAINT no_poison CHECK (output IS NULL OR NOT output ? 'poison'),
		ADD CONSTRAINT never_fails CHECK (state <> 'failed' OR args->>'N' <> '1')`); err != nil {
		t.Fatal(err)
	}
	c := b.client(withShortLeases(relay.Config{PollInterval: time.Hour}))
	start := b.gate()
	handle(t, c, testKind, func(_ context.Context, job *relay.Job[numArgs]) error {
		start.wait() // all of them end together: their outcomes go in as few batches as can be
		switch {
		case job.Args.N == 0:
			return job.SetOutput(map[string]bool{"poison": true})
		case job.Args.N == 1 && job.Attempt == 1:
			return relay.Discard(errors.New("failed for good, which the table refuses"))
		}
		return nil
	})
	b.start(c)
	specs := make([]relay.JobSpec, 20)
	for i := range specs {
		specs[i] = testKind.Job(numArgs{N: i})
	}
	ids := b.enqueueMany(specs)
	start.open()
	for _, id := range ids[2:] {
		b.waitRecord(id, relay.StateSucceeded)
	}
	if rec := b.waitRecord(ids[0], relay.StateSucceeded); rec.Attempt != 1 || rec.Output != nil {
		t.Errorf("the job whose output was refused: succeeded on attempt %d with output %s; want attempt 1, without it", rec.Attempt, rec.Output)
	}
	rec := b.waitRecord(ids[1], relay.StateSucceeded)
	if rec.Attempt != 2 || rec.Attempts[0].Reason != relay.ReasonLostLease {
		t.Errorf("the job whose failure was refused: succeeded on attempt %d with history %s; want attempt 1 lost (its lease expired), then attempt 2",
			rec.Attempt, historyString(rec.Attempts))
	}
}
