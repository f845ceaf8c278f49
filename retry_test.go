package relay_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/backoff"
)

// attemptRecord is what a handler saw on one attempt.
type attemptRecord struct {
	id                       int64
	attempt, maxAttempts     int
	scheduledAt, attemptedAt time.Time
}

func recordOf[T any](job *relay.Job[T]) attemptRecord {
	return attemptRecord{id: job.ID, attempt: job.Attempt, maxAttempts: job.MaxAttempts, scheduledAt: job.ScheduledAt, attemptedAt: job.AttemptedAt}
}

// A handler that keeps failing is retried with backoff and failed after MaxAttempts, with
// every attempt's error recorded.
func TestFailingJobIsRetriedWithBackoffThenFailed(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("flaky")
	b := setup(t)
	c := b.client(relay.Config{Backoff: fastBackoff})
	attempts := make(chan attemptRecord, 10)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		attempts <- recordOf(job)
		return fmt.Errorf("boom %d", job.Attempt)
	})
	b.start(c)

	id := enqueue(b, kind, numArgs{}, relay.MaxAttempts(3))
	var seen []attemptRecord
	for range 3 {
		seen = append(seen, recv(t, attempts, "the next attempt"))
	}
	b.waitState("failed", id)
	b.stop(c)
	select {
	case a := <-attempts:
		t.Errorf("job ran a 4th time (attempt %d) after MaxAttempts(3)", a.attempt)
	default:
	}

	for i, a := range seen {
		if a.id != id || a.attempt != i+1 || a.maxAttempts != 3 {
			t.Errorf("run %d: job %d attempt %d of %d, want job %d attempt %d of 3", i+1, a.id, a.attempt, a.maxAttempts, id, i+1)
		}
		if i == 0 {
			continue
		}
		// Each retry was scheduled at least its backoff delay after the previous attempt
		// was claimed (it ended later still).
		delay := fastBackoff.Delay(i)
		if gap := a.scheduledAt.Sub(seen[i-1].attemptedAt); gap < delay {
			t.Errorf("attempt %d was scheduled %v after attempt %d started, want at least the backoff %v", i+1, gap, i, delay)
		}
		if a.attemptedAt.Before(a.scheduledAt) {
			t.Errorf("attempt %d was claimed at %v, before it was due at %v", i+1, a.attemptedAt, a.scheduledAt)
		}
	}
	j := b.stored(id)
	want := []string{"boom 1", "boom 2", "boom 3"}
	if j.State != "failed" || j.Attempt != 3 || strings.Join(j.Errors, "|") != strings.Join(want, "|") {
		t.Errorf("job ended %s after attempt %d with errors %q; want failed after attempt 3 with %q", j.State, j.Attempt, j.Errors, want)
	}
}

// A handler that fails once and then succeeds ends succeeded on attempt 2, with the first
// error kept.
func TestJobSucceedsOnSecondAttempt(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("second")
	b := setup(t)
	c := b.client(relay.Config{Backoff: fastBackoff})
	attempts := make(chan int, 10)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		attempts <- job.Attempt
		if job.Attempt == 1 {
			return errors.New("not yet")
		}
		return nil
	})
	b.start(c)
	id := enqueue(b, kind, numArgs{}, relay.MaxAttempts(3))
	for want := 1; want <= 2; want++ {
		if a := recv(t, attempts, "an attempt"); a != want {
			t.Fatalf("attempt %d ran, want %d", a, want)
		}
	}
	b.waitState("succeeded", id)
	j := b.stored(id)
	if j.Attempt != 2 || len(j.Errors) != 1 || j.Errors[0] != "not yet" {
		t.Errorf("job succeeded after attempt %d with errors %q; want attempt 2 with [\"not yet\"]", j.Attempt, j.Errors)
	}
}

// An error with an empty message is still recorded as something.
func TestEmptyErrorMessageIsRecorded(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("mute")
	b := setup(t)
	c := b.client(relay.Config{Backoff: fastBackoff})
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error { return errors.New("") })
	b.start(c)
	id := enqueue(b, kind, numArgs{}, relay.MaxAttempts(1))
	b.waitState("failed", id)
	if j := b.stored(id); len(j.Errors) != 1 || j.Errors[0] == "" {
		t.Errorf("recorded errors %q, want one non-empty error", j.Errors)
	}
}

