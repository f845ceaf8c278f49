package relay_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/relayq/relay"
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
