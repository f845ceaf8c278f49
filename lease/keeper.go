// Package lease keeps the leases of a client's running jobs and rescues the jobs of
// clients that stopped keeping theirs.
//
// Claiming a job leases it to the claiming client until now + TTL. A [Keeper] renews the
// leases of every job its client is running in one statement per tick; that tick is also
// the client's heartbeat in the clients table. A job missing from a renewal was rescued or
// deleted: its handler's context is cancelled at once with [ErrLostLease]; one the renewal
// finds cancelled, with [ErrCancelled].
// While the database cannot be reached the Keeper keeps trying, and once a lease has
// certainly expired it cancels that handler itself with [ErrLeaseExpired]. A [Rescuer]
// retries running jobs whose lease expired, on every client, each exactly once. Both back
// off while the database fails; tell them when it answers again ([Keeper.Recover],
// [Rescuer.Recover]) and they carry on at once, the Rescuer after a grace in which the
// clients cut off with it renew and write what they hold ([RescuerConfig].Grace).
//
// Both work through what their configuration supplies: a Keeper through a [Renewer], a
// Rescuer through a rescue function ([RescuerConfig].Rescue). relay's client implements
// them on its jobs table; tests and other programs may implement them on anything else.
//
// The package knows jobs but not relay's public API, and nothing of the database.
package lease

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayq/relay/backoff"
)

// Causes with which the Keeper cancels a handler's context.
var (
	// ErrLostLease: a renewal found that the job is no longer this client's (rescued after
	// the lease expired, or deleted). Its outcome must not be written.
	ErrLostLease = errors.New("relay: the job's lease was lost; another client may be running it")
	// ErrCancelled: the job was cancelled while it ran, as a renewal found ([Renewal].Cancelled)
	// or the client was told ([Keeper.Cancel]). Its outcome must not be written.
	ErrCancelled = errors.New("relay: job was cancelled")
	// ErrLeaseExpired: renewals failed for longer than the lease lasts, so the lease has
	// certainly expired and the job is up for rescue by another client.
	ErrLeaseExpired = errors.New("relay: the job's lease expired while the database was unreachable")
)

// KeeperConfig configures a [Keeper].
type KeeperConfig struct {
	Renewer Renewer
	// TTL is how long a lease lasts without renewal: what a claim grants, and every
	// renewal extends a lease by.
	TTL      time.Duration
	Interval time.Duration // how often to renew; well under TTL
	// Lapsed, if set, is called (on the keeper's goroutine: it must not block) after a
	// renewal that reported [Renewal].Lapsed: the client's heartbeat had expired, and other
	// clients took it for dead meanwhile.
	Lapsed func()
	Logger *slog.Logger
}

// Keeper renews the leases of a client's running jobs. Create it with [NewKeeper].
type Keeper struct {
	cfg    KeeperConfig
	paused atomic.Bool
	// failing: the last renewal did not reach the database; recovered wakes Run to renew
	// at once (see Recover).
	failing   atomic.Bool
	recovered backoff.Signal

	mu   sync.Mutex
	held map[int64]*lease
	// cancelled remembers cancellations of attempts not (yet) held: a cancel notification
	// can overtake the Hold of a job just claimed. Entries older than a lease are dropped.
	cancelled map[attemptKey]tombstone
	// waiting are the jobs whose locked rows are being renewed on their own (renewLocked).
	waiting map[int64]bool
	lockers sync.WaitGroup
}

// attemptKey names one attempt of a job.
type attemptKey struct {
	id      int64
	attempt int
}

// tombstone is a cancellation that came before its attempt was held.
type tombstone struct {
	at    time.Time
	cause error
}

type lease struct {
	attempt int
	done    bool // the handler has returned; the lease is kept until its outcome is written
	// completing: the handler completed its job in its own transaction (CompleteTx). Once
	// the job stops being this attempt's, that is most likely the commit, not a lost lease:
	// the handler is left to finish.
	completing bool
	// untilLeased: left to its lease (see LeaveToLease), the lease is let go of once a
	// renewal has extended it.
	untilLeased bool
	cancel      context.CancelCauseFunc
	expires     time.Time // local time by which the lease has certainly expired unless renewed
}

