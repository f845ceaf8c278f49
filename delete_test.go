package relay_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay"
)

// DeleteJob deletes a job in any state but running: a running job is refused with
// ErrJobRunning and runs on to its outcome; once cancelled, it can be deleted.
func TestDeleteJob(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	schema := relay.Schema(b.Schema)

	deletable := map[string]int64{
		"pending":   enqueue(b, testKind, numArgs{}, relay.Queue("idle")),
		"scheduled": enqueue(b, testKind, numArgs{}, relay.Queue("idle"), relay.RunIn(time.Hour)),
	}
	for _, st := range []relay.JobState{relay.StateSucceeded, relay.StateFailed, relay.StateCancelled} {
		id := enqueue(b, testKind, numArgs{}, relay.Queue("idle"))
		b.finish(id, st, time.Minute)
		deletable[string(st)] = id
	}
	other := enqueue(b, testKind, numArgs{}, relay.Queue("idle"))

	c := b.client(relay.Config{})
	g := b.gate()
	started := make(chan int64, 2)
	ended := make(chan error, 2)
	handle(t, c, testKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started <- job.ID
		select {
		case <-g.ch:
		case <-ctx.Done():
			ended <- context.Cause(ctx)
			return ctx.Err()
		}
		return nil
	})
	b.start(c)

	for state, id := range deletable {
		if err := relay.DeleteJob(ctx, b, id, schema); err != nil {
			t.Errorf("DeleteJob of a %s job: %v", state, err)
		}
		if _, err := relay.GetJob(ctx, b, id, schema); !errors.Is(err, relay.ErrJobNotFound) {
			t.Errorf("GetJob of the deleted %s job = %v, want ErrJobNotFound", state, err)
		}
	}
	if err := relay.DeleteJob(ctx, b, deletable["pending"], schema); !errors.Is(err, relay.ErrJobNotFound) {
		t.Errorf("DeleteJob of a deleted job = %v, want ErrJobNotFound", err)
	}
	if got := b.record(other).State; got != relay.StatePending {
		t.Errorf("the job left alone is %s", got)
	}

	// Running: refused, and it runs on.
	running := enqueue(b, testKind, numArgs{})
	recv(t, started, "the job to start")
	if err := relay.DeleteJob(ctx, b, running, schema); !errors.Is(err, relay.ErrJobRunning) {
		t.Fatalf("DeleteJob of a running job = %v, want ErrJobRunning", err)
	}
	g.one(t)
	b.waitState(relay.StateSucceeded, running)
	if err := relay.DeleteJob(ctx, b, running, schema); err != nil {
		t.Fatalf("DeleteJob once it succeeded: %v", err)
	}

	// Cancel first, then delete: the handler's context ends with ErrCancelled.
	running = enqueue(b, testKind, numArgs{})
	recv(t, started, "the job to start")
	if err := relay.Cancel(ctx, b, running, schema); err != nil {
		t.Fatal(err)
	}
	if err := relay.DeleteJob(ctx, b, running, schema); err != nil {
		t.Fatalf("DeleteJob of a cancelled job: %v", err)
	}
	if cause := recv(t, ended, "the cancelled handler to end"); !errors.Is(cause, relay.ErrCancelled) {
		t.Errorf("the handler's context ended with %v, want ErrCancelled", cause)
	}

	if err := relay.DeleteJob(ctx, nil, 1); !errors.Is(err, relay.ErrNilDB) {
		t.Errorf("DeleteJob on a nil db = %v, want ErrNilDB", err)
	}
}

// Deleting the failed job that blocks its ordered key lets the next job of the key run at
// once.
func TestDeleteBlockingJobFreesItsKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.setQueue("ordered", relay.QueueSettings{Ordered: true, OnFailure: relay.BlockOnFailure})
	c := b.client(relay.Config{Queues: queues(5, "ordered")})
	ran := make(chan int, 2)
	handle(t, c, testKind, func(_ context.Context, job *relay.Job[numArgs]) error {
		ran <- job.Args.N
		if job.Args.N == 1 {
			return relay.Discard(errors.New("fails for good"))
		}
		return nil
	})
	b.start(c)
	head := enqueue(b, testKind, numArgs{N: 1}, relay.Queue("ordered"), relay.OrderKey("k"))
	next := enqueue(b, testKind, numArgs{N: 2}, relay.Queue("ordered"), relay.OrderKey("k"))
	recv(t, ran, "the head")
	b.waitState(relay.StateFailed, head)
	b.expectPending("behind a blocking head", next)
	// The delete's own wakeup: the clients' dispatchers, idle with the key blocked, would
	// otherwise start the next job only at their next poll. (A new listener may also get
	// notifications sent just before it listened: the wakeup sought is due after the
	// delete began.)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	conn, err := b.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{"relay:" + b.Schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	before := b.now()
	if err := relay.DeleteJob(ctx, b, head, relay.Schema(b.Schema)); err != nil {
		t.Fatal(err)
	}
	for {
		n, err := conn.Conn().WaitForNotification(ctx)
		if err != nil {
			t.Fatalf("no wakeup of queue ordered after the delete: %v", err)
		}
		f := strings.Split(n.Payload, ":") // w:<in>:<at>:<priority>:<queue>
		if len(f) != 5 || f[0] != "w" || f[4] != "ordered" {
			continue
		}
		if at, _ := strconv.ParseInt(f[2], 10, 64); at >= before.UnixMicro() {
			break
		}
	}
	if n := recv(t, ran, "the next job of the key"); n != 2 {
		t.Fatalf("ran job %d, want 2", n)
	}
	b.waitState(relay.StateSucceeded, next)
}

