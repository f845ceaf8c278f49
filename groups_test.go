package relay_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// Tests of groups of dynamic queues (Config.Queues keys ending in "*") and of the
// client-wide fair limit (Config.MaxWorkers).

// queueRun is one handler call: the job and its queue.
type queueRun struct {
	id    int64
	queue string
}

// reportRuns is a handler that reports every job it runs on ch.
func reportRuns(ch chan<- queueRun) relay.HandlerFunc[numArgs] {
	return func(_ context.Context, job *relay.Job[numArgs]) error {
		ch <- queueRun{id: job.ID, queue: job.Queue}
		return nil
	}
}

// workedQueues is relay.WorkedQueues(c), sorted.
func workedQueues(c *relay.Client) []string {
	return slices.Sorted(slices.Values(relay.WorkedQueues(c)))
}

// The kinds of the groups tests and of the fair-sharing tests.
var (
	groupKind = relay.NewKind[numArgs]("grp")
	fairKind  = relay.NewKind[numArgs]("fair")
)

// ---------------------------------------------------------------------------------------

// A job enqueued to a brand-new queue of a group after the client started runs at once:
// its NOTIFY creates the queue's dispatcher (the fallback poll, which also looks for
// queues with work, is an hour away).
func TestGroupNewQueueIsWorkedWhenItsFirstJobIsNotified(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(relay.Config{Queues: queues(2, "tenant-*")})
	ran := make(chan queueRun, 10)
	handle(t, c, groupKind, reportRuns(ran))

	// A job waiting before Start is found by the start-up look for queues with work; once
	// it has run that look is over, and the next is an hour away.
	early := enqueue(b, groupKind, numArgs{N: 0}, relay.Queue("tenant-0"))
	b.start(c)
	if r := recv(t, ran, "the job waiting before Start"); r != (queueRun{early, "tenant-0"}) {
		t.Fatalf("ran %+v, want job %d of tenant-0", r, early)
	}
	if got := workedQueues(c); !slices.Equal(got, []string{"tenant-0"}) {
		t.Errorf("WorkedQueues = %v, want [tenant-0]", got)
	}

	id, _ := enqueueTx(b, groupKind, numArgs{N: 42}, relay.Queue("tenant-42"))
	if r := recv(t, ran, "the job of the new queue"); r != (queueRun{id, "tenant-42"}) {
		t.Fatalf("ran %+v, want job %d of tenant-42", r, id)
	}
	if got := workedQueues(c); !slices.Contains(got, "tenant-42") {
		t.Errorf("WorkedQueues = %v after a job of tenant-42 ran, want it to include tenant-42", got)
	}
	// More new queues, enqueued together: each gets a dispatcher.
	specs := make([]relay.JobSpec, 0, 5)
	for i := range 5 {
		specs = append(specs, groupKind.Job(numArgs{N: i}, relay.Queue(fmt.Sprintf("tenant-new-%d", i))))
	}
	ids := b.enqueueMany(specs)
	got := map[int64]string{}
	for range ids {
		r := recv(t, ran, "the jobs of five new queues")
		got[r.id] = r.queue
	}
	for i, id := range ids {
		if want := fmt.Sprintf("tenant-new-%d", i); got[id] != want {
			t.Errorf("job %d ran on %q, want %q", id, got[id], want)
		}
	}
	b.waitState("succeeded", append(ids, early, id)...)
	worked := workedQueues(c)
	for i := range 5 {
		if q := fmt.Sprintf("tenant-new-%d", i); !slices.Contains(worked, q) {
			t.Errorf("WorkedQueues = %v, want it to include %s", worked, q)
		}
	}
}

