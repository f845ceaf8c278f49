package relay

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/dispatcher"
)

// Hand-offs (migrations/016_hand_offs.sql): a job enqueued while this client waits for work
// may be leased to it by the producer's own statement, and its wakeup then carries the job.
// The client starts it at once, without a claim, or gives it back.

// handOffs are the hand-offs the client has taken or given back, so that each is taken
// once: its wakeup and the look for hand-offs not heard (after the listener reconnects)
// may both find it.
type handOffs struct {
	mu   sync.Mutex
	seen map[handOffKey]time.Time // when each was first seen
	// order holds what seen does in the order seen, the oldest first, so that forgetting
	// what is older than handOffMemory looks at those alone: a scan of seen at every
	// hand-off cost time in proportion to a minute's hand-offs, on the listener's goroutine.
	order []seenAt
	// memory is how long a hand-off is remembered: handOffMemory, unless a test shortens
	// it to see what the keeper alone keeps from running twice.
	memory time.Duration
	// ackAfter is how long a hand-off's handler runs before its acknowledgement is sent:
	// ackHandOffAfter, unless a test sets it (a negative value: as the job starts).
	ackAfter time.Duration
	// awaitingProducers, if set (by a test), is called as Stop starts waiting for the
	// producers that may have handed the client jobs it did not hear; beforeAck, before
	// each acknowledgement.
	awaitingProducers, beforeAck func()
	// pending are the acknowledgements, give-backs and looks under way, which Stop waits
	// for before it closes the connections.
	pending sync.WaitGroup

	// acks are the hand-offs heard and not yet acknowledged; acking says a statement is
	// acknowledging others. Those heard meanwhile go in its next statement, one for all.
	// closed says Stop waits for pending: a handler still running then (Stop gave up on it)
	// is acknowledged no more.
	acks           []*dispatcher.Job
	acking, closed bool
	// acked closes once the statement that will acknowledge acks has returned.
	acked chan struct{}
}

type handOffKey struct {
	id      int64
	attempt int
}

type seenAt struct {
	key handOffKey
	at  time.Time
}

// ackHandOffAfter is how long a hand-off's handler may run before the client acknowledges
// the hand-off (see startedHandOff): a job that ends sooner is acknowledged by its outcome.
// Short, because until its acknowledgement or outcome commits the job counts among the
// client's unacknowledged hand-offs, of which producers hand a client at most 8 (migration
// 019).
const ackHandOffAfter = time.Millisecond

// handOffMemory is how long a hand-off is remembered: far longer than a look for
// hand-offs takes, after which the job is no longer a hand-off (acknowledged, or
// given back).
const handOffMemory = time.Minute

// first reports whether job's hand-off is seen for the first time, and remembers it.
func (h *handOffs) first(job *dispatcher.Job, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.seen == nil {
		h.seen = map[handOffKey]time.Time{}
	}
	if h.memory == 0 {
		h.memory = handOffMemory
	}
	for len(h.order) > 0 && now.Sub(h.order[0].at) > h.memory {
		old := h.order[0]
		if at, ok := h.seen[old.key]; ok && at.Equal(old.at) { // not forgotten and seen again since
			delete(h.seen, old.key)
		}
		h.order = h.order[1:]
	}
	k := handOffKey{job.ID, job.Attempt}
	if _, ok := h.seen[k]; ok {
		return false
	}
	h.seen[k] = now
	h.order = append(h.order, seenAt{k, now})
	return true
}

// forget forgets job's hand-off: a look for hand-offs takes it again.
func (h *handOffs) forget(job *dispatcher.Job) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.seen, handOffKey{job.ID, job.Attempt})
}

// onHandOff starts a job handed off to the client, or gives it back if no worker of its
// queue is free (see dispatcher.TakeHandOff). It runs on the listener's goroutine and never
// blocks for long.
func (c *Client) onHandOff(job *dispatcher.Job) {
	// Heard before, and remembered for a minute; once started, held by the keeper until its
	// outcome is written, however long its acknowledgement takes to go through (a look for
	// hand-offs not heard returns it until then).
	if c.keeper.Holds(job.ID, job.Attempt) || !c.handOffs.first(job, time.Now()) {
		return
	}
	giveBack := func(job *dispatcher.Job) { c.handOffs.pending.Go(func() { c.giveBack(job) }) }
	if !c.queues.with(job.Queue, func(d *dispatcher.Dispatcher) { d.TakeHandOff(job, giveBack) }) {
		giveBack(job) // a queue it no longer serves
	}
}

