package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/dispatcher"
	"github.com/relayq/relay/internal/store"
)

// runJob runs one claimed job on its dispatcher's goroutine and queues its outcome.
func (c *Client) runJob(j *dispatcher.Job) {
	h := c.handlers[j.Kind]
	ctx, cancel := context.WithCancelCause(c.work)
	defer cancel(nil)
	if timeout := c.timeoutOf(j, h); timeout > 0 {
		var cancelTimeout context.CancelFunc
		ctx, cancelTimeout = context.WithTimeoutCause(ctx, timeout, fmt.Errorf("%w after %v", ErrTimeout, timeout))
		defer cancelTimeout()
	}
	r := &running{
		store: c.store, holder: store.Holder{ID: j.ID, Client: c.cfg.ID, Attempt: j.Attempt, Lease: c.cfg.LeaseTTL},
		keeper: c.keeper, maxOutput: c.cfg.MaxOutputSize, maxCheckpoint: c.cfg.MaxCheckpointSize,
		metadata: decodeMetadata(j.Metadata),
	}
	c.keeper.Hold(j.ID, j.Attempt, cancel)
	var handOffEnded func() <-chan struct{} // nil but for a hand-off
	if j.HandedOff {
		handOffEnded = c.startedHandOff(j) // beside the handler, not before it: see ackHandOff
	}
	started := time.Now()
	err := c.call(ctx, h, j, r)
	c.keeper.Finished(j.ID, j.Attempt)
	if handOffEnded != nil {
		if acked := handOffEnded(); acked != nil {
			<-acked // before its outcome: see ackHandOff
		}
	}

	// The lease is kept until the outcome is committed (see released): the job is running
	// in the table until then, and a lapsed lease would have it rescued and run again.
	decided := ctx
	if r.completed.Load() {
		// CompleteTx succeeded in the handler's transaction, so that transaction decides. If
		// it committed, the job is succeeded and this outcome, a failure, is ignored by the
		// database (the attempt no longer holds a running job); if not, the attempt failed.
		// Nothing else (a lost lease, a timeout) may stop this outcome from being written.
		err = errors.Join(errNotCommitted, err)
		decided = context.WithoutCancel(ctx)
	}
	ended := time.Now()
	r.mu.Lock()
	logAttrs := r.logAttrs
	r.mu.Unlock()
	o, ok := c.outcomeOf(decided, h, j, err, ended, logAttrs)
	o.ID, o.Attempt, o.EndedAt = j.ID, j.Attempt, ended
	o.Kind, o.Queue, o.ScheduledAt, o.StartedAt, o.CompletedTx = j.Kind, j.Queue, j.RunAt, started, r.completed.Load()
	o.LogAttrs = logAttrs
	if !ok {
		c.keeper.Release(j.ID, j.Attempt)
		if errors.Is(context.Cause(ctx), ErrCancelled) {
			c.events.cancelled(o)
		}
		return
	}
	if o.State == store.StateSucceeded {
		r.mu.Lock()
		o.Output = r.output
		r.mu.Unlock()
	}
	if o.CompletedTx {
		c.writeCompletedOutcome(o, r)
		return
	}
	if !c.writer.Add(o) {
		c.keeper.Release(j.ID, j.Attempt)
		c.cfg.Logger.Error("relay: job finished after the client stopped; its outcome is lost and it will run again", o.LogArgs()...)
	}
}

// completedLockWait bounds how long the outcome of an attempt that called CompleteTx waits
// for the job's row: a handler that returned without ending its transaction holds it.
const completedLockWait = 5 * time.Second

