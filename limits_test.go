package relay_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// Tests of the queue semantics of migration 003: job priorities, cluster-wide limits on a
// queue's running jobs, and pausing a queue for the whole cluster. Every client polls once
// an hour (b.client), so anything picked up promptly was woken by a NOTIFY; timeouts are
// failure bounds only.

// The kinds of the pause tests and of the jobs that probe whether a queue is worked.
var (
	pausableKind = relay.NewKind[numArgs]("pausable")
	probeKind    = relay.NewKind[numArgs]("probe")
)

// ---------------------------------------------------------------------------------------
// Priorities

// Jobs waiting before a one-worker client starts run strictly by priority — over more
// than four levels, negative ones and both ends of the range included — and first in,
// first out within a priority, whether enqueued one by one or in one EnqueueMany batch.
// Both claim paths keep the order: a plain queue, and one with a global limit.
func TestPriorityOrderAcrossLevelsFIFOWithin(t *testing.T) {
	t.Parallel()
	for _, limited := range []bool{false, true} {
		name := "plain"
		if limited {
			name = "limited"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testPriorityOrder(t, limited)
		})
	}
}

func testPriorityOrder(t *testing.T, limited bool) {
	kind := relay.NewKind[numArgs]("prio")
	b := setup(t)
	const queue = "prio"
	if limited {
		b.setQueue(queue, relay.QueueSettings{GlobalLimit: 2})
	}

	type planned struct {
		id   int64
		prio int
		seq  int // enqueue order
	}
	var jobs []planned
	levels := []int{0, -1, relay.MaxPriority, 3, relay.MinPriority, 100, 1, -7, 2, 4}
	seq := 0
	for round := range 3 {
		for i := range levels { // a different interleaving each round
			p := levels[(i*7+round*3)%len(levels)]
			id := enqueue(b, kind, numArgs{N: seq}, relay.Queue(queue), relay.Priority(p))
			jobs = append(jobs, planned{id, p, seq})
			seq++
		}
	}
	// One batch: all its jobs share run_at, so id (the batch's order) decides ties.
	batchPrios := []int{2, -1, 2, relay.MaxPriority, 0, -1}
	specs := make([]relay.JobSpec, len(batchPrios))
	for i, p := range batchPrios {
		specs[i] = kind.Job(numArgs{N: seq + i}, relay.Priority(p))
	}
	ids := b.enqueueMany(specs, relay.Queue(queue))
	for i, p := range batchPrios {
		jobs = append(jobs, planned{ids[i], p, seq})
		seq++
	}
	for _, j := range jobs {
		if rec := b.record(j.id); rec.Priority != j.prio {
			t.Fatalf("job %d stored with priority %d, want %d", j.id, rec.Priority, j.prio)
		}
	}

	want := slices.Clone(jobs)
	sort.SliceStable(want, func(x, y int) bool {
		if want[x].prio != want[y].prio {
			return want[x].prio > want[y].prio
		}
		return want[x].seq < want[y].seq
	})

	c := b.client(relay.Config{Queues: queues(1, queue)})
	ran := make(chan int64, len(jobs))
	handle(t, c, kind, reportIDs(ran))
	b.start(c)

	got := make([]int64, 0, len(jobs))
	for i := range jobs {
		got = append(got, recv(t, ran, fmt.Sprintf("job %d of %d to run", i+1, len(jobs))))
	}
	wantIDs := make([]int64, len(want))
	prioOf := map[int64]int{}
	for i, j := range want {
		wantIDs[i] = j.id
		prioOf[j.id] = j.prio
	}
	if !slices.Equal(got, wantIDs) {
		describe := func(ids []int64) string {
			s := ""
			for _, id := range ids {
				s += fmt.Sprintf(" %d(p%d)", id, prioOf[id])
			}
			return s
		}
		t.Fatalf("run order (id(priority)):\n got %s\nwant %s", describe(got), describe(wantIDs))
	}
	b.waitState("succeeded", wantIDs...)
}