// NewKeeper returns a Keeper for cfg.
func NewKeeper(cfg KeeperConfig) *Keeper {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Keeper{cfg: cfg, held: map[int64]*lease{}, cancelled: map[attemptKey]tombstone{}, waiting: map[int64]bool{},
		recovered: backoff.NewSignal()}
}

// Hold starts keeping the lease of attempt of job id, granted by a claim whose answer
// arrived no later than now. cancel cancels the job's handler. An earlier attempt of the
// same job still held here has lost the job (it was rescued and claimed again): its
// handler is cancelled with ErrLostLease.
func (k *Keeper) Hold(id int64, attempt int, cancel context.CancelCauseFunc) {
	now := time.Now()
	k.mu.Lock()
	stale := k.held[id]
	early, wasCancelled := k.cancelled[attemptKey{id, attempt}]
	delete(k.cancelled, attemptKey{id, attempt})
	if !wasCancelled {
		k.held[id] = &lease{attempt: attempt, cancel: cancel, expires: now.Add(k.cfg.TTL)}
	}
	k.mu.Unlock()
	if stale != nil && stale.attempt != attempt {
		stale.cancel(ErrLostLease)
	}
	if wasCancelled {
		cancel(early.cause)
	}
}

// Finished records that the handler of that attempt of job id has returned. Its lease is
// still renewed (the job is running in the table until its outcome is written), but its
// loss is no longer news: the outcome write usually explains it.
func (k *Keeper) Finished(id int64, attempt int) {
	k.mu.Lock()
	if l, ok := k.held[id]; ok && l.attempt == attempt {
		l.done = true
	}
	k.mu.Unlock()
}

// Release stops keeping the lease of that attempt of job id: its handler has returned.
func (k *Keeper) Release(id int64, attempt int) {
	k.mu.Lock()
	if l, ok := k.held[id]; ok && l.attempt == attempt && !l.untilLeased {
		delete(k.held, id)
	}
	k.mu.Unlock()
}

// Written lets go of the lease of that attempt of job id once its outcome is committed,
// as Release does, unless the attempt held now is another one under the same number,
// whose handler still runs: a snooze gives its attempt number back, and the client may
// claim the job again before it hears that the outcome was written. Call it only for an
// attempt whose handler was reported [Keeper.Finished].
func (k *Keeper) Written(id int64, attempt int) {
	k.mu.Lock()
	if l, ok := k.held[id]; ok && l.attempt == attempt && l.done && !l.untilLeased {
		delete(k.held, id)
	}
	k.mu.Unlock()
}

// LeaveToLease lets go of the lease of that attempt of job id, whose outcome its client
// could not write, as Release does, but only once a renewal has extended it (or found the
// job ended): a job left to its lease must have one. A job handed off to the client
// whose acknowledgement did not go through has none yet, and would otherwise stay running
// under a live client for good, never rescued. Release does not let go of it before.
func (k *Keeper) LeaveToLease(id int64, attempt int) {
	k.mu.Lock()
	if l, ok := k.held[id]; ok && l.attempt == attempt {
		l.done, l.untilLeased = true, true
	}
	k.mu.Unlock()
}

// Cancel cancels the handler of job id with cause, if this client is running it, and
// reports whether it was. A job not held yet is remembered for a lease's time, so that
// its Hold, if it comes, cancels it at once.
func (k *Keeper) Cancel(id int64, attempt int, cause error) bool {
	now := time.Now()
	k.mu.Lock()
	l, ok := k.held[id]
	ok = ok && l.attempt == attempt
	if ok {
		delete(k.held, id)
	} else {
		for other, t := range k.cancelled {
			if now.Sub(t.at) > k.cfg.TTL {
				delete(k.cancelled, other)
			}
		}
		k.cancelled[attemptKey{id, attempt}] = tombstone{at: now, cause: cause}
	}
	k.mu.Unlock()
	if ok {
		l.cancel(cause)
	}
	return ok
}

// Holds reports whether the Keeper holds the lease of that attempt of job id: its handler
// runs, or its outcome is still to be written.
func (k *Keeper) Holds(id int64, attempt int) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	l, ok := k.held[id]
	return ok && l.attempt == attempt
}

