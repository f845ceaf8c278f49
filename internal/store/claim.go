package store

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/relayq/relay/dispatcher"
)

// Claim claims for one of the client's dispatchers ([dispatcher.Claimer]): it leases to
// the client up to r.Limit due jobs of r.Queue whose kind the client runs, most urgent
// first, with FOR UPDATE SKIP LOCKED so that concurrent clients never claim the same job,
// and returns them in one round trip. A plain claim resumes from the cursor r.From; a
// gated one runs after the queue's claim lock in the same implicit transaction (one batch,
// still one round trip).
func (c *Client) Claim(ctx context.Context, r dispatcher.ClaimRequest) (dispatcher.Claimed, error) {
	s, db, p := c.s, c.db, c.info
	var rows pgx.Rows
	if r.Gated {
		b := &pgx.Batch{}
		b.Queue(s.q.lockQueue, s.schema+"."+r.Queue)
		b.Queue(s.q.claimGated, r.Queue, p.Kinds, r.Limit, p.ID, p.Lease, p.Attempts)
		br := db.SendBatch(ctx, b)
		defer br.Close()
		if _, err := br.Exec(); err != nil {
			return dispatcher.Claimed{}, fmt.Errorf("lock queue %q to claim: %w", r.Queue, err)
		}
		var err error
		if rows, err = br.Query(); err != nil {
			return dispatcher.Claimed{}, fmt.Errorf("claim jobs of queue %q: %w", r.Queue, err)
		}
	} else {
		rank, runAt, id := cursorParams(r.From)
		var err error
		if rows, err = db.Query(ctx, s.q.claim, r.Queue, p.Kinds, r.Limit, p.ID, p.Lease, p.Attempts, rank, runAt, id); err != nil {
			return dispatcher.Claimed{}, fmt.Errorf("claim jobs of queue %q: %w", r.Queue, err)
		}
	}
	claimed, err := scanClaimed(rows, r.Queue)
	if err != nil {
		return dispatcher.Claimed{}, fmt.Errorf("claim jobs of queue %q: %w", r.Queue, err)
	}
	return claimed, nil
}

// cursorParams are the cursor as the claim's row comparison takes it: (-priority, run_at, id).
func cursorParams(c dispatcher.Cursor) (int16, pgtype.Timestamptz, int64) {
	if c.RunAt.IsZero() {
		return math.MinInt16, pgtype.Timestamptz{InfinityModifier: pgtype.NegativeInfinity, Valid: true}, 0
	}
	return int16(-c.Priority), pgtype.Timestamptz{Time: c.RunAt, Valid: true}, c.ID
}

// scanClaimed reads a claim's rows into the dispatcher's own types: no copy per job.
func scanClaimed(rows pgx.Rows, queue string) (dispatcher.Claimed, error) {
	defer rows.Close()
	var (
		c                               dispatcher.Claimed
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
			return dispatcher.Claimed{}, err
		}
		if !id.Valid { // the trailing row: when the next scheduled job is due, and the settings
			c.HasNext = nextIn.Valid
			c.NextIn = time.Duration(nextIn.Int64) * time.Microsecond
			c.Settings = dispatcher.QueueSettings{Ordered: ordered.Bool, Limited: limited.Bool, Paused: paused.Bool}
			continue
		}
		c.Jobs = append(c.Jobs, &dispatcher.Job{
			ID: id.Int64, Kind: kind.String, Queue: queue, Args: args,
			Attempt: int(attempt.Int32), MaxAttempts: int(maxAttempts.Int32),
			CreatedAt: createdAt.Time, RunAt: runAt.Time, AttemptedAt: attemptedAt.Time,
			Timeout: time.Duration(timeoutMS.Int32) * time.Millisecond, HasTimeout: timeoutMS.Valid,
			Priority: int(priority.Int16), Checkpoint: checkpoint, Payload: payload,
		})
		if last := (dispatcher.Cursor{Priority: int(priority.Int16), RunAt: runAt.Time, ID: id.Int64}); c.Last.Before(last) {
			c.Last = last
		}
		args, checkpoint, payload = nil, nil, nil // Scan reuses a non-nil slice; each job keeps its own
	}
	return c, rows.Err()
}
