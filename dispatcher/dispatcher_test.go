package dispatcher_test

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay"
	"github.com/relayq/relay/dispatcher"
	"github.com/relayq/relay/internal/loadavg"
	"github.com/relayq/relay/internal/store"
	"github.com/relayq/relay/relaytest"
)

func TestMain(m *testing.M) { relaytest.Main(m) }

const waitTimeout = 15 * time.Second

// countingDB is the test's real pool, counting the claims the dispatcher runs on it (its
// only statements) and announcing each claim once it has returned. It can
// also hold one claim in flight, after the database has run it, until the test lets it go.
type countingDB struct {
	*relaytest.DB
	claims  atomic.Int64
	sent    atomic.Int64 // when the last claim was sent, in Unix ns
	claimed chan struct{}
	hold    atomic.Pointer[func()] // called once, when the next claim's first row has arrived
}

// lastSent is when the dispatcher sent its last claim: read by a job's run, the claim
// that took the job, for a bound on the dispatcher's timing that the database's load on a
// busy machine does not move.
func (c *countingDB) lastSent() time.Time { return time.Unix(0, c.sent.Load()) }

func (c *countingDB) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	c.claims.Add(1)
	c.sent.Store(time.Now().UnixNano())
	rows, err := c.DB.Query(ctx, sql, args...)
	select {
	case c.claimed <- struct{}{}:
	default:
	}
	if hold := c.hold.Swap(nil); hold != nil && err == nil {
		return &heldRows{Rows: rows, hold: *hold}, nil
	}
	return rows, err
}

// SendBatch is Query for the claims, each of which is a batch: its setting, then the claim.
// The claim is announced once its result has arrived (or the batch is closed without it).
func (c *countingDB) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	c.claims.Add(1)
	c.sent.Store(time.Now().UnixNano())
	return &countedBatch{BatchResults: c.DB.SendBatch(ctx, b), db: c, hold: c.hold.Swap(nil)}
}

type countedBatch struct {
	pgx.BatchResults
	db        *countingDB
	hold      *func()
	announced bool
}

func (b *countedBatch) announce() {
	if b.announced {
		return
	}
	b.announced = true
	select {
	case b.db.claimed <- struct{}{}:
	default:
	}
}

func (b *countedBatch) Query() (pgx.Rows, error) {
	rows, err := b.BatchResults.Query()
	b.announce()
	if b.hold != nil && err == nil {
		return &heldRows{Rows: rows, hold: *b.hold}, nil
	}
	return rows, err
}

func (b *countedBatch) Close() error {
	b.announce()
	return b.BatchResults.Close()
}

// heldRows calls hold once its first row has arrived: the claim has run in the database and
// its snapshot is taken, but the dispatcher has not seen the result yet.
type heldRows struct {
	pgx.Rows
	once sync.Once
	hold func()
}

func (r *heldRows) Next() bool {
	ok := r.Rows.Next()
	r.once.Do(r.hold)
	return ok
}

// harness runs one dispatcher for queue "default" of a new schema; run is the job runner.
type harness struct {
	t     *testing.T
	db    *countingDB
	d     *dispatcher.Dispatcher
	stop  context.CancelFunc
	done  chan error
	store *store.Store
}

func newHarness(t *testing.T, workers int, poll time.Duration, run func(*dispatcher.Job)) *harness {
	t.Helper()
	return newHarnessWithRoom(t, workers, poll, run, nil)
}

// newHarnessWithRoom is newHarness with a Config.Room.
func newHarnessWithRoom(t *testing.T, workers int, poll time.Duration, run func(*dispatcher.Job), room func() int) *harness {
	t.Helper()
	return newHarnessWith(t, workers, poll, run, func(c *dispatcher.Config) { c.Room = room })
}

// newHarnessWith is newHarness with the dispatcher's Config changed by configure.
func newHarnessWith(t *testing.T, workers int, poll time.Duration, run func(*dispatcher.Job), configure func(*dispatcher.Config)) *harness {
	t.Helper()
	db := relaytest.NewDB(t)
	s, err := store.For(db.Schema)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, db: &countingDB{DB: db, claimed: make(chan struct{}, 1)}, store: s}
	claimer := s.Client(h.db, store.ClientInfo{
		ID: "dispatcher-test", Lease: time.Minute, Kinds: []string{"job"}, Attempts: []int32{relay.DefaultMaxAttempts},
	})
	cfg := dispatcher.Config{Claimer: claimer, Queue: relay.DefaultQueue, Workers: workers, Poll: poll, Run: run}
	configure(&cfg)
	h.d = dispatcher.New(cfg)
	return h
}

