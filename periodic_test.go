package relay_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/loadavg"
	"github.com/relayq/relay/relaytest"
)

// slotRun is one start of a periodic job, as its handler saw it.
type slotRun struct {
	id       int64
	schedule string
	slot     time.Time
	started  time.Time
}

// reportSlots is a handler that sends each start of a job to ch and succeeds.
func reportSlots(ch chan<- slotRun) relay.HandlerFunc[numArgs] {
	return func(_ context.Context, job *relay.Job[numArgs]) error {
		ch <- slotRun{id: job.ID, schedule: job.Schedule, slot: job.Slot, started: time.Now()}
		return nil
	}
}

// schedule registers a schedule on c, failing the test on error.
func schedule(t testing.TB, c *relay.Client, name string, when relay.Timing, job relay.JobSpec, opts ...relay.ScheduleOption) {
	t.Helper()
	if err := relay.Schedule(c, name, when, job, opts...); err != nil {
		t.Fatalf("Schedule(%q): %v", name, err)
	}
}

// startAll starts the clients at once, as processes deployed together would.
func (b *bundle) startAll(clients ...*relay.Client) {
	b.t.Helper()
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() { b.start(c) })
	}
	wg.Wait()
}

// stopAll stops the clients at once.
func (b *bundle) stopAll(clients ...*relay.Client) {
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() { b.stop(c) })
	}
	wg.Wait()
}

// slotJobs counts the jobs of schedule name by slot (in Unix microseconds), for the
// slots from from, inclusive, to to, exclusive.
func (b *bundle) slotJobs(name string, from, to time.Time) map[int64]int {
	b.t.Helper()
	rows, err := b.Query(context.Background(), `SELECT schedule_slot, count(*) FROM `+b.table("jobs")+`
		WHERE schedule = $1 AND schedule_slot >= $2 AND schedule_slot < $3 GROUP BY 1`, name, from, to)
	if err != nil {
		b.t.Fatal(err)
	}
	defer rows.Close()
	out := map[int64]int{}
	for rows.Next() {
		var slot time.Time
		var n int
		if err := rows.Scan(&slot, &n); err != nil {
			b.t.Fatal(err)
		}
		out[slot.UnixMicro()] = n
	}
	if err := rows.Err(); err != nil {
		b.t.Fatal(err)
	}
	return out
}

// nextSlot is the next slot of schedule name as the periodic table holds it.
func (b *bundle) nextSlot(name string) time.Time {
	b.t.Helper()
	var next time.Time
	err := b.QueryRow(context.Background(), `SELECT next_slot FROM `+b.table("periodic")+` WHERE name = $1`, name).Scan(&next)
	if err != nil {
		b.t.Fatal(err)
	}
	return next
}