// writeCompletedOutcome writes the outcome of an attempt that called CompleteTx on its own,
// not in the writer's shared batch: if the handler returned while its transaction was
// still open, the row stays locked, and only this job — not every outcome of the client —
// may wait for it. Past completedLockWait the job is left to its lease: released, it
// expires, and the job is rescued once the transaction ends, if it did not commit.
//
// Usually the transaction committed before the handler returned, and one read of the job
// says so: there is nothing to write. (Writing the outcome first, which then changed
// nothing, took a transaction of four statements and a read after it, for every job.)
//
// While the database cannot be reached (its transaction's commit may have failed for that
// very reason), the read and the write are retried until it can, and at once when the
// client sees the database back: the job then runs again within moments, not once its
// lease has expired. It gives up only when the client stops.
func (c *Client) writeCompletedOutcome(o store.Outcome, r *running) {
	ended, wrote, err := c.completedEnd(o, r)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.work), 30*time.Second)
	defer cancel()
	var skipped store.Skipped // nil: the outcome, a failure, was written
	if !wrote {
		skipped = store.SkippedAll([]store.Outcome{o})
	}
	if err != nil {
		c.cfg.Logger.Error("relay: could not record the outcome of a job that called CompleteTx; did its handler return before its transaction ended? The job is left to its lease",
			o.LogArgs("error", err)...)
		c.keeper.LeaveToLease(o.ID, o.Attempt) // a hand-off not acknowledged has none yet
	}
	// Report a success only if this attempt's transaction did complete the job: the job
	// may also have been cancelled or rescued meanwhile.
	o.CompletedTx = ended == store.StateSucceeded
	r.mu.Lock()
	output, late := r.output, r.late
	r.mu.Unlock()
	if o.CompletedTx && late {
		// Completed by the handler's transaction, with an output recorded after it.
		if err := c.store.SetOutput(ctx, c.conns, r.holder, output); err != nil && !errors.Is(err, store.ErrNotHeld) {
			c.cfg.Logger.Error("relay: could not store the output of a job completed by CompleteTx", o.LogArgs("error", err)...)
		}
	}
	// After the batches committed before it have reported theirs: a job's events come in
	// the order of its attempts.
	c.writer.Serialize(func() {
		c.released([]store.Outcome{o}, skipped)
		if ended == store.StateCancelled {
			c.events.cancelled(o) // while its transaction was open, which then did not commit
		}
	})
}

// completedEnd settles how an attempt that called CompleteTx ended: either it wrote the
// attempt's outcome, a failure, as the job was still running (the transaction did not
// commit), or it read the job's state: ended is the state if this attempt was the job's
// last (its own transaction ended it, or a cancel did), "" if not (it was rescued and
// claimed again). An error means neither could be done.
func (c *Client) completedEnd(o store.Outcome, r *running) (ended string, wrote bool, err error) {
	read := func() error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.work), 30*time.Second)
		defer cancel()
		ended, err = c.store.EndedBy(ctx, c.conns, r.holder)
		return err
	}
	if err := c.untilReachable(read); err != nil || ended != store.StateRunning {
		return ended, false, err
	}
	// Still running: its transaction rolled back, or is still open and holds the row.
	var skipped store.Skipped
	err = c.untilReachable(func() error {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.work), 30*time.Second)
		defer cancel()
		return store.WaitingAtMost(ctx, c.conns, completedLockWait, func(tx pgx.Tx) (err error) {
			skipped, err = c.store.WriteOutcomes(ctx, tx, c.cfg.ID, []store.Outcome{o})
			return err
		})
	})
	if err != nil {
		return "", false, err
	}
	if skipped.Wrote(o) {
		return "", true, nil
	}
	// The open transaction committed after all, or another hand ended the job meanwhile.
	if err := c.untilReachable(read); err != nil {
		return "", false, err
	}
	return ended, false, nil
}

// untilReachable runs fn, one of the client's statements, again while it fails because the
// database cannot be reached: after a pause that doubles from 10 ms to 2 s, or at once
// when the client sees the database back. It returns fn's last error: nil, one that is not
// about reaching the database, or any once the client is stopping.
func (c *Client) untilReachable(fn func() error) error {
	pause := backoff.Outage().Series()
	for {
		back := c.recovery.wait() // before the attempt: a return during it must not be missed
		err := fn()
		c.recovery.observe(err)
		if !unreachable(err) || c.work.Err() != nil {
			return err
		}
		if pause.Wait(c.work, back) != nil {
			return err
		}
	}
}

// errNotCommitted is the failure recorded for an attempt that called CompleteTx when the
// job turns out not to be completed: the transaction rolled back or never committed.
var errNotCommitted = errors.New("relay: the transaction that called CompleteTx did not commit")

// released lets go of the leases of attempts whose outcomes are committed, reports them
// to subscribers, and lets the dispatchers claim again if the backlog had stopped them.
func (c *Client) released(written []store.Outcome, skipped store.Skipped) {
	for _, o := range written {
		if skipped.Refused(o) {
			// Left out: the job runs again once its lease expires, and a hand-off that
			// ended before its acknowledgement was due has no lease yet.
			c.keeper.LeaveToLease(o.ID, o.Attempt)
			continue
		}
		// Written, or its attempt no longer holds the job (CompleteTx completed it, or it
		// was rescued or cancelled): nothing is left to lease.
		c.keeper.Written(o.ID, o.Attempt)
		if o.State != store.StateSucceeded && skipped.Wrote(o) {
			// Logged once written, so that the log says what the database holds: a failure of
			// an attempt whose job CompleteTx had completed was never recorded.
			c.cfg.Logger.Warn("relay: job attempt failed", o.LogArgs("reason", o.Reason, "state", o.State, "error", o.Error)...)
		}
	}
	c.events.outcomeEvents(written, skipped)
	if c.backlogFull.CompareAndSwap(true, false) {
		c.queues.each((*dispatcher.Dispatcher).Nudge)
	}
	if c.cfg.PollOnly {
		c.wakeGated(written)
	}
}

