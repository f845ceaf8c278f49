package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/relayq/relay/lease"
)

// Renew records the client's heartbeat and extends by ttl the leases of the attempts it
// holds, in one statement ([lease.Renewer]). A held attempt that was not extended had its
// row locked by a transaction; [Client.RenewLocked] waits for it.
func (c *Client) Renew(ctx context.Context, held []lease.Held, ttl time.Duration) (lease.Renewal, error) {
	// After genericPlan, as claims: planned once per connection, not at every tick, and
	// not with a plan kept from a table of a few jobs that reads the whole table once it
	// holds millions.
	b := &pgx.Batch{}
	c.s.q.genericPlan.queue(b, struct{}{})
	p := renewParamsOf(c.info, held, ttl)
	p.HandsOff = p.HandsOff && !c.deaf.Load()
	c.s.q.renewLeases.queue(b, p)
	res := lease.Renewal{Held: make(map[int64]bool, len(held)), Renewed: make(map[int64]bool, len(held))}
	var (
		id                 pgtype.Int8
		renewed, cancelled bool
	)
	err := afterSetting(c.db.SendBatch(ctx, b), func(rows pgx.Rows) error {
		_, err := pgx.ForEachRow(rows, []any{&id, &renewed, &cancelled}, func() error {
			switch {
			case !id.Valid: // the last row: whether the previous heartbeat had lapsed
				res.Lapsed = renewed
			case cancelled:
				if res.Cancelled == nil {
					res.Cancelled = map[int64]bool{}
				}
				res.Cancelled[id.Int64] = true
			case renewed:
				res.Held[id.Int64], res.Renewed[id.Int64] = true, true
			default:
				res.Held[id.Int64] = true
			}
			return nil
		})
		return err
	})
	if err != nil {
		return lease.Renewal{}, fmt.Errorf("renew %d leases: %w", len(held), err)
	}
	return res, nil
}

// renewParams are the parameters of renewLeases.
type renewParams struct {
	Client    string        `db:"client"`
	IDs       []int64       `db:"ids"`
	Attempts  []int32       `db:"attempts"` // aligned with IDs
	TTL       time.Duration `db:"ttl"`
	Queues    []string      `db:"queues"`
	Kinds     []string      `db:"kinds"`
	Schedules []string      `db:"schedules"`
	// HandsOff: the client runs hand-offs (migration 016); KindAttempts are the default
	// max attempts of its kinds, aligned with Kinds, which a job handed off to it takes.
	HandsOff     bool    `db:"hands_off"`
	KindAttempts []int32 `db:"kind_attempts"`
}

func renewParamsOf(client ClientInfo, held []lease.Held, ttl time.Duration) renewParams {
	p := renewParams{
		Client: client.ID, IDs: make([]int64, len(held)), Attempts: make([]int32, len(held)), TTL: ttl,
		Queues: client.Queues, Kinds: client.Kinds, Schedules: client.Schedules,
		HandsOff: !client.PollOnly && !client.SharedSlots, KindAttempts: client.Attempts,
	}
	for i, h := range held {
		p.IDs[i], p.Attempts[i] = h.ID, int32(h.Attempt)
	}
	return p
}

type renewLockedParams struct {
	heldParams
	TTL time.Duration `db:"ttl"`
}

// RenewLocked extends by ttl the lease of attempt h on its own, waiting up to wait for a
// transaction that holds the job's row. It reports whether the attempt still holds the
// job; a wait that runs out is an error, and the lease is left as it was.
func (c *Client) RenewLocked(ctx context.Context, h lease.Held, ttl, wait time.Duration) (held bool, err error) {
	err = WaitingAtMost(ctx, c.db, wait, func(tx pgx.Tx) error {
		var id int64
		p := renewLockedParams{heldParams: heldParams{ID: h.ID, Client: c.info.ID, Attempt: h.Attempt}, TTL: ttl}
		err := c.s.q.renewLocked.queryRow(ctx, tx, p).Scan(&id)
		held = err == nil
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	if err != nil {
		return false, fmt.Errorf("renew the lease of job %d: %w", h.ID, err)
	}
	return held, nil
}

// WaitingAtMost runs fn in a transaction of its own on db in which waiting for a row lock
// gives up after wait (lock_timeout): for statements that may meet a row a handler's
// transaction holds, and must not wait for it for long.
func WaitingAtMost(ctx context.Context, db Beginner, wait time.Duration, fn func(tx pgx.Tx) error) error {
	tx, err := db.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", max(wait.Milliseconds(), 1))); err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// Beginner begins transactions: a pool.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// clientParams are the parameters of stopClient.
type clientParams struct {
	Client string `db:"client"`
}

// StopClient marks client as stopped in the clients table.
func (s *Store) StopClient(ctx context.Context, db DB, client string) error {
	if _, err := s.q.stopClient.exec(ctx, db, clientParams{Client: client}); err != nil {
		return fmt.Errorf("mark client %s stopped: %w", client, err)
	}
	return nil
}

// rescueParams are the parameters of rescue.
type rescueParams struct {
	Limit int `db:"limit"`
}

// Rescue retries (or fails, when out of attempts) up to limit running jobs whose lease has
// expired, of any client, recording reason "lost lease". It is safe to run on many clients
// at once: it is what [lease.RescuerConfig].Rescue runs. Each rescued job is described in
// Rescued.Jobs.
func (c *Client) Rescue(ctx context.Context, limit int) (lease.Rescued, error) {
	rows, err := c.s.q.rescue.query(ctx, c.db, rescueParams{Limit: limit})
	if err != nil {
		return lease.Rescued{}, fmt.Errorf("rescue expired leases: %w", err)
	}
	defer rows.Close()
	var (
		r                  lease.Rescued
		id, nextIn         pgtype.Int8
		kind, queue, state pgtype.Text
		attempt            pgtype.Int4
		attemptedAt, dueAt pgtype.Timestamptz
	)
	for rows.Next() {
		if err := rows.Scan(&id, &kind, &queue, &attempt, &state, &attemptedAt, &dueAt, &nextIn); err != nil {
			return lease.Rescued{}, fmt.Errorf("rescue expired leases: %w", err)
		}
		if id.Valid {
			r.IDs = append(r.IDs, id.Int64)
			r.Jobs = append(r.Jobs, lease.RescuedJob{
				ID: id.Int64, Kind: kind.String, Queue: queue.String, Attempt: int(attempt.Int32),
				Failed: state.String == StateFailed, StartedAt: attemptedAt.Time, DueAt: dueAt.Time,
			})
			continue
		}
		r.HasNext, r.NextIn = nextIn.Valid, time.Duration(nextIn.Int64)*time.Microsecond
	}
	if err := rows.Err(); err != nil {
		return lease.Rescued{}, fmt.Errorf("rescue expired leases: %w", err)
	}
	return r, nil
}
