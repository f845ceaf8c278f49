package relay_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// listArgs tells the fixture's handler what to do with a job.
type listArgs struct{ Act string } // "ok", "fail" or "block"

// listedJob is what a listing test knows of a job: the model filters are checked against.
type listedJob struct {
	id          int64
	queue, kind string
	state       relay.JobState
	created     time.Time
}

// listFixture is a schema holding jobs in every state, in two queues and two kinds, with
// the states interleaved along the ids, and the model of them.
type listFixture struct {
	b    *bundle
	jobs []listedJob // by id
}

var allStates = []relay.JobState{
	relay.StatePending, relay.StateScheduled, relay.StateRunning,
	relay.StateSucceeded, relay.StateFailed, relay.StateCancelled,
}

func newListFixture(t *testing.T) *listFixture {
	t.Helper()
	ctx := context.Background()
	b := setup(t)
	c := b.client(relay.Config{Queues: map[string]relay.QueueConfig{"a": {Workers: 10}, "b": {Workers: 10}}})
	release := b.gate()
	started := make(chan int64, 10)
	handler := func(ctx context.Context, job *relay.Job[listArgs]) error {
		switch job.Args.Act {
		case "fail":
			return relay.Discard(errors.New("fails for good"))
		case "block":
			started <- job.ID
			select {
			case <-release.ch:
			case <-ctx.Done():
			}
		}
		return nil
	}
	for _, kind := range []string{"k1", "k2"} {
		handle(t, c, relay.NewKind[listArgs](kind), handler)
	}
	b.start(c)

	f := &listFixture{b: b}
	add := func(queue, kind, act string, state relay.JobState, opts ...relay.EnqueueOption) int64 {
		id := enqueue(b, relay.NewKind[listArgs](kind), listArgs{Act: act}, append(opts, relay.Queue(queue))...)
		f.jobs = append(f.jobs, listedJob{id: id, queue: queue, kind: kind, state: state})
		return id
	}
	set := func(id int64, state relay.JobState) {
		for i := range f.jobs {
			if f.jobs[i].id == id {
				f.jobs[i].state = state
			}
		}
	}
	cancel := func(id int64) {
		if err := relay.Cancel(ctx, b, id, relay.Schema(b.Schema)); err != nil {
			t.Fatalf("Cancel(%d): %v", id, err)
		}
		set(id, relay.StateCancelled)
	}

	// Scheduled jobs, two of them cancelled.
	cancel(add("a", "k1", "ok", relay.StateScheduled, relay.RunIn(time.Hour)))
	add("a", "k2", "ok", relay.StateScheduled, relay.RunIn(time.Hour))
	add("b", "k1", "ok", relay.StateScheduled, relay.RunIn(time.Hour))
	cancel(add("b", "k2", "ok", relay.StateScheduled, relay.RunIn(time.Hour)))

	// Jobs that run to an end: every third fails.
	var succeeded, failed []int64
	for i := range 12 {
		queue, kind := []string{"a", "b"}[i%2], []string{"k1", "k2"}[i/2%2]
		if i%3 == 0 {
			failed = append(failed, add(queue, kind, "fail", relay.StateFailed))
		} else {
			succeeded = append(succeeded, add(queue, kind, "ok", relay.StateSucceeded))
		}
	}
	b.waitState("succeeded", succeeded...)
	b.waitState("failed", failed...)

	// Running jobs; one is cancelled while it runs.
	running := []int64{
		add("a", "k1", "block", relay.StateRunning),
		add("b", "k2", "block", relay.StateRunning),
		add("a", "k2", "block", relay.StateRunning),
	}
	for range running {
		recv(t, started, "a blocking job to start")
	}
	cancel(running[1])

	// Pending jobs, due now but in paused queues, among more scheduled ones.
	for _, q := range []string{"a", "b"} {
		b.pauseQueue(q)
	}
	add("a", "k1", "ok", relay.StatePending)
	add("a", "k2", "ok", relay.StateScheduled, relay.RunIn(time.Hour))
	add("b", "k2", "ok", relay.StatePending)
	add("a", "k2", "ok", relay.StatePending)
	add("b", "k1", "ok", relay.StatePending)
	cancel(add("b", "k1", "ok", relay.StatePending))

	// The model must be right for the tests to mean anything: check it against GetJob,
	// and take each job's created_at from it.
	for i, j := range f.jobs {
		rec, err := relay.GetJob(ctx, b, j.id, relay.Schema(b.Schema))
		if err != nil {
			t.Fatal(err)
		}
		if rec.State != j.state || rec.Queue != j.queue || rec.Kind != j.kind {
			t.Fatalf("job %d is %s in %s/%s, the fixture expects %s in %s/%s", j.id, rec.State, rec.Queue, rec.Kind, j.state, j.queue, j.kind)
		}
		f.jobs[i].created = rec.CreatedAt
	}
	return f
}

