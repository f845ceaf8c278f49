package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// NotOrderedError is returned for a job with an order key whose queue is not ordered.
type NotOrderedError struct{ Queue string }

func (e *NotOrderedError) Error() string { return fmt.Sprintf("queue %q is not ordered", e.Queue) }

// notOrderedCode is the SQLSTATE the schema's not_ordered function raises.
const notOrderedCode = "RLY01"

// Inserted is one enqueued job: its id, and whether it was inserted (false: a job already
// holding its unique key, whose id this is).
type Inserted struct {
	ID       int64
	Inserted bool
}

// uniqueRetries bounds how often an insert is run again when the holder of its unique key
// committed after the statement's snapshot: each run takes a newer snapshot, so a second
// run all but always sees it.
const uniqueRetries = 5

// Insert inserts one job and sends its wakeup, in one round trip on db (usually the
// caller's transaction, so that both take effect at commit).
func (s *Store) Insert(ctx context.Context, db DB, j NewJob) (Inserted, error) {
	args := []any{j.Kind, j.Queue, jsonParam(j.Args), runAtParam(j), maxAttemptsParam(j), s.channel, timeoutParam(j), int16(j.Priority), j.OrderKey, j.Payload}
	if j.UniqueKey == "" {
		var id int64
		if err := db.QueryRow(ctx, s.q.insert, args...).Scan(&id); err != nil {
			return Inserted{}, insertError(err)
		}
		return Inserted{ID: id, Inserted: true}, nil
	}
	args = append(args[:9], j.UniqueKey, j.UniqueIn, j.Payload)
	for range uniqueRetries {
		rows, err := db.Query(ctx, s.q.insertUnique, args...)
		if err != nil {
			return Inserted{}, insertError(err)
		}
		var in Inserted
		found := false
		for rows.Next() {
			if err := rows.Scan(&in.ID, &in.Inserted); err != nil {
				rows.Close()
				return Inserted{}, insertError(err)
			}
			found = true
		}
		if err := rows.Err(); err != nil {
			return Inserted{}, insertError(err)
		}
		if found {
			return in, nil
		}
	}
	return Inserted{}, fmt.Errorf("insert job: unique key %q is held by a job this transaction cannot see; retry", j.UniqueKey)
}

// InsertMany inserts jobs with one statement and sends one wakeup per queue. The results
// are in the order of jobs.
func (s *Store) InsertMany(ctx context.Context, db DB, jobs []NewJob) ([]Inserted, error) {
	n := len(jobs)
	var (
		kinds, queues, uniqueKeys, uniqueIn = make([]string, n), make([]string, n), make([]pgtype.Text, n), make([]pgtype.Text, n)
		args                                = make([]pgtype.Text, n)
		runAts                              = make([]pgtype.Timestamptz, n)
		maxAttempts, timeouts               = make([]pgtype.Int4, n), make([]pgtype.Int4, n)
		priorities                          = make([]int16, n)
		orderKeys                           = make([]*string, n)
		payloads                            = make([][]byte, n)
	)
	unique := false
	for i, j := range jobs {
		kinds[i], queues[i], args[i], runAts[i] = j.Kind, j.Queue, jsonParam(j.Args), runAtParam(j)
		maxAttempts[i], timeouts[i], priorities[i], orderKeys[i] = maxAttemptsParam(j), timeoutParam(j), int16(j.Priority), j.OrderKey
		payloads[i] = j.Payload
		if j.UniqueKey != "" {
			unique = true
			uniqueKeys[i] = pgtype.Text{String: j.UniqueKey, Valid: true}
			uniqueIn[i] = pgtype.Text{String: strings.Join(j.UniqueIn, ","), Valid: true}
		}
	}
	if !unique {
		// The common case, and a much cheaper statement: nothing to look up or skip.
		rows, err := db.Query(ctx, s.q.insertMany, kinds, queues, args, runAts, maxAttempts, s.channel, timeouts, priorities, orderKeys, payloads)
		if err != nil {
			return nil, insertError(err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return nil, insertError(err)
		}
		if len(ids) != n {
			return nil, fmt.Errorf("insert jobs: inserted %d of %d", len(ids), n)
		}
		out := make([]Inserted, n)
		for i, id := range ids {
			out[i] = Inserted{ID: id, Inserted: true}
		}
		return out, nil
	}
	rows, err := db.Query(ctx, s.q.insertManyUnique, kinds, queues, args, runAts, maxAttempts, s.channel, timeouts,
		priorities, orderKeys, uniqueKeys, uniqueIn, payloads)
	if err != nil {
		return nil, insertError(err)
	}
	out := make([]Inserted, 0, n)
	var (
		ord      int64
		id       pgtype.Int8
		inserted bool
	)
	for rows.Next() {
		if err := rows.Scan(&ord, &id, &inserted); err != nil {
			rows.Close()
			return nil, insertError(err)
		}
		out = append(out, Inserted{ID: id.Int64, Inserted: inserted})
	}
	if err := rows.Err(); err != nil {
		return nil, insertError(err)
	}
	if len(out) != n {
		return nil, fmt.Errorf("insert jobs: got %d results for %d jobs", len(out), n)
	}
	for i, in := range out {
		if in.ID != 0 {
			continue
		}
		// The holder of this job's key committed after the statement's snapshot: a new
		// statement sees it — unless it has finished meanwhile, and the key is free: then the
		// job is inserted after all.
		err := db.QueryRow(ctx, s.q.uniqueHolder, jobs[i].UniqueKey).Scan(&out[i].ID)
		if errors.Is(err, pgx.ErrNoRows) {
			out[i], err = s.Insert(ctx, db, jobs[i])
		}
		if err != nil {
			return nil, fmt.Errorf("insert jobs: find the job holding unique key %q: %w", jobs[i].UniqueKey, err)
		}
	}
	return out, nil
}

func insertError(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == notOrderedCode {
		return &NotOrderedError{Queue: pgErr.Detail}
	}
	return fmt.Errorf("insert job: %w", err)
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
