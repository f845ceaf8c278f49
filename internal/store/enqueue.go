package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// Insert inserts one job and sends its wakeup, in one round trip on db (usually the
// caller's transaction, so that both take effect at commit).
func (s *Store) Insert(ctx context.Context, db DB, j NewJob) (int64, error) {
	var id int64
	err := db.QueryRow(ctx, s.q.insert, j.Kind, j.Queue, j.Args, runAtParam(j), maxAttemptsParam(j), s.channel, timeoutParam(j)).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("insert job: %w", err)
	}
	return id, nil
}

// InsertMany inserts jobs with one statement and sends one wakeup per queue. The ids are
// returned in the order of jobs.
func (s *Store) InsertMany(ctx context.Context, db DB, jobs []NewJob) ([]int64, error) {
	kinds := make([]string, len(jobs))
	queues := make([]string, len(jobs))
	args := make([][]byte, len(jobs))
	runAts := make([]pgtype.Timestamptz, len(jobs))
	maxAttempts := make([]pgtype.Int4, len(jobs))
	timeouts := make([]pgtype.Int4, len(jobs))
	for i, j := range jobs {
		kinds[i], queues[i], args[i], runAts[i] = j.Kind, j.Queue, j.Args, runAtParam(j)
		maxAttempts[i], timeouts[i] = maxAttemptsParam(j), timeoutParam(j)
	}
	rows, err := db.Query(ctx, s.q.insertMany, kinds, queues, args, runAts, maxAttempts, s.channel, timeouts)
	if err != nil {
		return nil, fmt.Errorf("insert jobs: %w", err)
	}
	ids := make([]int64, 0, len(jobs))
	var id int64
	for rows.Next() {
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("insert jobs: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("insert jobs: %w", err)
	}
	if len(ids) != len(jobs) {
		return nil, fmt.Errorf("insert jobs: inserted %d of %d", len(ids), len(jobs))
	}
	return ids, nil
}

// runAtParam leaves run_at NULL for "now" so the database's clock decides.
func runAtParam(j NewJob) pgtype.Timestamptz {
	return pgtype.Timestamptz{Time: j.RunAt, Valid: !j.RunAt.IsZero()}
}

// maxAttemptsParam leaves max_attempts NULL when the producer did not choose, so that the
// kind's default applies at the first claim.
func maxAttemptsParam(j NewJob) pgtype.Int4 {
	return pgtype.Int4{Int32: int32(j.MaxAttempts), Valid: j.MaxAttempts > 0}
}

func timeoutParam(j NewJob) pgtype.Int4 {
	if j.Timeout == nil {
		return pgtype.Int4{}
	}
	// Whole milliseconds, rounded up: a sub-millisecond timeout must not become "none".
	ms := (*j.Timeout + time.Millisecond - 1) / time.Millisecond
	return pgtype.Int4{Int32: int32(ms), Valid: true}
}