// A bulk delete touches exactly the jobs its filter selects — over several pages — and a
// dry run counts them first and changes nothing. A limit deletes the newest only.
func TestDeleteJobsTouchesExactlyTheMatchingJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	schema := relay.Schema(b.Schema)
	other := relay.NewKind[numArgs]("other")

	// 2,500 jobs match (three pages): failed or succeeded, of kind k, in q1, created over
	// an hour ago. Each other job differs from them in one way.
	matching := b.enqueueN(testKind, 2500, relay.Queue("q1"))
	b.finishAll(matching[:1000], relay.StateSucceeded, 2*time.Hour)
	b.finishAll(matching[1000:], relay.StateFailed, 2*time.Hour)
	var kept []int64
	for range 20 {
		id := enqueue(b, testKind, numArgs{}, relay.Queue("q2")) // another queue
		b.finish(id, relay.StateFailed, 2*time.Hour)
		kept = append(kept, id)
		id = enqueue(b, other, numArgs{}, relay.Queue("q1")) // another kind
		b.finish(id, relay.StateFailed, 2*time.Hour)
		kept = append(kept, id)
		id = enqueue(b, testKind, numArgs{}, relay.Queue("q1")) // another state
		b.finish(id, relay.StateCancelled, 2*time.Hour)
		kept = append(kept, id)
		id = enqueue(b, testKind, numArgs{}, relay.Queue("q1")) // created too recently
		b.finish(id, relay.StateFailed, 0)
		kept = append(kept, id)
		kept = append(kept, enqueue(b, testKind, numArgs{}, relay.Queue("q1"))) // pending
	}
	f := relay.ListFilter{
		Queue: "q1", Kind: testKind.Name(), States: []relay.JobState{relay.StateFailed, relay.StateSucceeded},
		To: b.now().Add(-time.Hour),
	}

	n, err := relay.DeleteJobs(ctx, b, f, relay.DryRun(), schema)
	if err != nil || n != 2500 {
		t.Fatalf("DeleteJobs dry run = %d, %v; want 2500", n, err)
	}
	if got := b.count(""); got != 2500+len(kept) {
		t.Fatalf("a dry run left %d jobs, want all %d", got, 2500+len(kept))
	}
	if n, err := relay.DeleteJobs(ctx, b, f, schema); err != nil || n != 2500 {
		t.Fatalf("DeleteJobs = %d, %v; want 2500", n, err)
	}
	slices.Sort(kept)
	if got := b.jobIDs(); !slices.Equal(got, kept) {
		t.Fatalf("jobs left: %d (%v…), want the %d that do not match", len(got), got[:min(len(got), 5)], len(kept))
	}

	// A limit takes the newest, and a dry run with one counts up to it.
	f = relay.ListFilter{Queue: "q1", States: []relay.JobState{relay.StatePending}, Limit: 5}
	if n, err := relay.DeleteJobs(ctx, b, f, relay.DryRun(), schema); err != nil || n != 5 {
		t.Fatalf("DeleteJobs dry run with Limit 5 = %d, %v", n, err)
	}
	if n, err := relay.DeleteJobs(ctx, b, f, schema); err != nil || n != 5 {
		t.Fatalf("DeleteJobs with Limit 5 = %d, %v", n, err)
	}
	pending := kept[len(kept)-1] // the newest pending job of q1 is the newest job
	if _, err := relay.GetJob(ctx, b, pending, schema); !errors.Is(err, relay.ErrJobNotFound) {
		t.Errorf("the newest pending job is still there (%v)", err)
	}
	if got := b.count(relay.StatePending); got != 15 {
		t.Errorf("%d pending jobs left, want 15", got)
	}
}

