package relay

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/relayq/relay/internal/store"
)

// Timing says when the slots of a periodic schedule are: [Cron] or [Every].
type Timing struct {
	cron  cron.Schedule // nil for Every
	every time.Duration
	spec  string // as stored in the periodic table
	err   error  // why the timing cannot be used: reported by Schedule and Start
}

// cronParser reads cron expressions with seconds: "second minute hour day-of-month month
// day-of-week", or a descriptor such as "@daily".
var cronParser = cron.NewParser(cron.Second | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)

// Cron returns the timing of a cron expression with seconds, in time zone tz (an IANA
// name such as "Europe/Berlin"; "" for UTC):
//
//	relay.Cron("0 0 3 * * *", "Europe/Berlin")   // every night at 03:00, Berlin time
//	relay.Cron("*/10 * * * * *", "")             // every 10 seconds
//	relay.Cron("@daily", "America/New_York")     // descriptors too, but @every (use Every)
//
// The fields are second, minute, hour, day of month, month and day of week, as
// [github.com/robfig/cron/v3] reads them; slots follow the zone's daylight saving time. An
// expression or zone that cannot be used makes [Schedule] and [Client.Start] fail with
// [ErrInvalidConfig].
func Cron(expr, tz string) Timing {
	t := Timing{spec: strings.TrimSpace("cron " + expr + " " + tz)}
	if tz == "" {
		tz = "UTC"
		t.spec += " UTC"
	}
	loc, err := time.LoadLocation(tz)
	if err != nil {
		t.err = fmt.Errorf("unknown time zone %q: %w", tz, err)
		return t
	}
	if strings.HasPrefix(strings.TrimSpace(expr), "@every") {
		t.err = fmt.Errorf("cron expression %q: use relay.Every for a fixed interval", expr)
		return t
	}
	if strings.Contains(expr, "TZ=") {
		t.err = fmt.Errorf("cron expression %q: give the time zone as Cron's second argument", expr)
		return t
	}
	sched, err := cronParser.Parse(expr)
	if err != nil {
		t.err = fmt.Errorf("cron expression %q (second minute hour day-of-month month day-of-week): %w", expr, err)
		return t
	}
	spec := sched.(*cron.SpecSchedule) // every expression but @every parses into one
	spec.Location = loc
	if spec.Next(time.Now()).IsZero() {
		t.err = fmt.Errorf("cron expression %q has no time in the next five years", expr)
		return t
	}
	t.cron = spec
	return t
}

// Every returns the timing of a fixed interval of at least a second: its slots are the
// multiples of d since the Unix epoch (Every(time.Hour) is on the hour, in UTC), so that
// every client agrees on them, whenever each started.
func Every(d time.Duration) Timing {
	t := Timing{every: d, spec: "every " + d.String()}
	if d < time.Second {
		t.err = fmt.Errorf("Every needs an interval of at least 1s, got %v", d)
	}
	return t
}

// String is the timing as ListSchedules reports it: "cron <expression> <zone>" or
// "every <interval>".
func (t Timing) String() string { return t.spec }

// after returns the first slot after t.
func (t Timing) after(at time.Time) time.Time {
	if t.cron != nil {
		return t.cron.Next(at).UTC()
	}
	d := t.every.Nanoseconds()
	n := at.UnixNano()
	k := n / d
	if n < 0 && n%d != 0 {
		k-- // floor
	}
	return time.Unix(0, (k+1)*d).UTC()
}

// atOrAfter returns the first slot at t or after it.
func (t Timing) atOrAfter(at time.Time) time.Time { return t.after(at.Add(-time.Nanosecond)) }

// lead is how long before slot its job is enqueued: a second, or half the time to the
// next slot if that is shorter. The job waits in the table as a scheduled job, so the
// dispatchers' timers start it on time, whatever the enqueue's own latency.
func (t Timing) lead(slot time.Time) time.Duration {
	return min(time.Second, t.after(slot).Sub(slot)/2)
}

// CatchUpPolicy is what a schedule does with the slots that no client enqueued in time
// (every client was stopped, or could not reach the database): [Skip], [RunOnce] or
// [Backfill]. Pass it with [CatchUp].
type CatchUpPolicy struct {
	how    catchUpHow
	maxAge time.Duration // Backfill's
}

type catchUpHow int

const (
	catchUpSkip catchUpHow = iota
	catchUpOnce
	catchUpBackfill
)

var (
	// Skip enqueues none of the missed slots: the schedule goes on with the next one. The
	// default.
	Skip = CatchUpPolicy{how: catchUpSkip}
	// RunOnce enqueues one job for all the missed slots, at once: that of the latest.
	RunOnce = CatchUpPolicy{how: catchUpOnce}
)

// maxBackfill bounds the jobs one catch-up enqueues: the newest missed slots are kept.
const maxBackfill = 1000

// Backfill enqueues a job for every missed slot no older than maxAge, at once, each with
// its own slot (as graphile-worker's backfill does); at most 1,000, the newest.
func Backfill(maxAge time.Duration) CatchUpPolicy {
	return CatchUpPolicy{how: catchUpBackfill, maxAge: maxAge}
}

// String is the policy as ListSchedules reports it.
func (p CatchUpPolicy) String() string {
	switch p.how {
	case catchUpOnce:
		return "run once"
	case catchUpBackfill:
		return "backfill " + p.maxAge.String()
	}
	return "skip"
}