// A high-priority job enqueued while a one-worker client works through a low-priority
// backlog starts as soon as the worker is free, before the rest of the backlog: the
// claim cursor, which has moved past the jobs already claimed, is moved back for it. A
// job of the backlog's own priority still waits its turn at the end.
func TestPriorityHighJobOvertakesBacklogBeingWorked(t *testing.T) {
	t.Parallel()
	workKind := relay.NewKind[numArgs]("work")
	b := setup(t)
	const queue, probe = "backlog", "probe"

	var backlog []int64
	for i := range 8 {
		backlog = append(backlog, enqueue(b, workKind, numArgs{N: i}, relay.Queue(queue), relay.Priority(-3)))
	}

	c := b.client(relay.Config{Queues: map[string]relay.QueueConfig{
		queue: {Workers: 1}, probe: {Workers: 1},
	}})
	started := make(chan int64, 20)
	release := make(chan struct{}, 20)
	quit := b.gate()
	handle(t, c, workKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started <- job.ID
		select {
		case <-release:
			return nil
		case <-quit.ch:
			return errors.New("test over")
		}
	})
	probed := make(chan int64, 1)
	handle(t, c, probeKind, reportIDs(probed))
	b.start(c)

	// Work through the first three jobs of the backlog; the third keeps running.
	for i := range 3 {
		if got := recv(t, started, fmt.Sprintf("backlog job %d to start", i+1)); got != backlog[i] {
			t.Fatalf("backlog job %d: started job %d, want %d", i+1, got, backlog[i])
		}
		if i < 2 {
			release <- struct{}{}
		}
	}
	same := enqueue(b, workKind, numArgs{N: 100}, relay.Queue(queue), relay.Priority(-3))
	high := enqueue(b, workKind, numArgs{N: 101}, relay.Queue(queue)) // default priority 0
	higher := enqueue(b, workKind, numArgs{N: 102}, relay.Queue(queue), relay.Priority(2))
	// Notifications reach the client in commit order and are routed one at a time, so
	// once the probe (enqueued last, on another queue) runs, the client has taken in the
	// wakeups of the three jobs above.
	probeID := enqueue(b, probeKind, numArgs{}, relay.Queue(probe))
	if got := recv(t, probed, "the probe job to run"); got != probeID {
		t.Fatalf("probe ran job %d, want %d", got, probeID)
	}
	release <- struct{}{} // the third backlog job ends: the worker is free

	want := append([]int64{higher, high}, backlog[3:]...)
	want = append(want, same)
	for i, id := range want {
		got := recv(t, started, fmt.Sprintf("job %d of %d after the overtake to start", i+1, len(want)))
		if got != id {
			t.Fatalf("after the third backlog job, start %d was job %d, want %d (want order %v: priority 2, priority 0, the rest of the priority -3 backlog, then the priority -3 job enqueued last)",
				i+1, got, id, want)
		}
		release <- struct{}{}
	}
	b.waitState("succeeded", append(backlog, same, high, higher)...)
}

// Priorities outside MinPriority..MaxPriority are refused before anything is inserted,
// by Enqueue and by EnqueueMany (which then inserts none of its batch).
func TestPriorityOutOfRangeIsInvalidJob(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("prio")
	b := setup(t)
	ctx := context.Background()
	for _, p := range []int{relay.MaxPriority + 1, relay.MinPriority - 1, 1 << 20, -1 << 20} {
		_, err := relay.Enqueue(ctx, b, kind, numArgs{}, relay.Priority(p), relay.Schema(b.Schema))
		if !errors.Is(err, relay.ErrInvalidJob) {
			t.Errorf("Enqueue with Priority(%d): err = %v, want ErrInvalidJob", p, err)
		}
	}
	_, err := relay.EnqueueMany(ctx, b, []relay.JobSpec{
		kind.Job(numArgs{N: 1}, relay.Priority(5)),
		kind.Job(numArgs{N: 2}, relay.Priority(relay.MaxPriority+1)),
	}, relay.Schema(b.Schema))
	if !errors.Is(err, relay.ErrInvalidJob) {
		t.Errorf("EnqueueMany with one Priority(MaxPriority+1): err = %v, want ErrInvalidJob", err)
	}
	if n := b.count(""); n != 0 {
		t.Errorf("%d jobs inserted by refused enqueues, want 0", n)
	}
	// Both ends of the range are valid.
	for _, p := range []int{relay.MinPriority, relay.MaxPriority} {
		id := enqueue(b, kind, numArgs{}, relay.Priority(p))
		if rec := b.record(id); rec.Priority != p {
			t.Errorf("Priority(%d) stored as %d", p, rec.Priority)
		}
	}
}

