package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/loadavg"
	"github.com/relayq/relay/relaytest"
)

// Enqueue stores the job as asked, and EnqueueMany returns the ids in the order of its jobs.
func TestEnqueueStoresTheJob(t *testing.T) {
	t.Parallel()
	orderKind := relay.NewKind[numArgs]("order")
	storeKind := relay.NewKind[numArgs]("store")
	b := setup(t)
	ctx := context.Background()
	runAt := time.Now().Add(time.Hour).Truncate(time.Microsecond)
	id := enqueue(b, storeKind, numArgs{N: 42}, relay.Queue("elsewhere"), relay.MaxAttempts(7), relay.RunAt(runAt))
	j := b.stored(id)
	if j.Kind != "store" || j.Queue != "elsewhere" || j.MaxAttempts != 7 || j.State != "pending" || j.Attempt != 0 || !j.RunAt.Equal(runAt) {
		t.Errorf("stored %+v, want kind store, queue elsewhere, 7 max attempts, pending, attempt 0, run at %v", j, runAt)
	}
	var args numArgs
	if err := json.Unmarshal(j.Args, &args); err != nil || args.N != 42 {
		t.Errorf("stored args %s (%v), want N=42", j.Args, err)
	}
	// Without MaxAttempts the job takes its kind's default when first claimed.
	if d := b.stored(enqueue(b, storeKind, numArgs{})); d.Queue != relay.DefaultQueue || d.MaxAttempts != 0 {
		t.Errorf("defaults: queue %q, max attempts %d; want %q and 0 (unset)", d.Queue, d.MaxAttempts, relay.DefaultQueue)
	}

	const batch = 50
	ids := b.enqueueN(orderKind, batch, relay.MaxAttempts(3))
	stored := map[int64]relaytest.StoredJob{}
	for _, j := range relaytest.Jobs(t, b.DB, "order") {
		stored[j.ID] = j
	}
	if len(ids) != batch || len(stored) != batch {
		t.Fatalf("EnqueueMany returned %d ids and stored %d jobs, want %d", len(ids), len(stored), batch)
	}
	for i, id := range ids {
		var a numArgs
		_ = json.Unmarshal(stored[id].Args, &a)
		if a.N != i || stored[id].MaxAttempts != 3 {
			t.Errorf("id %d (position %d) holds N=%d with %d max attempts, want N=%d with 3", id, i, a.N, stored[id].MaxAttempts, i)
		}
	}

	if ids, err := relay.EnqueueMany(ctx, b, nil, relay.Schema(b.Schema)); err != nil || ids != nil {
		t.Errorf("EnqueueMany of nothing: %v, %v; want nil, nil", ids, err)
	}
}