// Queues of a group that already have jobs when the client starts, due or scheduled, are
// worked from the start; a queue outside the group is not.
func TestGroupQueuesWithJobsAtStartAreWorked(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(relay.Config{Queues: queues(2, "tenant-*")})
	ran := make(chan queueRun, 10)
	handle(t, c, groupKind, reportRuns(ran))

	want := map[int64]string{}
	for i := range 3 {
		want[enqueue(b, groupKind, numArgs{N: i}, relay.Queue("tenant-7"))] = "tenant-7"
	}
	// A scheduled job: its NOTIFY was sent before anyone listened, and the queue has no
	// other job, so only the start-up look and the dispatcher's timer can run it.
	want[enqueue(b, groupKind, numArgs{N: 8}, relay.RunIn(300*time.Millisecond), relay.Queue("tenant-8"))] = "tenant-8"
	outside := enqueue(b, groupKind, numArgs{N: 0}, relay.Queue("other-7"))
	prefixOnly := enqueue(b, groupKind, numArgs{N: 0}, relay.Queue("tenant")) // "tenant" lacks the "-" of the prefix

	b.start(c)
	for range want {
		r := recv(t, ran, "the jobs waiting before Start")
		if want[r.id] != r.queue {
			t.Fatalf("ran %+v, want one of %v", r, want)
		}
		delete(want, r.id)
	}
	worked := workedQueues(c)
	for _, q := range []string{"tenant-7", "tenant-8"} {
		if !slices.Contains(worked, q) {
			t.Errorf("WorkedQueues = %v, want it to include %s", worked, q)
		}
	}
	for _, id := range []int64{outside, prefixOnly} {
		j := b.stored(id)
		if j.State != "pending" || j.Attempt != 0 {
			t.Errorf("job %d of queue %q outside the group is %s after %d attempts, want pending and never claimed", id, j.Queue, j.State, j.Attempt)
		}
		if slices.Contains(worked, j.Queue) {
			t.Errorf("WorkedQueues = %v includes %q, outside the group", worked, j.Queue)
		}
	}
}

// A dispatcher of a group retires once its queue has been idle for the group's
// IdleTimeout, while a configured queue stays; a later job of the retired queue runs
// again, by NOTIFY, on a new dispatcher.
func TestGroupIdleDispatcherRetiresAndComesBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(relay.Config{Queues: map[string]relay.QueueConfig{
		"tenant-*": {Workers: 2, IdleTimeout: 200 * time.Millisecond},
		"fixed":    {Workers: 1},
	}})
	started := make(chan queueRun, 10)
	gate := b.gate()
	handle(t, c, groupKind, func(_ context.Context, job *relay.Job[numArgs]) error {
		started <- queueRun{job.ID, job.Queue}
		if job.Args.N < 0 {
			gate.wait()
		}
		return nil
	})
	b.start(c)
	if got := workedQueues(c); !slices.Equal(got, []string{"fixed"}) {
		t.Errorf("WorkedQueues right after Start = %v, want [fixed]", got)
	}

	for round := range 2 {
		// A job that holds its slot until released: the dispatcher is busy meanwhile.
		id, _ := enqueueTx(b, groupKind, numArgs{N: -1}, relay.Queue("tenant-9"))
		if r := recv(t, started, "the job of tenant-9"); r.id != id {
			t.Fatalf("round %d: ran %+v, want job %d", round, r, id)
		}
		if got := workedQueues(c); !slices.Equal(got, []string{"fixed", "tenant-9"}) {
			t.Errorf("round %d: WorkedQueues while its job runs = %v, want [fixed tenant-9]", round, got)
		}
		gate.one(t)
		b.waitState("succeeded", id)
		relaytest.WaitFor(t, waitTimeout, "the idle dispatcher of tenant-9 to retire", func() bool {
			return !slices.Contains(relay.WorkedQueues(c), "tenant-9")
		})
		if got := workedQueues(c); !slices.Equal(got, []string{"fixed"}) {
			t.Errorf("round %d: WorkedQueues after tenant-9 retired = %v, want [fixed]: a configured queue never retires", round, got)
		}
	}
}

