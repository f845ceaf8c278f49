// Package outcome writes the outcomes of finished attempts in batches: whatever
// accumulates while one batch is being written goes out in the next, in one statement, so
// an idle client writes each outcome at once and a busy one writes hundreds per round trip.
package outcome

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/internal/store"
)

// maxBatch bounds one statement, so that a large backlog after an outage is written in
// pieces that each finish quickly.
const maxBatch = 5000

// Writer batches outcomes. Create it with [New], run it with [Writer.Run].
type Writer struct {
	client  string // whose attempts these are
	written func(batch []store.Outcome, skipped store.Skipped)
	// observe, if set, is told how every write went (nil: it worked).
	observe func(error)
	store   *store.Store
	db      store.BatchDB
	logger  *slog.Logger
	// recovered ends the wait before retrying a failed write (see Recover).
	recovered backoff.Signal

	// order is held (full) from a batch's write until its written callback returns: see
	// Serialize. A channel, so that SerializeWithin can give up waiting for it.
	order   chan struct{}
	mu      sync.Mutex
	pending []store.Outcome
	writing int // outcomes taken by the statement in flight
	stopped bool
	signal  chan struct{} // capacity 1
}

// New returns a Writer that writes the outcomes of client's attempts to db. written, if
// not nil, is called with each batch once it is committed, and the outcomes the batch left
// out because their attempt no longer held the job. Until then a job is still running in
// the table, and its lease must be kept.
func New(client string, s *store.Store, db store.BatchDB, logger *slog.Logger, written func(batch []store.Outcome, skipped store.Skipped)) *Writer {
	return &Writer{client: client, written: written, store: s, db: db, logger: logger,
		signal: make(chan struct{}, 1), order: make(chan struct{}, 1), recovered: backoff.NewSignal()}
}

// Observe makes the writer tell fn how each write went: nil when it worked. Call it
// before Run.
func (w *Writer) Observe(fn func(error)) { w.observe = fn }

// Recover tells the writer that the database answers again: if it is waiting to retry a
// failed write, it retries at once, with its backoff reset. It never blocks.
func (w *Writer) Recover() { w.recovered.Send() }

// Serialize runs fn after the written callback of every batch already committed has
// returned, and keeps batches from reporting until fn returns: a caller that writes an
// outcome itself reports it in order with the batches committed before it.
func (w *Writer) Serialize(fn func()) {
	w.order <- struct{}{}
	defer func() { <-w.order }()
	fn()
}

// SerializeWithin runs fn as [Writer.Serialize] does, unless a batch holds the writer for
// longer than wait: then it runs fn beside that batch. It is for writes that must not wait
// on a slow outcome statement for long, such as the renewal of the leases of every running
// job, yet should not overlap a batch. A statement that locks the rows of running jobs
// while a batch makes one of them pending again can lock the new, pending version (the
// recheck after a concurrent update locks the row before it finds it no longer matches),
// and the claim woken for that job would skip it.
func (w *Writer) SerializeWithin(wait time.Duration, fn func()) {
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case w.order <- struct{}{}:
		defer func() { <-w.order }()
	case <-t.C:
	}
	fn()
}

// Backlog is how many outcomes are queued and not yet committed. The client stops
// claiming while it is large, so that a database that cannot keep up with writes slows
// claims down instead of letting outcomes (and the leases they hold) pile up.
func (w *Writer) Backlog() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending) + w.writing
}

// Add queues an outcome to be written. It never blocks. It reports false if the writer has
// already stopped, in which case the outcome is not written and its job stays running
// until its lease expires.
func (w *Writer) Add(o store.Outcome) bool {
	w.mu.Lock()
	if w.stopped {
		w.mu.Unlock()
		return false
	}
	w.pending = append(w.pending, o)
	w.mu.Unlock()
	select {
	case w.signal <- struct{}{}:
	default:
	}
	return true
}

// Run writes outcomes until ctx ends, then writes everything still queued, retrying for
// up to flushTimeout, and returns.
func (w *Writer) Run(ctx context.Context) error {
	retry := backoff.Outage().Series()
	for {
		select {
		case <-ctx.Done():
			return w.flush(ctx)
		case <-w.signal:
		}
		for w.writeQueued(ctx) {
			// A write failed: wait, then try again with everything queued by then.
			if retry.Wait(ctx, w.recovered.C()) != nil {
				return w.flush(ctx)
			}
		}
		retry.Reset()
	}
}

// flushTimeout bounds how long stopping waits for the database to take the last outcomes.
const flushTimeout = 15 * time.Second

