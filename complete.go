package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/relayq/relay/internal/store"
	"github.com/relayq/relay/lease"
)

// ErrJobNotHeld is returned by [CompleteTx] and [Checkpoint] when the attempt calling it no
// longer holds its job: its lease was lost (the job may be running elsewhere), or it was
// cancelled or already completed. Nothing was written; roll back the transaction.
var ErrJobNotHeld = errors.New("relay: this attempt no longer holds the job")

// ErrNotRunning is returned by [CompleteTx], [Checkpoint] and [Job.SetOutput] for a Job
// that no client is running, such as one built by hand or by relaytest.Work: they act on
// the running attempt. Test such handlers with a client and a database (relaytest.NewDB).
var ErrNotRunning = errors.New("relay: the job is not being run by a relay client")

// running ties a handler's [Job] to the attempt a client is running: what CompleteTx,
// Checkpoint and SetOutput act on.
type running struct {
	store  *store.Store
	holder store.Holder

	completed atomic.Bool // CompleteTx succeeded in a transaction (which may not commit)
	// keeper is told of a CompleteTx, so that its commit is not taken for a lost lease.
	keeper *lease.Keeper
	// The size limits of the client's Config.
	maxOutput, maxCheckpoint int

	metadata map[string]string // the job's, decoded once for its middleware and handler

	mu       sync.Mutex
	output   []byte      // JSON, set by SetOutput
	late     bool        // output was set after CompleteTx: it is stored once the job is succeeded
	logAttrs []slog.Attr // added by middleware (JobInfo.AddLogAttrs) to the attempt's log lines
}

// CompleteTx marks job succeeded as part of tx, the handler's own transaction: if tx
// commits, the job is succeeded and the handler's writes in tx are visible, together; if
// tx rolls back, the job is not completed and is retried. So a handler whose effects live
// in the same database does them exactly once, although delivery is at least once:
//
//	tx, _ := pool.Begin(ctx)
//	defer tx.Rollback(ctx)
//	tx.Exec(ctx, "INSERT INTO invoices …")
//	if err := relay.CompleteTx(ctx, tx, job); err != nil {
//		return err // relay.ErrJobNotHeld: another client may be running it now
//	}
//	return tx.Commit(ctx)
//
// It refuses, writing nothing, with an error wrapping [ErrJobNotHeld] when this attempt no
// longer holds the job — its lease was lost and the job rescued, or it was cancelled — so
// a stale handler can never complete a job another attempt now owns. An output recorded
// with [Job.SetOutput] before the call is stored with the job.
//
// Once CompleteTx succeeded, what the handler returns no longer decides the job: the
// transaction does. If it does not commit, the attempt counts as failed and is retried.
// Keep the transaction short: the job's row stays locked until it ends, and its lease
// cannot be renewed meanwhile.
func CompleteTx[T any](ctx context.Context, tx DB, job *Job[T]) error {
	if err := checkDB(tx, "CompleteTx"); err != nil {
		return err
	}
	if job == nil || job.run == nil {
		return ErrNotRunning
	}
	r := job.run
	r.mu.Lock()
	output := r.output
	r.mu.Unlock()
	err := r.store.CompleteTx(ctx, tx, r.holder, output)
	switch {
	case errors.Is(err, store.ErrNotHeld):
		return fmt.Errorf("%w: job %d, attempt %d", ErrJobNotHeld, job.ID, job.Attempt)
	case err != nil:
		return fmt.Errorf("relay: complete job %d: %w", job.ID, err)
	}
	r.completed.Store(true)
	if r.keeper != nil {
		r.keeper.Completing(r.holder.ID, r.holder.Attempt)
	}
	return nil
}

