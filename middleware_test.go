package relay_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/relayq/relay"
)

// trail records what middleware and handlers did, in order.
type trail struct {
	mu    sync.Mutex
	steps []string
}

func (tr *trail) add(format string, args ...any) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.steps = append(tr.steps, fmt.Sprintf(format, args...))
}

func (tr *trail) take() []string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := tr.steps
	tr.steps = nil
	return out
}

// around is a middleware that records its name before and after the rest of the chain.
func around(tr *trail, name string) relay.Middleware {
	return func(next relay.JobFunc) relay.JobFunc {
		return func(ctx context.Context, job *relay.JobInfo) error {
			tr.add("%s>", name)
			err := next(ctx, job)
			tr.add("<%s %s", name, job.Outcome(ctx, err))
			return err
		}
	}
}

var (
	plainKind   = relay.NewKind[numArgs]("plain")
	wrappedKind = relay.NewKind[numArgs]("wrapped")
)

// TestMiddlewareOrder: the client's middleware wraps every kind, the first outermost, and
// a kind's own middleware runs inside it; each sees the job as the handler does, and the
// outcome of what the layers below it returned.
func TestMiddlewareOrder(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tr := &trail{}
	var seen *relay.JobInfo
	c := b.client(relay.Config{Middleware: []relay.Middleware{around(tr, "A"), around(tr, "B")}})
	handle(t, c, plainKind, func(_ context.Context, job *relay.Job[numArgs]) error {
		tr.add("plain#%d", job.Attempt)
		return nil
	})
	handle(t, c, wrappedKind, func(_ context.Context, job *relay.Job[numArgs]) error {
		tr.add("wrapped#%d tenant=%s", job.Attempt, job.Metadata["tenant"])
		if job.Attempt == 1 {
			return errors.New("again")
		}
		return nil
	}, append(retryFast, relay.Middleware(func(next relay.JobFunc) relay.JobFunc {
		return func(ctx context.Context, job *relay.JobInfo) error {
			seen = job
			return around(tr, "C")(next)(ctx, job)
		}
	}))...)
	events := b.subscribe(c, 10)
	b.start(c)

	b.eventsOf(events, 1, enqueue(b, plainKind, numArgs{}))
	if got, want := tr.take(), []string{"A>", "B>", "plain#1", "<B succeeded", "<A succeeded"}; !slices.Equal(got, want) {
		t.Errorf("plain kind: %q; want %q", got, want)
	}

	before := b.now()
	id := enqueue(b, wrappedKind, numArgs{N: 3}, relay.Priority(5), relay.Metadata(map[string]string{"tenant": "acme"}))
	b.eventsOf(events, 2, id)
	want := []string{
		"A>", "B>", "C>", "wrapped#1 tenant=acme", "<C retried", "<B retried", "<A retried",
		"A>", "B>", "C>", "wrapped#2 tenant=acme", "<C succeeded", "<B succeeded", "<A succeeded",
	}
	if got := tr.take(); !slices.Equal(got, want) {
		t.Errorf("wrapped kind: %q; want %q", got, want)
	}
	rec := b.record(id)
	if seen.ID != id || seen.Kind != "wrapped" || seen.Queue != relay.DefaultQueue || seen.Attempt != 2 || seen.MaxAttempts != 3 ||
		seen.Priority != 5 || seen.Metadata["tenant"] != "acme" || !seen.CreatedAt.Equal(rec.CreatedAt) ||
		seen.ScheduledAt.Before(before) || !seen.AttemptedAt.Equal(rec.AttemptedAt) {
		t.Errorf("the middleware saw %+v; the job is %+v", *seen, *rec)
	}
}

