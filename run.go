package relay

import (
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/relayq/relay/internal/store"
)

// runJob runs one claimed job on its dispatcher's goroutine and queues its outcome.
func (c *Client) runJob(j *store.Job) {
	err := c.call(j)
	if !c.writer.Add(c.outcomeOf(j, err, time.Now())) {
		c.cfg.Logger.Error("relay: job finished after the client stopped; its outcome is lost and it will run again", "job", j.ID, "kind", j.Kind)
	}
}

// call runs the job's handler, turning a panic into an error so that one bad job cannot
// take the process or the other jobs down.
func (c *Client) call(j *store.Job) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v\n\n%s", r, debug.Stack())
		}
	}()
	return c.handlers[j.Kind](c.work, j)
}

// outcomeOf decides what becomes of a job after an attempt that ended at now with err.
func (c *Client) outcomeOf(j *store.Job, err error, now time.Time) store.Outcome {
	o := store.Outcome{ID: j.ID, EndedAt: now}
	var permanent *permanentError
	switch {
	case err == nil:
		o.State = store.StateSucceeded
		return o
	case errors.As(err, &permanent), j.Attempt >= j.MaxAttempts:
		o.State = store.StateFailed
	case c.work.Err() != nil:
		// Interrupted by shutdown, not by a fault of the job: let another client have it now.
		o.State, o.RunAt = store.StatePending, now
	default:
		o.State, o.RunAt = store.StatePending, now.Add(c.cfg.Backoff.Delay(j.Attempt))
	}
	o.Error = err.Error()
	if o.Error == "" {
		o.Error = fmt.Sprintf("%T with an empty message", err)
	}
	c.cfg.Logger.Warn("relay: job attempt failed", "job", j.ID, "kind", j.Kind, "attempt", j.Attempt, "state", o.State, "error", err)
	return o
}
