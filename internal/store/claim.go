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

// claimParams are what the parameters of claim and claimGated share.
type claimParams struct {
	Queue    string        `db:"queue"`
	Kinds    []string      `db:"kinds"` // the kinds the client runs
	Limit    int           `db:"limit"`
	Client   string        `db:"client"`
	Lease    time.Duration `db:"lease"`
	Attempts []int32       `db:"attempts"` // each kind's default max attempts, aligned with Kinds
}

// claimGatedParams are the parameters of claimGated.
type claimGatedParams struct {
	claimParams
	Strays bool `db:"strays"` // look for the queue's strays (see straysEvery)
}

type claimFromParams struct {
	claimParams
	FromRank  int16              `db:"from_rank"`
	FromRunAt pgtype.Timestamptz `db:"from_run_at"`
	FromID    int64              `db:"from_id"`
	Busy      bool               `db:"busy"` // mark the dispatcher busy: see ClaimRequest.Busy
}

// lockParams are the parameters of lockQueue.
type lockParams struct {
	LockKey string `db:"lock_key"` // the schema-qualified queue
	Strays  bool   `db:"strays"`   // the claim that follows looks for strays
}

// Claim claims for one of the client's dispatchers ([dispatcher.Claimer]): it leases to
// the client up to r.Limit due jobs of r.Queue whose kind the client runs, most urgent
// first, with FOR UPDATE SKIP LOCKED so that concurrent clients never claim the same job,
// and returns them in one round trip. A plain claim resumes from the cursor r.From; a
// gated one runs after the queue's claim lock in the same implicit transaction (one batch,
// still one round trip).
func (c *Client) Claim(ctx context.Context, r dispatcher.ClaimRequest) (dispatcher.Claimed, error) {
	s := c.s
	b := &pgx.Batch{}
	if r.Gated {
		strays := c.strays.due(r.Queue, time.Now())
		s.q.lockQueue.queue(b, lockParams{LockKey: s.schema + "." + r.Queue, Strays: strays})
		s.q.claimGated.queue(b, claimGatedParams{claimParams: c.claimParams(r), Strays: strays})
	} else {
		s.q.genericPlan.queue(b, struct{}{})
		s.q.claim.queue(b, c.claimFromParams(r))
	}
	var claimed dispatcher.Claimed
	err := afterSetting(c.db.SendBatch(ctx, b), func(rows pgx.Rows) (err error) {
		claimed, err = scanClaimed(rows, r.Queue)
		return err
	})
	if err != nil {
		return dispatcher.Claimed{}, fmt.Errorf("claim jobs of queue %q: %w", r.Queue, err)
	}
	if r.Busy && !r.Gated {
		c.busied(r.Queue)
	}
	return claimed, nil
}

// claimParams are the parameters every claim of r takes.
func (c *Client) claimParams(r dispatcher.ClaimRequest) claimParams {
	return claimParams{
		Queue: r.Queue, Kinds: c.info.Kinds, Limit: r.Limit, Client: c.info.ID, Lease: c.info.Lease, Attempts: c.info.Attempts,
	}
}

// claimFromParams are the parameters of the plain claim of r.
func (c *Client) claimFromParams(r dispatcher.ClaimRequest) claimFromParams {
	// A client that hears no wakeups claims as a busy dispatcher does: enqueues need not
	// notify it. This writes the rows of the queues of its groups, which Register cannot
	// know.
	from := claimFromParams{claimParams: c.claimParams(r), Busy: r.Busy || c.info.PollOnly}
	from.FromRank, from.FromRunAt, from.FromID = cursorParams(r.From)
	return from
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
		c                        dispatcher.Claimed
		r                        claimedRow
		nextIn                   pgtype.Int8
		ordered, limited, paused pgtype.Bool
	)
	targets := append(r.targets(), &nextIn, &ordered, &limited, &paused)
	for rows.Next() {
		if err := rows.Scan(targets...); err != nil {
			return dispatcher.Claimed{}, err
		}
		if !r.id.Valid { // the trailing row: when the next scheduled job is due, and the settings
			c.HasNext = nextIn.Valid
			c.NextIn = time.Duration(nextIn.Int64) * time.Microsecond
			c.Settings = dispatcher.QueueSettings{Ordered: ordered.Bool, Limited: limited.Bool, Paused: paused.Bool}
			continue
		}
		job := r.job(queue)
		c.Jobs = append(c.Jobs, job)
		if last := (dispatcher.Cursor{Priority: job.Priority, RunAt: job.RunAt, ID: job.ID}); c.Last.Before(last) {
			c.Last = last
		}
	}
	return c, rows.Err()
}

// claimedRow holds the columns of a claimed job as a claim returns them (claimed in
// queries.sql), for rows.Scan.
type claimedRow struct {
	id                              pgtype.Int8
	kind, schedule                  pgtype.Text
	args                            []byte
	attempt, maxAttempts, timeoutMS pgtype.Int4
	priority                        pgtype.Int2
	checkpoint, payload, metadata   []byte
	policy                          []byte
	createdAt, runAt, attemptedAt   pgtype.Timestamptz
	slot                            pgtype.Timestamptz
}

// targets are the scan destinations of the row's columns, in order.
func (r *claimedRow) targets() []any {
	return []any{&r.id, &r.kind, &r.args, &r.attempt, &r.maxAttempts, &r.createdAt, &r.runAt, &r.attemptedAt, &r.timeoutMS,
		&r.priority, &r.checkpoint, &r.payload, &r.metadata, &r.policy, &r.schedule, &r.slot}
}

// job is the row's job, of queue. The job keeps the row's byte slices, which are cleared
// for the next row: Scan reuses a non-nil slice.
func (r *claimedRow) job(queue string) *dispatcher.Job {
	job := &dispatcher.Job{
		ID: r.id.Int64, Kind: r.kind.String, Queue: queue, Args: r.args,
		Attempt: int(r.attempt.Int32), MaxAttempts: int(r.maxAttempts.Int32),
		CreatedAt: r.createdAt.Time, RunAt: r.runAt.Time, AttemptedAt: r.attemptedAt.Time,
		Timeout: time.Duration(r.timeoutMS.Int32) * time.Millisecond, HasTimeout: r.timeoutMS.Valid,
		Priority: int(r.priority.Int16), Checkpoint: r.checkpoint, Payload: r.payload, Metadata: r.metadata,
		Backoff: decodePolicy(r.policy), Schedule: r.schedule.String, Slot: r.slot.Time,
	}
	r.args, r.checkpoint, r.payload, r.metadata, r.policy = nil, nil, nil, nil, nil
	return job
}
