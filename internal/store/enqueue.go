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

// insertParams are the parameters of insert; insertHeldParams and insertUniqueParams add to
// them.
type insertParams struct {
	Kind        string             `db:"kind"`
	Queue       string             `db:"queue"`
	Args        pgtype.Text        `db:"args"` // see jsonParam
	RunAt       pgtype.Timestamptz `db:"run_at"`
	MaxAttempts pgtype.Int4        `db:"max_attempts"`
	TimeoutMS   pgtype.Int4        `db:"timeout_ms"`
	Priority    int16              `db:"priority"`
	OrderKey    *string            `db:"order_key"`
	Payload     []byte             `db:"payload"`
	Metadata    pgtype.Text        `db:"metadata"` // see jsonParam
	Backoff     pgtype.Text        `db:"backoff"`  // see jsonParam
}

// insertHandedOffParams are the parameters of insertHandedOff: Fits is false for a job
// too large to be handed off.
type insertHandedOffParams struct {
	insertParams
	Fits bool `db:"fits"`
}

// insertHeldParams are the parameters of insertHeld: a reservation's, held for Hold.
type insertHeldParams struct {
	insertParams
	Hold pgtype.Interval `db:"hold"`
}

// insertUniqueParams are the parameters of insertUnique (Hold NULL: not a reservation).
type insertUniqueParams struct {
	insertHeldParams
	UniqueKey string   `db:"unique_key"`
	UniqueIn  []string `db:"unique_in"`
}