// ---------------------------------------------------------------------------------------
// Cluster-wide limits

// Three clients with ten workers each work a queue with a global limit: the jobs of the
// queue running at once, counted by the handlers across the three clients, reach the
// limit and never exceed it, and GetQueue never reports more running than the limit.
func TestGlobalLimitHeldAcrossClients(t *testing.T) {
	t.Parallel()
	for _, limit := range []int{1, 3} {
		t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
			t.Parallel()
			testGlobalLimitHeld(t, limit)
		})
	}
}

func testGlobalLimitHeld(t *testing.T, limit int) {
	kind := relay.NewKind[numArgs]("limited")
	b := setup(t)
	ctx := context.Background()
	const queue, total, clients = "limited", 60, 3
	b.setQueue(queue, relay.QueueSettings{GlobalLimit: limit})

	var (
		running     gauge
		reached     = make(chan struct{})
		reachedOnce sync.Once
		ran         = make(chan int64, total*2)
		perClient   [clients]atomic.Int64
		quit        = b.gate()
	)
	handler := func(client int) relay.HandlerFunc[numArgs] {
		return func(ctx context.Context, job *relay.Job[numArgs]) error {
			n := running.enter()
			defer running.leave()
			if n >= int64(limit) {
				reachedOnce.Do(func() { close(reached) })
			}
			// The first jobs wait until the limit is reached, so that it certainly is; the
			// handlers then overlap a little, so that the clients contend for the slots.
			select {
			case <-reached:
			case <-quit.ch:
				return errors.New("test over")
			}
			time.Sleep(2 * time.Millisecond)
			perClient[client].Add(1)
			ran <- job.ID
			return nil
		}
	}
	for i := range clients {
		c := b.client(relay.Config{Queues: queues(10, queue)})
		handle(t, c, kind, handler(i))
		b.startOn(c, b.NewPool(t)) // a pool each, like separate nodes
	}

	// Watch the queue's running count from the database throughout.
	var maxRunning atomic.Int64
	watchDone := make(chan struct{})
	var watch sync.WaitGroup
	stopWatch := sync.OnceFunc(func() { close(watchDone); watch.Wait() })
	watch.Go(func() {
		for {
			select {
			case <-watchDone:
				return
			default:
			}
			info, err := relay.GetQueue(ctx, b, queue, relay.Schema(b.Schema))
			if err != nil {
				t.Errorf("GetQueue: %v", err)
				return
			}
			if r := int64(info.Running); r > maxRunning.Load() {
				maxRunning.Store(r)
			}
		}
	})
	defer stopWatch()

	ids := b.enqueueN(kind, total, relay.Queue(queue))

	seen := map[int64]int{}
	for i := range total {
		id := recv(t, ran,
			fmt.Sprintf("job %d of %d to run (peak concurrency so far %d, limit %d)", i+1, total, running.max.Load(), limit))
		seen[id]++
	}
	b.waitState("succeeded", ids...)
	stopWatch()

	if got := running.max.Load(); got != int64(limit) {
		t.Errorf("at most %d jobs of the queue ran at once across %d clients; want exactly the global limit %d", got, clients, limit)
	}
	if got := maxRunning.Load(); got > int64(limit) {
		t.Errorf("GetQueue reported %d running jobs; the global limit is %d", got, limit)
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("job %d ran %d times, want once", id, seen[id])
		}
	}
	noMore(t, ran, "run after every job had run once")
	info := b.queue(queue)
	if info.GlobalLimit != limit || info.Running != 0 || info.Paused {
		t.Errorf("GetQueue after the run = %+v; want GlobalLimit %d, Running 0, not paused", info, limit)
	}
	t.Logf("limit %d: jobs run per client %d/%d/%d; peak handlers %d, peak running in the table %d",
		limit, perClient[0].Load(), perClient[1].Load(), perClient[2].Load(), running.max.Load(), maxRunning.Load())
}