// Three clients have one schedule, every second: over ten seconds there is exactly one
// job per slot, and each starts within 50 ms of its slot, its handler and GetJob telling
// its schedule and slot.
func TestScheduleThreeClientsOneJobPerSlot(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const name = "every-second"
	runs := make(chan slotRun, 100)
	var clients []*relay.Client
	for range 3 {
		c := b.client(relay.Config{})
		handle(t, c, testKind, reportSlots(runs))
		schedule(t, c, name, relay.Every(time.Second), testKind.Job(numArgs{N: 7}))
		clients = append(clients, c)
	}
	b.startAll(clients...)
	stalls := loadavg.MeasureStalls()
	first := time.Now().Truncate(time.Second).Add(2 * time.Second) // after every client started
	const slots = 10
	end := first.Add(slots * time.Second)

	started := map[int64][]slotRun{}
	for {
		r := recv(t, runs, "the next slot's job")
		if !r.slot.Before(end) {
			break // the slot after the window: every slot of the window has started
		}
		if !r.slot.Before(first) {
			started[r.slot.UnixMicro()] = append(started[r.slot.UnixMicro()], r)
		}
	}
	stalled := stalls.Stop()
	b.stopAll(clients...)

	// On time, within 50 ms on a machine with a core to spare; a machine that stalls this
	// test's goroutines (other tests, -race) delays relay's timers as much.
	bound := loadavg.Scaled(50*time.Millisecond) + stalled
	inTable := b.slotJobs(name, first, end)
	for i := range slots {
		slot := first.Add(time.Duration(i) * time.Second)
		if n := inTable[slot.UnixMicro()]; n != 1 {
			t.Errorf("slot %v has %d jobs, want 1", slot.Format(time.TimeOnly), n)
		}
		rs := started[slot.UnixMicro()]
		if len(rs) != 1 {
			t.Errorf("the job of slot %v started %d times, want once", slot.Format(time.TimeOnly), len(rs))
			continue
		}
		r := rs[0]
		if late := r.started.Sub(slot); late < 0 || late > bound {
			t.Errorf("the job of slot %v started %v after it, want 0 to 50 ms (%v with the machine's load and its longest stall, %v)", slot.Format(time.TimeOnly), late, bound, stalled)
		}
		rec := b.record(r.id)
		if r.schedule != name || rec.Schedule != name || !rec.Slot.Equal(slot) || string(rec.Args) != `{"N": 7}` {
			t.Errorf("job %d: schedule %q in its handler, %q and slot %v in GetJob, args %s; want %q, %v, N 7",
				r.id, r.schedule, rec.Schedule, rec.Slot, rec.Args, name, slot)
		}
	}
	if len(inTable) != slots {
		t.Errorf("%d slots have jobs in the window, want %d", len(inTable), slots)
	}
}