// ScheduleOption changes how [Schedule] runs a schedule: [CatchUp], [RunOnStart].
type ScheduleOption interface{ applySchedule(*scheduleOptions) }

type scheduleOptions struct {
	catchUp    CatchUpPolicy
	runOnStart bool
}

// CatchUp sets what the schedule does with missed slots; default [Skip].
func CatchUp(p CatchUpPolicy) ScheduleOption { return catchUpOption(p) }

type catchUpOption CatchUpPolicy

func (c catchUpOption) applySchedule(o *scheduleOptions) { o.catchUp = CatchUpPolicy(c) }

// RunOnStart also enqueues a job at once when the schedule starts: when a client
// registers it for the first time, and when a client starts after every client was down
// across a slot, if the catch-up policy enqueued nothing and the next slot is more than
// its lead (a second) away. Its slot is the time it was enqueued. A client that starts while another runs the schedule enqueues nothing, and
// clients starting together enqueue one job between them: a deploy does not run it once
// per process.
func RunOnStart() ScheduleOption { return runOnStartOption{} }

type runOnStartOption struct{}

func (runOnStartOption) applySchedule(o *scheduleOptions) { o.runOnStart = true }

// schedule is a registered schedule.
type schedule struct {
	name string
	when Timing
	job  store.NewJob // its kind, queue, args and options, checked and encoded
	scheduleOptions
}

// Schedule registers a periodic schedule on c: a job of job's kind, args and options,
// enqueued for every slot of when, as a scheduled job due at its slot (it starts within
// milliseconds of it):
//
//	err := relay.Schedule(c, "nightly-report", relay.Cron("0 0 3 * * *", "Europe/Berlin"),
//		Report.Job(ReportArgs{}, relay.Queue("reports")), relay.CatchUp(relay.Backfill(24*time.Hour)))
//	err = relay.Schedule(c, "refresh", relay.Every(30*time.Second), Refresh.Job(RefreshArgs{}))
//
// Every client that registers a schedule under name enqueues its slots, with no leader,
// and the database keeps exactly one job per slot however many do (see the README's
// "Periodic jobs"). The schedule is stored in the periodic table, with its next and last
// slot ([ListSchedules]); its jobs carry their schedule and slot ([Job].Slot,
// [JobRecord].Slot).
//
// Register schedules before [Client.Start], like handlers. A name that is empty, longer
// than [MaxNameLen] or registered twice, a timing that cannot be used (an invalid cron
// expression, an unknown time zone), a job that could not be enqueued, and a job with
// options the schedule decides itself ([RunAt], [RunIn], [Unique], [Schema]: the client's
// applies) return an error wrapping [ErrInvalidConfig] that names the schedule — and make
// Start fail with it too, so that a schedule is never missing without a word.
func Schedule(c *Client, name string, when Timing, job JobSpec, opts ...ScheduleOption) error {
	if c == nil {
		return fmt.Errorf("%w: Schedule of %q on a nil *Client; make clients with relay.New", ErrInvalidConfig, name)
	}
	s, err := newSchedule(name, when, job, opts)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateNew {
		return fmt.Errorf("%w: register schedule %q before Start", ErrAlreadyStarted, name)
	}
	if err == nil && c.schedule(name) != nil {
		err = fmt.Errorf("%w: schedule %q is registered twice", ErrInvalidConfig, name)
	}
	if err != nil {
		c.scheduleErrs = append(c.scheduleErrs, err)
		return err
	}
	c.schedules = append(c.schedules, s)
	return nil
}

func newSchedule(name string, when Timing, job JobSpec, opts []ScheduleOption) (*schedule, error) {
	if err := checkName(ErrInvalidConfig, "schedule name", name); err != nil {
		return nil, err
	}
	fail := func(err error) (*schedule, error) {
		return nil, fmt.Errorf("%w: schedule %q: %w", ErrInvalidConfig, name, err)
	}
	switch {
	case when.err != nil:
		return fail(when.err)
	case when.spec == "":
		return fail(errors.New("its timing is zero; make it with relay.Cron or relay.Every"))
	}
	o := defaultEnqueueOptions()
	o.schema = ""
	for _, opt := range job.opts {
		opt.applyEnqueue(&o)
	}
	switch {
	case !o.runAt.IsZero():
		return fail(errors.New("its job sets RunAt or RunIn; a periodic job runs at its slot"))
	case o.unique:
		return fail(errors.New("its job sets Unique; a periodic job is unique by its slot"))
	case o.schema != "":
		return fail(errors.New("its job sets Schema; a periodic job goes to its client's Config.Schema"))
	}
	nj, err := newJob(job.kind, job.args, o)
	if err != nil {
		return fail(err)
	}
	s := &schedule{name: name, when: when, job: nj}
	for _, opt := range opts {
		opt.applySchedule(&s.scheduleOptions)
	}
	if s.catchUp.how == catchUpBackfill && s.catchUp.maxAge <= 0 {
		return fail(fmt.Errorf("Backfill needs a positive maximum age, got %v", s.catchUp.maxAge))
	}
	return s, nil
}

// schedule returns c's schedule name, or nil. c.mu is held.
func (c *Client) schedule(name string) *schedule {
	for _, s := range c.schedules {
		if s.name == name {
			return s
		}
	}
	return nil
}
