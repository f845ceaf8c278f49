package store

import (
	"context"
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

// RenewLeases records client's heartbeat and extends the leases of the attempts it
// holds, in one statement. It returns the ids still held; the others are lost.
func (s *Store) RenewLeases(ctx context.Context, db DB, client ClientInfo, held []Held) (map[int64]bool, error) {
	ids := make([]int64, len(held))
	attempts := make([]int32, len(held))
	for i, h := range held {
		ids[i], attempts[i] = h.ID, int32(h.Attempt)
	}
	rows, err := db.Query(ctx, s.q.renewLeases, planEachTime, client.ID, ids, client.Lease, attempts, client.Queues, client.Kinds)
	if err != nil {
		return nil, fmt.Errorf("renew %d leases: %w", len(held), err)
	}
	renewed, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("renew %d leases: %w", len(held), err)
	}
	kept := make(map[int64]bool, len(renewed))
	for _, id := range renewed {
		kept[id] = true
	}
	return kept, nil
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
