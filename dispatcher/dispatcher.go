// Package dispatcher runs the jobs of one queue: it waits until there may be work and a
// worker slot is free, claims as many due jobs as there are free slots in one call, and
// runs each on a worker goroutine of its own (workers are reused from job to job).
//
// A dispatcher needs a [Claimer], which claims jobs and leases them to the client; relay's
// client implements it on its jobs table, and tests or other programs may implement it on
// anything else. It runs each claimed [Job] with [Config].Run, which must also record the
// job's outcome; the slot is free again when Run returns.
//
// A dispatcher is woken by [Dispatcher.Notify] (a job became pending, due now or later),
// [Dispatcher.Backup] (the same, but another client was woken for it first),
// [Dispatcher.Wake] (look again from scratch), a finished job freeing a slot while more work
// may be waiting, and a fallback poll that covers notifications lost while no connection
// was listening. A claim that fails is retried after a pause that grows to 2 s;
// [Dispatcher.Retry] (the database answers again) ends the pause.
//
// Each claim from a plain queue resumes from a [Cursor] — the claim position (priority,
// run_at, id) of the last job it claimed — instead of scanning the queue's index from its
// start, where the entries of claimed jobs linger until VACUUM. Notifications move the
// cursor back to the new job's position, and every poll and reconnect resets it, so no job
// is passed over for longer than one poll interval even if a notification is lost.
//
// With [Config].Wait, a dispatcher that works through a backlog says so in its claims
// ([ClaimRequest].Busy), so that producers may skip waking it; it then restarts from the
// head of its queue at least every 50 ms, since no notification moves its cursor back, and
// calls Wait once it runs out of work, to be woken again. Queues
// that are ordered or have a cluster-wide limit are claimed from under a per-queue lock
// instead (see [ClaimRequest].Gated); every claim reports the queue's current
// [QueueSettings], so a dispatcher follows changes without being told. It never holds a
// transaction open while a job runs: claiming commits before any job starts.
//
// Dispatchers of one client may share a client-wide limit, [Slots], which divides the
// workers fairly between the queues that want them.
//
// The package knows jobs but not relay's public API, and nothing of the database.
package dispatcher

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayq/relay/backoff"
)

// Config configures a [Dispatcher].
type Config struct {
	// Claimer claims the queue's jobs; every claim it makes must commit before it returns.
	Claimer Claimer
	Queue   string
	Workers int // the most jobs of this queue running at once on this client
	Poll    time.Duration
	// Run runs one claimed job to the end, including recording its outcome. It is called on
	// the job's own goroutine; the slot is free again when it returns.
	Run func(job *Job)
	// Room, if set, bounds how many more jobs the client as a whole may take on now (its
	// outcome backlog, say); call [Dispatcher.Nudge] when it may have grown.
	Room func() int
	// Slots, if set, is the client-wide limit this dispatcher shares with the others.
	Slots *Slots
	// IdleAfter, if positive, makes Run return once the dispatcher has had nothing to do
	// for that long and Retire agrees: dispatchers of dynamic queues go away when idle.
	IdleAfter time.Duration
	// Horizon, with IdleAfter, is how far ahead a scheduled job keeps the dispatcher: one
	// due later does not, and whoever starts dispatchers (for a client, its look for queues
	// with work) must start one again once the job is due within Horizon. Zero: any
	// scheduled job keeps it, however far ahead — for a group of thousands of queues, each
	// with a job due next week, as many dispatchers polling.
	Horizon time.Duration
	// Retire is asked, once idle, whether the dispatcher may stop; it should check
	// [Dispatcher.Quiet] under the same lock that routes notifications to the dispatcher,
	// so that no wakeup is lost between the check and the dispatcher's removal.
	Retire func() bool
	// Wait, if set, lets the dispatcher work through a backlog without being woken: its
	// claims then say [ClaimRequest].Busy while each fills every slot, and when one finds
	// fewer jobs, the dispatcher calls Wait, on a goroutine of its own, to be woken again.
	// Wait must return only once every job committed from then on will either wake the
	// dispatcher or be seen by its next claim; the dispatcher then claims from the head of
	// its queue. Wait may call progress whenever some of what it waits for has ended (a
	// producer that may have committed a job unannounced): the dispatcher then claims from
	// the head of its queue too. Meanwhile it claims as wakeups come, without saying Busy,
	// and from the head of its queue. An error is retried. Without Wait, claims never say
	// Busy.
	Wait   func(ctx context.Context, queue string, progress func()) error
	Logger *slog.Logger
}