// want returns the ids of the fixture's jobs that filter selects, newest first.
func (f *listFixture) want(filter relay.ListFilter) []int64 {
	var ids []int64
	for _, j := range f.jobs {
		if (filter.Queue == "" || j.queue == filter.Queue) &&
			(filter.Kind == "" || j.kind == filter.Kind) &&
			(len(filter.States) == 0 || slices.Contains(filter.States, j.state)) &&
			(filter.From.IsZero() || !j.created.Before(filter.From)) &&
			(filter.To.IsZero() || j.created.Before(filter.To)) {
			ids = append(ids, j.id)
		}
	}
	slices.Reverse(ids)
	return ids
}

func listPage(b *bundle, filter relay.ListFilter) *relay.JobPage {
	b.t.Helper()
	page, err := relay.ListJobs(context.Background(), b, filter, relay.Schema(b.Schema))
	if err != nil {
		b.t.Fatalf("ListJobs(%s): %v", describeFilter(filter), err)
	}
	return page
}

// listPages lists every page of filter and returns the ids in order, checking that every
// page but the last is full and that only the last has no Next.
func listPages(b *bundle, filter relay.ListFilter) []int64 {
	t := b.t
	t.Helper()
	var ids []int64
	for n := 0; ; n++ {
		page := listPage(b, filter)
		for _, j := range page.Jobs {
			ids = append(ids, j.ID)
		}
		if page.Next == "" {
			return ids
		}
		if len(page.Jobs) != filter.Limit {
			t.Fatalf("%s: page %d holds %d jobs and has a next page; want %d", describeFilter(filter), n, len(page.Jobs), filter.Limit)
		}
		if n > 1000 {
			t.Fatalf("%s: more than 1000 pages", describeFilter(filter))
		}
		filter.After = page.Next
	}
}

func describeFilter(f relay.ListFilter) string {
	var b strings.Builder
	fmt.Fprintf(&b, "queue=%q kind=%q states=%v", f.Queue, f.Kind, f.States)
	if !f.From.IsZero() {
		fmt.Fprintf(&b, " from=%s", f.From.Format(time.RFC3339Nano))
	}
	if !f.To.IsZero() {
		fmt.Fprintf(&b, " to=%s", f.To.Format(time.RFC3339Nano))
	}
	fmt.Fprintf(&b, " limit=%d", f.Limit)
	return b.String()
}