// Wakeups that race with the retirement of their queue's dispatcher are never lost: with
// an IdleTimeout of a millisecond dispatchers retire between almost every job, and every
// job still runs at once (the fallback poll is an hour away).
func TestGroupWakeupRacingRetirementIsNotLost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(relay.Config{Queues: map[string]relay.QueueConfig{"tenant-*": {Workers: 1, IdleTimeout: time.Millisecond}}})
	ran := make(chan queueRun, 10)
	handle(t, c, groupKind, reportRuns(ran))
	b.start(c)

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 2))
	for i := range 60 {
		queue := fmt.Sprintf("tenant-r%d", i%2)
		id := enqueue(b, groupKind, numArgs{N: i}, relay.Queue(queue))
		if r := recv(t, ran, fmt.Sprintf("job %d of %s", i, queue)); r != (queueRun{id, queue}) {
			t.Fatalf("ran %+v, want job %d of %s", r, id, queue)
		}
		// Vary when the next job comes relative to the retirement (coverage, not timing).
		time.Sleep(time.Duration(rng.IntN(3000)) * time.Microsecond)
	}
}

// A scheduled job keeps its group queue's dispatcher from retiring until it is due, so
// it runs though the IdleTimeout is far shorter than its delay and no poll comes.
func TestGroupScheduledJobKeepsItsDispatcher(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(relay.Config{Queues: map[string]relay.QueueConfig{"tenant-*": {Workers: 1, IdleTimeout: 50 * time.Millisecond}}})
	ran := make(chan queueRun, 10)
	handle(t, c, groupKind, reportRuns(ran))
	b.start(c)

	id := enqueue(b, groupKind, numArgs{N: 1}, relay.RunIn(time.Second), relay.Queue("tenant-s"))
	if r := recv(t, ran, "the scheduled job"); r != (queueRun{id, "tenant-s"}) {
		t.Fatalf("ran %+v, want job %d of tenant-s", r, id)
	}
}

// The look for queues with work starts no dispatcher for a group's queue whose pending
// jobs are all due beyond the client's look ahead (two poll intervals), or all of kinds it
// does not handle: each would poll for nothing until its jobs are due, for good — with
// thousands of tenants, thousands of claims a second.
func TestGroupQueueWithNothingToRunSoonGetsNoDispatcher(t *testing.T) {
	t.Parallel()
	b := setup(t)
	// Enqueued before the client starts, so no wakeup reaches it: its first look finds them,
	// going over the queues in the order of their names.
	enqueue(b, groupKind, numArgs{N: 1}, relay.Queue("tenant-a-far"), relay.RunIn(3*time.Hour))
	enqueue(b, relay.NewKind[numArgs]("not-handled"), numArgs{N: 2}, relay.Queue("tenant-b-other"))
	due := enqueue(b, groupKind, numArgs{N: 3}, relay.Queue("tenant-c-due"))
	// A queue whose first 100 jobs in claim order are of another kind: the look reads no
	// further, and counts it as having work, which it has.
	crowd := make([]relay.JobSpec, 100)
	for i := range crowd {
		crowd[i] = relay.NewKind[numArgs]("not-handled").Job(numArgs{N: i}, relay.Priority(10))
	}
	b.enqueueMany(crowd, relay.Queue("tenant-d-crowded"))
	behind := enqueue(b, groupKind, numArgs{N: 4}, relay.Queue("tenant-d-crowded"))
	c := b.client(relay.Config{PollInterval: time.Hour, Queues: map[string]relay.QueueConfig{"tenant-*": {Workers: 1, IdleTimeout: time.Hour}}})
	ran := make(chan queueRun, 10)
	handle(t, c, groupKind, reportRuns(ran))
	b.start(c)
	want := map[queueRun]bool{{due, "tenant-c-due"}: true, {behind, "tenant-d-crowded"}: true}
	for range want {
		if r := recv(t, ran, "a job due now"); !want[r] {
			t.Fatalf("ran %+v, want job %d of tenant-c-due and %d of tenant-d-crowded", r, due, behind)
		}
	}
	if got := workedQueues(c); !slices.Equal(got, []string{"tenant-c-due", "tenant-d-crowded"}) {
		t.Errorf("WorkedQueues = %v, want [tenant-c-due tenant-d-crowded]: no dispatcher for a queue with nothing to run soon", got)
	}
}