// RetryJobs retries the failed and cancelled jobs a filter selects, but those whose unique
// key another job holds; CancelJobs cancels pending, scheduled and running ones, the
// running one's handler included.
func TestRetryJobsAndCancelJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	schema := relay.Schema(b.Schema)

	var retried []int64
	for _, st := range []relay.JobState{relay.StateFailed, relay.StateFailed, relay.StateCancelled} {
		id := enqueue(b, testKind, numArgs{}, relay.Queue("idle"))
		b.finish(id, st, time.Minute)
		retried = append(retried, id)
	}
	held := enqueue(b, testKind, numArgs{}, relay.Queue("idle"), relay.Unique("key"))
	b.finish(held, relay.StateFailed, time.Minute)
	holder := enqueue(b, testKind, numArgs{}, relay.Queue("idle"), relay.Unique("key")) // pending: holds the key
	succeeded := enqueue(b, testKind, numArgs{}, relay.Queue("idle"))
	b.finish(succeeded, relay.StateSucceeded, time.Minute)

	f := relay.ListFilter{Queue: "idle"}
	if n, err := relay.RetryJobs(ctx, b, f, relay.DryRun(), schema); err != nil || n != 4 {
		t.Fatalf("RetryJobs dry run = %d, %v; want 4 (the dry run does not look at unique keys)", n, err)
	}
	if n, err := relay.RetryJobs(ctx, b, f, schema); err != nil || n != 3 {
		t.Fatalf("RetryJobs = %d, %v; want 3", n, err)
	}
	for _, id := range retried {
		if rec := b.record(id); rec.State != relay.StatePending || rec.ScheduledAt.After(b.now()) {
			t.Errorf("retried job %d is %s, due %v; want pending, due now", id, rec.State, rec.ScheduledAt)
		}
	}
	if got := b.record(held).State; got != relay.StateFailed {
		t.Errorf("the job whose key is held is %s, want failed", got)
	}
	if got := b.record(succeeded).State; got != relay.StateSucceeded {
		t.Errorf("the succeeded job is %s", got)
	}

	// Cancel: the pending ones of idle, a scheduled one, and one running on a client.
	scheduled := enqueue(b, testKind, numArgs{}, relay.Queue("idle"), relay.RunIn(time.Hour))
	c := b.client(relay.Config{})
	started, ended := make(chan int64, 1), make(chan error, 1)
	handle(t, c, testKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started <- job.ID
		<-ctx.Done()
		ended <- context.Cause(ctx)
		return ctx.Err()
	})
	b.start(c)
	running := enqueue(b, testKind, numArgs{})
	recv(t, started, "the job to start")
	f = relay.ListFilter{}
	if n, err := relay.CancelJobs(ctx, b, f, schema); err != nil || n != 6 {
		t.Fatalf("CancelJobs = %d, %v; want 6 (3 retried, the key's holder, scheduled, running)", n, err)
	}
	if cause := recv(t, ended, "the running handler to be cancelled"); !errors.Is(cause, relay.ErrCancelled) {
		t.Errorf("the handler's context ended with %v, want ErrCancelled", cause)
	}
	b.waitState(relay.StateCancelled, append(retried, holder, scheduled, running)...)
	if got := b.record(held).State; got != relay.StateFailed {
		t.Errorf("a failed job is %s after CancelJobs", got)
	}
}

// Filters a bulk action cannot serve are refused before anything is sent.
func TestBulkActionsRefuseBadFilters(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	schema := relay.Schema(b.Schema)
	running := relay.ListFilter{States: []relay.JobState{relay.StateRunning}}
	if _, err := relay.DeleteJobs(ctx, b, running, schema); !errors.Is(err, relay.ErrInvalidFilter) || !errors.Is(err, relay.ErrJobRunning) {
		t.Errorf("DeleteJobs of running jobs = %v, want ErrInvalidFilter and ErrJobRunning", err)
	}
	for name, call := range map[string]func() (int64, error){
		"RetryJobs of pending jobs": func() (int64, error) {
			return relay.RetryJobs(ctx, b, relay.ListFilter{States: []relay.JobState{relay.StatePending}}, schema)
		},
		"CancelJobs of succeeded jobs": func() (int64, error) {
			return relay.CancelJobs(ctx, b, relay.ListFilter{States: []relay.JobState{relay.StateSucceeded}}, schema)
		},
		"a negative limit": func() (int64, error) { return relay.DeleteJobs(ctx, b, relay.ListFilter{Limit: -1}, schema) },
		"WithArgs":         func() (int64, error) { return relay.DeleteJobs(ctx, b, relay.ListFilter{WithArgs: true}, schema) },
		"an unknown state": func() (int64, error) {
			return relay.DeleteJobs(ctx, b, relay.ListFilter{States: []relay.JobState{"gone"}}, schema)
		},
	} {
		if _, err := call(); !errors.Is(err, relay.ErrInvalidFilter) {
			t.Errorf("%s = %v, want ErrInvalidFilter", name, err)
		}
	}
	if _, err := relay.RetryJobs(ctx, nil, relay.ListFilter{}); !errors.Is(err, relay.ErrNilDB) {
		t.Errorf("RetryJobs on a nil db = %v, want ErrNilDB", err)
	}
}