// TestListJobsFilters lists the fixture with every combination of queue, kind, states and
// time range, in one page and in pages of 3, and compares each with the model.
func TestListJobsFilters(t *testing.T) {
	t.Parallel()
	f := newListFixture(t)

	// Time bounds on jobs' own created_at, so that the edges are exercised exactly:
	// From includes the job created at it, To excludes it.
	from, to := f.jobs[5].created, f.jobs[len(f.jobs)-6].created
	times := []struct{ from, to time.Time }{{}, {from, time.Time{}}, {time.Time{}, to}, {from, to}}
	stateSets := [][]relay.JobState{
		nil,
		{relay.StatePending}, {relay.StateScheduled}, {relay.StateRunning},
		{relay.StateSucceeded}, {relay.StateFailed}, {relay.StateCancelled},
		{relay.StateFailed, relay.StateCancelled},
		{relay.StatePending, relay.StateScheduled},
		{relay.StateSucceeded, relay.StatePending, relay.StateRunning},
		{relay.StateCancelled, relay.StateCancelled, relay.StateRunning}, // duplicates are fine
		allStates,
	}
	nonEmpty := 0
	for _, queue := range []string{"", "a", "b", "c"} {
		for _, kind := range []string{"", "k1", "k2"} {
			for _, states := range stateSets {
				for _, tr := range times {
					filter := relay.ListFilter{Queue: queue, Kind: kind, States: states, From: tr.from, To: tr.to}
					want := f.want(filter)
					if len(want) > 0 {
						nonEmpty++
					}
					page := listPage(f.b, filter)
					var got []int64
					for _, j := range page.Jobs {
						got = append(got, j.ID)
					}
					if !slices.Equal(got, want) || page.Next != "" {
						t.Errorf("%s: got %v (next %q), want %v", describeFilter(filter), got, page.Next, want)
						continue
					}
					filter.Limit = 3
					if got := listPages(f.b, filter); !slices.Equal(got, want) {
						t.Errorf("%s: pages give %v, want %v", describeFilter(filter), got, want)
					}
				}
			}
		}
	}
	if nonEmpty < 200 {
		t.Fatalf("only %d filters select any job: the fixture does not exercise the filters", nonEmpty)
	}
	// Each state on its own and every combination above select what the model says; the
	// model itself must hold every state, or those cases prove nothing.
	for _, st := range allStates {
		if len(f.want(relay.ListFilter{States: []relay.JobState{st}})) == 0 {
			t.Fatalf("the fixture has no %s job", st)
		}
	}
}

// TestListJobsRecords checks that listed records, with their values, are the ones GetJob
// returns.
func TestListJobsRecords(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newListFixture(t)
	page := listPage(f.b, relay.ListFilter{WithArgs: true})
	if len(page.Jobs) != len(f.jobs) {
		t.Fatalf("listed %d jobs, the fixture has %d", len(page.Jobs), len(f.jobs))
	}
	seen := map[relay.JobState]bool{}
	for _, listed := range page.Jobs {
		got, err := relay.GetJob(ctx, f.b, listed.ID, relay.Schema(f.b.Schema))
		if err != nil {
			t.Fatal(err)
		}
		if listed.State == relay.StateRunning {
			// renewed by the client's keep-alive at any moment
			listed.LeaseExpiresAt, got.LeaseExpiresAt = time.Time{}, time.Time{}
			if listed.AttemptedBy == "" {
				t.Errorf("running job %d listed without its client", listed.ID)
			}
		}
		if !reflect.DeepEqual(listed, got) {
			t.Errorf("job %d listed as\n  %+v\nGetJob gives\n  %+v", listed.ID, listed, got)
		}
		seen[listed.State] = true
	}
	for _, st := range allStates {
		if !seen[st] {
			t.Errorf("no %s job listed", st)
		}
	}
	// Finished jobs listed through their index carry their history like any other.
	failed := listPage(f.b, relay.ListFilter{Queue: "a", States: []relay.JobState{relay.StateFailed}})
	if len(failed.Jobs) == 0 || len(failed.Jobs[0].Attempts) != 1 || failed.Jobs[0].Attempts[0].Reason != relay.ReasonDiscarded {
		t.Errorf("failed jobs of queue a: %+v; want each with its discarded attempt", failed.Jobs)
	}
}

