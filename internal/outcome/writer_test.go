package outcome_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay"
	"github.com/relayq/relay/dispatcher"
	"github.com/relayq/relay/internal/outcome"
	"github.com/relayq/relay/internal/store"
	"github.com/relayq/relay/internal/testlog"
	"github.com/relayq/relay/relaytest"
)

func TestMain(m *testing.M) { relaytest.Main(m) }

const waitTimeout = 30 * time.Second

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// claimed enqueues n jobs on a new schema and claims them all, as a dispatcher would, so
// that they are running and waiting for their outcomes.
func claimed(t *testing.T, n int) (*relaytest.DB, *store.Store, []*dispatcher.Job) {
	t.Helper()
	db := relaytest.NewDB(t)
	s, err := store.For(db.Schema)
	if err != nil {
		t.Fatal(err)
	}
	specs := make([]relay.JobSpec, n)
	for i := range specs {
		specs[i] = relay.NewKind[int]("job").Job(i)
	}
	if _, err := relay.EnqueueMany(context.Background(), db, specs, relay.Schema(db.Schema)); err != nil {
		t.Fatal(err)
	}
	c, err := s.Client(db, store.ClientInfo{
		ID: writerClient, Lease: time.Minute, Kinds: []string{"job"}, Attempts: []int32{relay.DefaultMaxAttempts},
	}).Claim(context.Background(), dispatcher.ClaimRequest{Queue: relay.DefaultQueue, Limit: n})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Jobs) != n {
		t.Fatalf("claimed %d of %d jobs", len(c.Jobs), n)
	}
	return db, s, c.Jobs
}

// writerClient is the client the test claims as, and whose outcomes the writer writes.
const writerClient = "writer-test"

// outcomeFor gives job i one of three outcomes: succeeded, failed, or retried later.
func outcomeFor(i int, j *dispatcher.Job, now time.Time) store.Outcome {
	o := store.Outcome{ID: j.ID, Attempt: j.Attempt, EndedAt: now}
	switch i % 3 {
	case 0:
		o.State = store.StateSucceeded
	case 1:
		o.State, o.Reason, o.Error = store.StateFailed, store.ReasonError, fmt.Sprint("failed ", j.ID)
	case 2:
		o.State, o.Reason, o.Error, o.RunAt = store.StatePending, store.ReasonError, fmt.Sprint("retry ", j.ID), now.Add(time.Hour).Truncate(time.Microsecond)
	}
	return o
}

// row is what the table says of one job's outcome.
type row struct {
	State      string
	RunAt      time.Time
	FinishedAt *time.Time
	Errors     []string
}