// startedHandOff arranges the acknowledgement of hand-off job, whose handler starts now:
// it is sent once the handler has run for ackAfter. Call ended once the handler has
// returned: it returns what closes when the job's outcome may be written, nil if at once.
//
// A job whose handler returns sooner is never acknowledged: its outcome, which makes it
// succeeded, failed or pending again, says all the acknowledgement would, and one statement
// fewer per job is what a client of short jobs spends most on (with one producer
// committing 1,000 jobs a second, the producer reached 8 % more of them without
// acknowledgements). Until the outcome commits the job counts as unacknowledged, as it
// does until an acknowledgement returns, and the client's renewals give it a lease if the
// outcome is slow to go through.
func (c *Client) startedHandOff(job *dispatcher.Job) (ended func() <-chan struct{}) {
	after := c.handOffs.ackAfter
	if after == 0 {
		after = ackHandOffAfter
	}
	if after < 0 {
		acked := c.ackHandOff(job)
		return func() <-chan struct{} { return acked }
	}
	var (
		mu       sync.Mutex
		returned bool
		acked    <-chan struct{}
	)
	timer := time.AfterFunc(after, func() {
		mu.Lock()
		defer mu.Unlock()
		if !returned {
			acked = c.ackHandOff(job)
		}
	})
	return func() <-chan struct{} {
		timer.Stop()
		mu.Lock()
		defer mu.Unlock()
		returned = true
		return acked
	}
}

// ackHandOff acknowledges a hand-off the client heard, as its job runs, and returns what
// closes once the acknowledgement has returned (nil once Stop waits for those under way:
// none is sent then): at once if no
// acknowledgement is under way, else in the next, with every other started meanwhile. One
// that fails is left to the client's next renewal, which gives the job its lease; until
// then producers hand the client no other job.
//
// Only a job that starts is acknowledged, and its outcome is written only once its
// acknowledgement has returned: an acknowledgement that came upon the job just
// made pending again by its outcome (a retry, a snooze) would wait for that statement and
// then keep the row locked until it ended, though it changed nothing, and a claim woken for
// the job in that moment would skip it (SKIP LOCKED) and wait for the next wakeup. Nothing
// else makes a running job pending while its client lives, so acknowledgements need not
// wait for the client's outcome batches, which they once did: a client whose outcome
// batches followed each other had its acknowledgements wait for them, and producers found
// it with 8 hand-offs unacknowledged more often.
func (c *Client) ackHandOff(job *dispatcher.Job) (acked <-chan struct{}) {
	h := &c.handOffs
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return nil // none will be sent: the outcome need not wait
	}
	h.acks = append(h.acks, job)
	if h.acked == nil {
		h.acked = make(chan struct{})
	}
	acked = h.acked
	if h.acking {
		h.mu.Unlock()
		return acked
	}
	h.acking = true
	h.mu.Unlock()
	h.pending.Go(func() {
		for {
			h.mu.Lock()
			jobs, done := h.acks, h.acked
			h.acks, h.acked = nil, nil
			h.acking = len(jobs) > 0
			h.mu.Unlock()
			if len(jobs) == 0 {
				return
			}
			if h.beforeAck != nil {
				h.beforeAck()
			}
			ctx, cancel := context.WithTimeout(context.WithoutCancel(c.work), giveBackFor)
			err := c.jobs.AckHandOffs(ctx, jobs, c.cfg.LeaseTTL)
			cancel()
			close(done)
			if err != nil {
				c.cfg.Logger.Debug("relay: could not acknowledge jobs handed off to this client; its next lease renewal does",
					"jobs", len(jobs), "error", err)
			}
		}
	})
	return acked
}

// closeAcks has later acknowledgements return at once, unsent, and returns once those
// under way have.
func (h *handOffs) closeAcks() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.pending.Wait()
}

// giveBackFor bounds how long the client tries to give back one hand-off: past it, it
// forgets the job, which a later look for hand-offs (once the listener is back) takes
// again, and Stop does not wait longer than this for give-backs.
const giveBackFor = 10 * time.Second

// handOffsAtStopFor bounds how long Stop waits for the producers that may have handed the
// client jobs it did not hear: a producer's transaction can stay open for long.
const handOffsAtStopFor = 2 * time.Second

