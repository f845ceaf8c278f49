package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// Held is an attempt a client holds the lease of.
type Held struct {
	ID      int64
	Attempt int
}

// ClientInfo is what a client's heartbeat row says about it.
type ClientInfo struct {
	ID     string
	Lease  time.Duration // how long a lease lasts without renewal
	Queues []string
	Kinds  []string
}

// Renewal is the result of [Store.RenewLeases]: the attempts still held, and of those the
// ones whose lease was extended. A held attempt that was not extended had its row locked
// by a transaction; [Store.RenewLocked] waits for it.
type Renewal struct {
	Held, Renewed map[int64]bool
}

// RenewLeases records client's heartbeat and extends the leases of the attempts it
// holds, in one statement.
func (s *Store) RenewLeases(ctx context.Context, db DB, client ClientInfo, held []Held) (Renewal, error) {
	rows, err := db.Query(ctx, s.q.renewLeases, renewArgs(client, held)...)
	if err != nil {
		return Renewal{}, fmt.Errorf("renew %d leases: %w", len(held), err)
	}
	r := Renewal{Held: make(map[int64]bool, len(held)), Renewed: make(map[int64]bool, len(held))}
	var (
		id      int64
		renewed bool
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &renewed}, func() error {
		r.Held[id] = true
		if renewed {
			r.Renewed[id] = true
		}
		return nil
	})
	if err != nil {
		return Renewal{}, fmt.Errorf("renew %d leases: %w", len(held), err)
	}
	return r, nil
}

// renewArgs are the arguments of renewLeases.
func renewArgs(client ClientInfo, held []Held) []any {
	ids := make([]int64, len(held))
	attempts := make([]int32, len(held))
	for i, h := range held {
		ids[i], attempts[i] = h.ID, int32(h.Attempt)
	}
	return []any{client.ID, ids, client.Lease, attempts, client.Queues, client.Kinds}
}

// RenewLocked extends the lease of attempt h of client on its own, waiting up to wait for
// a transaction that holds the job's row. It reports whether the attempt still holds the
// job; a wait that runs out is an error, and the lease is left as it was.
func (s *Store) RenewLocked(ctx context.Context, db Beginner, client ClientInfo, h Held, wait time.Duration) (held bool, err error) {
	err = WaitingAtMost(ctx, db, wait, func(tx pgx.Tx) error {
		var id int64
		err := tx.QueryRow(ctx, s.q.renewLocked, h.ID, client.ID, h.Attempt, client.Lease).Scan(&id)
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

// StopClient marks client as stopped in the clients table.
func (s *Store) StopClient(ctx context.Context, db DB, client string) error {
	if _, err := db.Exec(ctx, s.q.stopClient, client); err != nil {
		return fmt.Errorf("mark client %s stopped: %w", client, err)
	}
	return nil
}

// Rescued is the result of one rescue pass.
type Rescued struct {
	IDs []int64 // the jobs rescued
	// NextIn is how long until the next lease expires, on the database's clock; HasNext is
	// false when no job is running.
	NextIn  time.Duration
	HasNext bool
}

// Rescue retries (or fails, when out of attempts) up to limit running jobs whose lease has
// expired, recording reason "lost lease". It is safe to run on many clients at once.
func (s *Store) Rescue(ctx context.Context, db DB, limit int) (Rescued, error) {
	rows, err := db.Query(ctx, s.q.rescue, planEachTime, limit, s.channel)
	if err != nil {
		return Rescued{}, fmt.Errorf("rescue expired leases: %w", err)
	}
	defer rows.Close()
	var (
		r          Rescued
		id, nextIn pgtype.Int8
	)
	for rows.Next() {
		if err := rows.Scan(&id, &nextIn); err != nil {
			return Rescued{}, fmt.Errorf("rescue expired leases: %w", err)
		}
		if id.Valid {
			r.IDs = append(r.IDs, id.Int64)
			continue
		}
		r.HasNext, r.NextIn = nextIn.Valid, time.Duration(nextIn.Int64)*time.Microsecond
	}
	if err := rows.Err(); err != nil {
		return Rescued{}, fmt.Errorf("rescue expired leases: %w", err)
	}
	return r, nil
}