// Dispatcher claims and runs the jobs of one queue. Create it with [New].
type Dispatcher struct {
	cfg     Config
	running atomic.Int64
	jobs    sync.WaitGroup
	signal  chan struct{} // capacity 1: any number of signals coalesce into one

	mu     sync.Mutex
	due    bool      // a job may be due now
	nextAt time.Time // the earliest time a scheduled job is known to be due; zero if none
	// backupAt is when to claim for the due jobs of Backup, unless another claim starts
	// first; zero if none.
	backupAt time.Time
	from     Cursor // where the next claim starts: no job before it is waiting for us
	rewound  bool   // a job was notified since the running claim read from …
	lowest   Cursor // … and this is the earliest such job
	queue    QueueSettings

	gated  atomic.Bool  // queue.Gated(), read by every finishing job without the lock
	busyAt atomic.Int64 // when the dispatcher last claimed a job or one ended, in Unix ns
	// busy: a claim told the Claimer that this dispatcher works through a backlog
	// (ClaimRequest.Busy), so that enqueues may not wake it, and it has not called
	// Config.Wait since. Written by Run only.
	busy      atomic.Bool
	waiting   atomic.Bool // awaitWakeups runs: claims do not say Busy
	rewoundAt time.Time   // when a claim last started from the head of the queue; Run's own

	handoff chan *Job     // unbuffered: a send succeeds only if an idle worker waits
	stopped chan struct{} // closed when Run returns: idle workers exit

	// slotMu orders the jobs handed off to the client (TakeHandOff) with Run's claims:
	// held while Run counts its free workers and reserves claiming of them for a claim,
	// until the claim has returned, and while a hand-off takes a worker.
	slotMu   sync.Mutex
	claiming int  // workers reserved for the claim under way
	ended    bool // Run has returned: no job is added to jobs any more
	// deferred are the jobs handed off while a claim held the free workers: Run starts
	// them once it returns, if workers are still free, and gives the rest back; so does
	// deferLimit, if the claim takes longer than maxDefer.
	deferred   []handedOff
	deferLimit *time.Timer
	// deferClaim counts the claims that had jobs deferred: a deferLimit that fires after its
	// claim has returned (Stop came too late) must not give back the jobs of the next.
	deferClaim uint64
	// retry and retryWait end the pause after a failed claim and after a failed
	// Config.Wait (see Retry).
	retry, retryWait backoff.Signal
}

// New returns a dispatcher for cfg. It starts claiming when [Dispatcher.Run] is called.
func New(cfg Config) *Dispatcher {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// A new dispatcher looks for work at once: jobs may have waited for it.
	return &Dispatcher{cfg: cfg, signal: make(chan struct{}, 1), due: true,
		handoff: make(chan *Job), stopped: make(chan struct{}),
		retry: backoff.NewSignal(), retryWait: backoff.NewSignal()}
}

// Running is how many of its jobs are running now.
func (d *Dispatcher) Running() int { return int(d.running.Load()) }

// Settings are the queue's settings as the last claim found them.
func (d *Dispatcher) Settings() QueueSettings {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queue
}

// Quiet reports whether the dispatcher has nothing to do: no job running, no wakeup
// pending, no scheduled job known, and no backlog it works through unwoken.
func (d *Dispatcher) Quiet() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.Running() == 0 && !d.due && d.beyondHorizon(d.nextAt) && d.backupAt.IsZero() && !d.busy.Load()
}