// giveBack makes a hand-off the client cannot start pending again, retrying for up to
// giveBackFor, Stop or not: a job handed off to a stopping client is given back before
// Stop returns. One it could not give back stays the client's, as if never heard.
func (c *Client) giveBack(job *dispatcher.Job) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.work), giveBackFor)
	defer cancel()
	retry := backoff.Outage().Series()
	began := time.Now()
	for {
		_, err := c.jobs.ReleaseHandOff(ctx, job)
		if err == nil {
			c.cfg.Logger.Debug("relay: gave back a job handed off to this client, which could not start it at once",
				slog.Group("job", "id", job.ID, "kind", job.Kind, "queue", job.Queue, "attempt", job.Attempt), "took", time.Since(began))
			return
		}
		if ctx.Err() != nil || retry.Wait(ctx, nil) != nil {
			c.cfg.Logger.Warn("relay: could not give back a job handed off to this client; it is taken again once the listener reconnects, or rescued once the client stops",
				slog.Group("job", "id", job.ID, "kind", job.Kind, "queue", job.Queue, "attempt", job.Attempt), "error", err)
			c.handOffs.forget(job)
			return
		}
	}
}

// takeHandOffsNotHeard takes the jobs handed off to the client whose wakeups it may have
// missed, its listener being away when they committed, and starts them as if heard. It
// runs once the listener LISTENs again, after which any hand-off committed is heard, and
// once the listener is found deaf, after which none is made.
func (c *Client) takeHandOffsNotHeard() {
	if c.jobs == nil {
		return // the listener starts before the client's statements are ready
	}
	c.handOffs.pending.Go(func() {
		retry := backoff.Outage().Series()
		for {
			ctx, cancel := context.WithTimeout(c.work, 30*time.Second)
			_, err := c.lookForHandOffs(ctx)
			cancel()
			if err == nil || c.work.Err() != nil {
				return // stopping: the rescuers give back a stopped client's hand-offs
			}
			c.cfg.Logger.Warn("relay: could not take the jobs handed off to this client; retrying", "error", err)
			if retry.Wait(c.work, nil) != nil {
				return
			}
		}
	})
}

// lookForHandOffs is one look of takeHandOffsNotHeard: every job handed off to the client
// and not acknowledged goes through onHandOff, which skips those heard or started already.
// It returns how many it found.
func (c *Client) lookForHandOffs(ctx context.Context) (int, error) {
	jobs, err := c.jobs.HandedOff(ctx, c.cfg.LeaseTTL)
	for _, job := range jobs {
		c.onHandOff(job)
	}
	return len(jobs), err
}

// refuseHandOffs makes producers hand the client no more jobs, its listener being deaf
// (see listenerDeaf), then takes those they handed it before: claims, at its polls, find
// its jobs instead.
func (c *Client) refuseHandOffs() {
	c.handOffs.pending.Go(func() {
		ctx, cancel := context.WithTimeout(c.work, 5*time.Second)
		defer cancel()
		if err := c.jobs.RefuseHandOffs(ctx); err != nil {
			c.cfg.Logger.Warn("relay: could not refuse hand-offs to this deaf client; its next heartbeat does", "error", err)
			return
		}
		// Once every producer that may have seen the client take hand-offs has ended,
		// none is made any more.
		waitCtx, cancel := context.WithTimeout(c.work, time.Minute)
		defer cancel()
		if err := c.jobs.AwaitProducers(waitCtx, "", nil); err != nil {
			c.cfg.Logger.Warn("relay: could not wait for the producers that may have handed jobs to this deaf client; they run once it stops", "error", err)
			return
		}
		c.takeHandOffsNotHeard()
	})
}

// giveBackHandOffsNotHeard gives back, as the client stops, the jobs handed off to it whose
// wakeups it had not heard when its listener stopped: it starts no more jobs, and without
// this they would wait for another client's rescuer. It gives back what is there, then
// waits (up to handOffsAtStopFor) for the producers that may have handed it a job before
// it was marked stopped, and gives back what they handed it. Jobs it still runs (handlers
// that did not return) are left as they are.
func (c *Client) giveBackHandOffsNotHeard() {
	giveBackAll := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n, err := c.jobs.GiveBackHandOffs(ctx, c.keeper.HeldJobs())
		if err != nil {
			c.cfg.Logger.Warn("relay: stop: could not give back the jobs handed off to this client and not heard; another client's rescuer gives them back", "error", err)
		} else if n > 0 {
			c.cfg.Logger.Info("relay: stop: gave back jobs handed off to this client whose wakeups it had not heard", "jobs", n)
		}
	}
	giveBackAll()
	if c.handOffs.awaitingProducers != nil {
		c.handOffs.awaitingProducers()
	}
	ctx, cancel := context.WithTimeout(context.Background(), handOffsAtStopFor)
	defer cancel()
	if err := c.jobs.AwaitProducers(ctx, "", nil); err != nil {
		c.cfg.Logger.Debug("relay: stop: did not see the end of every producer that may have handed this client a job; another client's rescuer gives back what they did", "error", err)
		return
	}
	giveBackAll()
}
