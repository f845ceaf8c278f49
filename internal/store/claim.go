package store

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
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
	// Settings are the queue's settings as the claim found them.
	Settings QueueSettings
}

// QueueSettings are what decides how a queue is claimed from.
type QueueSettings struct {
	Ordered bool // its jobs start one at a time per order key
	Limited bool // it has a cluster-wide limit on running jobs
	Paused  bool
}

// Gated reports whether the queue must be claimed from with [ClaimParams].Gated.
func (q QueueSettings) Gated() bool { return q.Ordered || q.Limited }

// Cursor is a position in a queue's claim order: higher priority first, then run_at, then
// id. The zero Cursor (zero RunAt) is before every job.
type Cursor struct {
	Priority int
	RunAt    time.Time
	ID       int64
}

// Before reports whether c comes before other in claim order.
func (c Cursor) Before(other Cursor) bool {
	switch {
	case c.RunAt.IsZero() || other.RunAt.IsZero():
		return c.RunAt.IsZero() && !other.RunAt.IsZero()
	case c.Priority != other.Priority:
		return c.Priority > other.Priority
	case !c.RunAt.Equal(other.RunAt):
		return c.RunAt.Before(other.RunAt)
	}
	return c.ID < other.ID
}

// params are the cursor as the claim's row comparison takes it: (-priority, run_at, id).
func (c Cursor) params() (int16, pgtype.Timestamptz, int64) {
	if c.RunAt.IsZero() {
		return math.MinInt16, pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}, 0
	}
	return int16(-c.Priority), pgtype.Timestamptz{Time: c.RunAt, Valid: true}, c.ID
}

// ClaimParams are what a dispatcher claims with.
type ClaimParams struct {
	Queue    string
	Kinds    []string // the kinds this client runs
	Attempts []int32  // each kind's default max attempts, aligned with Kinds
	Limit    int
	Client   string
	Lease    time.Duration
	From     Cursor // plain queues only
	// Gated claims from an ordered or limited queue: under the queue's claim lock, with
	// no cursor, so that its rules hold across every client.
	Gated bool
}

// Claim leases up to p.Limit due jobs of p.Queue whose kind is in p.Kinds to p.Client,
// most urgent first, with FOR UPDATE SKIP LOCKED so that concurrent clients never claim
// the same job, and returns them in one round trip. A plain claim resumes from the cursor
// p.From; a gated one runs after the queue's claim lock in the same implicit transaction
// (one batch, still one round trip).
func (s *Store) Claim(ctx context.Context, db ClaimDB, p ClaimParams) (Claimed, error) {
	var rows pgx.Rows
	if p.Gated {
		b := &pgx.Batch{}
		b.Queue(s.q.lockQueue, s.schema+"."+p.Queue)
		b.Queue(s.q.claimGated, p.Queue, p.Kinds, p.Limit, p.Client, p.Lease, p.Attempts)
		br := db.SendBatch(ctx, b)
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return Claimed{}, fmt.Errorf("lock queue %q to claim: %w", p.Queue, err)
		}
		var err error
		if rows, err = br.Query(); err != nil {
			return Claimed{}, fmt.Errorf("claim jobs of queue %q: %w", p.Queue, err)
		}
	} else {
		rank, runAt, id := p.From.params()
		var err error
		if rows, err = db.Query(ctx, s.q.claim, p.Queue, p.Kinds, p.Limit, p.Client, p.Lease, p.Attempts, rank, runAt, id); err != nil {
			return Claimed{}, fmt.Errorf("claim jobs of queue %q: %w", p.Queue, err)
		}
	}
	c, err := scanClaimed(rows, p.Queue)
	if err != nil {
		return Claimed{}, fmt.Errorf("claim jobs of queue %q: %w", p.Queue, err)
	}
	return c, nil
}

// ClaimDB is what claims run on: a pool, since a claim must commit on its own.
type ClaimDB interface {
	DB
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

func scanClaimed(rows pgx.Rows, queue string) (Claimed, error) {
	defer rows.Close()
	var (
		c                               Claimed
		id, nextIn                      pgtype.Int8
		kind                            pgtype.Text
		args                            []byte
		attempt, maxAttempts, timeoutMS pgtype.Int4
		priority                        pgtype.Int2
		checkpoint, payload             []byte
		createdAt, runAt, attemptedAt   pgtype.Timestamptz
		ordered, limited, paused        pgtype.Bool
	)
	for rows.Next() {
		if err := rows.Scan(&id, &kind, &args, &attempt, &maxAttempts, &createdAt, &runAt, &attemptedAt, &timeoutMS, &priority,
			&checkpoint, &payload, &nextIn, &ordered, &limited, &paused); err != nil {
			return Claimed{}, err
		}
		if !id.Valid { // the trailing row: when the next scheduled job is due, and the settings
			c.HasNext = nextIn.Valid
			c.NextIn = time.Duration(nextIn.Int64) * time.Microsecond
			c.Settings = QueueSettings{Ordered: ordered.Bool, Limited: limited.Bool, Paused: paused.Bool}
			continue
		}
		c.Jobs = append(c.Jobs, &Job{
			ID: id.Int64, Kind: kind.String, Queue: queue, Args: args,
			Attempt: int(attempt.Int32), MaxAttempts: int(maxAttempts.Int32),
			CreatedAt: createdAt.Time, RunAt: runAt.Time, AttemptedAt: attemptedAt.Time,
			Timeout: time.Duration(timeoutMS.Int32) * time.Millisecond, HasTimeout: timeoutMS.Valid,
			Priority: int(priority.Int16), Checkpoint: checkpoint, Payload: payload,
		})
		if last := (Cursor{Priority: int(priority.Int16), RunAt: runAt.Time, ID: id.Int64}); c.Last.Before(last) {
			c.Last = last
		}
		args, checkpoint, payload = nil, nil, nil // Scan reuses a non-nil slice; each job keeps its own
	}
	return c, rows.Err()
}