// TestListJobsPagesUnderInserts pages through jobs while more are enqueued (and some of
// them finished) between pages and concurrently: no page repeats a job, none of the jobs
// that matched from the start is skipped, and jobs enqueued after the first page never
// show up in a later one.
func TestListJobsPagesUnderInserts(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	var initial []listedJob
	for i := range 30 {
		queue := []string{"a", "b", "c"}[i%3]
		id := enqueue(b, testKind, numArgs{N: i}, relay.Queue(queue))
		state := relay.StatePending
		if i%4 == 0 {
			if err := relay.Cancel(ctx, b, id, relay.Schema(b.Schema)); err != nil {
				t.Fatal(err)
			}
			state = relay.StateCancelled
		}
		initial = append(initial, listedJob{id: id, queue: queue, kind: "k", state: state})
	}
	f := &listFixture{b: b, jobs: initial}
	// more enqueues jobs that match every filter below (same queues, same kind, both
	// states) and returns them.
	more := func() ([]listedJob, error) {
		var jobs []listedJob
		for _, q := range []string{"a", "b"} {
			for _, state := range []relay.JobState{relay.StateCancelled, relay.StatePending} {
				id, err := relay.Enqueue(ctx, b, testKind, numArgs{}, relay.Queue(q), relay.Schema(b.Schema))
				if err != nil {
					return jobs, err
				}
				if state == relay.StateCancelled {
					if err := relay.Cancel(ctx, b, id, relay.Schema(b.Schema)); err != nil {
						return jobs, err
					}
				}
				jobs = append(jobs, listedJob{id: id, queue: q, kind: "k", state: state})
			}
		}
		return jobs, nil
	}
	filters := []relay.ListFilter{
		{},
		{Queue: "a"},
		{States: []relay.JobState{relay.StateCancelled}},
		{Queue: "b", States: []relay.JobState{relay.StatePending, relay.StateCancelled}},
		{Kind: "k", States: []relay.JobState{relay.StatePending}},
	}

	t.Run("between pages", func(t *testing.T) {
		b := b.in(t)
		for _, filter := range filters {
			want := f.want(filter) // the jobs that exist now
			filter.Limit = 4
			var got []int64
			for {
				page := listPage(b, filter)
				for _, j := range page.Jobs {
					got = append(got, j.ID)
				}
				added, err := more()
				if err != nil {
					t.Fatal(err)
				}
				f.jobs = append(f.jobs, added...) // for the next filter's want
				if page.Next == "" {
					break
				}
				filter.After = page.Next
			}
			// The first page was read before any insert, and every later page below it.
			if !slices.Equal(got, want) {
				t.Errorf("%s: pages give %v, want %v", describeFilter(filter), got, want)
			}
		}
	})

	t.Run("concurrently", func(t *testing.T) {
		b := b.in(t)
		stop, busy := make(chan struct{}), make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			var once sync.Once
			defer once.Do(func() { close(busy) })
			// A bounded number of rounds: on a slow run, an enqueuer that went on for as long
			// as the pager paged put thousands of jobs above the last filter's first page.
			for n := 0; n < 100; n++ {
				if n == 1 {
					once.Do(func() { close(busy) })
				}
				select {
				case <-stop:
					return
				default:
				}
				if _, err := more(); err != nil {
					t.Error(err)
					return
				}
			}
		}()
		defer func() { close(stop); wg.Wait() }()
		<-busy // the enqueuer is under way
		for _, filter := range filters {
			want := f.want(filter)
			filter.Limit = 3
			got := listPages(b, filter)
			for i := 1; i < len(got); i++ {
				if got[i] >= got[i-1] {
					t.Fatalf("%s: ids not strictly decreasing across pages: %v", describeFilter(filter), got)
				}
			}
			for _, id := range want {
				if !slices.Contains(got, id) {
					t.Errorf("%s: job %d, which matched all along, was skipped: %v", describeFilter(filter), id, got)
				}
			}
		}
	})
}

// TestListJobsLimits checks the default and largest page sizes, and a page that ends
// exactly at the last job.
func TestListJobsLimits(t *testing.T) {
	t.Parallel()
	b := setup(t)
	specs := make([]relay.JobSpec, relay.DefaultListLimit+1)
	for i := range specs {
		specs[i] = testKind.Job(numArgs{N: i})
	}
	ids := b.enqueueMany(specs)
	slices.Reverse(ids)

	page := listPage(b, relay.ListFilter{})
	if len(page.Jobs) != relay.DefaultListLimit || page.Jobs[0].ID != ids[0] || page.Next == "" {
		t.Fatalf("first page: %d jobs from %d, next %q; want %d from %d and a next page",
			len(page.Jobs), page.Jobs[0].ID, page.Next, relay.DefaultListLimit, ids[0])
	}
	last := listPage(b, relay.ListFilter{After: page.Next})
	if len(last.Jobs) != 1 || last.Jobs[0].ID != ids[len(ids)-1] || last.Next != "" {
		t.Fatalf("second page: %+v, next %q; want job %d alone and no next page", last.Jobs, last.Next, ids[len(ids)-1])
	}
	all := listPage(b, relay.ListFilter{Limit: relay.MaxListLimit, States: []relay.JobState{relay.StatePending}})
	if len(all.Jobs) != len(ids) || all.Next != "" {
		t.Fatalf("Limit %d: %d jobs, next %q; want %d and no next page", relay.MaxListLimit, len(all.Jobs), all.Next, len(ids))
	}
	exact := listPage(b, relay.ListFilter{Limit: len(ids)})
	if len(exact.Jobs) != len(ids) || exact.Next != "" {
		t.Fatalf("a page as large as the jobs: %d jobs, next %q; want %d and no next page", len(exact.Jobs), exact.Next, len(ids))
	}
}

