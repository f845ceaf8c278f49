package relay

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/relayq/relay/internal/store"
)

// scheduler enqueues the slots of a client's schedules: a background service of the
// client, started by Start once it has caught up. Every client that has a schedule runs
// one; the schedule's row in the periodic table, locked while a client enqueues, makes
// each slot enqueued once.
//
// A slot's job is enqueued a little ahead (Timing.lead), as a job scheduled at the slot:
// the dispatchers' timers start it on time, the NOTIFY of its enqueue having told them
// when. The scheduler itself only needs to wake within the lead before each slot.
type scheduler struct {
	store   *store.Store
	db      store.ClientDB
	logger  *slog.Logger
	entries []*scheduleState
}

// scheduleState is where one schedule stands, as this client last saw it.
type scheduleState struct {
	*schedule
	next     time.Time // the schedule's next slot
	retryAt  time.Time // after a failure: when to try again; zero otherwise
	failures int
}

// schedulerRetry bounds the wait before a schedule whose slots could not be enqueued is
// tried again; the first retry is after 100 ms, doubling.
const schedulerRetry = 5 * time.Second

func newScheduler(s *store.Store, db store.ClientDB, logger *slog.Logger, schedules []*schedule) *scheduler {
	sc := &scheduler{store: s, db: db, logger: logger}
	for _, sch := range schedules {
		sc.entries = append(sc.entries, &scheduleState{schedule: sch})
	}
	return sc
}

// register stores the client's schedules in the periodic table.
func (sc *scheduler) register(ctx context.Context, entries ...*scheduleState) error {
	defs := make([]store.ScheduleDef, len(entries))
	for i, e := range entries {
		defs[i] = store.ScheduleDef{Name: e.name, Spec: e.when.String(), Kind: e.job.Kind, Queue: e.job.Queue, CatchUp: e.catchUp.String()}
	}
	return sc.store.RegisterSchedules(ctx, sc.db, defs)
}

// start registers the schedules and catches up on the slots missed while no client had
// them, following each one's policy: Start does it before it returns.
func (sc *scheduler) start(ctx context.Context) error {
	if err := sc.register(ctx, sc.entries...); err != nil {
		return err
	}
	for _, e := range sc.entries {
		if err := sc.advance(ctx, e, true); err != nil {
			return err
		}
	}
	return nil
}

// Run enqueues each schedule's slots as their time comes, until ctx ends.
func (sc *scheduler) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		wake := sc.entries[0].wakeAt()
		for _, e := range sc.entries[1:] {
			if at := e.wakeAt(); at.Before(wake) {
				wake = at
			}
		}
		timer.Reset(time.Until(wake))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		now := time.Now()
		for _, e := range sc.entries {
			if e.wakeAt().After(now) {
				continue
			}
			err := sc.advance(ctx, e, false)
			if errors.Is(err, store.ErrNoSchedule) {
				// Deleted while this client has it (relay.DeleteSchedule refuses that, but a
				// client may start as it runs): register it again.
				err = sc.register(ctx, e)
			}
			switch {
			case err == nil:
				e.retryAt, e.failures = time.Time{}, 0
			case ctx.Err() != nil:
				return ctx.Err()
			default:
				e.failures++
				delay := min(100*time.Millisecond<<min(e.failures-1, 10), schedulerRetry)
				e.retryAt = time.Now().Add(delay)
				sc.logger.Warn("relay: could not enqueue the slots of a periodic schedule; trying again", "schedule", e.name,
					"error", err, "retry_in", delay)
			}
		}
	}
}

// wakeAt is when the scheduler next has something to do for the schedule.
func (e *scheduleState) wakeAt() time.Time {
	switch {
	case !e.retryAt.IsZero():
		return e.retryAt
	case e.next.IsZero():
		// A cron expression with no time in the next five years: look again in an hour.
		return time.Now().Add(time.Hour)
	}
	return e.next.Add(-e.when.lead(e.next))
}