// beyondHorizon reports whether the next scheduled job the dispatcher knows of, due at
// next (zero: none), is too far ahead to keep it (see [Config].Horizon).
func (d *Dispatcher) beyondHorizon(next time.Time) bool {
	return next.IsZero() || d.cfg.Horizon > 0 && time.Until(next) > d.cfg.Horizon
}

// Wake makes the dispatcher look for due jobs from the start of its queue, as after a
// reconnect or a poll, when it cannot know what it missed. It never blocks; a burst of
// wakes while the dispatcher is busy leads to one claim.
func (d *Dispatcher) Wake() {
	d.rewind(Cursor{})
	d.wakeIn(0)
}

// Notify tells the dispatcher a job at claim position at (its priority and run_at, on the
// database's clock) became pending, due in delay. It never blocks; a burst of
// notifications leads to one claim.
func (d *Dispatcher) Notify(delay time.Duration, at Cursor) {
	d.rewindFor(at)
	d.wakeIn(delay)
}

// rewindFor moves the claim cursor back for a job notified at at.
func (d *Dispatcher) rewindFor(at Cursor) {
	if d.waiting.Load() {
		// Jobs whose producers saw this dispatcher busy may be committing unannounced,
		// anywhere in the queue: look from its head.
		at = Cursor{}
	}
	d.rewind(at)
}

// backupDelay is how long a backup (see [Dispatcher.Backup]) leaves a job, once it is due,
// to the client woken for it first: the most it waits when that client cannot take it.
const backupDelay = 25 * time.Millisecond

// Backup tells the dispatcher that a job at claim position at became pending, due in
// delay, and that another client was woken for it first (relay addresses a wakeup to as
// few waiting clients as the jobs need): the dispatcher claims backupDelay after the job is
// due, in case that client cannot take it — it died, it is reconnecting, or its workers
// are all taken. For a job due now, any claim that starts first finds it too (it committed
// before its wakeup came), unless it was taken, and so stands for the backup's. It never
// blocks; backups coalesce.
func (d *Dispatcher) Backup(delay time.Duration, at Cursor) {
	if delay > 0 {
		// A claim before the job is due would not find it: claim once it is, and later.
		d.Notify(delay+backupDelay, at)
		return
	}
	d.rewindFor(at)
	d.mu.Lock()
	poke := d.backupAt.IsZero()
	if poke {
		d.backupAt = time.Now().Add(backupDelay)
	}
	d.mu.Unlock()
	if poke {
		d.poke()
	}
}

// rewind moves the claim cursor back to at, if it is further.
//
// A job notified while a claim runs may have committed after the claim's snapshot, so
// the claim cannot have seen it even if it lies before where the claim ends: it is also
// remembered in lowest, and the claim does not move the cursor past it.
func (d *Dispatcher) rewind(at Cursor) {
	d.mu.Lock()
	if at.Before(d.from) {
		d.from = at
	}
	if !d.rewound || at.Before(d.lowest) {
		d.rewound, d.lowest = true, at
	}
	d.mu.Unlock()
}

// wakeIn makes the dispatcher claim in delay (zero or less: now).
func (d *Dispatcher) wakeIn(delay time.Duration) {
	d.mu.Lock()
	poke := delay <= 0
	if poke {
		d.due = true
	} else if at := time.Now().Add(delay); d.nextAt.IsZero() || at.Before(d.nextAt) {
		d.nextAt, poke = at, true
	}
	d.mu.Unlock()
	if poke {
		d.poke()
	}
}

func (d *Dispatcher) poke() {
	select {
	case d.signal <- struct{}{}:
	default:
	}
}

// Nudge tells the dispatcher that Room may have grown. It never blocks.
func (d *Dispatcher) Nudge() { d.poke() }

// Retry tells the dispatcher that the database answers again: if it is pausing after a
// failed claim (or a failed [Config].Wait), it tries again at once, with its backoff reset.
// Other wakeups do not end that pause, so that a claim that keeps failing is not retried
// for every job that ends or is enqueued. It never blocks.
func (d *Dispatcher) Retry() {
	d.retry.Send()
	d.retryWait.Send()
}