// TestPanicInMiddleware: a panic in a middleware reaches the middleware above it as an
// error whose outcome is a panic, is recorded as the attempt's panic with its stack, and
// the client carries on: the job is retried and succeeds, and other jobs run.
func TestPanicInMiddleware(t *testing.T) {
	t.Parallel()
	b := setup(t)
	tr := &trail{}
	panicky := func(outermost bool) relay.Middleware {
		return func(next relay.JobFunc) relay.JobFunc {
			return func(ctx context.Context, job *relay.JobInfo) error {
				if job.Attempt == 1 && job.Metadata["panic"] == fmt.Sprint(outermost) {
					panicInMiddleware()
				}
				return next(ctx, job)
			}
		}
	}
	c := b.client(relay.Config{Middleware: []relay.Middleware{panicky(true), around(tr, "A"), panicky(false)}})
	handle(t, c, testKind, func(context.Context, *relay.Job[numArgs]) error { return nil }, retryFast...)
	events := b.subscribe(c, 10)
	b.start(c)

	for _, outermost := range []bool{false, true} {
		id := enqueue(b, testKind, numArgs{}, relay.Metadata(map[string]string{"panic": fmt.Sprint(outermost)}))
		got := b.eventsOf(events, 2, id)[id]
		if got[0].Outcome() != relay.OutcomePanic || got[1].Outcome() != relay.OutcomeSucceeded {
			t.Errorf("outermost %v: events %s, %s; want a panic, then a success", outermost, eventString(got[0]), eventString(got[1]))
		}
		rec := b.record(id)
		if a := rec.Attempts[0]; a.Reason != relay.ReasonPanic || a.Error != "panic: boom in middleware" || !strings.Contains(a.Stack, "panicInMiddleware") {
			t.Errorf("outermost %v: first attempt %+v; want a panic with the middleware's stack", outermost, a)
		}
		// A sees the inner middleware's panic as the outcome of what it called; the
		// outermost one's panic happens before A runs.
		want := []string{"A>", "<A panic", "A>", "<A succeeded"}
		if outermost {
			want = want[2:]
		}
		if got := tr.take(); !slices.Equal(got, want) {
			t.Errorf("outermost %v: A saw %q; want %q", outermost, got, want)
		}
	}
}

func panicInMiddleware() { panic("boom in middleware") }

// TestMiddlewareAddsToLogLines: what a middleware adds with AddLogAttrs is on relay's log
// line of the attempt, after the job's id, kind, queue and attempt.
func TestMiddlewareAddsToLogLines(t *testing.T) {
	t.Parallel()
	b := setup(t)
	var (
		mu    sync.Mutex
		lines []slog.Record
	)
	logger := slog.New(logHook(func(r slog.Record) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, r.Clone())
	}))
	c := b.client(relay.Config{Logger: logger, Queues: queues(1, "logged"), Middleware: []relay.Middleware{
		func(next relay.JobFunc) relay.JobFunc {
			return func(ctx context.Context, job *relay.JobInfo) error {
				job.AddLogAttrs(slog.String("trace_id", fmt.Sprint("t", job.ID)))
				return next(ctx, job)
			}
		},
	}})
	handle(t, c, testKind, func(context.Context, *relay.Job[numArgs]) error { return errors.New("nope") }, relay.MaxAttempts(1))
	events := b.subscribe(c, 10)
	b.start(c)
	id := enqueue(b, testKind, numArgs{}, relay.Queue("logged"))
	b.eventsOf(events, 1, id)

	mu.Lock()
	defer mu.Unlock()
	for _, r := range lines {
		if r.Message != "relay: job attempt failed" {
			continue
		}
		var got []string
		r.Attrs(func(a slog.Attr) bool {
			got = append(got, a.Key+"="+a.Value.String())
			return true
		})
		want := fmt.Sprintf("job=[id=%d kind=k queue=logged attempt=1]", id)
		if len(got) < 2 || got[0] != want || got[1] != fmt.Sprint("trace_id=t", id) {
			t.Errorf("the line of the failed attempt has %q; want %q then trace_id=t%d first", got, want, id)
		}
		return
	}
	t.Errorf("no line says the attempt failed")
}

