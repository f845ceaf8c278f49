package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/relayq/relay/lease"
)

// Reservation is what a commit or an extension found of one of its jobs.
type Reservation struct {
	ID        int64
	State     string
	HeldUntil time.Time // zero: the job was never a reservation
	Committed bool
	// Lapsed: its deadline had passed when the statement looked (the job may still be held,
	// until an expirer gets to it).
	Lapsed     bool
	FinishedAt time.Time
}

// idsParams are the parameters of commitJobs.
type idsParams struct {
	IDs []int64 `db:"ids"`
}

type extendParams struct {
	idsParams
	Within pgtype.Interval `db:"within"`
}

// CommitJobs makes the reservations ids (distinct) pending, if every one of them is held
// and within its deadline or was committed already; otherwise it changes nothing. It
// returns the jobs it found (an id missing from them does not exist) and whether it
// committed them.
func (s *Store) CommitJobs(ctx context.Context, db DB, ids []int64) ([]Reservation, bool, error) {
	rows, err := s.q.commitJobs.query(ctx, db, idsParams{IDs: ids})
	if err != nil {
		return nil, false, fmt.Errorf("commit reservations: %w", err)
	}
	return scanReservations(rows)
}

// ExtendReservations moves the deadlines of the held jobs ids (distinct) to within from
// now, if every one of them is held and within its deadline; otherwise it changes
// nothing. It returns what [Store.CommitJobs] does.
func (s *Store) ExtendReservations(ctx context.Context, db DB, ids []int64, within time.Duration) ([]Reservation, bool, error) {
	p := extendParams{idsParams: idsParams{IDs: ids}, Within: intervalParam(within, true)}
	rows, err := s.q.extendReservations.query(ctx, db, p)
	if err != nil {
		return nil, false, fmt.Errorf("extend reservations: %w", err)
	}
	return scanReservations(rows)
}

func scanReservations(rows pgx.Rows) ([]Reservation, bool, error) {
	var (
		out                 []Reservation
		r                   Reservation
		heldUntil, finished pgtype.Timestamptz
		lapsed, done        pgtype.Bool
	)
	_, err := pgx.ForEachRow(rows, []any{&r.ID, &r.State, &heldUntil, &r.Committed, &finished, &lapsed, &done}, func() error {
		r.HeldUntil, r.FinishedAt, r.Lapsed = heldUntil.Time, finished.Time, lapsed.Bool
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, len(out) > 0 && done.Bool, nil
}

// expireParams are the parameters of expire.
type expireParams struct {
	Limit  int    `db:"limit"`
	Client string `db:"client"`
}

// Expire cancels, with reason "expired", up to limit held jobs whose deadline has passed,
// and says when the next deadline passes ([lease.ExpirerConfig].Expire). It is safe to run
// on many clients at once: each lapsed reservation is expired by exactly one.
func (c *Client) Expire(ctx context.Context, limit int) (lease.Expired, error) {
	rows, err := c.s.q.expire.query(ctx, c.db, expireParams{Limit: limit, Client: c.info.ID})
	if err != nil {
		return lease.Expired{}, fmt.Errorf("expire reservations: %w", err)
	}
	var (
		e                  lease.Expired
		id, nextIn, nextAt pgtype.Int8
		kind, queue        pgtype.Text
		heldUntil          pgtype.Timestamptz
		lagging            pgtype.Bool
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &kind, &queue, &heldUntil, &nextIn, &nextAt, &lagging}, func() error {
		if id.Valid {
			e.Jobs = append(e.Jobs, lease.ExpiredJob{ID: id.Int64, Kind: kind.String, Queue: queue.String, Deadline: heldUntil.Time})
			return nil
		}
		e.HasNext, e.Lagging = nextAt.Valid, lagging.Bool
		e.Next, e.NextIn = time.UnixMicro(nextAt.Int64), time.Duration(nextIn.Int64)*time.Microsecond
		return nil
	})
	if err != nil {
		return lease.Expired{}, fmt.Errorf("expire reservations: %w", err)
	}
	return e, nil
}