// A queue outside every group is not worked; a queue's own entry wins over a group, and
// a longer prefix over a shorter one; "*" alone is every queue.
func TestGroupSettingsAndMatching(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(relay.Config{Queues: map[string]relay.QueueConfig{
		"tenant-*":     {Workers: 1},
		"tenant-big-*": {Workers: 2},
		"tenant-vip":   {Workers: 2},
	}})
	started := make(chan queueRun, 20)
	gate := b.gate()
	handle(t, c, groupKind, func(_ context.Context, job *relay.Job[numArgs]) error {
		started <- queueRun{job.ID, job.Queue}
		gate.wait()
		return nil
	})
	b.start(c)
	if got := workedQueues(c); !slices.Equal(got, []string{"tenant-vip"}) {
		t.Errorf("WorkedQueues right after Start = %v, want [tenant-vip]: the queue's own entry is worked from the start", got)
	}

	pair := func(queue string) []int64 {
		t.Helper()
		ids, err := relay.EnqueueMany(context.Background(), b, []relay.JobSpec{
			groupKind.Job(numArgs{N: 1}), groupKind.Job(numArgs{N: 2}),
		}, relay.Queue(queue), relay.Schema(b.Schema))
		if err != nil {
			t.Fatal(err)
		}
		return ids
	}

	// Outside every group: enqueued first, and never worked.
	outside := enqueue(b, groupKind, numArgs{N: 0}, relay.Queue("other-1"))

	// The queue's own entry (2 workers) wins over tenant-* (1): both jobs run at once.
	// So does the longer prefix tenant-big-* (2 workers).
	for _, queue := range []string{"tenant-vip", "tenant-big-1"} {
		ids := pair(queue)
		got := []int64{recv(t, started, "the first job of "+queue).id, recv(t, started, "the second job of "+queue+" (its queue has 2 workers)").id}
		slices.Sort(got)
		if !slices.Equal(got, ids) {
			t.Errorf("started %v, want the jobs %v of %s", got, ids, queue)
		}
		gate.one(t)
		gate.one(t)
		b.waitState("succeeded", ids...)
	}

	// tenant-x has tenant-*'s single worker: while its first job runs, the second waits.
	ids := pair("tenant-x")
	first := recv(t, started, "the first job of tenant-x")
	if first.id != ids[0] {
		t.Fatalf("started %+v, want job %d of tenant-x", first, ids[0])
	}
	if j := b.stored(ids[1]); j.State != "pending" {
		t.Errorf("second job of tenant-x is %s while the first runs; want pending (tenant-* has 1 worker)", j.State)
	}
	gate.one(t)
	if r := recv(t, started, "the second job of tenant-x"); r.id != ids[1] {
		t.Fatalf("started %+v, want job %d", r, ids[1])
	}
	gate.one(t)
	b.waitState("succeeded", ids...)

	if j := b.stored(outside); j.State != "pending" || j.Attempt != 0 {
		t.Errorf("job of other-1, outside every group, is %s after %d attempts; want pending and never claimed", j.State, j.Attempt)
	}
	if worked := workedQueues(c); slices.Contains(worked, "other-1") {
		t.Errorf("WorkedQueues = %v includes other-1, outside every group", worked)
	}

	// "*" is every queue, including the one no one else works.
	all := b.client(relay.Config{Queues: queues(1, "*")})
	ran := make(chan queueRun, 10)
	handle(t, all, groupKind, reportRuns(ran))
	b.start(all)
	if r := recv(t, ran, "the job of other-1 on a client serving \"*\""); r != (queueRun{outside, "other-1"}) {
		t.Fatalf("ran %+v, want job %d of other-1", r, outside)
	}
	id := enqueue(b, groupKind, numArgs{N: 0}, relay.Queue("anything at all"))
	if r := recv(t, ran, "a job of a new queue on a client serving \"*\""); r != (queueRun{id, "anything at all"}) {
		t.Fatalf("ran %+v, want job %d", r, id)
	}
}