// TestEnqueueMiddleware: enqueue middleware wraps the insert in the order given, sees each
// job and adds to its metadata, learns the ids; its error is the enqueue's, and metadata
// over its limit is refused before anything is sent.
func TestEnqueueMiddleware(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	tr := &trail{}
	named := func(name string) relay.EnqueueMiddleware {
		return func(next relay.EnqueueFunc) relay.EnqueueFunc {
			return func(ctx context.Context, jobs []*relay.EnqueueInfo) error {
				for _, j := range jobs {
					j.Metadata[name] = j.Kind + "@" + j.Queue
				}
				tr.add("%s> %d", name, len(jobs))
				err := next(ctx, jobs)
				ids := make([]string, len(jobs))
				for i, j := range jobs {
					ids[i] = fmt.Sprint(j.ID, j.Duplicate)
				}
				tr.add("<%s %v %v", name, ids, err)
				return err
			}
		}
	}
	ids := b.enqueueMany([]relay.JobSpec{testKind.Job(numArgs{}), testKind.Job(numArgs{}, relay.Queue("q2"))},
		relay.Metadata(map[string]string{"request": "r1"}), named("outer"), named("inner"))
	want := []string{"outer> 2", "inner> 2",
		fmt.Sprintf("<inner [%d false %d false] <nil>", ids[0], ids[1]), fmt.Sprintf("<outer [%d false %d false] <nil>", ids[0], ids[1])}
	if got := tr.take(); !slices.Equal(got, want) {
		t.Errorf("EnqueueMany: %q; want %q", got, want)
	}
	for i, q := range []string{"default", "q2"} {
		rec := b.record(ids[i])
		wantMeta := map[string]string{"request": "r1", "outer": "k@" + q, "inner": "k@" + q}
		if fmt.Sprint(rec.Metadata) != fmt.Sprint(wantMeta) || rec.Sizes.Metadata == 0 {
			t.Errorf("job %d: metadata %v (%d bytes); want %v", ids[i], rec.Metadata, rec.Sizes.Metadata, wantMeta)
		}
	}
	// A listing carries metadata with the other values only.
	page, err := relay.ListJobs(ctx, b, relay.ListFilter{Limit: 1})
	if err != nil || page.Jobs[0].Metadata != nil || page.Jobs[0].Sizes.Metadata == 0 {
		t.Errorf("ListJobs without values: %v, %+v", err, page.Jobs[0])
	}
	page, err = relay.ListJobs(ctx, b, relay.ListFilter{Limit: 1, WithArgs: true})
	if err != nil || page.Jobs[0].Metadata["inner"] != "k@q2" {
		t.Errorf("ListJobs with values: %v, %+v", err, page.Jobs[0])
	}

	// Refusals: the middleware's own error, metadata over its limit or not storable, a
	// middleware that does not call next, one given to a single job of a batch. The
	// transaction is usable after each.
	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	refuse := relay.EnqueueMiddleware(func(relay.EnqueueFunc) relay.EnqueueFunc {
		return func(context.Context, []*relay.EnqueueInfo) error { return errors.New("not today") }
	})
	swallow := relay.EnqueueMiddleware(func(relay.EnqueueFunc) relay.EnqueueFunc {
		return func(context.Context, []*relay.EnqueueInfo) error { return nil }
	})
	big := relay.Metadata(map[string]string{"k": strings.Repeat("x", relay.DefaultMaxMetadataSize)})
	for _, c := range []struct {
		what string
		err  error
		want []error
	}{
		{"a refusing middleware", try(relay.Enqueue(ctx, tx, testKind, numArgs{}, refuse)), nil},
		{"metadata over the default limit", try(relay.Enqueue(ctx, tx, testKind, numArgs{}, big)), []error{relay.ErrTooLarge, relay.ErrInvalidJob}},
		{"metadata a middleware makes too large", try(relay.Enqueue(ctx, tx, testKind, numArgs{}, relay.MaxMetadataSize(10), named("x"))), []error{relay.ErrTooLarge, relay.ErrInvalidJob}},
		{"metadata with a NUL", try(relay.Enqueue(ctx, tx, testKind, numArgs{}, relay.Metadata(map[string]string{"k": "a\x00b"}))), []error{relay.ErrInvalidJob}},
		{"MaxMetadataSize(0)", try(relay.Enqueue(ctx, tx, testKind, numArgs{}, relay.MaxMetadataSize(0))), []error{relay.ErrInvalidJob}},
		{"a middleware that does not call next", try(relay.Enqueue(ctx, tx, testKind, numArgs{}, swallow)), nil},
		{"a middleware of one job of a batch", tryMany(relay.EnqueueMany(ctx, tx, []relay.JobSpec{testKind.Job(numArgs{}, swallow)})), []error{relay.ErrInvalidJob}},
	} {
		if c.err == nil {
			t.Errorf("%s: enqueued", c.what)
		}
		for _, w := range c.want {
			if !errors.Is(c.err, w) {
				t.Errorf("%s: %v; want it to match %v", c.what, c.err, w)
			}
		}
		if c.what == "metadata over the default limit" && !strings.Contains(fmt.Sprint(c.err), "relay.MaxMetadataSize") {
			t.Errorf("%s: %v does not say how to raise the limit", c.what, c.err)
		}
	}
	if _, err := relay.Enqueue(ctx, tx, testKind, numArgs{}); err != nil {
		t.Errorf("the transaction is not usable after the refusals: %v", err)
	}
	if n := b.count(""); n != 2 {
		t.Errorf("%d jobs in the table; want the 2 enqueued first", n)
	}
}