func rows(t *testing.T, db *relaytest.DB) map[int64]row {
	t.Helper()
	rs, err := db.Query(context.Background(), `SELECT id, state, run_at, finished_at,
		coalesce((SELECT array_agg(e->>'error') FROM jsonb_array_elements(attempts) e), '{}')
		FROM `+pgx.Identifier{db.Schema, "jobs"}.Sanitize())
	if err != nil {
		t.Fatal(err)
	}
	out := map[int64]row{}
	var id int64
	var r row
	_, err = pgx.ForEachRow(rs, []any{&id, &r.State, &r.RunAt, &r.FinishedAt, &r.Errors}, func() error {
		out[id] = r
		r = row{}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// assertWritten checks that every job holds its outcome.
func assertWritten(t *testing.T, db *relaytest.DB, outcomes []store.Outcome) {
	t.Helper()
	got := rows(t, db)
	for _, o := range outcomes {
		r := got[o.ID]
		if r.State != o.State {
			t.Errorf("job %d is %s, want %s", o.ID, r.State, o.State)
			continue
		}
		switch {
		case o.State == store.StatePending && (!r.RunAt.Equal(o.RunAt) || r.FinishedAt != nil):
			t.Errorf("retried job %d: run_at %v, finished_at %v; want run_at %v and no finished_at", o.ID, r.RunAt, r.FinishedAt, o.RunAt)
		case o.State != store.StatePending && r.FinishedAt == nil:
			t.Errorf("job %d is %s without finished_at", o.ID, r.State)
		}
		if (o.Error == "" && len(r.Errors) != 0) || (o.Error != "" && (len(r.Errors) != 1 || r.Errors[0] != o.Error)) {
			t.Errorf("job %d has errors %q, want %q", o.ID, r.Errors, o.Error)
		}
	}
}

// Outcomes added from many goroutines at once are all written.
func TestWriterWritesEveryOutcomeAddedConcurrently(t *testing.T) {
	t.Parallel()
	const n, adders = 2000, 8
	db, s, jobs := claimed(t, n)
	w := outcome.New(writerClient, s, db, quiet, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()

	now := time.Now()
	outcomes := make([]store.Outcome, n)
	for i, j := range jobs {
		outcomes[i] = outcomeFor(i, j, now)
	}
	var wg sync.WaitGroup
	for a := range adders {
		wg.Go(func() {
			for i := a; i < n; i += adders {
				if !w.Add(outcomes[i]) {
					t.Errorf("Add of job %d returned false on a running writer", outcomes[i].ID)
				}
			}
		})
	}
	wg.Wait()
	relaytest.WaitFor(t, waitTimeout, "every outcome to be written", func() bool {
		var running int
		_ = db.QueryRow(context.Background(), `SELECT count(*) FROM `+pgx.Identifier{db.Schema, "jobs"}.Sanitize()+` WHERE state = 'running'`).Scan(&running)
		return running == 0
	})
	assertWritten(t, db, outcomes)
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run returned %v after a clean stop, want nil", err)
	}
}

// Stopping the writer writes everything still queued, in as many statements as it takes,
// before Run returns; an outcome added afterwards is refused and not written.
func TestWriterStopFlushesQueuedOutcomesAndRefusesLaterOnes(t *testing.T) {
	t.Parallel()
	const n = 6000 // more than one statement's worth
	db, s, jobs := claimed(t, n+1)
	late := jobs[n]
	jobs = jobs[:n]
	w := outcome.New(writerClient, s, db, quiet, nil)

	now := time.Now()
	outcomes := make([]store.Outcome, n)
	for i, j := range jobs {
		outcomes[i] = outcomeFor(i, j, now)
		if !w.Add(outcomes[i]) {
			t.Fatal("Add returned false before the writer ran")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // stopped before it ever ran: everything is written by the flush
	if err := w.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertWritten(t, db, outcomes) // no waiting: Run returned, so it is all there

	if w.Add(store.Outcome{ID: late.ID, Attempt: late.Attempt, State: store.StateSucceeded, EndedAt: time.Now()}) {
		t.Error("Add after the writer stopped returned true")
	}
	if r := rows(t, db)[late.ID]; r.State != store.StateRunning {
		t.Errorf("outcome added after stop was written: job %d is %s", late.ID, r.State)
	}
}

// Stopping a running writer also writes what was queued when it stopped.
func TestWriterStopWhileRunningFlushes(t *testing.T) {
	t.Parallel()
	const n = 500
	db, s, jobs := claimed(t, n)
	w := outcome.New(writerClient, s, db, quiet, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	now := time.Now()
	outcomes := make([]store.Outcome, n)
	for i, j := range jobs {
		outcomes[i] = outcomeFor(i, j, now)
		w.Add(outcomes[i])
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	assertWritten(t, db, outcomes)
	if w.Add(outcomes[0]) {
		t.Error("Add after Run returned reported true")
	}
}

// A failed write keeps its outcomes queued and is retried until it succeeds.
func TestWriterRetriesAFailedWrite(t *testing.T) {
	t.Parallel()
	db, s, jobs := claimed(t, 3)
	failed := make(chan struct{}, 1)
	w, bringBack := failingWriter(t, db, s, failed)
	outcomes := make([]store.Outcome, len(jobs))
	for i, j := range jobs {
		outcomes[i] = outcomeFor(i, j, time.Now())
		w.Add(outcomes[i])
	}
	select {
	case <-failed:
	case <-time.After(waitTimeout):
		t.Fatal("the write to a missing table did not fail")
	}
	bringBack()
	relaytest.WaitFor(t, waitTimeout, "the retried write", func() bool {
		for _, r := range rows(t, db) {
			if r.State == store.StateRunning {
				return false
			}
		}
		return true
	})
	assertWritten(t, db, outcomes)
}

// An outcome for a job that is no longer running (cancelled or rescued meanwhile) is
// ignored rather than overwriting it.
func TestWriterLeavesJobsNoLongerRunningAlone(t *testing.T) {
	t.Parallel()
	db, s, jobs := claimed(t, 2)
	table := pgx.Identifier{db.Schema, "jobs"}.Sanitize()
	if _, err := db.Exec(context.Background(), `UPDATE `+table+` SET state = 'cancelled' WHERE id = $1`, jobs[0].ID); err != nil {
		t.Fatal(err)
	}
	w := outcome.New(writerClient, s, db, quiet, nil)
	for _, j := range jobs {
		w.Add(store.Outcome{ID: j.ID, Attempt: j.Attempt, State: store.StateSucceeded, EndedAt: time.Now()})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	got := rows(t, db)
	if got[jobs[0].ID].State != store.StateCancelled {
		t.Errorf("cancelled job became %s", got[jobs[0].ID].State)
	}
	if got[jobs[1].ID].State != store.StateSucceeded {
		t.Errorf("running job became %s, want succeeded", got[jobs[1].ID].State)
	}
}

// After writes have failed for a while, the writer pauses for over a second before the
// next; Recover — the database answers again — ends that pause at once.
func TestWriterRetriesAtOnceWhenTheDatabaseIsBack(t *testing.T) {
	t.Parallel()
	db, s, jobs := claimed(t, 1)
	failures := make(chan struct{}, 100)
	w, bringBack := failingWriter(t, db, s, failures)
	o := outcomeFor(0, jobs[0], time.Now())
	w.Add(o)
	// Pauses double from 10 ms (±20 %): after the eighth failure the next lasts over 1 s.
	for range 8 {
		select {
		case <-failures:
		case <-time.After(waitTimeout):
			t.Fatal("the write to a missing table did not fail")
		}
	}
	bringBack()
	w.Recover()
	recovered := time.Now()
	relaytest.WaitFor(t, waitTimeout, "the write after Recover", func() bool {
		return rows(t, db)[o.ID].State != store.StateRunning
	})
	if took := time.Since(recovered); took > 600*time.Millisecond {
		t.Errorf("the outcome was written %v after Recover; want at once (the pause had over a second to go)", took)
	}
	assertWritten(t, db, []store.Outcome{o})
}

// failingWriter runs a writer on db until the test ends, with the jobs table renamed away
// so that every write fails, and signals failed for each failure it logs (a signal that
// finds failed full is dropped). bringBack renames the table back.
func failingWriter(t *testing.T, db *relaytest.DB, s *store.Store, failed chan<- struct{}) (w *outcome.Writer, bringBack func()) {
	t.Helper()
	logger := slog.New(testlog.Func(func(r slog.Record) {
		if r.Level == slog.LevelWarn {
			select {
			case failed <- struct{}{}:
			default:
			}
		}
	}))
	w = outcome.New(writerClient, s, db, logger, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	rename := func(from, to string) {
		t.Helper()
		if _, err := db.Exec(context.Background(), `ALTER TABLE `+pgx.Identifier{db.Schema, from}.Sanitize()+` RENAME TO `+to); err != nil {
			t.Fatal(err)
		}
	}
	rename("jobs", "jobs_away")
	return w, func() { rename("jobs_away", "jobs") }
}

// SerializeWithin waits for a batch in flight, here held up by a transaction that locks its
// job's row, and runs after the batch has reported; a shorter wait gives up and runs beside
// the batch.
func TestSerializeWithinWaitsForABatchInFlightUpToItsBound(t *testing.T) {
	t.Parallel()
	db, s, jobs := claimed(t, 1)
	ctx := context.Background()
	reported := make(chan struct{})
	w := outcome.New(writerClient, s, db, quiet, func([]store.Outcome, store.Skipped) { close(reported) })
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- w.Run(runCtx) }()
	defer func() { cancel(); <-done }()

	locker, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Rollback(ctx)
	if _, err := locker.Exec(ctx, "SELECT FROM "+pgx.Identifier{db.Schema, "jobs"}.Sanitize()+" WHERE id = $1 FOR UPDATE", jobs[0].ID); err != nil {
		t.Fatal(err)
	}
	w.Add(outcomeFor(0, jobs[0], time.Now()))
	relaytest.WaitFor(t, waitTimeout, "the batch to wait for the locked row", func() bool {
		var waiting bool
		err := db.QueryRow(ctx, `SELECT count(*) > 0 FROM pg_stat_activity
			WHERE wait_event_type = 'Lock' AND query LIKE '%' || $1 || '%jobs%'`, db.Schema).Scan(&waiting)
		return err == nil && waiting
	})

	long := make(chan bool, 1) // whether the batch had reported when fn ran
	go w.SerializeWithin(time.Hour, func() {
		select {
		case <-reported:
			long <- true
		default:
			long <- false
		}
	})
	short := make(chan struct{})
	go w.SerializeWithin(10*time.Millisecond, func() { close(short) })
	select {
	case <-short:
	case <-time.After(waitTimeout):
		t.Fatal("a SerializeWithin of 10 ms still waited for the batch")
	}
	select {
	case <-long:
		t.Fatal("a SerializeWithin of an hour ran while the batch was in flight")
	default:
	}

	if err := locker.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case after := <-long:
		if !after {
			t.Error("a SerializeWithin of an hour ran before the batch had reported")
		}
	case <-time.After(waitTimeout):
		t.Fatal("a SerializeWithin of an hour never ran after the batch")
	}
}