// start runs the dispatcher until the test ends.
func (h *harness) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.stop, h.done = cancel, make(chan error, 1)
	go func() { h.done <- h.d.Run(ctx) }()
	h.t.Cleanup(func() {
		h.halt()
		h.d.Wait()
	})
}

// halt stops claiming and waits for Run to return.
func (h *harness) halt() {
	h.stop()
	select {
	case err := <-h.done:
		if !errors.Is(err, context.Canceled) {
			h.t.Errorf("Run returned %v, want context.Canceled", err)
		}
		h.done <- err // for a later halt
	case <-time.After(waitTimeout):
		h.t.Fatal("Run did not return after its context was cancelled")
	}
}

// enqueue inserts n jobs of kind "job" (no client listens: their NOTIFY goes nowhere).
func (h *harness) enqueue(n int, opts ...relay.EnqueueOption) []int64 {
	h.t.Helper()
	specs := make([]relay.JobSpec, n)
	for i := range specs {
		specs[i] = relay.NewKind[int]("job").Job(i)
	}
	ids, err := relay.EnqueueMany(context.Background(), h.db.DB, specs, append(opts, relay.Schema(h.db.Schema))...)
	if err != nil {
		h.t.Fatal(err)
	}
	return ids
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	return relaytest.Receive(t, ch, waitTimeout, what)
}

// runCounter counts runs per job id.
type runCounter struct {
	mu   sync.Mutex
	runs map[int64]int
	ran  chan int64
}

func newRunCounter(buffer int) *runCounter {
	return &runCounter{runs: map[int64]int{}, ran: make(chan int64, buffer)}
}

func (r *runCounter) run(j *dispatcher.Job) {
	r.mu.Lock()
	r.runs[j.ID]++
	r.mu.Unlock()
	r.ran <- j.ID
}

func (r *runCounter) assertOnce(t *testing.T, ids []int64) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if r.runs[id] != 1 {
			t.Errorf("job %d ran %d times, want once", id, r.runs[id])
		}
	}
	if len(r.runs) != len(ids) {
		t.Errorf("%d distinct jobs ran, want %d", len(r.runs), len(ids))
	}
}

// Any number of Wake calls before the dispatcher gets to them coalesce into one claim.
func TestWakesCoalesceIntoOneClaim(t *testing.T) {
	t.Parallel()
	r := newRunCounter(10)
	h := newHarness(t, 10, time.Hour, r.run)
	ids := h.enqueue(5)
	var wg sync.WaitGroup
	for range 10 {
		wg.Go(func() {
			for range 100 {
				h.d.Wake()
			}
		})
	}
	wg.Wait()
	h.start()
	for range ids {
		recv(t, r.ran, "the jobs to run")
	}
	h.halt()
	h.d.Wait()
	r.assertOnce(t, ids)
	if got := h.db.claims.Load(); got != 1 {
		t.Errorf("1000 wakes before Run made %d claims, want 1", got)
	}
}

// A storm of concurrent wakes while jobs arrive and run makes far fewer claims than wakes,
// and every job still runs exactly once.
func TestWakeStormRunsEveryJobOnce(t *testing.T) {
	t.Parallel()
	const n, wakers, wakesEach = 300, 4, 2000
	r := newRunCounter(n)
	h := newHarness(t, 8, time.Hour, r.run)
	h.start()
	var wg sync.WaitGroup
	for range wakers {
		wg.Go(func() {
			for range wakesEach {
				h.d.Wake()
			}
		})
	}
	var ids []int64
	for range 3 {
		ids = append(ids, h.enqueue(n/3)...)
		h.d.Wake()
	}
	wg.Wait()
	for range ids {
		recv(t, r.ran, "every job to run")
	}
	h.halt()
	h.d.Wait()
	r.assertOnce(t, ids)
	claims := h.db.claims.Load()
	t.Logf("%d wakes made %d claims for %d jobs", wakers*wakesEach+3, claims, n)
	if claims >= wakers*wakesEach/2 {
		t.Errorf("%d wakes made %d claims: wakes do not coalesce", wakers*wakesEach, claims)
	}
}

