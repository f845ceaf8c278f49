package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/relayq/relay/internal/store"
)

// Errors of [CommitJobs] and [ExtendReservation].
var (
	// ErrReservationExpired: the reservation's deadline passed before it was committed (or
	// extended). The job has ended, or is about to, cancelled with reason [ReasonExpired].
	ErrReservationExpired = errors.New("relay: the reservation expired before it was committed")
	// ErrNotHeld: the job is not a held reservation: it was not enqueued with [Reserved],
	// or (for ExtendReservation) it has been committed.
	ErrNotHeld = errors.New("relay: the job is not held")
)

// CommitJobs commits the reservations ids ([Reserved]): each held job becomes pending, to
// run as any job does — at once, or at its [RunAt] if that is later — in the place it
// reserved, and its queue's dispatchers are woken by the usual rules. Run it on your
// transaction: the commit then takes effect with your own writes, and not at all if the
// transaction rolls back (the jobs stay held, and expire at their deadline unless
// committed again). A pool commits at once.
//
// Committing is all or nothing: if any of ids cannot be committed, none is, and the error
// says why for each one, wrapping [ErrJobNotFound] (no such job), [ErrReservationExpired]
// (its deadline has passed, even if no expirer has got to it yet), [ErrJobFinished] (it
// was cancelled while held) or [ErrNotHeld] (it was never a reservation). Committing a
// reservation that is committed already is a no-op, whatever became of the job since, so
// that a producer unsure whether its commit went through may commit again. The deadline
// is checked when CommitJobs runs: a commit made in time holds even if the transaction
// commits after the deadline.
//
// opts: [Schema].
func CommitJobs(ctx context.Context, db DB, ids []int64, opts ...JobOption) error {
	commit := func(ctx context.Context, s *store.Store, ids []int64) ([]store.Reservation, bool, error) {
		return s.CommitJobs(ctx, db, ids)
	}
	return reservations(ctx, db, "CommitJobs", "commit", ids, opts, commit, func(r store.Reservation) error {
		if r.Committed {
			return nil
		}
		return uncommittable(r)
	})
}

// ExtendReservation moves the deadline of the held reservations ids to within from now,
// on the database's clock — later or earlier — to keep them alive while the work they
// wait for takes longer than planned (a keep-alive, called as often as needed). Like
// [CommitJobs] it runs in the caller's transaction, is all or nothing, and refuses a job
// that is not held: one whose deadline has passed ([ErrReservationExpired]), committed or
// never reserved ([ErrNotHeld]), cancelled ([ErrJobFinished]) or missing
// ([ErrJobNotFound]). within must be positive ([ErrInvalidJob]).
//
// opts: [Schema].
func ExtendReservation(ctx context.Context, db DB, ids []int64, within time.Duration, opts ...JobOption) error {
	if within <= 0 {
		return fmt.Errorf("%w: ExtendReservation needs a positive time to hold the jobs for, got %v", ErrInvalidJob, within)
	}
	extend := func(ctx context.Context, s *store.Store, ids []int64) ([]store.Reservation, bool, error) {
		return s.ExtendReservations(ctx, db, ids, within)
	}
	return reservations(ctx, db, "ExtendReservation", "extend", ids, opts, extend, func(r store.Reservation) error {
		if r.Committed {
			return fmt.Errorf("%w: it was committed", ErrNotHeld)
		}
		return uncommittable(r)
	})
}

// reservations runs act, a commit or an extension (fn names the function for a nil db,
// what the action in errors), on the reservations ids in db, all or nothing; if it
// changed nothing, it says why, with check, for each job it found.
func reservations(ctx context.Context, db DB, fn, what string, ids []int64, opts []JobOption,
	act func(ctx context.Context, s *store.Store, ids []int64) ([]store.Reservation, bool, error),
	check func(store.Reservation) error,
) error {
	if err := checkDB(db, fn); err != nil {
		return err
	}
	s, err := jobStore(opts)
	if err != nil {
		return err
	}
	ids = distinct(ids)
	if len(ids) == 0 {
		return nil
	}
	found, ok, err := act(ctx, s, ids)
	if err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	if ok {
		return nil
	}
	return reservationErrors(what, ids, found, check)
}

// uncommittable says why reservation r, not committed, cannot be committed or extended;
// nil if it can.
func uncommittable(r store.Reservation) error {
	switch {
	case r.HeldUntil.IsZero():
		return fmt.Errorf("%w: it was not enqueued with relay.Reserved (it is %s)", ErrNotHeld, r.State)
	case r.Lapsed || (r.State == store.StateCancelled && !r.FinishedAt.Before(r.HeldUntil)):
		return fmt.Errorf("%w: its deadline was %s", ErrReservationExpired, r.HeldUntil.Format(time.RFC3339Nano))
	case r.State != store.StateHeld:
		return fmt.Errorf("%w: it was %s before it was committed", ErrJobFinished, r.State)
	}
	return nil
}

// reservationErrors joins why each of ids could not be committed (or extended): absent
// from found, or refused by check.
func reservationErrors(what string, ids []int64, found []store.Reservation, check func(store.Reservation) error) error {
	byID := make(map[int64]store.Reservation, len(found))
	for _, r := range found {
		byID[r.ID] = r
	}
	var errs []error
	for _, id := range ids {
		r, ok := byID[id]
		err := ErrJobNotFound
		if ok {
			err = check(r)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("job %d: %w", id, err))
		}
	}
	if len(errs) == 0 {
		// Every job was fine when the statement looked, yet it changed nothing: a deadline
		// passed between its two looks.
		errs = append(errs, fmt.Errorf("%w: a deadline passed while the jobs were being looked at", ErrReservationExpired))
	}
	return fmt.Errorf("relay: %s reservations (nothing was changed): %w", what, errors.Join(errs...))
}

// distinct returns ids sorted, without repeats.
func distinct(ids []int64) []int64 {
	return slices.Compact(slices.Sorted(slices.Values(ids)))
}