// TestListJobsInvalid checks that invalid filters are refused before reaching the
// database.
func TestListJobsInvalid(t *testing.T) {
	t.Parallel()
	b := setup(t)
	long := strings.Repeat("x", relay.MaxNameLen+1)
	now := time.Now()
	valid := listPage(b, relay.ListFilter{Limit: 1})
	if valid.Next != "" || len(valid.Jobs) != 0 {
		t.Fatalf("empty schema: %+v", valid)
	}
	enqueue(b, testKind, numArgs{})
	enqueue(b, testKind, numArgs{})
	cursor := listPage(b, relay.ListFilter{Limit: 1}).Next
	if cursor == "" {
		t.Fatal("no cursor for a page of 1 out of 2 jobs")
	}
	for name, filter := range map[string]relay.ListFilter{
		"unknown state":       {States: []relay.JobState{relay.StateFailed, "done"}},
		"empty state":         {States: []relay.JobState{""}},
		"long queue":          {Queue: long},
		"long kind":           {Kind: long},
		"To before From":      {From: now, To: now.Add(-time.Second)},
		"empty time range":    {From: now, To: now},
		"negative limit":      {Limit: -1},
		"limit over max":      {Limit: relay.MaxListLimit + 1},
		"cursor not base64":   {After: "not a cursor!"},
		"cursor too short":    {After: cursor[:len(cursor)-2]},
		"cursor too long":     {After: cursor + "AA"},
		"cursor of id 0":      {After: "AAAAAAAAAAA"},
		"cursor of negative":  {After: "gAAAAAAAAAA"},
		"cursor, bad padding": {After: cursor + "="},
	} {
		page, err := relay.ListJobs(context.Background(), b, filter, relay.Schema(b.Schema))
		if !errors.Is(err, relay.ErrInvalidFilter) {
			t.Errorf("%s: got %+v, %v; want ErrInvalidFilter", name, page, err)
		}
	}
	if _, err := relay.ListJobs(context.Background(), b, relay.ListFilter{}, relay.Schema("")); !errors.Is(err, relay.ErrInvalidSchema) {
		t.Errorf("empty schema name: %v, want ErrInvalidSchema", err)
	}
	if _, err := relay.CountJobs(context.Background(), b, relay.Schema("")); !errors.Is(err, relay.ErrInvalidSchema) {
		t.Errorf("CountJobs, empty schema name: %v, want ErrInvalidSchema", err)
	}
}