// Jobs that cannot be stored are rejected with the documented error and nothing is
// inserted: not by Enqueue, and not by an EnqueueMany holding one bad job among good ones.
func TestEnqueueRejectsInvalidJobsAndInsertsNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	long := strings.Repeat("k", relay.MaxNameLen+1)

	type badArgs struct {
		C chan int
	}
	// A Kind[any] takes args of every type, so one table holds them all.
	k := relay.NewKind[any]("k")
	cases := []struct {
		name string
		kind relay.Kind[any]
		args any
		opts []relay.EnqueueOption
		want error
	}{
		{"chan field", k, badArgs{C: make(chan int)}, nil, relay.ErrEncodeArgs},
		{"func args", k, func() {}, nil, relay.ErrEncodeArgs},
		{"infinite float", k, map[string]float64{"x": math.Inf(1)}, nil, relay.ErrEncodeArgs},
		{"NaN", k, math.NaN(), nil, relay.ErrEncodeArgs},
		{"zero Kind (empty name)", relay.Kind[any]{}, numArgs{}, nil, relay.ErrInvalidJob},
		{"over-long kind", relay.NewKind[any](long), numArgs{}, nil, relay.ErrInvalidJob},
		{"empty queue", k, numArgs{}, []relay.EnqueueOption{relay.Queue("")}, relay.ErrInvalidJob},
		{"over-long queue", k, numArgs{}, []relay.EnqueueOption{relay.Queue(long)}, relay.ErrInvalidJob},
		{"MaxAttempts(0)", k, numArgs{}, []relay.EnqueueOption{relay.MaxAttempts(0)}, relay.ErrInvalidJob},
		{"MaxAttempts(-1)", k, numArgs{}, []relay.EnqueueOption{relay.MaxAttempts(-1)}, relay.ErrInvalidJob},
	}
	good := relay.NewKind[numArgs]("good").Job(numArgs{N: 1})
	for _, tc := range cases {
		opts := append([]relay.EnqueueOption{relay.Schema(b.Schema)}, tc.opts...)
		if id, err := relay.Enqueue(ctx, b, tc.kind, tc.args, opts...); !errors.Is(err, tc.want) || id != 0 {
			t.Errorf("%s: Enqueue returned %d, %v; want 0 and an error wrapping %v", tc.name, id, err, tc.want)
		}
		bad := tc.kind.Job(tc.args, tc.opts...)
		if ids, err := relay.EnqueueMany(ctx, b, []relay.JobSpec{good, bad, good}, relay.Schema(b.Schema)); !errors.Is(err, tc.want) || ids != nil {
			t.Errorf("%s: EnqueueMany returned %v, %v; want no ids and an error wrapping %v", tc.name, ids, err, tc.want)
		}
	}
	// A per-job Schema would split one statement over two schemas.
	misplaced := k.Job(numArgs{}, relay.Schema(b.Schema+"x"))
	if _, err := relay.EnqueueMany(ctx, b, []relay.JobSpec{good, misplaced}, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrInvalidJob) {
		t.Errorf("EnqueueMany with a per-job Schema: %v, want ErrInvalidJob", err)
	}
	if _, err := relay.Enqueue(ctx, b, k, nil, relay.Schema("")); !errors.Is(err, relay.ErrInvalidSchema) {
		t.Errorf("Enqueue into an empty schema name: %v, want ErrInvalidSchema", err)
	}
	if n := b.count(""); n != 0 {
		t.Fatalf("rejected jobs left %d rows: %+v", n, relaytest.Jobs(t, b.DB))
	}

	// The limits are inclusive: a name of MaxNameLen bytes is fine.
	limit := strings.Repeat("q", relay.MaxNameLen)
	if _, err := relay.Enqueue(ctx, b, relay.NewKind[any](limit), nil, relay.Schema(b.Schema), relay.Queue(limit), relay.MaxAttempts(1)); err != nil {
		t.Errorf("Enqueue with %d-byte kind and queue: %v", relay.MaxNameLen, err)
	}
}