// Held is how many leases the Keeper holds.
func (k *Keeper) Held() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.held)
}

// HeldJobs returns the ids of the jobs whose leases the Keeper holds.
func (k *Keeper) HeldJobs() []int64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Collect(maps.Keys(k.held))
}

// Pause stops (true) or resumes (false) renewals, as if the client were cut off from the
// database. It exists for tests of partitioned workers.
func (k *Keeper) Pause(paused bool) { k.paused.Store(paused) }

// Recover tells the Keeper that the database answers again. If its last renewal failed,
// it renews at once rather than at its next tick, so that leases that have not expired yet
// are saved. It never blocks.
func (k *Keeper) Recover() {
	// Not only while failing is set: Run sets it after the failed renewal has returned,
	// and a Recover that came in between, told by that renewal's own error, would be lost.
	// Run ignores the signal unless its last renewal failed.
	k.recovered.Send()
}

// Run renews leases every Interval until ctx ends. The first renewal, which also records
// the client's first heartbeat, happens at once. While renewals fail it also wakes when
// the earliest lease certainly expires, to cancel that handler without delay, and when
// [Keeper.Recover] is called.
func (k *Keeper) Run(ctx context.Context) error {
	next := time.Now()
	for {
		now := time.Now()
		renewed := false
		if !now.Before(next) {
			next = now.Add(k.cfg.Interval)
			renewed = !k.paused.Load() && k.renew(ctx)
			k.failing.Store(!renewed)
		}
		wake := next
		if !renewed {
			if at, ok := k.expire(time.Now()); ok && at.Before(wake) {
				wake = at
			}
		}
		t := time.NewTimer(time.Until(wake))
		select {
		case <-ctx.Done():
			t.Stop()
			k.lockers.Wait()
			return ctx.Err()
		case <-t.C:
		case <-k.recovered.C():
			t.Stop()
			if k.failing.Load() {
				next = time.Now()
			}
		}
	}
}

// Completing marks attempt of job id as completed in the handler's own transaction (see
// lease.completing).
func (k *Keeper) Completing(id int64, attempt int) {
	k.mu.Lock()
	if l := k.held[id]; l != nil && l.attempt == attempt {
		l.completing = true
	}
	k.mu.Unlock()
}

// renew runs one keep-alive tick and reports whether it reached the database.
func (k *Keeper) renew(ctx context.Context) bool {
	k.mu.Lock()
	held := make([]Held, 0, len(k.held))
	// what each was when the renewal began: an attempt held again under the same number
	// since (a snooze gives its number back, and the job may be claimed again at once) is
	// another lease, which this renewal's answer says nothing of
	leases := make([]*lease, 0, len(k.held))
	for id, l := range k.held {
		held = append(held, Held{ID: id, Attempt: l.attempt})
		leases = append(leases, l)
	}
	k.mu.Unlock()

	// A renewal must not outlive the lease it renews.
	renewCtx, cancel := context.WithTimeout(ctx, k.cfg.TTL/2)
	defer cancel()
	r, err := k.cfg.Renewer.Renew(renewCtx, held, k.cfg.TTL)
	now := time.Now()
	if err != nil {
		if ctx.Err() == nil {
			k.cfg.Logger.Warn("relay: renewing job leases failed; retrying", "held", len(held), "error", err)
		}
		return false
	}
	if r.Lapsed && k.cfg.Lapsed != nil {
		k.cfg.Lapsed()
	}
	k.mu.Lock()
	var lost, cancelled []*lease
	var locked []Held
	for i, h := range held {
		l, ok := k.held[h.ID]
		switch {
		case !ok || l != leases[i]:
			// Released (or re-held) while the renewal was in flight: not ours to judge.
		case r.Renewed[h.ID]:
			k.extendedLocked(h.ID, l, now)
		case r.Held[h.ID]:
			// Still ours, but its row was locked and its lease not extended. If the lock is
			// the handler's own transaction, wait for it, on its own.
			if !l.done || l.untilLeased {
				locked = append(locked, h)
			}
		case l.done:
			delete(k.held, h.ID) // written meanwhile, most likely: nothing to cancel
		case l.completing:
			delete(k.held, h.ID) // its transaction committed, most likely: let it finish
		case r.Cancelled[h.ID]:
			delete(k.held, h.ID)
			cancelled = append(cancelled, l)
		default:
			delete(k.held, h.ID)
			lost = append(lost, l)
		}
	}
	k.mu.Unlock()
	for _, l := range lost {
		l.cancel(ErrLostLease)
	}
	for _, l := range cancelled {
		l.cancel(ErrCancelled)
	}
	if len(cancelled) > 0 {
		k.cfg.Logger.Info("relay: cancelled running jobs, found cancelled by a lease renewal (the cancel's wakeup was not heard)", "jobs", len(cancelled))
	}
	k.renewAllLocked(ctx, locked)
	if len(lost) > 0 {
		k.cfg.Logger.Warn("relay: lost the lease of running jobs; their handlers are cancelled", "jobs", len(lost))
	}
	return true
}