// Notify of a job due later makes the dispatcher claim at that time: not before, and
// promptly then. A later Notify does not postpone an earlier one; a Notify due now (zero or
// negative delay) claims at once.
func TestNotifyWakesAtTheRightTime(t *testing.T) {
	t.Parallel()
	type run struct {
		at, claimSent time.Time
		runAt         time.Time
	}
	runs := make(chan run, 10)
	var h *harness
	h = newHarness(t, 4, time.Hour, func(j *dispatcher.Job) { runs <- run{time.Now(), h.db.lastSent(), j.RunAt} })
	h.start()
	recv(t, h.db.claimed, "the start-up claim") // finds nothing: the dispatcher is idle now

	stalls := loadavg.MeasureStalls()
	at := time.Now().Add(300 * time.Millisecond)
	h.enqueue(1, relay.RunAt(at))
	later := at.Add(time.Hour)
	h.d.Notify(time.Hour, dispatcher.Cursor{RunAt: later})
	h.d.Notify(time.Until(at), dispatcher.Cursor{RunAt: at.Truncate(time.Microsecond)})
	h.d.Notify(2*time.Hour, dispatcher.Cursor{RunAt: later})
	r := recv(t, runs, "the scheduled job")
	late := r.at.Sub(r.runAt)
	t.Logf("claimed %v after its run_at", late)
	if late < 0 || r.at.Before(at.Truncate(time.Microsecond)) {
		t.Errorf("job ran %v before its run_at", -late)
	}
	// The claim that took it went out within 50 ms of its run_at on a machine with a core to
	// spare; one that stalls this test's goroutines (other tests, -race) delays the
	// dispatcher's timer as much. How long the database then took is not the dispatcher's.
	if sentLate, stalled := r.claimSent.Sub(r.runAt), stalls.Stop(); sentLate > loadavg.Scaled(50*time.Millisecond)+stalled {
		t.Errorf("the claim that took the job went out %v after its run_at; want within 50ms (×%.1f for the machine's load, + %v stalled)", sentLate, loadavg.Overload(), stalled)
	}

	for _, delay := range []time.Duration{0, -time.Second} {
		id := h.enqueue(1)[0]
		stalls := loadavg.MeasureStalls()
		woken := time.Now()
		h.d.Notify(delay, dispatcher.Cursor{RunAt: jobRunAt(t, h, id)})
		// At once: a claim's round trip, however loaded the machine (as above).
		if took, stalled := recv(t, runs, "a due job").at.Sub(woken), stalls.Stop(); took > loadavg.Scaled(100*time.Millisecond)+stalled {
			t.Errorf("Notify(%v) ran a due job after %v, want at once (within 100ms ×%.1f for the machine's load, + %v stalled)",
				delay, took, loadavg.Overload(), stalled)
		}
	}
}

// jobRunAt is the stored run_at of job id, as a NOTIFY would carry it.
func jobRunAt(t *testing.T, h *harness, id int64) time.Time {
	t.Helper()
	for _, j := range relaytest.Jobs(t, h.db.DB) {
		if j.ID == id {
			return j.RunAt
		}
	}
	t.Fatalf("no job %d", id)
	panic("unreachable")
}

// A backup's wakeup (another client was woken for the job first) claims a moment after the
// job is due, not at once; and a claim made meanwhile for any reason stands for it, so that
// a client that is its own target's backup claims once, not twice.
func TestBackupClaimsLaterUnlessAClaimStandsForIt(t *testing.T) {
	t.Parallel()
	type run struct{ claimSent time.Time }
	runs := make(chan run, 10)
	var h *harness
	h = newHarness(t, 4, time.Hour, func(*dispatcher.Job) { runs <- run{h.db.lastSent()} })
	h.start()
	recv(t, h.db.claimed, "the start-up claim")

	stalls := loadavg.MeasureStalls()
	id := h.enqueue(1)[0]
	woken := time.Now()
	h.d.Backup(0, dispatcher.Cursor{RunAt: jobRunAt(t, h, id)})
	r := recv(t, runs, "the backup's job")
	after := r.claimSent.Sub(woken)
	if after < dispatcher.BackupDelay {
		t.Errorf("the backup claimed %v after its wakeup, before the %v it leaves the client woken first", after, dispatcher.BackupDelay)
	}
	if bound := dispatcher.BackupDelay + loadavg.Scaled(50*time.Millisecond) + stalls.Stop(); after > bound {
		t.Errorf("the backup claimed %v after its wakeup, want within %v", after, bound)
	}

	before := h.db.claims.Load()
	id = h.enqueue(1)[0]
	at := dispatcher.Cursor{RunAt: jobRunAt(t, h, id)}
	h.d.Backup(0, at)
	h.d.Notify(0, at)
	recv(t, runs, "the notified job")
	// Negative: no claim is due any more, so the window only needs to outlast the backup's.
	time.Sleep(4 * dispatcher.BackupDelay)
	if got := h.db.claims.Load() - before; got != 1 {
		t.Errorf("a backup and a wakeup for one job made %d claims, want 1: the wakeup's claim stands for the backup's", got)
	}
}