// Invalid groups and group settings on a plain queue make Start fail with
// ErrInvalidConfig.
func TestGroupInvalidConfigIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	noop := func(context.Context, *relay.Job[numArgs]) error { return nil }
	for name, queues := range map[string]map[string]relay.QueueConfig{
		"two stars":                  {"a*b*": {Workers: 1}},
		"star not at the end":        {"a*b": {Workers: 1}},
		"leading star":               {"*a": {Workers: 1}},
		"double star":                {"a**": {Workers: 1}},
		"IdleTimeout on a queue":     {"plain": {Workers: 1, IdleTimeout: time.Second}},
		"negative IdleTimeout":       {"tenant-*": {Workers: 1, IdleTimeout: -time.Second}},
		"group without workers":      {"tenant-*": {}},
		"IdleTimeout beside a group": {"tenant-*": {Workers: 1}, "tenant-1": {Workers: 1, IdleTimeout: time.Second}},
	} {
		c := b.client(relay.Config{Queues: queues})
		handle(t, c, groupKind, noop)
		if err := c.Start(ctx, b.Pool); !errors.Is(err, relay.ErrInvalidConfig) {
			t.Errorf("%s: Start: %v, want ErrInvalidConfig", name, err)
			if err == nil {
				b.stop(c)
			}
		}
	}
	c := b.client(relay.Config{MaxWorkers: -1})
	handle(t, c, groupKind, noop)
	if err := c.Start(ctx, b.Pool); !errors.Is(err, relay.ErrInvalidConfig) {
		t.Errorf("negative MaxWorkers: Start: %v, want ErrInvalidConfig", err)
		if err == nil {
			b.stop(c)
		}
	}
}

// ---------------------------------------------------------------------------------------

// holdQueue is the handler of the fair-sharing tests: it counts its runs on running,
// reports each job on events, and holds the jobs of queue at g.
func holdQueue(events chan<- queueRun, running *gauge, queue string, g *gate) relay.HandlerFunc[numArgs] {
	return func(_ context.Context, job *relay.Job[numArgs]) error {
		running.enter()
		defer running.leave()
		events <- queueRun{job.ID, job.Queue}
		if job.Queue == queue {
			g.wait()
		}
		return nil
	}
}

// A queue with a huge backlog does not starve one with a single job: with MaxWorkers 2
// held by "big", the job of "small-1" (a queue of a group, so that the test can see when
// its wakeup has arrived) gets one of the next slots big frees, long before big's backlog
// is done.
func TestFairSmallQueueIsNotStarvedByABigBacklog(t *testing.T) {
	t.Parallel()
	const bigJobs = 50
	b := setup(t)
	c := b.client(relay.Config{
		MaxWorkers: 2,
		Queues:     map[string]relay.QueueConfig{"big": {Workers: 2}, "small-*": {Workers: 2}},
	})
	events := make(chan queueRun, 2*bigJobs)
	gate := b.gate()
	var running gauge
	handle(t, c, fairKind, holdQueue(events, &running, "big", gate))
	b.start(c)

	b.enqueueN(fairKind, bigJobs, relay.Queue("big"))
	for range 2 {
		if r := recv(t, events, "big to fill both client-wide slots"); r.queue != "big" {
			t.Fatalf("started %+v, want a job of big", r)
		}
	}
	small := enqueue(b, fairKind, numArgs{N: 0}, relay.Queue("small-1"))
	// Its wakeup has arrived once its dispatcher exists; that dispatcher then asks for a
	// slot at once and finds none.
	relaytest.WaitFor(t, waitTimeout, "a dispatcher for small-1", func() bool {
		return slices.Contains(relay.WorkedQueues(c), "small-1")
	})

	// Free big's slots one at a time: each lets exactly one job start.
	bigAfter := 0
	for {
		gate.one(t)
		r := recv(t, events, "a job to take the freed slot")
		if r.queue == "small-1" {
			if r.id != small {
				t.Fatalf("started %+v, want job %d of small-1", r, small)
			}
			break
		}
		if bigAfter++; bigAfter > 3 {
			t.Fatalf("%d more jobs of big started after small-1's job was enqueued while it still waits", bigAfter)
		}
	}
	t.Logf("small-1's job started after %d more jobs of big", bigAfter)
	gate.open()
	b.waitCount("succeeded", bigJobs+1)
	if m := running.max.Load(); m > 2 {
		t.Errorf("%d jobs ran at once, over MaxWorkers 2", m)
	}
}