// lockWait bounds how long the keeper waits for a handler's transaction to renew its job's
// lease: a fraction of the lease, so that the other jobs' renewals are not held up long.
func (k *Keeper) lockWait() time.Duration { return min(k.cfg.TTL/8, time.Second) }

// renewAllLocked renews the leases of locked rows, each on its own goroutine, so that
// waiting for one handler's transaction never delays the next tick's renewal of the
// others. A job whose renewal is still waiting is not started again.
func (k *Keeper) renewAllLocked(ctx context.Context, locked []Held) {
	for _, h := range locked {
		k.mu.Lock()
		busy := k.waiting[h.ID]
		k.waiting[h.ID] = true
		k.mu.Unlock()
		if busy {
			continue
		}
		k.lockers.Add(1)
		go func() {
			defer k.lockers.Done()
			k.renewLocked(ctx, h)
			k.mu.Lock()
			delete(k.waiting, h.ID)
			k.mu.Unlock()
		}()
	}
}

// renewLocked extends the lease of a held job whose row was locked during the renewal. A
// lock still held after lockWait leaves the lease as it is: the next tick tries again,
// and a lease that cannot be renewed for its whole length expires as usual.
func (k *Keeper) renewLocked(ctx context.Context, h Held) {
	ok, err := k.cfg.Renewer.RenewLocked(ctx, h, k.cfg.TTL, k.lockWait())
	now := time.Now()
	if err != nil {
		if ctx.Err() == nil {
			k.cfg.Logger.Debug("relay: could not renew the lease of a job whose row a transaction holds", slog.Group("job", "id", h.ID, "attempt", h.Attempt), "error", err)
		}
		return
	}
	k.mu.Lock()
	l, held := k.held[h.ID]
	if held && l.attempt == h.Attempt && ok {
		k.extendedLocked(h.ID, l, now)
	}
	k.mu.Unlock()
}

// extendedLocked records that a renewal answered at now extended lease l of job id: it
// runs until a TTL from now, unless it was left to its lease (LeaveToLease), which it has
// now, and which the rescuers see expire. k.mu is held.
func (k *Keeper) extendedLocked(id int64, l *lease, now time.Time) {
	if l.untilLeased {
		delete(k.held, id)
		return
	}
	l.expires = now.Add(k.cfg.TTL)
}

// expire cancels the handlers whose lease has certainly expired by now, and returns when
// the next of the others does (ok false if none is held).
func (k *Keeper) expire(now time.Time) (next time.Time, ok bool) {
	k.mu.Lock()
	var expired []*lease
	for id, l := range k.held {
		switch {
		case l.untilLeased:
			// Kept, whatever its expiry, until a renewal gives it a lease (LeaveToLease).
		case !now.Before(l.expires) && l.done:
			delete(k.held, id)
		case !now.Before(l.expires):
			delete(k.held, id)
			expired = append(expired, l)
		case !ok || l.expires.Before(next):
			next, ok = l.expires, true
		}
	}
	k.mu.Unlock()
	for _, l := range expired {
		l.cancel(ErrLeaseExpired)
	}
	if len(expired) > 0 {
		k.cfg.Logger.Error("relay: leases expired while renewals failed; cancelling their handlers", "jobs", len(expired))
	}
	return next, ok
}