// Every client stops for five slots, then two start again together: Skip enqueues none
// of the missed slots, RunOnce one (the latest), Backfill all five (or those within its
// age), each exactly once; RunOnStart adds a job at once when the policy enqueued none.
// Each case is a schedule of its own on the same clients, so that they share the wait.
func TestScheduleCatchUpAfterEveryClientStopped(t *testing.T) {
	t.Parallel()
	b := setup(t)
	type catchUp struct {
		name       string
		policy     relay.CatchUpPolicy
		runOnStart bool
		// enqueued are the missed slots enqueued, of missed ones from first to restart
		enqueued func(missed []time.Time, restart time.Time) []time.Time
		startJob bool // also one job at once, off the slots
	}
	none := func([]time.Time, time.Time) []time.Time { return nil }
	latest := func(m []time.Time, _ time.Time) []time.Time { return m[len(m)-1:] }
	all := func(m []time.Time, _ time.Time) []time.Time { return m }
	within3s := func(m []time.Time, restart time.Time) []time.Time {
		return slices.DeleteFunc(slices.Clone(m), func(s time.Time) bool { return s.Before(restart.Add(-3 * time.Second)) })
	}
	cases := []catchUp{
		{"skip", relay.Skip, false, none, false},
		{"run-once", relay.RunOnce, false, latest, false},
		{"backfill", relay.Backfill(time.Minute), false, all, false},
		{"backfill-3s", relay.Backfill(3 * time.Second), false, within3s, false},
		{"skip-run-on-start", relay.Skip, true, none, true},
		{"run-once-run-on-start", relay.RunOnce, true, latest, false},
	}
	runs := make(chan slotRun, 1000)
	newClient := func() *relay.Client {
		c := b.client(relay.Config{})
		handle(t, c, testKind, reportSlots(runs))
		for _, tc := range cases {
			opts := []relay.ScheduleOption{relay.CatchUp(tc.policy)}
			if tc.runOnStart {
				opts = append(opts, relay.RunOnStart())
			}
			schedule(t, c, tc.name, relay.Every(time.Second), testKind.Job(numArgs{}), opts...)
		}
		return c
	}
	before := []*relay.Client{newClient(), newClient()}
	b.startAll(before...)
	for r := recv(t, runs, "a slot's job to start"); r.slot.Nanosecond() != 0; {
		r = recv(t, runs, "a slot's job to start") // not RunOnStart's job of a new schedule
	}
	b.stopAll(before...)
	for len(runs) > 0 {
		<-runs
	}

	// The slots from each schedule's next one are missed: restart in the fifth of them,
	// far enough from the sixth that it is not yet due to be enqueued (half a second ahead).
	next := map[string]time.Time{}
	first := time.Time{}
	for _, tc := range cases {
		next[tc.name] = b.nextSlot(tc.name)
		if first.IsZero() || next[tc.name].Before(first) {
			first = next[tc.name]
		}
	}
	time.Sleep(time.Until(first.Add(4*time.Second + 200*time.Millisecond)))
	restart := time.Now()
	after := []*relay.Client{newClient(), newClient()}
	b.startAll(after...)

	// Start has caught up: what it enqueued for the missed slots exists.
	waiting := map[string]bool{} // the caught-up jobs, by schedule@slot
	for _, tc := range cases {
		var missed []time.Time
		for s := next[tc.name]; s.Before(restart); s = s.Add(time.Second) {
			missed = append(missed, s)
		}
		if len(missed) < 4 {
			t.Fatalf("%s: only %d slots missed (next slot %v, restarted at %v)", tc.name, len(missed), next[tc.name], restart)
		}
		var enqueued []time.Time
		startJobs, upcoming := 0, 0
		// Up to now: RunOnStart's job is at the moment its client started, which a loaded
		// machine may put past the last missed slot's second.
		for slot, n := range b.slotJobs(tc.name, next[tc.name], time.Now().Add(time.Second)) {
			at := time.UnixMicro(slot).UTC()
			switch {
			case at.Nanosecond() != 0:
				startJobs += n
			case at.After(missed[len(missed)-1]):
				upcoming++
				continue // a slot due after the restart, not a missed one
			default:
				if n != 1 {
					t.Errorf("%s: slot %v has %d jobs", tc.name, at.Format(time.TimeOnly), n)
				}
				enqueued = append(enqueued, at)
			}
			waiting[tc.name+"@"+at.Format(time.RFC3339Nano)] = true
		}
		slices.SortFunc(enqueued, time.Time.Compare)
		if want := tc.enqueued(missed, restart); !slices.EqualFunc(enqueued, want, time.Time.Equal) {
			t.Errorf("%s: missed slots enqueued: %v, want %v (missed: %v)", tc.name, enqueued, want, missed)
		}
		if tc.startJob && startJobs == 0 && upcoming > 0 {
			// A loaded machine started the clients within the next slot's lead: its job,
			// enqueued at once, stands for RunOnStart's (see schedule.plan).
			startJobs = 1
		}
		if wantStart := map[bool]int{true: 1, false: 0}[tc.startJob]; startJobs != wantStart {
			t.Errorf("%s: %d jobs at once, want %d", tc.name, startJobs, wantStart)
		}
	}
	// Each of them runs, once.
	ran := map[string]bool{}
	for len(waiting) > 0 {
		r := recv(t, runs, fmt.Sprintf("%d caught-up jobs to start", len(waiting)))
		key := r.schedule + "@" + r.slot.UTC().Format(time.RFC3339Nano)
		if ran[key] {
			t.Errorf("%s ran twice", key)
		}
		ran[key] = true
		delete(waiting, key)
	}
}

// A new schedule with RunOnStart runs once at once, however many clients start with it;
// one that a client starts while another runs it does not.
func TestScheduleRunOnStartOnce(t *testing.T) {
	t.Parallel()
	b := setup(t)
	const name = "hourly"
	runs := make(chan slotRun, 10)
	newClient := func() *relay.Client {
		c := b.client(relay.Config{})
		handle(t, c, testKind, reportSlots(runs))
		schedule(t, c, name, relay.Cron("0 0 * * * *", ""), testKind.Job(numArgs{}), relay.RunOnStart())
		return c
	}
	b.startAll(newClient(), newClient(), newClient())
	r := recv(t, runs, "the job at once")
	if r.slot.IsZero() || r.schedule != name {
		t.Errorf("the job at once has schedule %q, slot %v", r.schedule, r.slot)
	}
	b.start(newClient()) // a rolling restart: others still run it
	if n := len(b.slotJobs(name, time.Time{}, time.Now().Add(time.Hour))); n != 1 {
		t.Errorf("%d jobs of a new schedule started with RunOnStart on four clients, want 1", n)
	}
}