// Wait blocks until every job this dispatcher started has returned from Run.
func (d *Dispatcher) Wait() { d.jobs.Wait() }

// Run claims and starts jobs until ctx ends, or until the dispatcher retires (see
// [Config].IdleAfter), when it returns nil. Jobs already started keep running; use
// [Dispatcher.Wait] to wait for them. Call it once: its idle workers exit when it returns.
func (d *Dispatcher) Run(ctx context.Context) error {
	defer close(d.stopped)
	defer func() {
		d.slotMu.Lock()
		d.ended = true
		deferred := d.deferred
		d.deferred = nil
		d.slotMu.Unlock()
		giveBackEach(deferred)
	}()
	poll := time.NewTimer(firstPoll(d.cfg.Poll))
	defer poll.Stop()
	scheduled := time.NewTimer(time.Hour)
	scheduled.Stop()
	defer scheduled.Stop()
	idle := time.NewTimer(time.Hour)
	idle.Stop()
	defer idle.Stop()
	retry := backoff.Outage().Series()
	if d.cfg.Slots != nil {
		defer d.cfg.Slots.leave(d)
	}
	var waiter sync.WaitGroup // awaitWakeups, which must end before Run returns
	defer waiter.Wait()
	d.busyAt.Store(time.Now().UnixNano())

	more := false // the last claim filled every slot it had: more jobs may be due
	var (
		claimTook   time.Duration // how long the last claim took, round trip included
		gatherUntil time.Time     // see gathering
	)
	gather := time.NewTimer(time.Hour)
	gather.Stop()
	defer gather.Stop()
	for {
		d.slotMu.Lock()
		free := d.cfg.Workers - d.Running()
		if d.cfg.Room != nil {
			free = min(free, d.cfg.Room())
		}
		now := time.Now()
		if free > 0 && more && d.gathering(now, &gatherUntil, claimTook) {
			gather.Reset(gatherUntil.Sub(now))
			free = 0 // wait for the gather timer or the next freed slot
		} else if free > 0 {
			gatherUntil = time.Time{}
		}
		granted := 0
		if free > 0 && d.takeDue(now, more) {
			if granted = free; d.cfg.Slots != nil {
				if granted = d.cfg.Slots.take(d, free); granted == 0 {
					// Every client-wide slot is taken: claim once one is given back, which
					// nudges every dispatcher waiting for one.
					d.wakeLater()
					more = false
				}
			}
		}
		d.claiming = granted
		d.slotMu.Unlock()
		if granted > 0 {
			began := time.Now()
			n, err := d.claim(ctx, granted, more && d.cfg.Wait != nil && !d.waiting.Load())
			d.startDeferred()
			claimTook = time.Since(began)
			if d.cfg.Slots != nil {
				d.cfg.Slots.claimed(d, granted, n)
			}
			switch {
			case err != nil && ctx.Err() != nil:
				return ctx.Err()
			case err != nil:
				d.cfg.Logger.Error("relay: claiming jobs failed; retrying", "queue", d.cfg.Queue, "error", err)
				d.wakeIn(0) // try again after the pause
				// Not woken by the job's end or an enqueue: a claim that keeps failing is
				// not retried for each, only when Retry says the database is back.
				if err := retry.Wait(ctx, d.retry.C()); err != nil {
					return err
				}
			default:
				retry.Reset()
				more = n == granted
				if d.busy.Load() && n < granted && !d.waiting.Load() {
					// Out of work after a backlog: enqueues must wake this dispatcher again.
					d.waiting.Store(true)
					waiter.Go(func() { d.awaitWakeups(ctx) })
				}
			}
			continue
		}

		d.mu.Lock()
		nextAt, busyAt := d.nextAt, time.Unix(0, d.busyAt.Load())
		if nextAt.IsZero() || !d.backupAt.IsZero() && d.backupAt.Before(nextAt) {
			nextAt = d.backupAt
		}
		d.mu.Unlock()
		if !nextAt.IsZero() && free > 0 { // with no free slot, a freed slot wakes us instead
			scheduled.Reset(time.Until(nextAt))
		}
		if d.cfg.IdleAfter > 0 && d.Running() == 0 && d.beyondHorizon(nextAt) {
			idle.Reset(time.Until(busyAt.Add(d.cfg.IdleAfter)))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-d.signal:
		case <-scheduled.C:
		case <-gather.C:
		case <-idle.C:
			if d.cfg.Retire != nil && d.Quiet() && d.cfg.Retire() {
				return nil
			}
			d.busyAt.Store(time.Now().UnixNano()) // not retired: wait a whole period again
		case <-poll.C:
			poll.Reset(d.cfg.Poll)
			d.Wake()
		}
		scheduled.Stop()
		idle.Stop()
		gather.Stop()
	}
}