// Args that cannot be decoded into the handler's type fail the job at once: retrying
// cannot fix stored args.
func TestUndecodableArgsFailAtOnce(t *testing.T) {
	t.Parallel()
	decodeKind := relay.NewKind[numArgs]("decode")
	b := setup(t)
	var id int64
	err := b.QueryRow(context.Background(), `INSERT INTO `+b.table("jobs")+
		` (kind, queue, args, max_attempts) VALUES ('decode', 'default', '{"N":"not a number"}', 5) RETURNING id`).Scan(&id)
	if err != nil {
		t.Fatal(err)
	}
	c := b.client(relay.Config{Backoff: fastBackoff})
	called := make(chan int64, 10)
	handle(t, c, decodeKind, reportIDs(called))
	b.start(c) // the start-up claim finds the raw row: no NOTIFY was sent for it
	b.waitState("failed", id)

	// A good job after it runs, so the client is working and has had every chance to retry.
	good := enqueue(b, decodeKind, numArgs{N: 1})
	if got := recv(t, called, "the good job"); got != good {
		t.Fatalf("handler got job %d, want only the good job %d", got, good)
	}
	b.waitState("succeeded", good)
	j := b.stored(id)
	if j.State != "failed" || j.Attempt != 1 || len(j.Errors) != 1 || !strings.Contains(j.Errors[0], "decode") {
		t.Errorf("undecodable job ended %s after attempt %d with errors %q; want failed after one attempt with a decode error", j.State, j.Attempt, j.Errors)
	}
}

// A panicking handler takes neither the process nor the client down: the panic is
// recorded as the attempt's error and the job is retried, then failed.
func TestPanickingHandlerIsRecordedAndRetried(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("panicky")
	b := setup(t)
	c := b.client(relay.Config{Backoff: fastBackoff})
	attempts := make(chan int, 10)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		attempts <- job.Attempt
		if job.Args.N == 0 {
			panic(fmt.Sprintf("kaboom on attempt %d", job.Attempt))
		}
		return nil
	})
	b.start(c)
	id := enqueue(b, kind, numArgs{N: 0}, relay.MaxAttempts(2))
	for want := 1; want <= 2; want++ {
		if a := recv(t, attempts, "an attempt of the panicking job"); a != want {
			t.Fatalf("attempt %d ran, want %d", a, want)
		}
	}
	b.waitState("failed", id)
	j := b.stored(id)
	if len(j.Errors) != 2 {
		t.Fatalf("recorded errors %q, want two", j.Errors)
	}
	for i, e := range j.Errors {
		if want := fmt.Sprintf("panic: kaboom on attempt %d", i+1); !strings.Contains(e, want) {
			t.Errorf("error %d is %q, want it to contain %q", i+1, e, want)
		}
	}

	// The client still runs jobs.
	ok := enqueue(b, kind, numArgs{N: 1})
	recv(t, attempts, "a job after the panics")
	b.waitState("succeeded", ok)
}

