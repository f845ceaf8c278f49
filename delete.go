package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/relayq/relay/internal/store"
)

// ErrJobRunning is returned by [DeleteJob] for a running job, and by [DeleteJobs] for a
// filter that selects running jobs: a running job is never deleted under its handler,
// whose outcome would then have nowhere to go. Cancel it first ([Cancel]: its handler's
// context is cancelled), then delete it.
var ErrJobRunning = errors.New("relay: a running job cannot be deleted; cancel it first (relay.Cancel), then delete it")

// DeleteJob deletes job id, whatever its state but running: a running job returns an
// error wrapping [ErrJobRunning], and is left as it is; an unknown id, [ErrJobNotFound].
// A failed job that blocks its key of an ordered queue, or a held reservation ([Reserved]),
// frees the key, as a cancel would. Deleting a periodic job does not make its slot run again.
func DeleteJob(ctx context.Context, db DB, id int64, opts ...JobOption) error {
	if err := checkDB(db, "DeleteJob"); err != nil {
		return err
	}
	s, err := jobStore(opts)
	if err != nil {
		return err
	}
	was, err := s.DeleteJob(ctx, db, id)
	switch {
	case errors.Is(err, store.ErrNoJob):
		return fmt.Errorf("%w: %d", ErrJobNotFound, id)
	case err != nil:
		return fmt.Errorf("relay: delete job %d: %w", id, err)
	case was == store.StateRunning:
		return fmt.Errorf("%w: job %d is running", ErrJobRunning, id)
	}
	return nil
}

// BulkOption changes what [DeleteJobs], [RetryJobs] and [CancelJobs] do: [DryRun],
// [Schema].
type BulkOption interface{ applyBulk(*bulkOptions) }

type bulkOptions struct {
	schema string
	dryRun bool
}

// DryRun makes a bulk action count the jobs it would change, and change nothing: the
// count to show before asking to confirm.
func DryRun() BulkOption { return dryRunOption{} }

type dryRunOption struct{}

func (dryRunOption) applyBulk(o *bulkOptions) { o.dryRun = true }

func (s SchemaOption) applyBulk(o *bulkOptions) { o.schema = string(s) }

// DeleteJobs deletes the jobs that f selects, and returns how many it deleted (with
// [DryRun], how many it would delete). f selects as it does for [ListJobs], with these
// differences:
//   - f.States may not hold [StateRunning] (an error wrapping [ErrInvalidFilter] and
//     [ErrJobRunning]); without States, every job but running ones is selected;
//   - f.Limit, if set, is the most jobs the action goes through, newest first (any
//     positive number; 0: all of them), and f.After starts it below a listing's cursor;
//   - f.WithArgs must be false.
//
// The jobs are changed newest first, a page of 1,000 at a time, one statement each, so
// an action on millions of jobs holds no lock for long: run on a pool, each page commits
// on its own; run in a transaction, all of them commit with it. A job that changes state
// meanwhile (a pending job claimed, a failed one retried) is left as it is and not
// counted, and jobs enqueued after the action began are not selected.
//
// An invalid filter returns an error wrapping [ErrInvalidFilter]; a nil db, [ErrNilDB].
// opts: [DryRun], [Schema].
func DeleteJobs(ctx context.Context, db DB, f ListFilter, opts ...BulkOption) (int64, error) {
	return bulk(ctx, db, "DeleteJobs", store.BulkDelete, f, opts,
		[]JobState{StatePending, StateScheduled, StateHeld, StateSucceeded, StateFailed, StateCancelled})
}

// RetryJobs puts the failed and cancelled jobs that f selects back to run now, as [Retry]
// does each, and returns how many (with [DryRun], how many it would retry). f.States may
// name [StateFailed] and [StateCancelled]; without States, both. A job whose [Unique] key
// another job now holds is left as it is (and of the jobs that share a key, only the
// newest is retried). Otherwise f selects, and the jobs are changed, as for
// [DeleteJobs].
func RetryJobs(ctx context.Context, db DB, f ListFilter, opts ...BulkOption) (int64, error) {
	return bulk(ctx, db, "RetryJobs", store.BulkRetry, f, opts, []JobState{StateFailed, StateCancelled})
}

// CancelJobs cancels the pending, scheduled, running and held jobs that f selects, as
// [Cancel] does each (the clients running them cancel their handlers; reservations are
// given up), and returns how many (with [DryRun], how many it would cancel). f.States may
// name [StatePending], [StateScheduled], [StateRunning] and [StateHeld]; without States,
// all four. A failed job that blocks
// its ordered key is cancelled with [Cancel], one at a time, or retried with
// [RetryJobs]. Otherwise f selects, and the jobs are changed, as for [DeleteJobs].
func CancelJobs(ctx context.Context, db DB, f ListFilter, opts ...BulkOption) (int64, error) {
	return bulk(ctx, db, "CancelJobs", store.BulkCancel, f, opts, []JobState{StatePending, StateScheduled, StateRunning, StateHeld})
}

// bulk runs action on the jobs f selects among those in the states it applies to.
func bulk(ctx context.Context, db DB, fn string, action store.BulkAction, f ListFilter, opts []BulkOption, applies []JobState) (int64, error) {
	if err := checkDB(db, fn); err != nil {
		return 0, err
	}
	o := bulkOptions{schema: DefaultSchema}
	for _, opt := range opts {
		opt.applyBulk(&o)
	}
	sf, err := f.selection()
	if err != nil {
		return 0, err
	}
	switch {
	case f.Limit < 0:
		return 0, fmt.Errorf("%w: Limit must not be negative (0: every job the filter selects), got %d", ErrInvalidFilter, f.Limit)
	case f.WithArgs:
		return 0, fmt.Errorf("%w: WithArgs means nothing to %s; leave it false", ErrInvalidFilter, fn)
	}
	states := f.States
	if len(states) == 0 {
		states = applies
	}
	sf.States = nil
	var stored []string
	for _, st := range states {
		switch {
		case st == StateRunning && action == store.BulkDelete:
			return 0, alsoMatching(fmt.Errorf("%w: %s cannot select running jobs", ErrInvalidFilter, fn), ErrJobRunning)
		case !slices.Contains(applies, st):
			return 0, fmt.Errorf("%w: %s applies to jobs that are %s, not %s", ErrInvalidFilter, fn, joinStates(applies), st)
		}
		if !slices.Contains(sf.States, string(st)) {
			sf.States = append(sf.States, string(st))
		}
		if s := storedState(st); !slices.Contains(stored, s) {
			stored = append(stored, s)
		}
	}
	s, err := store.For(o.schema)
	if err != nil {
		return 0, fmt.Errorf("relay: %w", err)
	}
	var n int64
	if o.dryRun {
		n, err = s.CountJobsOf(ctx, db, sf, int64(f.Limit))
	} else {
		n, err = s.Bulk(ctx, db, action, sf, stored, int64(f.Limit))
	}
	if err != nil {
		return n, fmt.Errorf("relay: %s: %w", fn, err)
	}
	return n, nil
}

// storedState is the state column's value for a job in state st: a scheduled job is a
// pending one.
func storedState(st JobState) string {
	if st == StateScheduled {
		return store.StatePending
	}
	return string(st)
}

func joinStates(states []JobState) string {
	s := make([]string, len(states))
	for i, st := range states {
		s[i] = string(st)
	}
	return strings.Join(s, ", ")
}