// firstPoll is how long a dispatcher waits for its first poll: a random part of the
// interval, so that the dispatchers of a client, which start together, do not poll
// together for the rest of their lives. In step, a client of 100 queues sent 100 claims at
// once every interval, more than its pool had connections, and the jobs enqueued at that
// moment waited 10–25 ms for them, against well under a millisecond otherwise.
func firstPoll(interval time.Duration) time.Duration {
	return rand.N(interval) + 1
}

// awaitWakeups makes enqueues wake the dispatcher again (Config.Wait), then claims from
// the head of the queue, which finds the jobs of producers that saw it busy. It runs on a
// goroutine of its own, because Wait waits for those producers to end: one that keeps its
// transaction open must not hold up the claims of jobs that others commit meanwhile.
func (d *Dispatcher) awaitWakeups(ctx context.Context) {
	retry := backoff.Outage().Series()
	for {
		err := d.cfg.Wait(ctx, d.cfg.Queue, d.Wake)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		d.cfg.Logger.Error("relay: a dispatcher could not prepare to be woken again; retrying", "queue", d.cfg.Queue, "error", err)
		if retry.Wait(ctx, d.retryWait.C()) != nil {
			return
		}
	}
	d.busy.Store(false)
	d.waiting.Store(false)
	d.Wake()
}

// maxGather bounds how long a freed slot waits for others before it is filled.
const maxGather = time.Millisecond

// gathering reports whether a claim through a backlog should wait for more of the running
// jobs to end first, setting *until on the first call of a wait.
//
// A claim costs about one round trip whether it takes one job or a hundred. Through a
// backlog of short jobs, claiming the moment the first slot frees takes one or a few jobs,
// while the rest of a just-claimed batch ends during that claim's round trip: claims then
// alternate between a few jobs and most of the slots, and throughput halves. So a freed
// slot waits up to half a claim's round trip (at most maxGather) for the others, unless
// every slot is free already. Long jobs lose at most that wait per claim.
func (d *Dispatcher) gathering(now time.Time, until *time.Time, claimTook time.Duration) bool {
	if d.Running() == 0 || claimTook <= 0 {
		return false
	}
	if until.IsZero() {
		*until = now.Add(min(claimTook/2, maxGather))
	}
	return now.Before(*until)
}

// wakeupPending reports whether a wakeup is waiting for a free slot: one that came while
// every slot was taken.
func (d *Dispatcher) wakeupPending() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.due
}

// wakeLater keeps a wakeup pending without signalling: the claim runs at the next signal.
func (d *Dispatcher) wakeLater() {
	d.mu.Lock()
	d.due = true
	d.mu.Unlock()
}

// takeDue reports whether to claim now, consuming the pending wakeup if so.
func (d *Dispatcher) takeDue(now time.Time, more bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.nextAt.IsZero() && !now.Before(d.nextAt) {
		d.nextAt = time.Time{}
		d.due = true
	}
	if !d.backupAt.IsZero() && !now.Before(d.backupAt) {
		d.due = true
	}
	if !d.due && !more {
		return false
	}
	d.due = false
	d.backupAt = time.Time{} // this claim stands for the backups'
	return true
}

