package relaytest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay"
)

// StoredJob is a job as the jobs table holds it.
type StoredJob struct {
	ID          int64
	Kind        string
	Queue       string
	Args        json.RawMessage
	State       string // pending, running, succeeded, failed or cancelled
	Attempt     int
	MaxAttempts int // zero until first claimed, if the producer did not choose
	RunAt       time.Time
	AttemptedBy string
	Errors      []string // the error of each attempt that did not succeed, oldest first ("" for a cancelled one)
}

// Jobs returns every job in db's schema, optionally only those of the kinds named,
// ordered by id. Kinds are named as stored (see relay.Kind.Name), since any program may
// have enqueued them.
func Jobs(t testing.TB, db *DB, kinds ...string) []StoredJob {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := db.Query(ctx, `
		SELECT id, kind, queue, args, state, attempt, coalesce(max_attempts, 0), run_at, coalesce(attempted_by, ''),
		       coalesce((SELECT array_agg(coalesce(e->>'error', '')) FROM jsonb_array_elements(attempts) e), '{}')
		FROM `+pgx.Identifier{db.Schema, "jobs"}.Sanitize()+`
		WHERE coalesce(cardinality($1::text[]), 0) = 0 OR kind = ANY($1)
		ORDER BY id`, kinds)
	if err != nil {
		t.Fatalf("relaytest: list jobs: %v", err)
	}
	jobs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (StoredJob, error) {
		var j StoredJob
		err := r.Scan(&j.ID, &j.Kind, &j.Queue, &j.Args, &j.State, &j.Attempt, &j.MaxAttempts, &j.RunAt, &j.AttemptedBy, &j.Errors)
		return j, err
	})
	if err != nil {
		t.Fatalf("relaytest: list jobs: %v", err)
	}
	return jobs
}

// Enqueued returns the jobs of kind that are waiting to run (pending, due or scheduled),
// ordered by id: what a test asserts after calling code that enqueues.
func Enqueued[T any](t testing.TB, db *DB, kind relay.Kind[T]) []StoredJob {
	t.Helper()
	var pending []StoredJob
	for _, j := range Jobs(t, db, kind.Name()) {
		if j.State == "pending" {
			pending = append(pending, j)
		}
	}
	return pending
}

// Work runs handler once, synchronously, on a job built from args, as a client would
// run it on the first attempt: args go through the same JSON encoding, so a type that
// does not survive it fails here as it would in production. It returns the handler's
// error as it is: errors.Is(err, relay.ErrDiscarded) (relay.ErrSnoozed,
// relay.ErrRetryAfter) tells what a relay.Discard (Snooze, RetryAfter) decided, and
// relay.RetryDelay(err) the delay it asked for.
func Work[T any](ctx context.Context, t testing.TB, kind relay.Kind[T], handler relay.HandlerFunc[T], args T) error {
	t.Helper()
	encoded, err := json.Marshal(args)
	if err != nil {
		t.Fatalf("relaytest: encode args of %s: %v", kind, err)
	}
	job := &relay.Job[T]{Kind: kind.Name(), Queue: relay.DefaultQueue, Attempt: 1, MaxAttempts: relay.DefaultMaxAttempts}
	if err := json.Unmarshal(encoded, &job.Args); err != nil {
		t.Fatalf("relaytest: decode args of %s: %v", kind, err)
	}
	now := time.Now()
	job.CreatedAt, job.ScheduledAt, job.AttemptedAt = now, now, now
	return handler(ctx, job)
}

// WaitFor calls cond until it returns true, failing the test with msg if it has not
// within timeout. Use it for state that no signal announces, such as a row written by
// another client; where a channel can be awaited, await the channel instead.
func WaitFor(t testing.TB, timeout time.Duration, msg string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("relaytest: timed out after %v waiting for %s", timeout, msg)
		}
		<-tick.C
	}
}

// Receive waits up to timeout for a value on ch — a signal sent by a handler, say — and
// returns it, failing the test with what it was waiting for if none came.
func Receive[T any](t testing.TB, ch <-chan T, timeout time.Duration, what string) T {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case v := <-ch:
		return v
	case <-timer.C:
		t.Fatalf("relaytest: timed out after %v waiting for %s", timeout, what)
		panic("unreachable")
	}
}