// With a global limit of 1, client A holds the only slot and is then cut off (its lease
// renewals stop, its handler never returns). Client B cannot run the queue's next job
// while A's lease lasts, and runs it once the lease is lost: the rescue frees the slot
// and wakes B. When the next job starts, the held job is no longer running.
func TestGlobalLimitSlotFreedWhenLeaseLost(t *testing.T) {
	t.Parallel()
	holdKind := relay.NewKind[numArgs]("hold")
	nextKind := relay.NewKind[numArgs]("next")
	b := setup(t)
	const queue = "one-at-a-time"
	b.setQueue(queue, relay.QueueSettings{GlobalLimit: 1})

	clientA := b.client(withShortLeases(relay.Config{Queues: queues(5, queue)}))
	heldStarted := make(chan int64, 5)
	releaseA := b.gate()
	handle(t, clientA, holdKind, func(_ context.Context, job *relay.Job[numArgs]) error {
		heldStarted <- job.ID
		releaseA.wait() // ignores its context: a partitioned node that keeps working
		return nil
	})
	b.startOn(clientA, b.NewPool(t))

	// MaxAttempts(1): once rescued the held job fails for good rather than run again.
	held := enqueue(b, holdKind, numArgs{N: 1}, relay.Queue(queue), relay.MaxAttempts(1))
	if got := recv(t, heldStarted, "the held job to start on client A"); got != held {
		t.Fatalf("client A started job %d, want %d", got, held)
	}
	relay.PauseLeaseRenewal(clientA, true)

	// B handles only the next job's kind, so only B can take the freed slot.
	clientB := b.client(withShortLeases(relay.Config{Queues: queues(5, queue)}))
	type nextStart struct {
		id        int64
		heldState relay.JobState // the held job's state as the next job starts
		err       error
	}
	nextRan := make(chan nextStart, 5)
	handle(t, clientB, nextKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		rec, err := relay.GetJob(ctx, b, held, relay.Schema(b.Schema))
		if err != nil {
			nextRan <- nextStart{job.ID, "", err}
			return nil
		}
		nextRan <- nextStart{job.ID, rec.State, nil}
		return nil
	})
	b.startOn(clientB, b.NewPool(t))
	next := enqueue(b, nextKind, numArgs{N: 2}, relay.Queue(queue))

	got := recv(t, nextRan, "client B to run the next job once A's lease on the held job was lost")
	switch {
	case got.id != next:
		t.Fatalf("client B ran job %d, want %d", got.id, next)
	case got.err != nil:
		t.Fatalf("GetJob of the held job as the next job started: %v", got.err)
	case got.heldState != relay.StateFailed:
		t.Errorf("the next job started while the held job was %s: two jobs ran at once under a global limit of 1; want the held job rescued (failed) first",
			got.heldState)
	}
	heldRec := b.record(held)
	if heldRec.State != relay.StateFailed || len(heldRec.Attempts) != 1 || heldRec.Attempts[0].Reason != relay.ReasonLostLease {
		t.Fatalf("held job is %s with history %s; want failed with one lost-lease attempt",
			heldRec.State, historyString(heldRec.Attempts))
	}
	nextRec := b.waitRecord(next, relay.StateSucceeded)
	if nextRec.Attempt != 1 {
		t.Errorf("the next job took %d attempts (%s), want 1", nextRec.Attempt, historyString(nextRec.Attempts))
	}

	// A's handler returns late: its outcome is not written and the slot stays free.
	releaseA.open()
	relaytest.WaitFor(t, waitTimeout, "the queue to have no running job", func() bool {
		return b.queue(queue).Running == 0
	})
	if rec := b.record(held); rec.State != relay.StateFailed {
		t.Errorf("the held job became %s after A's handler returned late; want it to stay failed", rec.State)
	}
	noMore(t, heldStarted, "second start of the held job")
}