// A job whose NOTIFY arrives while a claim is in flight is claimed promptly even when it
// sorts before the jobs that claim took, as happens when a producer's transaction began
// before another's but committed after it. The claim cannot have seen the job (its snapshot
// predates the commit), so the dispatcher must not move its cursor past the job.
func TestJobNotifiedDuringClaimIsNotPassedOver(t *testing.T) {
	t.Parallel()
	runs := make(chan int64, 10)
	h := newHarness(t, 10, time.Hour, func(j *dispatcher.Job) { runs <- j.ID })
	h.start()
	recv(t, h.db.claimed, "the start-up claim")

	now := time.Now().Truncate(time.Microsecond)
	first := h.enqueue(1, relay.RunAt(now.Add(-time.Second)))[0]
	held, resume := make(chan struct{}), make(chan struct{})
	hold := func() { close(held); <-resume }
	h.db.hold.Store(&hold)
	h.d.Notify(0, dispatcher.Cursor{RunAt: now.Add(-time.Second)}) // as the listener would for the first job
	recv(t, held, "the claim of the first job to run")

	// The claim has run; before the dispatcher sees its result, an older job commits and
	// its NOTIFY arrives.
	second := h.enqueue(1, relay.RunAt(now.Add(-2*time.Second)))[0]
	h.d.Notify(0, dispatcher.Cursor{RunAt: now.Add(-2 * time.Second)})
	close(resume)

	got := map[int64]bool{}
	for range 2 {
		select {
		case id := <-runs:
			got[id] = true
		case <-time.After(2 * time.Second):
			t.Fatalf("only jobs %v ran within 2s of their NOTIFY; job %d (notified during the claim of job %d) was passed over and waits for the poll (an hour)", got, second, first)
		}
	}
	if !got[first] || !got[second] {
		t.Fatalf("ran %v, want jobs %d and %d", got, first, second)
	}
}

// The dispatcher arms its own timer from what its claim reports about the next scheduled
// job, and the fallback poll finds jobs that nobody announced.
func TestDispatcherFindsScheduledJobsAndPolls(t *testing.T) {
	t.Parallel()
	type run struct{ at, claimSent time.Time }
	runs := make(chan run, 10)
	var h *harness
	// An hour's poll: only the timer can claim the scheduled job.
	h = newHarness(t, 4, time.Hour, func(j *dispatcher.Job) { runs <- run{time.Now(), h.db.lastSent()} })
	stalls := loadavg.MeasureStalls()
	at := time.Now().Add(300 * time.Millisecond)
	h.enqueue(1, relay.RunAt(at))
	h.start()
	got := recv(t, runs, "the scheduled job")
	// As in TestNotifyWakesAtTheRightTime: the claim that took it, within 50 ms.
	if sentLate, stalled := got.claimSent.Sub(at), stalls.Stop(); got.at.Before(at) || sentLate > loadavg.Scaled(50*time.Millisecond)+stalled {
		t.Errorf("scheduled job ran %v after its time, its claim sent %v after; want the claim within 50ms (×%.1f for the machine's load, + %v stalled)",
			got.at.Sub(at), sentLate, loadavg.Overload(), stalled)
	}
	// Nobody wakes the dispatcher for this one: the 100ms poll must find it.
	polled := make(chan time.Time, 1)
	p := newHarness(t, 4, 100*time.Millisecond, func(j *dispatcher.Job) { polled <- time.Now() })
	p.start()
	recv(t, p.db.claimed, "the start-up claim")
	enqueued := time.Now()
	p.enqueue(1)
	if took := recv(t, polled, "the polled job").Sub(enqueued); took > time.Second {
		t.Errorf("polled job ran after %v with a 100ms poll", took)
	}
}