// TestCountJobs counts the fixture by queue and state and compares with the model.
func TestCountJobs(t *testing.T) {
	t.Parallel()
	k1Kind := relay.NewKind[listArgs]("k1")
	k2Kind := relay.NewKind[listArgs]("k2")
	ctx := context.Background()
	f := newListFixture(t)
	// A third queue with finished jobs only, and one with scheduled jobs only.
	for _, q := range []string{"c", "d"} {
		if err := relay.PauseQueue(ctx, f.b, q, relay.Schema(f.b.Schema)); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		id := enqueue(f.b, k1Kind, listArgs{}, relay.Queue("c"))
		if err := relay.Cancel(ctx, f.b, id, relay.Schema(f.b.Schema)); err != nil {
			t.Fatal(err)
		}
		f.jobs = append(f.jobs, listedJob{id: id, queue: "c", kind: "k1", state: relay.StateCancelled})
	}
	id := enqueue(f.b, k1Kind, listArgs{}, relay.Queue("d"), relay.RunIn(time.Hour))
	f.jobs = append(f.jobs, listedJob{id: id, queue: "d", kind: "k1", state: relay.StateScheduled})

	want := map[string]map[relay.JobState]int64{}
	wantAll := map[relay.JobState]int64{}
	for _, j := range f.jobs {
		if want[j.queue] == nil {
			want[j.queue] = map[relay.JobState]int64{}
		}
		want[j.queue][j.state]++
		wantAll[j.state]++
	}

	counts, err := relay.CountJobs(ctx, f.b, relay.Schema(f.b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	if len(counts.Queues) != len(want) {
		t.Errorf("counts for queues %v, want %d queues", counts.Queues, len(want))
	}
	for queue, states := range want {
		got, ok := counts.Queues[queue]
		if !ok {
			t.Errorf("no counts for queue %s", queue)
			continue
		}
		var total int64
		for _, st := range allStates {
			if got.Get(st) != states[st] {
				t.Errorf("queue %s: %d %s, want %d", queue, got.Get(st), st, states[st])
			}
			total += states[st]
		}
		if got.Total() != total {
			t.Errorf("queue %s: total %d, want %d", queue, got.Total(), total)
		}
	}
	for _, st := range allStates {
		if counts.All.Get(st) == 0 || counts.All.Get(st) != wantAll[st] {
			t.Errorf("all queues: %d %s, want %d (and not 0: the fixture has some)", counts.All.Get(st), st, wantAll[st])
		}
	}
	if counts.All.Total() != int64(len(f.jobs)) {
		t.Errorf("all queues: total %d, want %d", counts.All.Total(), len(f.jobs))
	}
	if got := (relay.StateCounts{Failed: 2}).Get("done"); got != 0 {
		t.Errorf("StateCounts.Get of an unknown state: %d", got)
	}

	// Counting sees the table as it is now: one more job finishes, one more is enqueued.
	if err := relay.Cancel(ctx, f.b, id, relay.Schema(f.b.Schema)); err != nil {
		t.Fatal(err)
	}
	enqueue(f.b, k2Kind, listArgs{}, relay.Queue("d"))
	counts, err = relay.CountJobs(ctx, f.b, relay.Schema(f.b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	if d := counts.Queues["d"]; d != (relay.StateCounts{Pending: 1, Cancelled: 1}) {
		t.Errorf("queue d after a cancel and an enqueue: %+v, want 1 pending, 1 cancelled", d)
	}

	none := relaytest.NewDB(t)
	empty, err := relay.CountJobs(ctx, none, relay.Schema(none.Schema))
	if err != nil || len(empty.Queues) != 0 || empty.All.Total() != 0 {
		t.Errorf("an empty schema: %+v, %v; want no counts", empty, err)
	}
}

// TestListJobsAcrossQueues lists finished jobs of many queues without naming a queue, in
// pages smaller than the number of queues: each page must still be the newest jobs of all
// queues, whichever queues hold them.
func TestListJobsAcrossQueues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	f := &listFixture{b: b}
	// Queues take turns unevenly: q0 holds most of the newest jobs, q6 only old ones.
	for i := range 60 {
		queue := fmt.Sprintf("q%d", (i*i+i/7)%7)
		if i > 45 && i%3 != 0 {
			queue = "q0"
		}
		kind := []string{"k1", "k2"}[i%5/3]
		id := enqueue(b, relay.NewKind[numArgs](kind), numArgs{N: i}, relay.Queue(queue))
		state := relay.StatePending
		if i%6 != 5 {
			if err := relay.Cancel(ctx, b, id, relay.Schema(b.Schema)); err != nil {
				t.Fatal(err)
			}
			state = relay.StateCancelled
		}
		f.jobs = append(f.jobs, listedJob{id: id, queue: queue, kind: kind, state: state})
	}
	for _, states := range [][]relay.JobState{
		{relay.StateCancelled},
		{relay.StateCancelled, relay.StatePending},
		{relay.StateCancelled, relay.StateSucceeded, relay.StateFailed},
	} {
		for _, kind := range []string{"", "k2"} {
			for _, limit := range []int{1, 2, 3, 5, 8} {
				filter := relay.ListFilter{States: states, Kind: kind, Limit: limit}
				want := f.want(filter)
				if got := listPages(b, filter); !slices.Equal(got, want) {
					t.Errorf("%s: pages give %v, want %v", describeFilter(filter), got, want)
				}
			}
		}
	}
}