// The slot a job was enqueued for is never enqueued again, even once its job is deleted:
// the periodic table, not the job, remembers it.
func TestScheduleDeletedJobDoesNotRunAgain(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const name = "tick"
	runs := make(chan slotRun, 100)
	newClient := func() *relay.Client {
		c := b.client(relay.Config{})
		handle(t, c, testKind, reportSlots(runs))
		schedule(t, c, name, relay.Every(time.Second), testKind.Job(numArgs{}), relay.CatchUp(relay.Backfill(time.Hour)))
		return c
	}
	c := newClient()
	b.start(c)
	ran := recv(t, runs, "a slot's job to start")
	b.waitState(relay.StateSucceeded, ran.id)
	b.stop(c)
	if _, err := relay.DeleteJobs(ctx, b, relay.ListFilter{}, relay.Schema(b.Schema)); err != nil {
		t.Fatal(err)
	}
	b.start(newClient()) // backfills what it missed since: never the slot that ran
	if got := b.slotJobs(name, time.Time{}, ran.slot.Add(time.Microsecond)); len(got) > 0 {
		t.Errorf("slots up to the one that ran have jobs again after a restart: %v", got)
	}
}

// ListSchedules shows each schedule with its slots and the live clients that have it; a
// schedule that no live client has is orphaned, and only then can DeleteSchedule remove it.
func TestListSchedulesAndOrphans(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	schema := relay.Schema(b.Schema)
	c := b.client(relay.Config{ID: "with-both"})
	handle(t, c, testKind, func(context.Context, *relay.Job[numArgs]) error { return nil })
	schedule(t, c, "nightly", relay.Cron("0 0 3 * * *", "Europe/Berlin"), testKind.Job(numArgs{}, relay.Queue("reports")),
		relay.CatchUp(relay.Backfill(24*time.Hour)))
	schedule(t, c, "often", relay.Every(time.Hour), testKind.Job(numArgs{}))
	b.start(c)

	var list []relay.ScheduleInfo
	relaytest.WaitFor(t, waitTimeout, "the client's heartbeat to list its schedules", func() bool {
		var err error
		if list, err = relay.ListSchedules(ctx, b, schema); err != nil {
			t.Fatal(err)
		}
		return len(list) == 2 && len(list[0].Clients) == 1 && len(list[1].Clients) == 1
	})
	n := list[0]
	if n.Name != "nightly" || n.Spec != "cron 0 0 3 * * * Europe/Berlin" || n.Kind != testKind.Name() || n.Queue != "reports" ||
		n.CatchUp != "backfill 24h0m0s" || n.Orphaned || n.Clients[0] != "with-both" {
		t.Errorf("nightly: %+v", n)
	}
	berlin, _ := time.LoadLocation("Europe/Berlin")
	if at := n.NextSlot.In(berlin); at.Hour() != 3 || at.Minute() != 0 || !at.After(time.Now()) || !n.LastSlot.IsZero() {
		t.Errorf("nightly's next slot %v (in Berlin %v), last %v; want the next 03:00 in Berlin, none yet", n.NextSlot, at, n.LastSlot)
	}
	if o := list[1]; o.Name != "often" || o.Spec != "every 1h0m0s" || o.CatchUp != "skip" || !o.NextSlot.Equal(o.NextSlot.Truncate(time.Hour)) {
		t.Errorf("often: %+v", o)
	}
	if err := relay.DeleteSchedule(ctx, b, "often", schema); !errors.Is(err, relay.ErrScheduleInUse) || !strings.Contains(err.Error(), "with-both") {
		t.Errorf("DeleteSchedule of a schedule in use = %v, want ErrScheduleInUse naming the client", err)
	}

	// A new version of the application drops "often": it is orphaned, no longer enqueued.
	b.stop(c)
	c2 := b.client(relay.Config{ID: "nightly-only"})
	handle(t, c2, testKind, func(context.Context, *relay.Job[numArgs]) error { return nil })
	schedule(t, c2, "nightly", relay.Cron("0 0 3 * * *", "Europe/Berlin"), testKind.Job(numArgs{}, relay.Queue("reports")))
	b.start(c2)
	relaytest.WaitFor(t, waitTimeout, "the new client's heartbeat", func() bool {
		var err error
		if list, err = relay.ListSchedules(ctx, b, schema); err != nil {
			t.Fatal(err)
		}
		return len(list[0].Clients) == 1 && list[0].Clients[0] == "nightly-only"
	})
	if list[0].CatchUp != "skip" {
		t.Errorf("nightly's policy is %q after a client registered it with Skip", list[0].CatchUp)
	}
	if !list[1].Orphaned || len(list[1].Clients) != 0 {
		t.Errorf("often, which no live client has: %+v", list[1])
	}
	if err := relay.DeleteSchedule(ctx, b, "often", schema); err != nil {
		t.Fatalf("DeleteSchedule of an orphan: %v", err)
	}
	if err := relay.DeleteSchedule(ctx, b, "often", schema); !errors.Is(err, relay.ErrScheduleNotFound) {
		t.Errorf("DeleteSchedule of a deleted schedule = %v, want ErrScheduleNotFound", err)
	}
	if list, _ = relay.ListSchedules(ctx, b, schema); len(list) != 1 {
		t.Errorf("%d schedules after deleting one of two", len(list))
	}
	if _, err := relay.ListSchedules(ctx, nil); !errors.Is(err, relay.ErrNilDB) {
		t.Errorf("ListSchedules on a nil db = %v, want ErrNilDB", err)
	}
	if err := relay.DeleteSchedule(ctx, b, "", schema); !errors.Is(err, relay.ErrInvalidConfig) {
		t.Errorf("DeleteSchedule of an empty name = %v, want ErrInvalidConfig", err)
	}
}