// A dispatcher that may retire (a group's queue) is kept by a scheduled job due within
// its Horizon, which it runs on time, but not by one due later: it retires once idle, as a
// client's look for queues with work starts it again when the job comes near.
func TestOnlyAJobWithinTheHorizonKeepsTheDispatcher(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		in     time.Duration
		retire bool
	}{{"due within the horizon", 300 * time.Millisecond, false}, {"due beyond it", time.Hour, true}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ran := make(chan int64, 1)
			retired := make(chan struct{}, 1)
			h := newHarnessWith(t, 1, time.Hour, func(j *dispatcher.Job) { ran <- j.ID }, func(cfg *dispatcher.Config) {
				cfg.IdleAfter, cfg.Horizon = 20*time.Millisecond, 10*time.Second
				cfg.Retire = func() bool {
					retired <- struct{}{}
					return true
				}
			})
			ids := h.enqueue(1, relay.RunIn(c.in))
			done := make(chan error, 1)
			go func() { done <- h.d.Run(context.Background()) }()
			if c.retire {
				recv(t, retired, "the dispatcher to retire, its only job an hour ahead")
				if err := recv(t, done, "Run to return"); err != nil {
					t.Fatalf("Run returned %v, want nil once retired", err)
				}
				return
			}
			// Retired before it, the dispatcher would never run it.
			if got := recv(t, ran, "the job due within the horizon"); got != ids[0] {
				t.Fatalf("ran job %d, want %d", got, ids[0])
			}
			recv(t, done, "Run to return, retired once idle after the job")
		})
	}
}

// The dispatcher never runs more jobs at once than Workers, fills every worker, and claims
// more as slots free up. Run returning leaves running jobs alone; Wait waits for them.
func TestDispatcherRespectsWorkers(t *testing.T) {
	t.Parallel()
	const workers, n = 3, 12
	var running, peak atomic.Int64
	started := make(chan int64, n)
	release := make(chan struct{})
	h := newHarness(t, workers, time.Hour, func(j *dispatcher.Job) {
		now := running.Add(1)
		for {
			p := peak.Load()
			if now <= p || peak.CompareAndSwap(p, now) {
				break
			}
		}
		started <- j.ID
		<-release
		running.Add(-1)
	})
	ids := h.enqueue(n)
	h.start()
	seen := map[int64]int{}
	for range workers {
		seen[recv(t, started, "the workers to fill")]++
	}
	if got := h.d.Running(); got != workers {
		t.Errorf("Running() = %d with every worker busy, want %d", got, workers)
	}
	for range n - workers - 1 {
		release <- struct{}{}
		seen[recv(t, started, "a freed slot to take the next job")]++
	}
	// Stop claiming with the last job and two others still running.
	release <- struct{}{}
	seen[recv(t, started, "the last job")]++
	h.halt()
	if got := h.d.Running(); got != workers {
		t.Errorf("Running() = %d after Run returned, want the %d jobs still running", got, workers)
	}
	waited := make(chan struct{})
	go func() { h.d.Wait(); close(waited) }()
	for range workers {
		select {
		case <-waited:
			t.Fatal("Wait returned while jobs were still running")
		default:
		}
		release <- struct{}{}
	}
	recv(t, waited, "Wait to return once the jobs finished")
	if got := h.d.Running(); got != 0 {
		t.Errorf("Running() = %d after Wait, want 0", got)
	}
	if got := peak.Load(); got != workers {
		t.Errorf("ran up to %d jobs at once, want exactly Workers = %d", got, workers)
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("job %d ran %d times, want once", id, seen[id])
		}
	}
	// Every job was claimed by this dispatcher, and only once.
	for _, j := range relaytest.Jobs(t, h.db.DB) {
		if j.State != "running" || j.Attempt != 1 || j.AttemptedBy != "dispatcher-test" {
			t.Errorf("job %d is %s, attempt %d by %q; want running, attempt 1 by dispatcher-test", j.ID, j.State, j.Attempt, j.AttemptedBy)
		}
	}
}