// SetQueue, PauseQueue and ResumeQueue are read back by GetQueue: a queue never set up is
// plain, settings persist, pausing keeps settings (and the first pause time), changing
// settings keeps the pause, and invalid settings are refused.
func TestGlobalLimitAndPauseReportedByGetQueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	s := relay.Schema(b.Schema)

	plain := relay.QueueInfo{QueueSettings: relay.QueueSettings{OnFailure: relay.BlockOnFailure}}
	if got := b.queue("never-set"); got != plain {
		t.Errorf("GetQueue of a queue never set up = %+v, want %+v", got, plain)
	}

	b.setQueue("q", relay.QueueSettings{GlobalLimit: 2})
	want := relay.QueueInfo{QueueSettings: relay.QueueSettings{GlobalLimit: 2, OnFailure: relay.BlockOnFailure}}
	if got := b.queue("q"); got != want {
		t.Errorf("after SetQueue(GlobalLimit 2): GetQueue = %+v, want %+v", got, want)
	}

	before := b.now()
	b.pauseQueue("q")
	after := b.now()
	got := b.queue("q")
	if !got.Paused || got.PausedAt.Before(before) || got.PausedAt.After(after) || got.QueueSettings != want.QueueSettings {
		t.Errorf("after PauseQueue: GetQueue = %+v; want paused at a time in [%v, %v], settings %+v", got, before, after, want.QueueSettings)
	}
	pausedAt := got.PausedAt

	b.pauseQueue("q") // pausing again keeps the first pause
	b.setQueue("q", relay.QueueSettings{GlobalLimit: 5, OnFailure: relay.MoveOnAfterFailure})
	got = b.queue("q")
	want = relay.QueueInfo{
		QueueSettings: relay.QueueSettings{GlobalLimit: 5, OnFailure: relay.MoveOnAfterFailure},
		Paused:        true, PausedAt: pausedAt,
	}
	if got.QueueSettings != want.QueueSettings || !got.Paused || !got.PausedAt.Equal(pausedAt) {
		t.Errorf("after a second pause and SetQueue: GetQueue = %+v, want %+v", got, want)
	}

	b.resumeQueue("q")
	want = relay.QueueInfo{QueueSettings: relay.QueueSettings{GlobalLimit: 5, OnFailure: relay.MoveOnAfterFailure}}
	if got := b.queue("q"); got != want {
		t.Errorf("after ResumeQueue: GetQueue = %+v, want %+v", got, want)
	}

	b.setQueue("q", relay.QueueSettings{}) // zero: no limit
	if got := b.queue("q"); got != plain {
		t.Errorf("after SetQueue(zero settings): GetQueue = %+v, want %+v", got, plain)
	}

	b.setQueue("o", relay.QueueSettings{Ordered: true, GlobalLimit: 3})
	want = relay.QueueInfo{QueueSettings: relay.QueueSettings{Ordered: true, GlobalLimit: 3, OnFailure: relay.BlockOnFailure}}
	if got := b.queue("o"); got != want {
		t.Errorf("after SetQueue(Ordered, GlobalLimit 3): GetQueue = %+v, want %+v", got, want)
	}

	// A queue can be paused before it has settings or jobs.
	b.pauseQueue("fresh")
	if got := b.queue("fresh"); !got.Paused || got.QueueSettings != plain.QueueSettings {
		t.Errorf("GetQueue of a queue only paused = %+v; want paused with plain settings", got)
	}

	if err := relay.SetQueue(ctx, b, "q", relay.QueueSettings{GlobalLimit: -1}, s); !errors.Is(err, relay.ErrInvalidConfig) {
		t.Errorf("SetQueue(GlobalLimit -1): err = %v, want ErrInvalidConfig", err)
	}
	if err := relay.SetQueue(ctx, b, "q", relay.QueueSettings{OnFailure: "shrug"}, s); !errors.Is(err, relay.ErrInvalidConfig) {
		t.Errorf("SetQueue(OnFailure \"shrug\"): err = %v, want ErrInvalidConfig", err)
	}
	if err := relay.SetQueue(ctx, b, "", relay.QueueSettings{GlobalLimit: 1}, s); err == nil {
		t.Error("SetQueue of an empty queue name succeeded")
	}
	if err := relay.PauseQueue(ctx, b, "", s); err == nil {
		t.Error("PauseQueue of an empty queue name succeeded")
	}
	if got := b.queue("q"); got != plain {
		t.Errorf("refused SetQueue calls changed the queue: GetQueue = %+v, want %+v", got, plain)
	}
}

// ---------------------------------------------------------------------------------------
// Pause