// advance enqueues what is due of schedule e now, in one transaction that holds its row.
func (sc *scheduler) advance(ctx context.Context, e *scheduleState, atStart bool) error {
	now := time.Now()
	var plan store.SlotPlan
	enqueued, err := sc.store.Schedule(ctx, sc.db, e.name, func(next time.Time) store.SlotPlan {
		plan = e.plan(next, now, atStart)
		return plan
	})
	if err != nil {
		return err
	}
	e.next = plan.Next
	for _, s := range enqueued {
		if s.Inserted {
			sc.logger.Debug("relay: enqueued a periodic job", "schedule", e.name, "slot", s.Slot, "job", s.ID)
		}
	}
	return nil
}

// plan decides what to enqueue of the schedule at now, given its next slot (zero for a
// schedule that never enqueued): the slots it missed, as its catch-up policy says; at
// start, a job at once if it runs on start; and the upcoming slot, once within its lead.
// A slot is missed when no client enqueued it before its time.
func (s *schedule) plan(next, now time.Time, atStart bool) store.SlotPlan {
	var slots []time.Time
	fresh := next.IsZero()
	behind := !fresh && next.Before(now)
	if behind {
		switch s.catchUp.how {
		case catchUpOnce:
			slots = s.when.newest(next, now, 1)
		case catchUpBackfill:
			slots = s.when.newest(maxTime(next, now.Add(-s.catchUp.maxAge)), now, maxBackfill)
		}
	}
	upcoming := s.when.atOrAfter(now)
	if next.After(upcoming) {
		upcoming = next // enqueued already, up to next
	}
	plan := store.SlotPlan{Next: upcoming}
	dueNow := !upcoming.IsZero() && !upcoming.Add(-s.when.lead(upcoming)).After(now)
	if atStart && s.runOnStart && (fresh || behind) && len(slots) == 0 && !dueNow {
		slots = append(slots, now.UTC().Truncate(time.Microsecond)) // as the table stores it
	}
	if dueNow {
		slots = append(slots, upcoming)
		plan.Next = s.when.after(upcoming)
	}
	for _, slot := range slots {
		j := s.job
		j.RunAt, j.UniqueKey, j.UniqueIn = slot, slotKey(s.name, slot), allStoredStates
		plan.Jobs, plan.Slots = append(plan.Jobs, j), append(plan.Slots, slot)
	}
	return plan
}

// allStoredStates are every state a job is stored in: a slot's job holds its unique key
// in all of them.
var allStoredStates = []string{store.StatePending, store.StateRunning, store.StateHeld, store.StateSucceeded, store.StateFailed, store.StateCancelled}

// slotKey is the unique key of the job of schedule name for slot.
func slotKey(name string, slot time.Time) string {
	return "relay:periodic:" + name + "@" + slot.UTC().Format(time.RFC3339Nano)
}

// searchWindows are how far back newest looks, a window at a time: the first that holds
// enough slots decides, so that a search costs about what the slots it finds do.
var searchWindows = []time.Duration{time.Minute, time.Hour, 24 * time.Hour, 32 * 24 * time.Hour, 366 * 24 * time.Hour, 5 * 366 * 24 * time.Hour}

// newest returns the newest n slots (or fewer) from from, inclusive, to to, exclusive,
// oldest first.
func (t Timing) newest(from, to time.Time, n int) []time.Time {
	var out []time.Time
	for i, back := range searchWindows {
		start := maxTime(from, to.Add(-back))
		if i == len(searchWindows)-1 {
			start = from
		}
		out = out[:0]
		for s := t.atOrAfter(start); !s.IsZero() && s.Before(to); s = t.after(s) {
			out = append(out, s)
		}
		if len(out) >= n || !start.After(from) {
			break
		}
	}
	if len(out) > n {
		out = out[len(out)-n:]
	}
	return out
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