func try(_ int64, err error) error { return err }

func tryMany(_ []int64, err error) error { return err }

// TestOutcomeOfEvents names each way an attempt ends.
func TestOutcomeOfEvents(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		e    relay.Event
		want relay.Outcome
	}{
		{relay.Event{State: relay.StateSucceeded}, relay.OutcomeSucceeded},
		{relay.Event{State: relay.StateSucceeded, CompletedTx: true}, relay.OutcomeSucceeded},
		{relay.Event{State: relay.StateFailed, Reason: relay.ReasonError, CompletedTx: true}, relay.OutcomeSucceeded},
		{relay.Event{State: relay.StatePending, Reason: relay.ReasonError}, relay.OutcomeRetried},
		{relay.Event{State: relay.StatePending, Reason: relay.ReasonShutdown}, relay.OutcomeRetried},
		{relay.Event{State: relay.StateFailed, Reason: relay.ReasonError}, relay.OutcomeFailed},
		{relay.Event{State: relay.StateFailed, Reason: relay.ReasonDecode}, relay.OutcomeFailed},
		{relay.Event{State: relay.StateCancelled, Reason: relay.ReasonCancelled}, relay.OutcomeCancelled},
		{relay.Event{State: relay.StatePending, Reason: relay.ReasonSnoozed}, relay.OutcomeSnoozed},
		{relay.Event{State: relay.StateFailed, Reason: relay.ReasonDiscarded}, relay.OutcomeDiscarded},
		{relay.Event{State: relay.StatePending, Reason: relay.ReasonLostLease}, relay.OutcomeLostLease},
		{relay.Event{State: relay.StateFailed, Reason: relay.ReasonTimeout}, relay.OutcomeTimeout},
		{relay.Event{State: relay.StatePending, Reason: relay.ReasonPanic}, relay.OutcomePanic},
		{relay.Event{State: relay.StatePending, Reason: relay.ReasonInfrastructure}, relay.OutcomeInfrastructure},
	} {
		if got := c.e.Outcome(); got != c.want {
			t.Errorf("%+v: %s; want %s", c.e, got, c.want)
		}
	}
}

// TestObserveMissesNothing: an observer is called for every event, even when a subscriber
// with no room drops them, and never after it stopped.
func TestObserveMissesNothing(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(relay.Config{})
	handle(t, c, testKind, func(context.Context, *relay.Job[numArgs]) error { return nil })
	var (
		mu   sync.Mutex
		seen []int64
	)
	stop := c.Observe(func(e relay.Event) {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, e.JobID)
	})
	full := b.subscribe(c, 0) // never read: it drops every event
	events := b.subscribe(c, 100)
	b.start(c)
	ids := b.enqueueN(testKind, 50)
	b.eventsOf(events, 50, ids...)
	stop()
	b.eventsOf(events, 1, enqueue(b, testKind, numArgs{}))
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(seen)
	if !slices.Equal(seen, ids) {
		t.Errorf("observed %v; want %v", seen, ids)
	}
	if c.Dropped() < 51 {
		t.Errorf("the full subscriber dropped %d events; want 51", c.Dropped())
	}
	noMore(t, full, "event")
}