// pauseRig runs clients working a queue that gets paused ("pq", kind "pausable") and a
// probe queue ("uq", kind "probe", one worker per client) that is never paused.
type pauseRig struct {
	b       *bundle
	app     string     // application_name of the clients' connections
	started chan int64 // ids of pausable jobs as their handlers start
	release *gate
	quit    *gate // opened when the test ends, before the clients stop
	// paused is set while the test holds the queue paused; a pausable job (N > 0) whose
	// handler starts meanwhile is recorded in early.
	paused atomic.Bool
	mu     sync.Mutex
	early  []int64
	// Each probe waits until probeWant of them run at once.
	probes       chan int64
	probeRunning int
	probeWant    int
	probeAll     chan struct{}
}

const pausedQueue, probeQueue = "pq", "uq"

func newPauseRig(b *bundle) *pauseRig {
	return &pauseRig{
		b: b, app: "relay-limits-test-" + randomHex(),
		started: make(chan int64, 20), release: b.gate(), quit: b.gate(),
		probes: make(chan int64, 10),
	}
}

// startClient starts a client of r's queues on a pool of its own. A pausable job with
// N 0 blocks until r.release is opened; probes report and wait at the barrier.
func (r *pauseRig) startClient() *relay.Client {
	t := r.b.t
	t.Helper()
	c := r.b.client(relay.Config{Queues: map[string]relay.QueueConfig{
		pausedQueue: {Workers: 4}, probeQueue: {Workers: 1},
	}})
	handle(t, c, pausableKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		if job.Args.N != 0 && r.paused.Load() {
			r.mu.Lock()
			r.early = append(r.early, job.ID)
			r.mu.Unlock()
		}
		r.started <- job.ID
		if job.Args.N == 0 {
			r.release.wait()
		}
		return nil
	})
	handle(t, c, probeKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		r.probes <- job.ID
		r.mu.Lock()
		r.probeRunning++
		if r.probeRunning == r.probeWant {
			close(r.probeAll)
		}
		all := r.probeAll
		r.mu.Unlock()
		select {
		case <-all:
			return nil
		case <-r.quit.ch:
			return errors.New("test over")
		}
	})
	r.b.startOn(c, r.b.pool(func(cfg *pgxpool.Config) { cfg.ConnConfig.RuntimeParams["application_name"] = r.app }))
	return c
}

// pause pauses the queue and records that it is paused.
func (r *pauseRig) pause() {
	r.b.t.Helper()
	r.b.pauseQueue(pausedQueue)
	r.paused.Store(true)
}

// resume resumes the queue, failing the test if a job of it started while it was paused.
func (r *pauseRig) resume() {
	r.b.t.Helper()
	r.paused.Store(false)
	r.mu.Lock()
	early := slices.Clone(r.early)
	r.mu.Unlock()
	if len(early) > 0 {
		r.b.t.Errorf("jobs %v of the paused queue started while it was paused", early)
	}
	r.b.resumeQueue(pausedQueue)
}

// probe enqueues n probe jobs after everything enqueued so far and waits until all n
// run at once — with one probe worker per client, on n different clients. Wakeups reach
// each client in commit order and are routed one at a time, so those clients have by then
// handed the wakeups of every job enqueued before the probes to their dispatchers. Then it
// waits until the clients' database sessions are all idle, so that a claim those wakeups
// started has ended too (a claim of a paused queue starting a job shows up in r.early).
func (r *pauseRig) probe(n int) {
	b, t := r.b, r.b.t
	t.Helper()
	r.mu.Lock()
	r.probeRunning, r.probeWant, r.probeAll = 0, n, make(chan struct{})
	r.mu.Unlock()
	for i := range n {
		enqueue(b, probeKind, numArgs{N: i}, relay.Queue(probeQueue))
	}
	for i := range n {
		recv(t, r.probes, fmt.Sprintf("probe job %d of %d to run", i+1, n))
	}
	relaytest.WaitFor(t, waitTimeout, "the clients' sessions to be idle", func() bool {
		var busy int
		err := b.QueryRow(context.Background(),
			`SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'`, r.app).Scan(&busy)
		if err != nil {
			t.Fatal(err)
		}
		return busy == 0
	})
}