// A schedule that cannot be run is refused by Schedule, and makes Start fail, with
// ErrInvalidConfig and the schedule's name.
func TestScheduleRefusesBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	job := testKind.Job(numArgs{})
	for _, tc := range []struct {
		name  string
		when  relay.Timing
		job   relay.JobSpec
		opts  []relay.ScheduleOption
		twice bool
	}{
		{name: "bad-cron", when: relay.Cron("61 * * * * *", ""), job: job},
		{name: "five-fields", when: relay.Cron("0 3 * * *", ""), job: job},
		{name: "never", when: relay.Cron("0 0 0 30 2 *", ""), job: job},
		{name: "bad-zone", when: relay.Cron("0 0 3 * * *", "Mars/Olympus_Mons"), job: job},
		{name: "zone-inside", when: relay.Cron("CRON_TZ=UTC 0 0 3 * * *", ""), job: job},
		{name: "every-in-cron", when: relay.Cron("@every 1m", ""), job: job},
		{name: "too-often", when: relay.Every(500 * time.Millisecond), job: job},
		{name: "zero-timing", job: job},
		{name: "run-at", when: relay.Every(time.Minute), job: testKind.Job(numArgs{}, relay.RunIn(time.Hour))},
		{name: "unique", when: relay.Every(time.Minute), job: testKind.Job(numArgs{}, relay.Unique("k"))},
		{name: "schema", when: relay.Every(time.Minute), job: testKind.Job(numArgs{}, relay.Schema("other"))},
		{name: "bad-queue", when: relay.Every(time.Minute), job: testKind.Job(numArgs{}, relay.Queue(""))},
		{name: "zero-kind", when: relay.Every(time.Minute), job: relay.Kind[numArgs]{}.Job(numArgs{})},
		{name: "backfill-zero", when: relay.Every(time.Minute), job: job, opts: []relay.ScheduleOption{relay.CatchUp(relay.Backfill(0))}},
		{name: "twice", when: relay.Every(time.Minute), job: job, twice: true},
		{name: strings.Repeat("n", relay.MaxNameLen+1), when: relay.Every(time.Minute), job: job},
	} {
		t.Run(tc.name[:min(len(tc.name), 20)], func(t *testing.T) {
			c := b.in(t).client(relay.Config{})
			handle(t, c, testKind, func(context.Context, *relay.Job[numArgs]) error { return nil })
			if tc.twice {
				schedule(t, c, tc.name, tc.when, tc.job, tc.opts...)
			}
			err := relay.Schedule(c, tc.name, tc.when, tc.job, tc.opts...)
			if !errors.Is(err, relay.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.name[:min(len(tc.name), 20)]) {
				t.Errorf("Schedule = %v, want ErrInvalidConfig naming the schedule", err)
			}
			err = c.Start(context.Background(), b.Pool)
			if err == nil {
				c.Stop(context.Background())
			}
			if !errors.Is(err, relay.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.name[:min(len(tc.name), 20)]) {
				t.Errorf("Start = %v, want ErrInvalidConfig naming the schedule", err)
			}
		})
	}
	if err := relay.Schedule(nil, "x", relay.Every(time.Minute), job); !errors.Is(err, relay.ErrInvalidConfig) {
		t.Errorf("Schedule on a nil client = %v, want ErrInvalidConfig", err)
	}
	c := b.client(relay.Config{})
	handle(t, c, testKind, func(context.Context, *relay.Job[numArgs]) error { return nil })
	b.start(c)
	if err := relay.Schedule(c, "late", relay.Every(time.Minute), job); !errors.Is(err, relay.ErrAlreadyStarted) {
		t.Errorf("Schedule after Start = %v, want ErrAlreadyStarted", err)
	}
}