// A slow queue cannot back up a fast one: with MaxWorkers 2 held by the hanging jobs of
// "slow", a slot slow frees goes to the waiting "fast-1", which then keeps its equal
// share (one slot) for its whole backlog: slow, whose jobs hang, never takes the slot
// back while fast-1 has jobs waiting, so fast-1's backlog runs without slow releasing
// anything more.
//
// With fast-1's Workers at 1 its dispatcher asks for no slot while its one job runs, so
// every time that job ends, slow (waiting for a slot) and fast-1 race for the freed one;
// with Workers 2 the same race happens whenever fast-1's job ends before its dispatcher
// has asked for a second slot.
func TestFairSlowQueueDoesNotHoldUpAFastQueue(t *testing.T) {
	t.Parallel()
	for _, fastWorkers := range []int{1, 2} {
		t.Run(fmt.Sprintf("fast Workers %d", fastWorkers), func(t *testing.T) {
			t.Parallel()
			testSlowQueueDoesNotHoldUpAFastQueue(t, fastWorkers)
		})
	}
}

func testSlowQueueDoesNotHoldUpAFastQueue(t *testing.T, fastWorkers int) {
	const (
		slowJobs = 10
		fastJobs = 200
	)
	b := setup(t)
	c := b.client(relay.Config{
		MaxWorkers: 2,
		Queues:     map[string]relay.QueueConfig{"slow": {Workers: 2}, "fast-*": {Workers: fastWorkers}},
	})
	events := make(chan queueRun, slowJobs+fastJobs)
	gate := b.gate()
	var running gauge
	handle(t, c, fairKind, holdQueue(events, &running, "slow", gate))
	b.start(c)

	b.enqueueN(fairKind, slowJobs, relay.Queue("slow"))
	for range 2 {
		if r := recv(t, events, "slow to fill both client-wide slots"); r.queue != "slow" {
			t.Fatalf("started %+v, want a job of slow", r)
		}
	}
	b.enqueueN(fairKind, fastJobs, relay.Queue("fast-1"))
	relaytest.WaitFor(t, waitTimeout, "a dispatcher for fast-1", func() bool {
		return slices.Contains(relay.WorkedQueues(c), "fast-1")
	})

	// Slow jobs end one at a time until fast-1 gets a slot. The first should do: fast-1's
	// dispatcher asks for a slot as soon as it exists, but the test cannot see that it
	// has asked, so a few more are allowed.
	released := 0
	for {
		if released == slowJobs-2 {
			t.Fatalf("released %d slow jobs and fast-1 never got a slot", released)
		}
		gate.one(t)
		released++
		if r := recv(t, events, "a job to take the slot slow freed"); r.queue == "fast-1" {
			break
		}
	}
	t.Logf("fast-1 got a slot after %d slow jobs ended", released)
	// From now on slow releases nothing: fast-1's backlog runs on its one slot, and slow
	// never takes it while fast-1 still has jobs to start.
	for fast := 1; fast < fastJobs; {
		r := recv(t, events, fmt.Sprintf("fast-1's backlog to run while slow hangs (%d of %d started)", fast, fastJobs))
		if r.queue == "fast-1" {
			fast++
			continue
		}
		if left := fastJobs - fast; left > 2 {
			t.Fatalf("slow started another job (%d), taking both of the MaxWorkers 2 slots, while fast-1 still had %d jobs to start: fast-1 now waits for slow's hanging jobs", r.id, left)
		}
	}
	gate.open()
	b.waitCount("succeeded", slowJobs+fastJobs)
	if m := running.max.Load(); m > 2 {
		t.Errorf("%d jobs ran at once, over MaxWorkers 2", m)
	}
}