// busyRewind is how often a busy dispatcher claims from the head of its queue instead of
// its cursor. Enqueues do not wake it, so none moves its cursor back for a job that sorts
// before it: one of a higher priority, one due earlier (a scheduled job, a job whose
// producer's transaction began before the jobs already claimed), or one whose producer
// committed after the claim that passed its place. Such a job waits at most this long.
const busyRewind = 50 * time.Millisecond

// claim claims up to free jobs and starts them, returning how many it started. busy says
// the dispatcher works through a backlog (see Config.Wait).
func (d *Dispatcher) claim(ctx context.Context, free int, busy bool) (int, error) {
	// A claim that reached the database must not be abandoned halfway by shutdown: its jobs
	// would be marked running with nobody running them. So the claim itself is not
	// cancelled with ctx; it is one short statement.
	claimCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	now := time.Now()
	d.mu.Lock()
	gated := d.queue.Gated()
	if d.busy.Load() && now.Sub(d.rewoundAt) >= busyRewind {
		d.from = Cursor{}
	}
	from := d.from
	d.rewound = false
	d.mu.Unlock()
	if from == (Cursor{}) {
		d.rewoundAt = now
	}
	busy = busy && !gated
	c, err := d.cfg.Claimer.Claim(claimCtx, ClaimRequest{Queue: d.cfg.Queue, Limit: free, From: from, Gated: gated, Busy: busy})
	if err != nil {
		return 0, err
	}
	if busy {
		d.busy.Store(true)
	}
	d.mu.Lock()
	if !gated {
		if d.from.Before(c.Last) {
			d.from = c.Last
		}
		if d.rewound && d.lowest.Before(d.from) {
			d.from = d.lowest
		}
	}
	if c.Settings != d.queue {
		d.cfg.Logger.Debug("relay: queue settings changed", "queue", d.cfg.Queue,
			"ordered", c.Settings.Ordered, "limited", c.Settings.Limited, "paused", c.Settings.Paused)
		d.queue = c.Settings
		d.gated.Store(c.Settings.Gated())
		if c.Settings.Gated() != gated {
			// The claim ran in the mode of the old settings: claim again in the new one.
			d.due, d.from = true, Cursor{}
		}
	}
	d.mu.Unlock()
	if len(c.Jobs) > 0 {
		d.busyAt.Store(time.Now().UnixNano())
	}
	d.running.Add(int64(len(c.Jobs)))
	d.jobs.Add(len(c.Jobs))
	for _, job := range c.Jobs {
		d.start(job)
	}
	if c.HasNext {
		d.wakeIn(c.NextIn) // scheduled jobs lie after the cursor: it need not move
	}
	return len(c.Jobs), nil
}

// TakeHandOff starts job, which its producer leased to this client as it enqueued it (a
// hand-off, see migration 016 of package relay), if a worker is free for it. A job handed
// off while a claim under way holds the free workers waits for the claim to return. A job
// it cannot start — every worker busy, no room for outcomes, or the dispatcher stopped —
// it passes to giveBack. It never blocks for long: it runs on the goroutine that reads
// notifications, and giveBack must not block either.
func (d *Dispatcher) TakeHandOff(job *Job, giveBack func(*Job)) {
	d.slotMu.Lock()
	switch {
	case d.ended:
	case d.claiming > 0 && d.Running()+len(d.deferred) < d.cfg.Workers:
		d.deferred = append(d.deferred, handedOff{job, giveBack})
		if len(d.deferred) == 1 {
			d.deferClaim++
			claim := d.deferClaim
			d.deferLimit = time.AfterFunc(maxDefer, func() { d.giveBackDeferred(claim) })
		}
		d.slotMu.Unlock()
		return
	case d.takeWorkerLocked():
		d.slotMu.Unlock()
		d.start(job)
		return
	}
	d.slotMu.Unlock()
	giveBack(job)
}

// handedOff is a job handed off to the client, and how to give it back.
type handedOff struct {
	job      *Job
	giveBack func(*Job)
}

