package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

// On-failure policies of an ordered queue, as stored in queues.on_failure.
const (
	OnFailureBlock  = "block"
	OnFailureMoveOn = "move on"
)

// QueueRow is a queue's stored settings and state.
type QueueRow struct {
	Ordered     bool
	OnFailure   string
	GlobalLimit int // zero: none
	PausedAt    time.Time
	Running     int // running jobs, on every client
	Blocked     int // failed jobs holding their ordered keys
}

type setQueueParams struct {
	Queue       string      `db:"queue"`
	Ordered     bool        `db:"ordered"`
	OnFailure   string      `db:"on_failure"`
	GlobalLimit pgtype.Int4 `db:"global_limit"` // NULL: none
}

type pauseQueueParams struct {
	Queue string `db:"queue"`
	Pause bool   `db:"pause"` // false: resume
}

// queueParams are the parameters of getQueue.
type queueParams struct {
	Queue string `db:"queue"`
}

// patternsParams are the parameters of pendingQueues.
type patternsParams struct {
	Patterns []string      `db:"patterns"` // queue names, and prefixes ending in '*'
	Kinds    []string      `db:"kinds"`
	Within   time.Duration `db:"within"`
}

// SetQueue stores the settings of queue (not its pause), aligns its unfinished jobs with
// them, and tells every client. It returns how many jobs it changed.
func (s *Store) SetQueue(ctx context.Context, db DB, queue string, ordered bool, onFailure string, globalLimit int) (int, error) {
	limit := pgtype.Int4{Int32: int32(globalLimit), Valid: globalLimit > 0}
	var changed int
	p := setQueueParams{Queue: queue, Ordered: ordered, OnFailure: onFailure, GlobalLimit: limit}
	if err := s.q.setQueue.queryRow(ctx, db, p).Scan(&changed); err != nil {
		return 0, fmt.Errorf("set queue %q: %w", queue, err)
	}
	return changed, nil
}

// PauseQueue pauses (or, with pause false, resumes) queue on every client.
func (s *Store) PauseQueue(ctx context.Context, db DB, queue string, pause bool) error {
	if _, err := s.q.pauseQueue.exec(ctx, db, pauseQueueParams{Queue: queue, Pause: pause}); err != nil {
		return fmt.Errorf("pause queue %q: %w", queue, err)
	}
	return nil
}

// GetQueue reads queue's settings; a queue without any reads as plain.
func (s *Store) GetQueue(ctx context.Context, db DB, queue string) (QueueRow, error) {
	var (
		r        QueueRow
		ordered  pgtype.Bool
		onFail   pgtype.Text
		limit    pgtype.Int4
		pausedAt pgtype.Timestamptz
	)
	if err := s.q.getQueue.queryRow(ctx, db, queueParams{Queue: queue}).Scan(&ordered, &onFail, &limit, &pausedAt, &r.Running, &r.Blocked); err != nil {
		return QueueRow{}, fmt.Errorf("get queue %q: %w", queue, err)
	}
	r.Ordered, r.OnFailure, r.GlobalLimit, r.PausedAt = ordered.Bool, onFail.String, int(limit.Int32), pausedAt.Time
	if !onFail.Valid {
		r.OnFailure = OnFailureBlock
	}
	return r, nil
}

// PendingQueues returns the queues with pending jobs that patterns (names, and prefix
// groups ending in '*') cover.
func (s *Store) PendingQueues(ctx context.Context, db DB, patterns, kinds []string, within time.Duration) ([]string, error) {
	rows, err := s.q.pendingQueues.query(ctx, db, patternsParams{Patterns: patterns, Kinds: kinds, Within: within})
	if err != nil {
		return nil, fmt.Errorf("list queues with pending jobs: %w", err)
	}
	queues, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list queues with pending jobs: %w", err)
	}
	return queues, nil
}

// Unhandled is how many pending jobs of one queue and kind no live client can run.
type Unhandled struct {
	Queue, Kind string
	Jobs        int64
	Oldest      time.Time // created_at of the oldest of them
}

type unhandledParams struct {
	Grace  time.Duration `db:"grace"`
	Sample int           `db:"sample"`
}

// unhandledSample bounds how many of each queue's most urgent due jobs Unhandled looks at.
const unhandledSample = 100

// Unhandled returns the pending jobs, due for at least grace, that no live client can run
// (see queries.sql "unhandled" for what it finds and what it costs).
func (s *Store) Unhandled(ctx context.Context, db DB, grace time.Duration) ([]Unhandled, error) {
	rows, err := s.q.unhandled.query(ctx, db, unhandledParams{Grace: grace, Sample: unhandledSample})
	if err != nil {
		return nil, fmt.Errorf("look for jobs no client can run: %w", err)
	}
	found, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Unhandled, error) {
		var u Unhandled
		err := row.Scan(&u.Queue, &u.Kind, &u.Jobs, &u.Oldest)
		return u, err
	})
	if err != nil {
		return nil, fmt.Errorf("look for jobs no client can run: %w", err)
	}
	return found, nil
}