// MaxWorkers is never exceeded over several queues with backlogs, configured and of a
// group, nor is any queue's Workers; and no slot is left idle: whenever a job ends, the
// client runs as many jobs as MaxWorkers and the queues' Workers and backlogs allow. The
// test releases running jobs one at a time, in random order, and after each waits for
// exactly the starts that this allows.
func TestMaxWorkersIsNeverExceededAcrossQueues(t *testing.T) {
	t.Parallel()
	const (
		maxWorkers = 3
		workers    = 2
		perQueue   = 8
	)
	queues := []string{"fixed", "t-1", "t-2"}
	b := setup(t)
	c := b.client(relay.Config{
		MaxWorkers: maxWorkers,
		Queues:     map[string]relay.QueueConfig{"fixed": {Workers: workers}, "t-*": {Workers: workers}},
	})
	var (
		total    gauge
		perQ     = map[string]*gauge{}
		started  = make(chan queueRun, len(queues)*perQueue)
		releases sync.Map // job id → chan struct{}, closed to let the job end
		gate     = b.gate()
	)
	releaseOf := func(id int64) chan struct{} {
		ch, _ := releases.LoadOrStore(id, make(chan struct{}))
		return ch.(chan struct{})
	}
	for _, q := range queues {
		perQ[q] = &gauge{}
	}
	handle(t, c, fairKind, func(_ context.Context, job *relay.Job[numArgs]) error {
		total.enter()
		perQ[job.Queue].enter()
		defer total.leave()
		defer perQ[job.Queue].leave()
		started <- queueRun{job.ID, job.Queue}
		select {
		case <-releaseOf(job.ID):
		case <-gate.ch: // the test is over
		}
		return nil
	})
	b.start(c)

	var specs []relay.JobSpec
	for i := range perQueue {
		for _, q := range queues {
			specs = append(specs, fairKind.Job(numArgs{N: i}, relay.Queue(q)))
		}
	}
	b.enqueueMany(specs)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 3))
	pending := map[string]int{}
	for _, q := range queues {
		pending[q] = perQueue
	}
	var running []queueRun
	// allowed is how many jobs can run now: MaxWorkers, bounded by each queue's Workers
	// and what it has left.
	allowed := func() int {
		n := 0
		for _, q := range queues {
			held := 0
			for _, r := range running {
				if r.queue == q {
					held++
				}
			}
			n += min(workers, held+pending[q])
		}
		return min(maxWorkers, n)
	}
	for ended := 0; ended < len(specs); ended++ {
		for len(running) < allowed() {
			r := recv(t, started, fmt.Sprintf("a job to start: %d running, %d allowed, left %v", len(running), allowed(), pending))
			if pending[r.queue] == 0 {
				t.Fatalf("started %+v, but its queue had no job left", r)
			}
			pending[r.queue]--
			running = append(running, r)
		}
		i := rng.IntN(len(running))
		close(releaseOf(running[i].id))
		running = slices.Delete(running, i, i+1)
	}
	b.waitCount("succeeded", len(specs))
	select {
	case r := <-started:
		t.Errorf("job %+v started more than once", r)
	default:
	}
	if m := total.max.Load(); m != maxWorkers {
		t.Errorf("up to %d jobs ran at once, want exactly MaxWorkers %d", m, maxWorkers)
	}
	for _, q := range queues {
		if m := perQ[q].max.Load(); m > workers {
			t.Errorf("queue %s ran up to %d jobs at once, over its %d workers", q, m, workers)
		}
	}
}

// A job enqueued in a group's new queue while the client's listener was away (its wakeup
// heard by no one) runs once the listener is back, not at the next poll: the client then
// looks for queues with work at once.
func TestGroupQueueWhoseWakeupWasLostRunsOnceTheListenerIsBack(t *testing.T) {
	t.Parallel()
	b := setup(t)
	pool, gate := b.gatedPool("relay listener ")
	c := b.client(relay.Config{PollInterval: time.Hour, Queues: map[string]relay.QueueConfig{"tenant-*": {Workers: 1}}})
	started := make(chan int64, 10)
	handle(t, c, groupKind, reportIDs(started))
	b.startOn(c, pool)
	warm := enqueue(b, groupKind, numArgs{}, relay.Queue("tenant-warm"))
	if got := recv(t, started, "a job before the listener is lost"); got != warm {
		t.Fatalf("job %d ran, want %d", got, warm)
	}
	gate.cut(b, relay.ListenerApplicationName(c.ID()))
	id := enqueue(b, groupKind, numArgs{N: 1}, relay.Queue("tenant-new")) // its wakeup is lost
	gate.reopenRuns(b, started, id, "the listener reconnected")
}