// Room bounds each claim below the free workers (the client's outcome backlog is full, say)
// and Nudge lets the dispatcher claim again once it has grown.
func TestRoomBoundsClaimsAndNudgeResumesThem(t *testing.T) {
	t.Parallel()
	var room atomic.Int64
	room.Store(2)
	started := make(chan int64, 10)
	release := make(chan struct{})
	h := newHarnessWithRoom(t, 10, time.Hour, func(j *dispatcher.Job) {
		started <- j.ID
		<-release
	}, func() int { return int(room.Load()) })
	defer close(release)
	h.enqueue(5)
	h.start()

	recv(t, started, "a first job")
	// One claim started the first job; had it ignored Room it would have taken all five.
	if n := h.d.Running(); n != 2 {
		t.Fatalf("Running() = %d after the first claim, want 2 (Room)", n)
	}
	recv(t, started, "the second job")

	room.Store(10)
	h.d.Nudge()
	for range 3 {
		recv(t, started, "a job claimed after Nudge")
	}
	if n := h.d.Running(); n != 5 {
		t.Fatalf("Running() = %d after Nudge, want 5", n)
	}
}

// After claims have failed for a while, the dispatcher pauses for seconds before the next;
// wakeups do not end that pause (a claim that keeps failing is not retried for every job
// enqueued), but Retry — the database answers again — ends it at once.
func TestRetryEndsThePauseAfterFailedClaims(t *testing.T) {
	t.Parallel()
	started := make(chan int64, 10)
	h := newHarness(t, 10, time.Hour, func(j *dispatcher.Job) { started <- j.ID })
	ids := h.enqueue(1)
	// Every claim fails while the jobs table is away.
	jobs, away := h.store.Table("jobs"), pgx.Identifier{h.db.Schema, "jobs_away"}.Sanitize()
	if _, err := h.db.Exec(context.Background(), `ALTER TABLE `+jobs+` RENAME TO jobs_away`); err != nil {
		t.Fatal(err)
	}
	h.start()
	// Pauses double from 10 ms (±20 %): after the eighth failure the next lasts over 1 s.
	for range 8 {
		recv(t, h.db.claimed, "a failed claim")
	}
	failedAt := time.Now()
	if _, err := h.db.Exec(context.Background(), `ALTER TABLE `+away+` RENAME TO jobs`); err != nil {
		t.Fatal(err)
	}
	h.d.Wake()
	h.d.Notify(0, dispatcher.Cursor{})
	select {
	case <-h.db.claimed:
		t.Fatalf("a wakeup ended the pause after a failed claim (%v after it)", time.Since(failedAt))
	case <-time.After(300 * time.Millisecond):
	}
	h.d.Retry()
	retriedAt := time.Now()
	if got := recv(t, started, "the job after Retry"); got != ids[0] {
		t.Fatalf("started job %d, want %d", got, ids[0])
	}
	if took := time.Since(retriedAt); took > 600*time.Millisecond {
		t.Errorf("the job started %v after Retry; want at once (the pause had over a second to go)", took)
	}
}

// Through a backlog of short jobs, each claim waits for the jobs of the one before to end
// and takes nearly every slot. Claiming as soon as the first slot frees makes claims
// alternate between a few jobs and most of the slots, averaging half of Workers.
func TestBacklogOfShortJobsIsClaimedInFullBatches(t *testing.T) {
	t.Parallel()
	const workers, n = 50, 2000
	r := newRunCounter(n)
	h := newHarness(t, workers, time.Hour, r.run)
	ids := h.enqueue(n)
	h.start()
	for range ids {
		recv(t, r.ran, "the backlog to run")
	}
	h.halt()
	h.d.Wait()
	r.assertOnce(t, ids)
	claims := h.db.claims.Load()
	if avg := float64(n) / float64(claims); avg < 0.75*workers {
		t.Errorf("%d jobs took %d claims, %.1f jobs each; want at least %.1f (3/4 of Workers = %d)",
			n, claims, avg, 0.75*workers, workers)
	}
}

// goroutineID is the id of the calling goroutine, from its stack header.
func goroutineID() string {
	buf := make([]byte, 64)
	buf = buf[:runtime.Stack(buf, false)]
	id, _, _ := strings.Cut(strings.TrimPrefix(string(buf), "goroutine "), " ")
	return id
}

