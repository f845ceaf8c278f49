package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// Claimed is the result of one claim.
type Claimed struct {
	Jobs []*Job
	// Last is the claim position of the last job claimed (zero if none): every due job
	// before it was claimed by this claim or is locked by another client's.
	Last Cursor
	// NextIn is how long until the queue's earliest scheduled job is due, on the database's
	// clock; HasNext is false when no job is scheduled or the claim filled every slot (then
	// the dispatcher claims again as soon as a slot frees and need not know).
	NextIn  time.Duration
	HasNext bool
}

// Cursor is a position in a queue's claim order (run_at, then id). The zero Cursor is
// before every job.
type Cursor struct {
	RunAt time.Time
	ID    int64
}

// Before reports whether c comes before other in claim order.
func (c Cursor) Before(other Cursor) bool {
	if c.RunAt.Equal(other.RunAt) {
		return c.ID < other.ID
	}
	return c.RunAt.Before(other.RunAt)
}

func (c Cursor) param() pgtype.Timestamptz {
	if c.RunAt.IsZero() {
		return pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}
	}
	return pgtype.Timestamptz{Time: c.RunAt, Valid: true}
}

// ClaimParams are what a dispatcher claims with.
type ClaimParams struct {
	Queue    string
	Kinds    []string // the kinds this client runs
	Attempts []int32  // each kind's default max attempts, aligned with Kinds
	Limit    int
	Client   string
	Lease    time.Duration
	From     Cursor
}

// Claim leases up to p.Limit due jobs of p.Queue whose kind is in p.Kinds to p.Client,
// oldest first from the cursor p.From on, with FOR UPDATE SKIP LOCKED so that concurrent
// clients never claim the same job, and returns them in one round trip.
func (s *Store) Claim(ctx context.Context, db DB, p ClaimParams) (Claimed, error) {
	queue := p.Queue
	rows, err := db.Query(ctx, s.q.claim, queue, p.Kinds, p.Limit, p.Client, p.From.param(), p.From.ID, p.Lease, p.Attempts)
	if err != nil {
		return Claimed{}, fmt.Errorf("claim jobs of queue %q: %w", queue, err)
	}
	defer rows.Close()
	var (
		c                               Claimed
		id, nextIn                      pgtype.Int8
		kind                            pgtype.Text
		args                            []byte
		attempt, maxAttempts, timeoutMS pgtype.Int4
		createdAt, runAt, attemptedAt   pgtype.Timestamptz
	)
	for rows.Next() {
		if err := rows.Scan(&id, &kind, &args, &attempt, &maxAttempts, &createdAt, &runAt, &attemptedAt, &timeoutMS, &nextIn); err != nil {
			return Claimed{}, fmt.Errorf("claim jobs of queue %q: %w", queue, err)
		}
		if !id.Valid { // the trailing row: when the next scheduled job is due
			c.HasNext = nextIn.Valid
			c.NextIn = time.Duration(nextIn.Int64) * time.Microsecond
			continue
		}
		c.Jobs = append(c.Jobs, &Job{
			ID: id.Int64, Kind: kind.String, Queue: queue, Args: args,
			Attempt: int(attempt.Int32), MaxAttempts: int(maxAttempts.Int32),
			CreatedAt: createdAt.Time, RunAt: runAt.Time, AttemptedAt: attemptedAt.Time,
			Timeout: time.Duration(timeoutMS.Int32) * time.Millisecond, HasTimeout: timeoutMS.Valid,
		})
		if last := (Cursor{RunAt: runAt.Time, ID: id.Int64}); c.Last.Before(last) {
			c.Last = last
		}
		args = nil // Scan reuses a non-nil slice; each job keeps its own
	}
	if err := rows.Err(); err != nil {
		return Claimed{}, fmt.Errorf("claim jobs of queue %q: %w", queue, err)
	}
	return c, nil
}