// wakeGated makes the dispatchers of the ordered or limited queues of written outcomes
// claim again. Their jobs held a key or a slot until the outcome committed, whose NOTIFY
// wakes the queue's dispatchers everywhere; a client that polls hears none, and would
// otherwise start the next job of a key it has just freed only at the next poll.
func (c *Client) wakeGated(written []store.Outcome) {
	var last string
	for _, o := range written {
		if o.Queue == last {
			continue
		}
		last = o.Queue
		c.queues.with(o.Queue, func(d *dispatcher.Dispatcher) {
			if d.Settings().Gated() {
				d.Wake()
			}
		})
	}
}

// timeoutOf is the job's own timeout, else its kind's, else its queue's.
func (c *Client) timeoutOf(j *dispatcher.Job, h handler) time.Duration {
	switch {
	case j.HasTimeout:
		return j.Timeout
	case h.timeout != nil:
		return *h.timeout
	}
	if q, ok := c.cfg.Queues[j.Queue]; ok {
		return q.JobTimeout
	}
	g, _ := c.queues.groupOf(j.Queue)
	return g.cfg.JobTimeout
}

// call runs the job's handler, through its kind's middleware if it has any, turning a
// panic into an error so that one bad job cannot take the process or the other jobs down.
func (c *Client) call(ctx context.Context, h handler, j *dispatcher.Job, r *running) (err error) {
	defer recoverInto(&err)
	if h.chain == nil {
		return h.run(ctx, j, r)
	}
	return h.chain(ctx, &JobInfo{
		ID: j.ID, Kind: j.Kind, Queue: j.Queue, Attempt: j.Attempt, MaxAttempts: j.MaxAttempts, Priority: j.Priority,
		CreatedAt: j.CreatedAt, ScheduledAt: j.RunAt, AttemptedAt: j.AttemptedAt, Metadata: r.metadata,
		job: j, run: r, client: c,
	})
}

// outcomeOf decides what becomes of a job after an attempt that ended at now with err,
// and reports false when this client must not write it: the job is no longer its own.
func (c *Client) outcomeOf(ctx context.Context, h handler, j *dispatcher.Job, err error, now time.Time, logAttrs []slog.Attr) (store.Outcome, bool) {
	cause := context.Cause(ctx)
	v := decide(cause, err, j.Attempt, j.MaxAttempts, c.work.Err() != nil)
	if v.abandoned {
		c.cfg.Logger.Warn("relay: job attempt abandoned",
			store.JobLogArgs(j.ID, j.Kind, j.Queue, j.Attempt, logAttrs, "cause", cause)...)
		return store.Outcome{}, false
	}
	o := store.Outcome{ID: j.ID, Attempt: j.Attempt, EndedAt: now, State: v.state, Reason: v.reason, Uncounted: v.uncounted}
	backoffFrom := j.Attempt
	if v.backoffFrom > 0 {
		backoffFrom = v.backoffFrom
	}
	switch {
	case v.state == store.StateSucceeded:
		return o, true
	case v.state == store.StatePending && v.hasRetryIn:
		o.RunAt = now.Add(v.retryIn)
	case v.state == store.StatePending:
		// The job's own policy, given at enqueue, else its kind's, else the client's.
		policy := &c.cfg.Backoff
		if j.Backoff != nil {
			policy = j.Backoff
		} else if h.backoff != nil {
			policy = h.backoff
		}
		o.RunAt = now.Add(policy.Delay(backoffFrom))
	}
	// A handler's error decides this text: one PostgreSQL could not store would fail the
	// write of every outcome batched with it, again and again.
	o.Error, o.Stack = cutText(storableText(v.message), MaxAttemptText), cutText(storableText(v.stack), MaxAttemptText)
	o.Data, o.DataError = encodeErrorData(err, c.cfg.MaxErrorDataSize, func() string { return fmt.Sprintf("of job %d", j.ID) })
	return o, true
}