// Checkpoint saves state, encoded as JSON, as job's progress, on db: the pool to save it
// at once, or the handler's transaction to save it together with the work it describes.
// If this attempt fails or its client dies, the next attempt receives the last saved state
// in [Job.Checkpoint] (see [Job.Resume]) and can carry on from there. Like [CompleteTx], it
// refuses with [ErrJobNotHeld] once this attempt no longer holds the job.
//
// A state that cannot be encoded as JSON PostgreSQL can store returns an error wrapping
// [ErrEncodeValue], and one larger than [Config].MaxCheckpointSize (default
// [DefaultMaxSize]) one wrapping [ErrTooLarge]: nothing is written, and db, if it is a
// transaction, is still usable.
func Checkpoint[T any](ctx context.Context, db DB, job *Job[T], state any) error {
	if err := checkDB(db, "Checkpoint"); err != nil {
		return err
	}
	if job == nil || job.run == nil {
		return ErrNotRunning
	}
	r := job.run
	encoded, err := encodeValue(state, "checkpoint", job.ID)
	if err != nil {
		return err
	}
	if err := checkpointLimit.check(len(encoded), r.maxCheckpoint, job.whose); err != nil {
		return err
	}
	err = r.store.Checkpoint(ctx, db, r.holder, encoded)
	switch {
	case errors.Is(err, store.ErrNotHeld):
		return fmt.Errorf("%w: job %d, attempt %d", ErrJobNotHeld, job.ID, job.Attempt)
	case err != nil:
		return fmt.Errorf("relay: checkpoint of job %d: %w", job.ID, err)
	}
	job.Checkpoint = encoded
	return nil
}

// Resume decodes the job's last saved [Checkpoint] into v and reports whether there was
// one: false on a job's first attempt, or if no attempt saved progress yet.
func (j *Job[T]) Resume(v any) (bool, error) {
	if j.Checkpoint == nil {
		return false, nil
	}
	if err := json.Unmarshal(j.Checkpoint, v); err != nil {
		return false, fmt.Errorf("relay: decode the checkpoint of job %d: %w", j.ID, err)
	}
	return true, nil
}

// SetOutput records v, encoded as JSON, as the job's output: it is stored with the job
// when it succeeds and read back with [GetJob] or, typed, [GetJobOf]. A later call
// replaces an earlier one. Set before [CompleteTx], it commits with the job; set after
// (as [HandleWithOutput] does), it is stored once the handler has returned, if the job was
// completed by that transaction.
//
// A value that cannot be encoded as JSON PostgreSQL can store returns an error wrapping
// [ErrEncodeValue], and one larger than [Config].MaxOutputSize (default [DefaultMaxSize])
// one wrapping [ErrTooLarge]; the output recorded before, if any, stays.
func (j *Job[T]) SetOutput(v any) error {
	encoded, err := encodeValue(v, "output", j.ID)
	if err != nil {
		return err
	}
	if j.run == nil {
		return ErrNotRunning
	}
	if err := outputLimit.check(len(encoded), j.run.maxOutput, j.whose); err != nil {
		return err
	}
	j.run.mu.Lock()
	j.run.output = encoded
	j.run.late = j.run.completed.Load()
	j.run.mu.Unlock()
	return nil
}

// HandleWithOutput is [Handle] for a handler that returns an output: on success, out is
// stored with the job as JSON and read back, typed, with [GetJobOf]. An output that
// [Job.SetOutput] refuses (too large, not storable) fails the attempt with its error.
func HandleWithOutput[T, O any](c *Client, kind Kind[T], fn func(ctx context.Context, job *Job[T]) (out O, err error), opts ...HandleOption) error {
	var handler HandlerFunc[T] // nil for a nil fn, which Handle refuses
	if fn != nil {
		handler = func(ctx context.Context, job *Job[T]) error {
			out, err := fn(ctx, job)
			if err != nil {
				return err
			}
			return job.SetOutput(out)
		}
	}
	return Handle(c, kind, handler, opts...)
}

// whose names the job in an error.
func (j *Job[T]) whose() string { return fmt.Sprintf("of job %d", j.ID) }

// encodeValue encodes v, a handler's output or checkpoint, as JSON that jsonb can store.
func encodeValue(v any, what string, id int64) ([]byte, error) {
	encoded, err := json.Marshal(v)
	if err == nil {
		err = checkJSON(encoded)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: the %s of job %d: %w", ErrEncodeValue, what, id, err)
	}
	return encoded, nil
}