// takeWorkerLocked takes a worker for a job handed off, if one is free, with d.slotMu
// held, and reports whether it did.
func (d *Dispatcher) takeWorkerLocked() bool {
	if d.Running()+d.claiming >= d.cfg.Workers || d.cfg.Room != nil && d.cfg.Room() <= 0 {
		return false
	}
	if d.cfg.Slots != nil && d.cfg.Slots.take(d, 1) == 0 {
		return false
	}
	d.running.Add(1)
	d.jobs.Add(1)
	d.busyAt.Store(time.Now().UnixNano())
	return true
}

// maxDefer bounds how long a job handed off waits for a claim under way to return. A claim
// takes a round trip, some milliseconds on a loaded machine, and waiting for it costs less
// than a give-back (a statement, then a wakeup and a claim elsewhere). But one that waits
// for a connection, as every claim does while a restarted database is reconnected to, may
// take seconds: the job is then better given back, to be claimed by any client.
const maxDefer = 100 * time.Millisecond

// giveBackDeferred gives back the jobs handed off while a claim under way has taken longer
// than maxDefer, if that claim (the claim-th that had jobs deferred) has not returned.
func (d *Dispatcher) giveBackDeferred(claim uint64) {
	d.slotMu.Lock()
	if claim != d.deferClaim || d.deferLimit == nil {
		d.slotMu.Unlock()
		return
	}
	d.deferLimit = nil
	deferred := d.deferred
	d.deferred = nil
	d.slotMu.Unlock()
	giveBackEach(deferred)
}

// giveBackEach gives back jobs handed off that this dispatcher will not start.
func giveBackEach(handed []handedOff) {
	for _, h := range handed {
		h.giveBack(h.job)
	}
}

// startDeferred ends the reservation of a claim that has returned, whose jobs are counted
// in running, and starts the jobs handed off meanwhile, or gives them back.
func (d *Dispatcher) startDeferred() {
	d.slotMu.Lock()
	d.claiming = 0
	deferred := d.deferred
	d.deferred = nil
	if d.deferLimit != nil {
		d.deferLimit.Stop()
		d.deferLimit = nil
	}
	var start, back []handedOff
	for _, h := range deferred {
		if d.takeWorkerLocked() {
			start = append(start, h)
		} else {
			back = append(back, h)
		}
	}
	d.slotMu.Unlock()
	for _, h := range start {
		d.start(h.job)
	}
	giveBackEach(back)
}

// workerLinger is how long a worker goroutine waits for its next job before it exits.
const workerLinger = 5 * time.Second

// start runs job on an idle worker goroutine, or on a new one if none is idle.
//
// Workers are reused because a new goroutine starts with a small stack, and a handler's
// first calls (decoding its arguments, say) grow it by copying, again for every job: with
// short jobs, that copying was a tenth of the client's CPU.
func (d *Dispatcher) start(job *Job) {
	select {
	case d.handoff <- job:
	default:
		go d.work(job)
	}
}

// work runs job, then every job handed to it, until none comes for workerLinger or Run
// has returned.
func (d *Dispatcher) work(job *Job) {
	linger := time.NewTimer(workerLinger)
	defer linger.Stop()
	for {
		d.run(job)
		linger.Reset(workerLinger)
		select {
		case job = <-d.handoff:
		case <-linger.C:
			return
		case <-d.stopped:
			return
		}
	}
}

func (d *Dispatcher) run(job *Job) {
	defer func() {
		d.busyAt.Store(time.Now().UnixNano())
		d.running.Add(-1)
		if d.cfg.Slots != nil {
			d.cfg.Slots.give(d, 1)
		}
		d.jobs.Done()
		// A slot is free. In a gated queue the job still holds its key or cluster slot until
		// its outcome commits, and that commit wakes the dispatchers by NOTIFY: claiming now
		// would find nothing — unless that wakeup (or another) already came while every slot
		// was taken, as after a CompleteTx committed before its handler returned.
		if !d.gated.Load() || d.wakeupPending() {
			d.poke()
		}
	}()
	d.cfg.Run(job)
}
