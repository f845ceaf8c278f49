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
	// pending are the give-backs and looks under way, which Stop waits for before it
	// closes the connections.
	pending sync.WaitGroup
}

type handOffKey struct {
	id      int64
	attempt int
}

// handOffMemory is how long a hand-off is remembered: far longer than a look for
// hand-offs takes, after which the job is no longer a hand-off (its lease renewed, or
// given back).
const handOffMemory = time.Minute

// first reports whether job's hand-off is seen for the first time, and remembers it.
func (h *handOffs) first(job *dispatcher.Job, now time.Time) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := handOffKey{job.ID, job.Attempt}
	if _, ok := h.seen[k]; ok {
		return false
	}
	if h.seen == nil {
		h.seen = map[handOffKey]time.Time{}
	}
	if len(h.seen) >= 1024 {
		for k, at := range h.seen {
			if now.Sub(at) > handOffMemory {
				delete(h.seen, k)
			}
		}
	}
	h.seen[k] = now
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
	if !c.handOffs.first(job, time.Now()) {
		return
	}
	giveBack := func(job *dispatcher.Job) { c.handOffs.pending.Go(func() { c.giveBack(job) }) }
	if !c.queues.with(job.Queue, func(d *dispatcher.Dispatcher) { d.TakeHandOff(job, giveBack) }) {
		giveBack(job) // a queue it no longer serves
	}
}

// giveBackFor bounds how long the client tries to give back one hand-off: past it, it
// forgets the job, which a later look for hand-offs (once the listener is back) takes
// again, and Stop does not wait longer than this for give-backs.
const giveBackFor = 10 * time.Second

// giveBack makes a hand-off the client cannot start pending again, retrying for up to
// giveBackFor, Stop or not: a job handed off to a stopping client is given back before
// Stop returns. One it could not give back stays the client's, as if never heard.
func (c *Client) giveBack(job *dispatcher.Job) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.work), giveBackFor)
	defer cancel()
	retry := backoff.Outage().Series()
	for {
		_, err := c.jobs.ReleaseHandOff(ctx, job)
		if err == nil {
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

// takeHandOffsNotHeard looks for the jobs handed off to the client whose wakeups it may
// have missed, its listener being away when they committed, and takes them as if heard.
// It runs once the listener LISTENs again: any hand-off committed later is heard.
func (c *Client) takeHandOffsNotHeard() {
	if c.jobs == nil {
		return // the listener starts before the client's statements are ready
	}
	c.handOffs.pending.Go(func() {
		retry := backoff.Outage().Series()
		for {
			ctx, cancel := context.WithTimeout(c.work, 30*time.Second)
			jobs, err := c.jobs.HandedOff(ctx)
			cancel()
			if err == nil {
				for _, job := range jobs {
					c.onHandOff(job)
				}
				return
			}
			if c.work.Err() != nil {
				return // stopping: the rescuers give back a stopped client's hand-offs
			}
			c.cfg.Logger.Warn("relay: could not look for jobs handed off to this client; retrying", "error", err)
			if retry.Wait(c.work, nil) != nil {
				return
			}
		}
	})
}