// Jobs claimed one after another run on the same worker goroutine, whose stack has grown
// already, rather than each on a new one.
func TestWorkerGoroutinesAreReused(t *testing.T) {
	t.Parallel()
	const n = 20
	var mu sync.Mutex
	used := map[string]int{}
	ran := make(chan struct{}, n)
	h := newHarness(t, 1, time.Hour, func(*dispatcher.Job) {
		mu.Lock()
		used[goroutineID()]++
		mu.Unlock()
		ran <- struct{}{}
	})
	h.enqueue(n)
	h.start()
	for range n {
		recv(t, ran, "the jobs to run")
	}
	mu.Lock()
	defer mu.Unlock()
	// A claim hands its job to the worker that just finished, which waits for it well
	// before the claim's round trip ends; one miss now and then spawns a new worker.
	if len(used) > n/2 {
		t.Errorf("%d jobs run one at a time used %d goroutines, want them reused", n, len(used))
	}
}

// Idle workers exit once Run has returned, without waiting out their linger.
func TestIdleWorkersExitWhenRunReturns(t *testing.T) {
	// Not parallel: it counts the worker goroutines of the whole process.
	r := newRunCounter(40)
	h := newHarness(t, 10, time.Hour, r.run)
	ids := h.enqueue(40)
	h.start()
	for range ids {
		recv(t, r.ran, "the jobs to run")
	}
	h.halt()
	h.d.Wait()
	deadline := time.Now().Add(time.Second) // well under workerLinger
	for workers := workerGoroutines(); workers > 0; workers = workerGoroutines() {
		if time.Now().After(deadline) {
			t.Fatalf("%d worker goroutines still waiting for jobs a second after Run returned", workers)
		}
		runtime.Gosched()
	}
}

func workerGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "dispatcher.(*Dispatcher).work(")
}

// A job handed off to the client (TakeHandOff) starts on a free worker, and is given back
// when every worker is busy. One handed off during a claim waits for the claim, which may
// take the free workers, but not for long: a claim stuck waiting (for a connection, say)
// has it given back.
func TestHandOffStartsOnAFreeWorkerOrIsGivenBack(t *testing.T) {
	t.Parallel()
	runs := make(chan int64, 10)
	release := make(chan struct{})
	h := newHarness(t, 1, time.Hour, func(j *dispatcher.Job) {
		runs <- j.ID
		if j.ID == 1_000_001 {
			<-release
		}
	})
	h.start()
	recv(t, h.db.claimed, "the start-up claim")
	givenBack := make(chan int64, 10)
	giveBack := func(j *dispatcher.Job) { givenBack <- j.ID }

	h.d.TakeHandOff(&dispatcher.Job{ID: 1_000_001, Queue: relay.DefaultQueue, Kind: "job"}, giveBack)
	if got := recv(t, runs, "the job handed off to the idle dispatcher"); got != 1_000_001 {
		t.Fatalf("job %d ran, want the one handed off", got)
	}
	h.d.TakeHandOff(&dispatcher.Job{ID: 1_000_002, Queue: relay.DefaultQueue, Kind: "job"}, giveBack)
	if got := recv(t, givenBack, "the job handed off while the only worker is busy"); got != 1_000_002 {
		t.Fatalf("job %d was given back, want 1000002", got)
	}
	close(release)

	// A claim held in flight, after the database ran it, far longer than maxDefer.
	held, resume := make(chan struct{}), make(chan struct{})
	var resumeOnce sync.Once
	resumeClaim := func() { resumeOnce.Do(func() { close(resume) }) }
	t.Cleanup(resumeClaim) // before the harness stops: a failed test must not leave the claim held
	hold := func() { close(held); <-resume }
	h.db.hold.Store(&hold)
	queued := h.enqueue(1)[0]
	h.d.Wake()
	recv(t, held, "the claim to be held")
	h.d.TakeHandOff(&dispatcher.Job{ID: 1_000_003, Queue: relay.DefaultQueue, Kind: "job"}, giveBack)
	if got := recv(t, givenBack, "the job handed off during a claim that does not return"); got != 1_000_003 {
		t.Fatalf("job %d was given back, want 1000003", got)
	}
	resumeClaim()
	if got := recv(t, runs, "the job the claim took"); got != queued {
		t.Fatalf("job %d ran, want %d", got, queued)
	}
	select {
	case id := <-runs:
		t.Fatalf("job %d ran as well; the one given back must not", id)
	case <-time.After(50 * time.Millisecond):
	}
}
