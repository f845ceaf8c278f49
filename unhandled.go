package relay

import (
	"context"
	"time"
)

// unhandledCheck is how often every client looks for pending jobs that no live client can
// run, and how long such a job must have been due before it counts: a worker that is
// still starting up is not a misconfiguration.
const unhandledCheck = time.Minute

// watchUnhandled warns, on every running client, of pending jobs that no live client can
// run: their kind has no handler on any client that serves their queue, so they wait
// forever, with no error anywhere (a misspelled kind or queue, a worker that is not
// deployed). It warns once per queue and kind, and again whenever their number has
// doubled since the last warning; a pair that clears and comes back warns anew.
func (c *Client) watchUnhandled(ctx context.Context) error {
	every := c.unhandledEvery
	warned := map[[2]string]int64{} // (queue, kind) → jobs at the last warning
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		t.Reset(every)
		found, err := c.store.Unhandled(ctx, c.conns, every)
		c.recovery.observe(err)
		if err != nil {
			if ctx.Err() == nil {
				c.cfg.Logger.Debug("relay: could not look for jobs no client can run", "error", err)
			}
			continue
		}
		seen := make(map[[2]string]bool, len(found))
		for _, u := range found {
			key := [2]string{u.Queue, u.Kind}
			seen[key] = true
			if last, ok := warned[key]; ok && u.Jobs < 2*last {
				continue
			}
			warned[key] = u.Jobs
			c.cfg.Logger.Warn("relay: jobs are waiting that no live client can run; check that the kind is spelled the same where it is enqueued and handled, and that a running client serves the queue (Config.Queues) and handles the kind (relay.Handle)",
				"queue", u.Queue, "kind", u.Kind, "jobs", u.Jobs, "oldest", time.Since(u.Oldest).Round(time.Second))
		}
		for key := range warned {
			if !seen[key] {
				delete(warned, key)
			}
		}
	}
}