// Insert inserts one job and sends its wakeup, in one round trip on db (usually the
// caller's transaction, so that both take effect at commit).
func (s *Store) Insert(ctx context.Context, db DB, j NewJob) (Inserted, error) {
	p := insertParams{
		Kind: j.Kind, Queue: j.Queue, Args: jsonParam(j.Args), RunAt: runAtParam(j), MaxAttempts: maxAttemptsParam(j),
		TimeoutMS: timeoutParam(j), Priority: int16(j.Priority), OrderKey: j.OrderKey, Payload: j.Payload,
		Metadata: jsonParam(j.Metadata), Backoff: jsonParam(encodePolicy(j.Backoff)),
	}
	held := insertHeldParams{insertParams: p, Hold: holdParam(j)}
	if j.UniqueKey == "" {
		var id int64
		if held.Hold.Valid {
			// The second column, the reservation's announcement, is an expression of
			// RETURNING so that it is evaluated; it is not needed here.
			if err := s.q.insertHeld.queryRow(ctx, db, held).Scan(&id, nil); err != nil {
				return Inserted{}, insertError(err)
			}
			return Inserted{ID: id, Inserted: true}, nil
		}
		var row pgx.Row
		last := &s.notified[queueSlot(j.Queue)]
		if last.Load() && mayBeHandedOff(p) {
			row = s.q.insertHandedOff.queryRow(ctx, db, insertHandedOffParams{insertParams: p, Fits: handOffFits(p)})
		} else {
			row = s.q.insert.queryRow(ctx, db, p)
		}
		var notified bool
		if err := row.Scan(&id, &notified); err != nil {
			return Inserted{}, insertError(err)
		}
		if last.Load() != notified {
			last.Store(notified)
		}
		return Inserted{ID: id, Inserted: true}, nil
	}
	unique := insertUniqueParams{insertHeldParams: held, UniqueKey: j.UniqueKey, UniqueIn: j.UniqueIn}
	for range uniqueRetries {
		rows, err := s.q.insertUnique.query(ctx, db, unique)
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

// insertJobsParams are the parameters of insertJobs: aligned arrays with one element per job.
type insertJobsParams struct {
	Kinds        []string             `db:"kinds"`
	Queues       []string             `db:"queues"`
	Args         []pgtype.Text        `db:"args"` // see jsonParam
	RunAts       []pgtype.Timestamptz `db:"run_ats"`
	MaxAttempts  []pgtype.Int4        `db:"max_attempts"`
	TimeoutsMS   []pgtype.Int4        `db:"timeouts_ms"`
	Priorities   []int16              `db:"priorities"`
	OrderKeys    []*string            `db:"order_keys"`
	Payloads     [][]byte             `db:"payloads"`
	Metadatas    []pgtype.Text        `db:"metadatas"`     // see jsonParam
	UniqueKeys   []pgtype.Text        `db:"unique_keys"`   // nil when no job is unique
	UniqueStates []pgtype.Text        `db:"unique_states"` // comma-separated
	Holds        []pgtype.Interval    `db:"holds"`         // nil when no job is reserved
	Backoffs     []pgtype.Text        `db:"backoffs"`      // nil when no job has its own policy
}

// InsertMany inserts jobs with one statement (the schema's insert_jobs, which SQL
// producers share) and sends one wakeup per queue. The results are in the order of jobs.
func (s *Store) InsertMany(ctx context.Context, db DB, jobs []NewJob) ([]Inserted, error) {
	n := len(jobs)
	p := insertJobsParams{
		Kinds: make([]string, n), Queues: make([]string, n), Args: make([]pgtype.Text, n),
		RunAts: make([]pgtype.Timestamptz, n), MaxAttempts: make([]pgtype.Int4, n), TimeoutsMS: make([]pgtype.Int4, n),
		Priorities: make([]int16, n), OrderKeys: make([]*string, n), Payloads: make([][]byte, n),
		Metadatas: make([]pgtype.Text, n),
	}
	for i, j := range jobs {
		p.Kinds[i], p.Queues[i], p.Args[i], p.RunAts[i] = j.Kind, j.Queue, jsonParam(j.Args), runAtParam(j)
		p.MaxAttempts[i], p.TimeoutsMS[i], p.Priorities[i], p.OrderKeys[i] = maxAttemptsParam(j), timeoutParam(j), int16(j.Priority), j.OrderKey
		p.Payloads[i], p.Metadatas[i] = j.Payload, jsonParam(j.Metadata)
		setSparse(&p.Holds, n, i, holdParam(j), j.Hold > 0)
		setSparse(&p.Backoffs, n, i, jsonParam(encodePolicy(j.Backoff)), j.Backoff != nil)
		if j.UniqueKey != "" {
			if p.UniqueKeys == nil {
				p.UniqueKeys, p.UniqueStates = make([]pgtype.Text, n), make([]pgtype.Text, n)
			}
			p.UniqueKeys[i] = pgtype.Text{String: j.UniqueKey, Valid: true}
			p.UniqueStates[i] = pgtype.Text{String: strings.Join(j.UniqueIn, ","), Valid: true}
		}
	}
	rows, err := s.q.insertJobs.query(ctx, db, p)
	if err != nil {
		return nil, insertError(err)
	}
	out := make([]Inserted, 0, n)
	var (
		id        int64
		duplicate bool
	)
	_, err = pgx.ForEachRow(rows, []any{&id, &duplicate}, func() error {
		out = append(out, Inserted{ID: id, Inserted: !duplicate})
		return nil
	})
	if err != nil {
		return nil, insertError(err)
	}
	if len(out) != n {
		return nil, fmt.Errorf("insert jobs: got %d results for %d jobs", len(out), n)
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

// holdParam is how long a reservation is held, NULL for a job that is not one.
func holdParam(j NewJob) pgtype.Interval {
	return intervalParam(j.Hold, j.Hold > 0)
}

// intervalParam passes d as an interval of whole microseconds, PostgreSQL's resolution
// (rounded up, so that a positive duration never becomes none), or NULL if not valid.
func intervalParam(d time.Duration, valid bool) pgtype.Interval {
	return pgtype.Interval{Microseconds: int64((d + time.Microsecond - 1) / time.Microsecond), Valid: valid}
}

func timeoutParam(j NewJob) pgtype.Int4 {
	if j.Timeout == nil {
		return pgtype.Int4{}
	}
	// Whole milliseconds, rounded up: a sub-millisecond timeout must not become "none".
	ms := (*j.Timeout + time.Millisecond - 1) / time.Millisecond
	return pgtype.Int4{Int32: int32(ms), Valid: true}
}

// queueSlots is how many queues' last inserts a Store remembers apart.
const queueSlots = 64

// queueSlot is the slot of Store.notified that remembers queue's last insert: FNV-1a of
// its name.
func queueSlot(queue string) int {
	h := uint32(2166136261)
	for i := range len(queue) {
		h = (h ^ uint32(queue[i])) * 16777619
	}
	return int(h % queueSlots)
}

// mayBeHandedOff reports whether a job might be handed off, as far as Go knows: not one
// due later, nor one with an order key (its queue is ordered, or it is refused). Such a
// job goes through insert, even right after an enqueue that notified.
func mayBeHandedOff(p insertParams) bool {
	return p.OrderKey == nil && !(p.RunAt.Valid && p.RunAt.Time.After(time.Now()))
}

// handOffFits reports whether a job may be handed off by its size, as hand_off estimates
// it from the row (migration 016), so that both of Insert's statements hand off the same
// jobs: under 6,500 bytes of its largest fields, its JSON as jsonb writes it back (see
// jsonbTextLen), its payload as base64. Where jsonb writes a value longer than Go does (a
// number such as 1e1000, written out in full), the job may turn out too large for its
// notification after all: send_hand_off then makes it pending again.
func handOffFits(p insertParams) bool {
	const limit = 6500
	rest := len(p.Payload)*4/3 + len(p.Kind) + len(p.Queue)
	if len(p.Args.String)+len(p.Metadata.String)+len(p.Backoff.String)+rest >= limit {
		return false // jsonb's text is no shorter: no need to read a large job's JSON
	}
	return jsonbTextLen(p.Args.String)+jsonbTextLen(p.Metadata.String)+jsonbTextLen(p.Backoff.String)+rest < limit
}

// jsonbTextLen is the length of compact JSON (encoding/json's) as PostgreSQL's jsonb writes
// it: with a space after every ':' and ',' between values, not those within strings.
func jsonbTextLen(json string) int {
	n, inString, escaped := len(json), false, false
	for i := range len(json) {
		switch c := json[i]; {
		case escaped:
			escaped = false
		case inString:
			escaped = c == '\\'
			inString = c != '"'
		case c == '"':
			inString = true
		case c == ':' || c == ',':
			n++
		}
	}
	return n
}