// Pausing a queue while two clients work it lets the running job finish (its handler
// is released only after PauseQueue returned) and starts no job of the queue on either
// client — though both clients took in the later jobs' wakeups — until ResumeQueue, when
// they all run. Both claim paths are covered: a plain queue and one with a global limit.
func TestPauseRunningJobsFinishNewOnesWait(t *testing.T) {
	t.Parallel()
	for _, limited := range []bool{false, true} {
		name := "plain"
		if limited {
			name = "limited"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setup(t)
			if limited {
				b.setQueue(pausedQueue, relay.QueueSettings{GlobalLimit: 5})
			}
			r := newPauseRig(b)
			for range 2 {
				r.startClient()
			}

			running := enqueue(b, pausableKind, numArgs{N: 0}, relay.Queue(pausedQueue))
			if got := recv(t, r.started, "the first job to start"); got != running {
				t.Fatalf("started job %d, want %d", got, running)
			}
			r.pause()
			if info := b.queue(pausedQueue); !info.Paused || info.Running != 1 {
				t.Errorf("GetQueue after the pause = %+v; want paused with 1 running", info)
			}
			r.release.open()
			rec := b.waitRecord(running, relay.StateSucceeded)
			if rec.Attempt != 1 || len(rec.Attempts) != 1 {
				t.Errorf("the job running at the pause took %d attempts (%s); want it to finish in its first",
					rec.Attempt, historyString(rec.Attempts))
			}

			var waiting []int64
			for i := range 4 {
				waiting = append(waiting, enqueue(b, pausableKind, numArgs{N: i + 1}, relay.Queue(pausedQueue)))
			}
			r.probe(2)
			noMore(t, r.started, "start of a job of the paused queue")
			b.expectPending("while the queue is paused", waiting...)
			if info := b.queue(pausedQueue); !info.Paused || info.Running != 0 {
				t.Errorf("GetQueue while paused = %+v; want paused with none running", info)
			}

			r.resume()
			var got []int64
			for i := range waiting {
				got = append(got, recv(t, r.started, fmt.Sprintf("job %d of %d to start after the resume", i+1, len(waiting))))
			}
			slices.Sort(got)
			if !slices.Equal(got, waiting) {
				t.Errorf("after the resume, jobs %v started; want %v", got, waiting)
			}
			b.waitState("succeeded", waiting...)
			if info := b.queue(pausedQueue); info.Paused {
				t.Errorf("GetQueue after the resume = %+v; want not paused", info)
			}
		})
	}
}

// A pause is stored, not held by the clients: after the client that saw it stops, a new
// client starts no job of the paused queue — neither one enqueued while no client ran
// nor one enqueued after it started — until the queue is resumed.
func TestPauseSurvivesClientRestart(t *testing.T) {
	t.Parallel()
	b := setup(t)
	r := newPauseRig(b)
	first := r.startClient()
	before := enqueue(b, pausableKind, numArgs{N: 1}, relay.Queue(pausedQueue))
	if got := recv(t, r.started, "a job to run before the pause"); got != before {
		t.Fatalf("started job %d, want %d", got, before)
	}
	b.waitRecord(before, relay.StateSucceeded)
	r.pause()
	b.stop(first)

	whileDown := enqueue(b, pausableKind, numArgs{N: 2}, relay.Queue(pausedQueue))
	r.startClient()
	afterStart := enqueue(b, pausableKind, numArgs{N: 3}, relay.Queue(pausedQueue))
	r.probe(1)
	noMore(t, r.started, "start of a job of the paused queue on the restarted client")
	b.expectPending("while the queue is paused, after the restart", whileDown, afterStart)
	if info := b.queue(pausedQueue); !info.Paused {
		t.Errorf("GetQueue after the restart = %+v; want paused", info)
	}

	r.resume()
	got := []int64{
		recv(t, r.started, "a paused job to start after the resume"),
		recv(t, r.started, "the other paused job to start after the resume"),
	}
	slices.Sort(got)
	if want := []int64{whileDown, afterStart}; !slices.Equal(got, want) {
		t.Errorf("after the resume, jobs %v started; want %v", got, want)
	}
	b.waitState("succeeded", whileDown, afterStart)
}