// A job enqueued with a backoff policy of its own is retried by it — the kind's policy and
// the client's stay the default of other jobs — and its record says so. Policies that
// would make negative or overflowing delays are refused at enqueue.
func TestJobOwnBackoffPolicyDecidesItsRetries(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	hour := backoff.Policy{Initial: time.Hour, Multiplier: 1, Max: time.Hour}
	c := b.client(relay.Config{Backoff: hour})
	events := b.subscribe(c, 16)
	handle(t, c, testKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		if job.Attempt <= job.Args.N {
			return fmt.Errorf("boom %d", job.Attempt)
		}
		return nil
	}, relay.Backoff(backoff.Policy{Initial: 2 * time.Hour, Multiplier: 1, Max: 2 * time.Hour}))
	b.start(c)

	// 40 ms, then ×3 capped at 100 ms, without jitter: every delay is exact.
	own := backoff.Policy{Initial: 40 * time.Millisecond, Multiplier: 3, Max: 100 * time.Millisecond}
	id := enqueue(b, testKind, numArgs{N: 3}, relay.Backoff(own))
	batch := b.enqueueMany([]relay.JobSpec{testKind.Job(numArgs{N: 1})}) // the kind's policy
	es := b.eventsOf(events, 5, id, batch[0])
	for i, want := range []time.Duration{40 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond} {
		if e := es[id][i]; e.State != relay.StatePending || e.RetryAt.Sub(e.EndedAt) != want {
			t.Errorf("attempt %d: %s, retried %v after it ended; want pending, %v by the job's policy", i+1, e.State, e.RetryAt.Sub(e.EndedAt), want)
		}
	}
	if e := es[id][3]; e.State != relay.StateSucceeded || e.Attempt != 4 {
		t.Errorf("last event: attempt %d %s; want attempt 4 succeeded", e.Attempt, e.State)
	}
	if e := es[batch[0]][0]; e.RetryAt.Sub(e.EndedAt) != 2*time.Hour {
		t.Errorf("a job without a policy was retried %v after it ended; want 2h by its kind's", e.RetryAt.Sub(e.EndedAt))
	}
	if rec := b.record(id); rec.Backoff == nil || *rec.Backoff != own {
		t.Errorf("JobRecord.Backoff = %v; want %+v", rec.Backoff, own)
	}
	if rec := b.record(batch[0]); rec.Backoff != nil {
		t.Errorf("JobRecord.Backoff of a job without one = %+v; want nil", *rec.Backoff)
	}
	// A job's own policy given to EnqueueMany, for one job or for the batch.
	jitter := backoff.Policy{Initial: time.Second, Multiplier: 2, Max: time.Minute, Jitter: 0.5}
	ids := b.enqueueMany([]relay.JobSpec{testKind.Job(numArgs{}, relay.Backoff(own)), testKind.Job(numArgs{})}, relay.Backoff(jitter))
	if rec := b.record(ids[0]); rec.Backoff == nil || *rec.Backoff != own {
		t.Errorf("EnqueueMany, a job's own policy: %v; want %+v", rec.Backoff, own)
	}
	if rec := b.record(ids[1]); rec.Backoff == nil || *rec.Backoff != jitter {
		t.Errorf("EnqueueMany, the batch's policy: %v; want %+v", rec.Backoff, jitter)
	}

	for name, p := range map[string]backoff.Policy{
		"a negative Initial":    {Initial: -time.Second, Multiplier: 2, Max: time.Minute},
		"no Initial":            {Multiplier: 2, Max: time.Minute},
		"a Multiplier below 1":  {Initial: time.Second, Multiplier: 0.5, Max: time.Minute},
		"a NaN Multiplier":      {Initial: time.Second, Multiplier: math.NaN(), Max: time.Minute},
		"a Max below Initial":   {Initial: time.Minute, Multiplier: 2, Max: time.Second},
		"a negative Jitter":     {Initial: time.Second, Multiplier: 2, Max: time.Minute, Jitter: -0.1},
		"a Jitter above 1":      {Initial: time.Second, Multiplier: 2, Max: time.Minute, Jitter: 1.5},
		"an overflowing Max":    {Initial: time.Second, Multiplier: 2, Max: math.MaxInt64, Jitter: 0.5},
		"an infinite Multipler": {Initial: time.Second, Multiplier: math.Inf(1), Max: time.Minute},
	} {
		_, err := relay.Enqueue(ctx, b, testKind, numArgs{}, relay.Backoff(p), relay.Schema(b.Schema))
		if !errors.Is(err, relay.ErrInvalidJob) || !errors.Is(err, backoff.ErrInvalidPolicy) {
			t.Errorf("Enqueue with %s: %v; want ErrInvalidJob and ErrInvalidPolicy", name, err)
		}
		_, err = relay.EnqueueMany(ctx, b, []relay.JobSpec{testKind.Job(numArgs{}, relay.Backoff(p))}, relay.Schema(b.Schema))
		if !errors.Is(err, relay.ErrInvalidJob) {
			t.Errorf("EnqueueMany with %s: %v; want ErrInvalidJob", name, err)
		}
	}
}