// Slots are those of the cron expression in its time zone, daylight saving time included,
// and the multiples of an interval since the Unix epoch.
func TestScheduleSlots(t *testing.T) {
	t.Parallel()
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, tc := range []struct {
		when      relay.Timing
		after     string
		want      string
		spec      string
		wantLater []string
	}{
		// 03:00 in Berlin: 02:00 UTC in winter, 01:00 UTC in summer (from 2026-03-29).
		{relay.Cron("0 0 3 * * *", "Europe/Berlin"), "2026-03-27T12:00:00Z", "2026-03-28T02:00:00Z", "cron 0 0 3 * * * Europe/Berlin",
			[]string{"2026-03-29T01:00:00Z", "2026-03-30T01:00:00Z"}},
		{relay.Cron("*/10 * * * * *", ""), "2026-01-01T00:00:05.5Z", "2026-01-01T00:00:10Z", "cron */10 * * * * * UTC",
			[]string{"2026-01-01T00:00:20Z"}},
		{relay.Cron("@daily", "UTC"), "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "cron @daily UTC", nil},
		{relay.Every(30 * time.Second), "2026-01-01T12:00:10Z", "2026-01-01T12:00:30Z", "every 30s",
			[]string{"2026-01-01T12:01:00Z"}},
		{relay.Every(30 * time.Second), "2026-01-01T12:00:30Z", "2026-01-01T12:01:00Z", "every 30s", nil},
		{relay.Every(7 * time.Second), "1970-01-01T00:00:00Z", "1970-01-01T00:00:07Z", "every 7s", nil},
		{relay.Every(time.Hour), "2026-06-01T10:59:59.999Z", "2026-06-01T11:00:00Z", "every 1h0m0s", nil},
	} {
		got := relay.SlotAfter(tc.when, at(tc.after))
		for _, later := range append([]string{tc.want}, tc.wantLater...) {
			if !got.Equal(at(later)) {
				t.Errorf("%s: a slot after %s is %v, want %s", tc.spec, tc.after, got, later)
				break
			}
			got = relay.SlotAfter(tc.when, got)
		}
		if tc.when.String() != tc.spec {
			t.Errorf("spec %q, want %q", tc.when.String(), tc.spec)
		}
	}
}