func (w *Writer) flush(ctx context.Context) error {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
	defer cancel()
	for w.writeBatch(flushCtx) {
		if flushCtx.Err() != nil {
			w.mu.Lock()
			lost := len(w.pending)
			w.mu.Unlock()
			w.logger.Error("relay: could not write job outcomes before stopping; their jobs stay running until rescued", "outcomes", lost)
			return flushCtx.Err()
		}
		time.Sleep(50 * time.Millisecond) // pace retries against a struggling database
	}
	return nil
}

// writeQueued is writeBatch with each statement given its own deadline instead of ctx: once
// sent, a write should finish, or it could be applied with nobody knowing.
func (w *Writer) writeQueued(ctx context.Context) (failed bool) {
	writeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	return w.writeBatch(writeCtx)
}

// writeBatch writes everything queued, in statements of up to maxBatch outcomes. It
// reports whether a write failed; the unwritten outcomes stay queued.
func (w *Writer) writeBatch(ctx context.Context) (failed bool) {
	w.mu.Lock()
	batch := w.pending
	w.pending = nil
	w.writing = len(batch)
	w.mu.Unlock()
	for len(batch) > 0 {
		n := min(len(batch), maxBatch)
		w.order <- struct{}{}
		skipped, err := w.store.WriteOutcomes(ctx, w.db, w.client, batch[:n])
		if err != nil && store.BadValue(err) {
			// One outcome PostgreSQL refuses would fail every batch it is in, at every retry,
			// for good: write them one by one, leaving out those it refuses.
			var wrote int
			wrote, skipped, err = w.writeEach(ctx, batch[:n])
			if err != nil && wrote > 0 {
				w.done(batch[:wrote], skipped)
				batch = batch[wrote:]
			}
		}
		if w.observe != nil {
			w.observe(err)
		}
		if err != nil {
			<-w.order
			w.logger.Warn("relay: writing job outcomes failed; will retry", "outcomes", len(batch), "error", err)
			w.mu.Lock()
			w.pending = append(batch, w.pending...)
			w.writing = 0
			w.mu.Unlock()
			return true
		}
		w.done(batch[:n], skipped)
		<-w.order
		batch = batch[n:]
	}
	return false
}

// done reports outcomes written (but those in skipped) to the written callback.
func (w *Writer) done(outcomes []store.Outcome, skipped store.Skipped) {
	w.mu.Lock()
	w.writing -= len(outcomes)
	w.mu.Unlock()
	if w.written != nil {
		w.written(outcomes, skipped)
	}
}

// writeEach writes outcomes one statement each, after a batch of them was refused for one
// of its values. One refused alone is written again without what a handler chose (its
// output, its error's data and stack; its error text says so): the job still ends as its
// handler decided. One refused even so is left out: logged, and reported as skipped (not
// written), so that its lease is no longer renewed and the job is rescued once it expires,
// and runs again. On any other error it stops, as a batch does: wrote says how many of
// outcomes, the first ones, it had written or left out by then.
func (w *Writer) writeEach(ctx context.Context, outcomes []store.Outcome) (wrote int, skipped store.Skipped, err error) {
	skipped = store.Skipped{}
	for i, o := range outcomes {
		one, err := w.store.WriteOutcomes(ctx, w.db, w.client, outcomes[i:i+1])
		if err != nil && store.BadValue(err) {
			refused := err
			bare := []store.Outcome{bareOutcome(o, refused)}
			if one, err = w.store.WriteOutcomes(ctx, w.db, w.client, bare); err == nil {
				w.logger.Warn("relay: PostgreSQL refused the outcome of a job's attempt; it was written without its output, error data and stack",
					o.LogArgs("state", o.State, "error", refused)...)
			}
		}
		switch {
		case err != nil && store.BadValue(err):
			w.logger.Error("relay: PostgreSQL refused the outcome of a job's attempt; it is left out, and the job runs again once its lease expires",
				o.LogArgs("state", o.State, "error", err)...)
			maps.Copy(skipped, store.RefusedAll(outcomes[i:i+1]))
		case err != nil:
			return i, skipped, err
		default:
			maps.Copy(skipped, one)
		}
	}
	return len(outcomes), skipped, nil
}

// bareOutcome is o without the values a handler chose, which PostgreSQL refused (refused),
// as far as its outcome is concerned.
func bareOutcome(o store.Outcome, refused error) store.Outcome {
	o.Output, o.Data, o.DataError, o.Stack = nil, nil, "", ""
	note := fmt.Sprintf("relay: PostgreSQL refused this attempt's outcome (%v), which was written without its output, error data and stack", refused)
	if o.Error != "" {
		note += "; its error: " + o.Error
	}
	o.Error = note
	return o
}