// A job from Enqueue with a transaction runs only once the transaction commits.
func TestEnqueueInTransactionIsInvisibleUntilCommit(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("later")
	b := setup(t)
	ctx := context.Background()
	c := b.client(relay.Config{})
	ran := make(chan int64, 1)
	handle(t, c, kind, reportIDs(ran))
	b.start(c)
	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	id, err := relay.Enqueue(ctx, tx, kind, numArgs{}, relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	// A job enqueued (and committed) by someone else meanwhile runs while ours is open.
	other := enqueue(b, kind, numArgs{})
	if got := recv(t, ran, "the other job"); got != other {
		t.Fatalf("ran job %d before its transaction committed; want %d", got, other)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := recv(t, ran, "the committed job"); got != id {
		t.Fatalf("ran job %d, want %d", got, id)
	}
}

// ---------------------------------------------------------------------------------------
// Scheduled jobs. The poll is one hour, so a job that runs on time was woken by its
// scheduling NOTIFY (or the claim's report of the next due job), not by polling.

// scheduledRun is one handler start of a scheduled job.
type scheduledRun struct {
	id          int64
	at          time.Time // when the handler started
	scheduledAt time.Time // the job's run_at as stored
}

// schedKind is the kind of the scheduling tests' jobs.
var schedKind = relay.NewKind[numArgs]("sched")

// scheduledClient returns a client whose schedKind handler reports on runs.
func scheduledClient(b *bundle) (*relay.Client, chan scheduledRun) {
	runs := make(chan scheduledRun, 10)
	c := b.client(relay.Config{})
	handle(b.t, c, schedKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		runs <- scheduledRun{id: job.ID, at: time.Now(), scheduledAt: job.ScheduledAt}
		return nil
	})
	return c, runs
}

// makeIdle runs one job through c and waits for its outcome, so that c's dispatcher has
// made its start-up claim and is waiting for a wakeup.
func makeIdle(b *bundle, runs chan scheduledRun) {
	b.t.Helper()
	id := enqueue(b, schedKind, numArgs{})
	if r := recv(b.t, runs, "the warm-up job"); r.id != id {
		b.t.Fatalf("warm-up ran job %d, want %d", r.id, id)
	}
	b.waitState("succeeded", id)
}

// assertOnTime checks that run r of job id started no earlier than want and within 50 ms
// after it.
func assertOnTime(t *testing.T, r scheduledRun, id int64, want time.Time) {
	t.Helper()
	if r.id != id {
		t.Fatalf("job %d ran when job %d was due", r.id, id)
	}
	if d := r.scheduledAt.Sub(want); d < -time.Microsecond || d > time.Microsecond {
		t.Errorf("job %d is scheduled at %v, want %v", id, r.scheduledAt, want)
	}
	late := r.at.Sub(r.scheduledAt)
	t.Logf("job %d started %v after its run_at", id, late)
	switch {
	case late < 0:
		t.Errorf("job %d started %v before its run_at", id, -late)
	case late > loadavg.Scaled(50*time.Millisecond):
		t.Errorf("job %d started %v after its run_at; want within 50ms (×%.1f for the machine's load)", id, late, loadavg.Overload())
	}
}

// A job scheduled on an idle client runs at its time, whether given by RunAt or RunIn.
func TestScheduledJobRunsOnTimeOnIdleClient(t *testing.T) {
	// Not parallel: timing bounds are only meaningful without the load of the other tests.
	b := setup(t)
	c, runs := scheduledClient(b)
	b.start(c)
	makeIdle(b, runs)

	at := time.Now().Add(300 * time.Millisecond)
	id := enqueue(b, schedKind, numArgs{N: 1}, relay.RunAt(at))
	// A claim made for a job due now, while the scheduled one waits, leaves it alone and
	// keeps its timer.
	now := enqueue(b, schedKind, numArgs{N: 0})
	if r := recv(t, runs, "the job due now"); r.id != now {
		t.Fatalf("job %d ran before the job %d that was due now", r.id, now)
	}
	assertOnTime(t, recv(t, runs, "the RunAt job"), id, at)

	before := time.Now()
	id = enqueue(b, schedKind, numArgs{N: 2}, relay.RunIn(300*time.Millisecond))
	after := time.Now()
	r := recv(t, runs, "the RunIn job")
	assertOnTime(t, r, id, r.scheduledAt)
	if r.scheduledAt.Before(before.Add(300*time.Millisecond).Truncate(time.Microsecond)) || r.scheduledAt.After(after.Add(300*time.Millisecond)) {
		t.Errorf("RunIn(300ms) stored run_at %v, want 300ms after the call (%v..%v)", r.scheduledAt, before, after)
	}

	// A run_at in the past means now.
	id, committedAt := enqueueTx(b, schedKind, numArgs{N: 3}, relay.RunAt(time.Now().Add(-time.Hour)))
	if r := recv(t, runs, "the job scheduled in the past"); r.id != id || r.at.Sub(committedAt) > 100*time.Millisecond {
		t.Errorf("job %d scheduled in the past ran as %d %v after commit; want at once", id, r.id, r.at.Sub(committedAt))
	}
}

// Several scheduled jobs, enqueued out of order, each run at their own time: a later job
// does not delay an earlier one, and an earlier one's run re-arms the timer for the next.
func TestScheduledJobsEnqueuedOutOfOrderEachRunOnTime(t *testing.T) {
	b := setup(t)
	c, runs := scheduledClient(b)
	b.start(c)
	makeIdle(b, runs)

	now := time.Now()
	times := []time.Time{now.Add(500 * time.Millisecond), now.Add(250 * time.Millisecond), now.Add(750 * time.Millisecond)}
	ids := make([]int64, len(times))
	for i, at := range times {
		ids[i] = enqueue(b, schedKind, numArgs{N: i}, relay.RunAt(at))
	}
	for _, i := range []int{1, 0, 2} {
		assertOnTime(t, recv(t, runs, "a scheduled job"), ids[i], times[i])
	}

	// The same with EnqueueMany, whose single NOTIFY names only the earliest job.
	now = time.Now()
	times = []time.Time{now.Add(400 * time.Millisecond), now.Add(200 * time.Millisecond)}
	specs := []relay.JobSpec{
		schedKind.Job(numArgs{}, relay.RunAt(times[0])),
		schedKind.Job(numArgs{}, relay.RunAt(times[1])),
	}
	ids = b.enqueueMany(specs)
	assertOnTime(t, recv(t, runs, "the earlier job of the batch"), ids[1], times[1])
	assertOnTime(t, recv(t, runs, "the later job of the batch"), ids[0], times[0])
}

// A job scheduled before the client started runs at its time: the client learns of it
// from its start-up claim.
func TestScheduledJobEnqueuedBeforeStartRunsOnTime(t *testing.T) {
	b := setup(t)
	at := time.Now().Add(400 * time.Millisecond)
	id := enqueue(b, schedKind, numArgs{}, relay.RunAt(at))
	c, runs := scheduledClient(b)
	b.start(c)
	assertOnTime(t, recv(t, runs, "the job scheduled before Start"), id, at)
}
