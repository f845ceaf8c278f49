package relayotel_test

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relayotel"
	"github.com/relayq/relay/relaytest"
)

type n struct{ N int }

// The kinds of TestMetricsOfKnownOutcomes, each ending its jobs one known way.
var (
	okKind      = relay.NewKind[n]("ok")
	flakyKind   = relay.NewKind[n]("flaky") // fails its first attempt
	badKind     = relay.NewKind[n]("bad")   // fails every attempt, of one
	discardKind = relay.NewKind[n]("discard")
	snoozeKind  = relay.NewKind[n]("snooze") // snoozes its first attempt
	panicKind   = relay.NewKind[n]("panic")
	slowKind    = relay.NewKind[n]("slow") // runs past its timeout
	holdKind    = relay.NewKind[n]("hold") // waits until cancelled, or let go
	notN        = relay.NewKind[string]("ok")
)

// TestMetricsOfKnownOutcomes runs jobs whose every outcome is known — succeeded, retried,
// failed, cancelled, snoozed, discarded, lost lease, timeout, panic, and args that do not
// decode — and checks that every counter and histogram holds exactly the expected counts
// under the expected attributes, that the depth gauges agree with relay.CountJobs, and
// the client's own gauges with what it runs.
func TestMetricsOfKnownOutcomes(t *testing.T) {
	t.Parallel()
	s := newOtelSetup(t)
	ctx := context.Background()
	hold := make(chan struct{}) // closed to let the held job finish
	held := make(chan int64, 10)
	c := s.client(relay.Config{
		Queues:   map[string]relay.QueueConfig{"work": {Workers: 10}},
		LeaseTTL: time.Second, LeaseRenewal: 100 * time.Millisecond,
	}, func(c *relay.Client) {
		handle(t, c, okKind, func(context.Context, *relay.Job[n]) error { return nil })
		handle(t, c, flakyKind, func(_ context.Context, j *relay.Job[n]) error {
			if j.Attempt == 1 {
				return errors.New("flaky")
			}
			return nil
		}, fastRetries)
		handle(t, c, badKind, func(context.Context, *relay.Job[n]) error { return errors.New("bad") }, relay.MaxAttempts(1))
		handle(t, c, discardKind, func(context.Context, *relay.Job[n]) error { return relay.Discard(errors.New("no")) })
		handle(t, c, snoozeKind, func(_ context.Context, j *relay.Job[n]) error {
			if j.Checkpoint == nil && j.Args.N == 0 {
				if err := relay.Checkpoint(context.Background(), s.db, j, "snoozed"); err != nil {
					return err
				}
				return relay.Snooze(time.Millisecond)
			}
			return nil
		})
		handle(t, c, panicKind, func(context.Context, *relay.Job[n]) error { panic("boom") }, relay.MaxAttempts(1))
		handle(t, c, slowKind, func(ctx context.Context, _ *relay.Job[n]) error {
			<-ctx.Done()
			return ctx.Err()
		}, relay.MaxAttempts(1), relay.Timeout(10*time.Millisecond))
		handle(t, c, holdKind, func(ctx context.Context, j *relay.Job[n]) error {
			held <- j.ID
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-hold:
				return nil
			}
		})
	})
	ch := events(t, c)
	enq := s.tel.EnqueueMiddleware()
	in := func(q string) relay.EnqueueOption { return relay.Queue(q) }

	// Enqueued through the middleware: 3 ok, 2 flaky, 1 each of the others (and one that
	// does not decode, under ok's name), then one refused for its metadata.
	_, err := relay.EnqueueMany(ctx, s.db, []relay.JobSpec{
		okKind.Job(n{}), okKind.Job(n{}), okKind.Job(n{}), flakyKind.Job(n{}), flakyKind.Job(n{}),
		badKind.Job(n{}), discardKind.Job(n{}), snoozeKind.Job(n{}), panicKind.Job(n{}), slowKind.Job(n{}),
		notN.Job("not a number"),
	}, in("work"), enq)
	if err != nil {
		t.Fatal(err)
	}
	_, err = relay.Enqueue(ctx, s.db, okKind, n{}, in("work"), enq, relay.Metadata(map[string]string{"big": strings.Repeat("x", 100)}), relay.MaxMetadataSize(50))
	if !errors.Is(err, relay.ErrTooLarge) {
		t.Fatalf("Enqueue with metadata over its limit: %v; want ErrTooLarge", err)
	}
	// 3 ok + 2×2 flaky + bad + discard + 2 snooze + panic + slow + decode = 14 events.
	got := awaitEvents(t, ch, 14)

	// A job cancelled while it runs.
	cancelID, err := relay.Enqueue(ctx, s.db, holdKind, n{}, in("work"), enq)
	if err != nil {
		t.Fatal(err)
	}
	relaytest.Receive(t, held, waitTimeout, "the held job to start")
	if err := relay.Cancel(ctx, s.db, cancelID); err != nil {
		t.Fatal(err)
	}
	got = append(got, awaitEvents(t, ch, 1)...)

	// A job whose client died: claimed by a ghost whose lease has expired, and rescued by
	// c's rescuer (a lost lease). Its queue is not c's: it stays pending. It was not
	// enqueued through the middleware, and the ghost's attempt was not started by it.
	ghost, err := relay.Enqueue(ctx, s.db, okKind, n{}, relay.Queue("ghosts"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec(ctx, `UPDATE relay.jobs SET state = 'running', attempt = 1, max_attempts = 5,
		attempted_at = now() - interval '1 minute', attempted_by = 'ghost', lease_expires_at = now() - interval '1 second'
		WHERE id = $1`, ghost); err != nil {
		t.Fatal(err)
	}
	got = append(got, awaitEvents(t, ch, 1)...)
	if got[len(got)-1].Outcome() != relay.OutcomeLostLease {
		t.Fatalf("the ghost's job ended %s; want lost lease", got[len(got)-1].Outcome())
	}

	// Left unfinished, for the depth gauges: one job running (held), one pending in a
	// queue no client works, due a minute ago, one scheduled and one reserved.
	if _, err := relay.Enqueue(ctx, s.db, holdKind, n{}, in("work")); err != nil {
		t.Fatal(err)
	}
	relaytest.Receive(t, held, waitTimeout, "the held job to start")
	if _, err := relay.Enqueue(ctx, s.db, okKind, n{}, in("idle"), relay.RunAt(time.Now().Add(-time.Minute))); err != nil {
		t.Fatal(err)
	}
	if _, err := relay.Enqueue(ctx, s.db, okKind, n{}, in("idle"), relay.RunIn(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := relay.Enqueue(ctx, s.db, okKind, n{}, in("idle"), relay.Reserved(time.Hour)); err != nil {
		t.Fatal(err)
	}

	outcomes := map[relay.Outcome]int{}
	for _, e := range got {
		outcomes[e.Outcome()]++
	}
	wantOutcomes := map[relay.Outcome]int{
		relay.OutcomeSucceeded: 3 + 2 + 1, relay.OutcomeRetried: 2, relay.OutcomeFailed: 2, relay.OutcomeDiscarded: 1,
		relay.OutcomeSnoozed: 1, relay.OutcomePanic: 1, relay.OutcomeTimeout: 1, relay.OutcomeCancelled: 1, relay.OutcomeLostLease: 1,
	}
	if !maps.Equal(outcomes, wantOutcomes) {
		t.Fatalf("outcomes %v; want %v", outcomes, wantOutcomes)
	}

	m := s.collect()
	// The counters relayotel sums itself read as any counter does: monotonic, cumulative.
	for _, name := range []string{relayotel.MetricEnqueued, relayotel.MetricStarted, relayotel.MetricFinished, relayotel.MetricReconnects} {
		if sum, ok := m[name].Data.(metricdata.Sum[int64]); !ok || !sum.IsMonotonic || sum.Temporality != metricdata.CumulativeTemporality {
			t.Errorf("%s holds a %T (monotonic %v, %v); want a monotonic cumulative sum", name, m[name].Data, sum.IsMonotonic, sum.Temporality)
		}
	}
	const work, proc = "messaging.destination.name=work", "messaging.operation.name=process"
	key := func(parts ...string) string { slices.Sort(parts); return strings.Join(parts, ",") }
	fin := func(kind, outcome, state, errType string) string {
		parts := []string{work, proc, "relay.job.kind=" + kind, "relay.job.outcome=" + outcome, "relay.job.state=" + state}
		if errType != "" {
			parts = append(parts, "error.type="+errType)
		}
		return key(parts...)
	}
	wantFinished := map[string]int64{
		fin("ok", "succeeded", "succeeded", ""):            3,
		fin("flaky", "retried", "pending", "error"):        2,
		fin("flaky", "succeeded", "succeeded", ""):         2,
		fin("bad", "failed", "failed", "error"):            1,
		fin("discard", "discarded", "failed", "discarded"): 1,
		fin("snooze", "snoozed", "pending", ""):            1,
		fin("snooze", "succeeded", "succeeded", ""):        1,
		fin("panic", "panic", "failed", "panic"):           1,
		fin("slow", "timeout", "failed", "timeout"):        1,
		fin("ok", "failed", "failed", "decode"):            1,
		fin("hold", "cancelled", "cancelled", "cancelled"): 1,
		key("messaging.destination.name=ghosts", proc, "relay.job.kind=ok", "relay.job.outcome=lost lease", "relay.job.state=pending", "error.type=lost lease"): 1,
	}
	equalPoints(t, relayotel.MetricFinished, sums(t, m[relayotel.MetricFinished]), wantFinished)
	// Every attempt's duration, but the lost lease's, which is not known.
	wantDurations := maps.Clone(wantFinished)
	delete(wantDurations, key("messaging.destination.name=ghosts", proc, "relay.job.kind=ok", "relay.job.outcome=lost lease", "relay.job.state=pending", "error.type=lost lease"))
	equalPoints(t, relayotel.MetricDuration, histogramCounts(t, m[relayotel.MetricDuration]), wantDurations)

	// Started by the middleware: every attempt c ran, the two held jobs included.
	st := func(queue, kind string) string {
		return key("messaging.destination.name="+queue, proc, "relay.job.kind="+kind)
	}
	wantStarted := map[string]int64{
		st("work", "ok"): 3 + 1, st("work", "flaky"): 4, st("work", "bad"): 1, st("work", "discard"): 1, st("work", "snooze"): 2,
		st("work", "panic"): 1, st("work", "slow"): 1, st("work", "hold"): 2,
	}
	equalPoints(t, relayotel.MetricStarted, sums(t, m[relayotel.MetricStarted]), wantStarted)
	equalPoints(t, relayotel.MetricPickup, histogramCounts(t, m[relayotel.MetricPickup]), wantStarted)

	// Enqueued through the middleware, and the one it refused.
	const enqOp = "messaging.operation.name=enqueue"
	sent := func(kind string, extra ...string) string {
		return key(append([]string{work, enqOp, "relay.job.kind=" + kind}, extra...)...)
	}
	wantSent := map[string]int64{
		sent("ok"): 3 + 1, sent("flaky"): 2, sent("bad"): 1, sent("discard"): 1, sent("snooze"): 1, sent("panic"): 1,
		sent("slow"): 1, sent("hold"): 1, sent("ok", "error.type=too_large"): 1,
	}
	equalPoints(t, relayotel.MetricEnqueued, sums(t, m[relayotel.MetricEnqueued]), wantSent)

	// The depth gauges hold what CountJobs counts of the unfinished jobs.
	wantDepth := unfinished(t, s.db)
	equalPoints(t, relayotel.MetricDepth, sums(t, m[relayotel.MetricDepth]), wantDepth)
	if wantDepth["messaging.destination.name=work,relay.job.state=running"] != 1 || wantDepth["messaging.destination.name=idle,relay.job.state=pending"] != 1 ||
		wantDepth["messaging.destination.name=ghosts,relay.job.state=pending"] != 1 ||
		wantDepth["messaging.destination.name=idle,relay.job.state=held"] != 1 {
		t.Errorf("CountJobs does not see the jobs left unfinished: %v", wantDepth)
	}
	oldest := gauges(t, m[relayotel.MetricOldest])
	if age := oldest["messaging.destination.name=idle"]; age < 59 || age > 120 {
		t.Errorf("the oldest due job of queue idle is %.1f s old; want about 60", age)
	}
	if age, ok := oldest["messaging.destination.name=work"]; !ok || age != 0 {
		t.Errorf("queue work, with no due job, reports an oldest job %.1f s old (reported: %v)", age, ok)
	}

	// The client's own figures: the held job runs, 9 of its 10 workers are free.
	id := "messaging.client.id=" + c.ID()
	equalPoints(t, relayotel.MetricRunning, sums(t, m[relayotel.MetricRunning]), map[string]int64{key(id, work): 1})
	equalPoints(t, relayotel.MetricFreeSlots, sums(t, m[relayotel.MetricFreeSlots]), map[string]int64{id: 9})
	equalPoints(t, relayotel.MetricReconnects, sums(t, m[relayotel.MetricReconnects]), map[string]int64{id: 0})
	if b := sums(t, m[relayotel.MetricBacklog]); len(b) != 1 {
		t.Errorf("%s: %v; want one point for the client", relayotel.MetricBacklog, b)
	}

	// Once the held job has finished, queue work has no unfinished job left: its depth is
	// reported as zeros, not left out (which would keep its last figures in a dashboard).
	close(hold)
	if e := awaitEvents(t, ch, 1)[0]; e.Outcome() != relay.OutcomeSucceeded {
		t.Fatalf("the held job ended %s", e.Outcome())
	}
	depth := sums(t, s.collect()[relayotel.MetricDepth])
	wantDepth = unfinished(t, s.db)
	for _, st := range []string{"pending", "scheduled", "running", "held"} {
		k := "messaging.destination.name=work,relay.job.state=" + st
		if v, ok := depth[k]; !ok || v != 0 {
			t.Errorf("%s{%s} = %d (reported: %v); want 0", relayotel.MetricDepth, k, v, ok)
		}
		wantDepth[k] = 0
	}
	equalPoints(t, relayotel.MetricDepth, depth, wantDepth)
}

// unfinished returns relay.CountJobs of the queues that have unfinished jobs, as the depth
// gauge's points.
func unfinished(t *testing.T, db relay.DB) map[string]int64 {
	t.Helper()
	counts, err := relay.CountJobs(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]int64{}
	for queue, qc := range counts.Queues {
		if qc.Pending+qc.Scheduled+qc.Running+qc.Held == 0 {
			continue
		}
		for _, st := range []relay.JobState{relay.StatePending, relay.StateScheduled, relay.StateRunning, relay.StateHeld} {
			want["messaging.destination.name="+queue+",relay.job.state="+string(st)] = qc.Get(st)
		}
	}
	return want
}

// gauges returns the points of a float64 gauge, by attributes.
func gauges(t *testing.T, m metricdata.Metrics) map[string]float64 {
	t.Helper()
	d, ok := m.Data.(metricdata.Gauge[float64])
	if !ok {
		t.Fatalf("%s holds %T, not a float64 gauge", m.Name, m.Data)
	}
	out := map[string]float64{}
	for _, p := range d.DataPoints {
		out[attrs(p.Attributes, common...)] = p.Value
	}
	return out
}

// equalPoints fails the test unless a metric's points are exactly want.
func equalPoints(t *testing.T, name string, got, want map[string]int64) {
	t.Helper()
	if maps.Equal(got, want) {
		return
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got[k] != want[k] {
			t.Errorf("%s{%s} = %d; want %d", name, k, got[k], want[k])
		}
	}
	for _, k := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[k]; !ok {
			t.Errorf("%s{%s} = %d; want no such point", name, k, got[k])
		}
	}
}

var completeKind = relay.NewKind[n]("complete")

// TestCountersCountOnlyWhatCommitted: a handler completes its job in its own transaction
// (CompleteTx), which rolls back on the first attempt although the handler returns nil.
// The counter says what the database holds: one retried attempt, one success.
func TestCountersCountOnlyWhatCommitted(t *testing.T) {
	t.Parallel()
	s := newOtelSetup(t)
	ctx := context.Background()
	c := s.client(relay.Config{}, func(c *relay.Client) {
		handle(t, c, completeKind, func(ctx context.Context, j *relay.Job[n]) error {
			tx, err := s.db.Begin(ctx)
			if err != nil {
				return err
			}
			defer tx.Rollback(ctx)
			if err := relay.CompleteTx(ctx, tx, j); err != nil {
				return err
			}
			if j.Attempt == 1 {
				return tx.Rollback(ctx) // nil: the handler "succeeded", the database did not
			}
			return tx.Commit(ctx)
		}, fastRetries)
	})
	ch := events(t, c)
	if _, err := relay.Enqueue(ctx, s.db, completeKind, n{}); err != nil {
		t.Fatal(err)
	}
	awaitEvents(t, ch, 2)
	const base = "messaging.destination.name=default,messaging.operation.name=process,relay.job.kind=complete,"
	equalPoints(t, relayotel.MetricFinished, sums(t, s.collect()[relayotel.MetricFinished]), map[string]int64{
		"error.type=error," + base + "relay.job.outcome=retried,relay.job.state=pending": 1,
		base + "relay.job.outcome=succeeded,relay.job.state=succeeded":                   1,
	})
}
