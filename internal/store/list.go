package store

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

//go:embed list.sql
var listSQL string

// listFragments holds the named fragments of list.sql, {schema} still in them, and the
// part that listing and counting share, {queuesInState}, filled in.
//
// Every parameter a fragment names must be a field of listParams, and every field must be
// used somewhere: checked when the package is loaded, since a listing is put together per
// call from only the fragments it needs.
var listFragments = func() map[string]string {
	f := parseNamed(listSQL)
	all := make([]string, 0, len(f))
	for name, sql := range f {
		f[name] = strings.ReplaceAll(sql, "{queuesInState}", f["queuesInState"])
		all = append(all, f[name])
	}
	if _, err := prepare[listParams](strings.Join(all, "\n"), false); err != nil {
		panic(fmt.Sprintf("store: list.sql: %v", err))
	}
	// A record's columns with its values (as GetJob reads it), or with NULL in their place.
	f["columnsWithoutValues"] = strings.ReplaceAll(f["columns"], "{values}", f["noValues"])
	f["columns"] = strings.ReplaceAll(f["columns"], "{values}", f["values"])
	return f
}()

// StateScheduled is what listing and counting call a pending job whose run_at is later
// than now; it is not a value of the state column.
const StateScheduled = "scheduled"

// ListFilter selects the jobs ListJobs returns. Its values have been validated.
type ListFilter struct {
	Queue, Kind string   // "" for any
	States      []string // StatePending (due), StateScheduled, StateRunning, StateHeld or a finished state; nil for any
	From, To    time.Time
	After       int64 // only jobs with a lower id; 0 for no bound
	Limit       int   // at most this many, newest (highest id) first
	WithValues  bool  // read args, checkpoint, output and payload; otherwise only their sizes
}

// ListJobs returns the jobs that f selects, newest first, in one statement.
func (s *Store) ListJobs(ctx context.Context, db DB, f ListFilter) ([]*Record, error) {
	sql, args := buildList(s.names, f)
	rows, err := queryAround(ctx, db, s.withoutJIT, sql, args)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	defer rows.Close()
	var recs []*Record
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, fmt.Errorf("list jobs: %w", err)
		}
		recs = append(recs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	return recs, nil
}

// Count is how many jobs of a queue are in a state (StatePending counting due jobs only,
// StateScheduled the others).
type Count struct {
	Queue string
	State string
	N     int64
}

// CountJobs counts the jobs of every queue by state, exactly.
func (s *Store) CountJobs(ctx context.Context, db DB) ([]Count, error) {
	sql := s.names.Replace(fragment("countJobs"))
	rows, err := queryAround(ctx, db, s.withoutJIT, sql, []any{planEachTime})
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	counts, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Count, error) {
		var c Count
		err := row.Scan(&c.Queue, &c.State, &c.N)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("count jobs: %w", err)
	}
	return counts, nil
}

// Depth is how many unfinished jobs of a queue are in a state: StatePending (due),
// StateScheduled, StateRunning or StateHeld. OldestAge is, for the pending states, how long ago the
// earliest of them was due (or, scheduled, is due: then negative), on the database's clock.
type Depth struct {
	Queue     string
	State     string
	N         int64
	OldestAge time.Duration
}

// QueueDepths counts the unfinished jobs of every queue by state, from their partial
// indexes only.
func (s *Store) QueueDepths(ctx context.Context, db DB) ([]Depth, error) {
	sql := s.names.Replace(fragment("queueDepths"))
	rows, err := queryAround(ctx, db, s.withoutJIT, sql, nil)
	if err != nil {
		return nil, fmt.Errorf("queue depths: %w", err)
	}
	depths, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Depth, error) {
		var (
			d   Depth
			age pgtype.Float8
		)
		err := row.Scan(&d.Queue, &d.State, &d.N, &age)
		d.OldestAge = seconds(age)
		return d, err
	})
	if err != nil {
		return nil, fmt.Errorf("queue depths: %w", err)
	}
	return depths, nil
}

// fragment returns the named fragment of list.sql.
func fragment(name string) string {
	f, ok := listFragments[name]
	if !ok {
		// list.sql is embedded: a missing name is a bug caught by every test.
		panic(fmt.Sprintf("store: list.sql has no fragment named %q", name))
	}
	return f
}

// listParams are list.sql's bind parameters. A listing uses those of the parts and
// filters it needs.
type listParams struct {
	After    int64     `db:"after"`
	Limit    int       `db:"limit"`
	Finished []string  `db:"finished"`
	Queue    string    `db:"queue"`
	Kind     string    `db:"kind"`
	From     time.Time `db:"from"`
	To       time.Time `db:"to"`
}

// buildList assembles the listing statement for f and its arguments. It asks for one job
// more than f.Limit: the caller learns from it whether there is a next page.
func buildList(names *strings.Replacer, f ListFilter) (string, []any) {
	f.Limit++
	columns := fragment("columnsWithoutValues")
	if f.WithValues {
		columns = fragment("columns")
	}
	sql, p := listing(f, columns)
	st, err := prepare[listParams](sql, true)
	if err != nil {
		// list.sql is embedded, and its fragments are checked when it is read.
		panic(fmt.Sprintf("store: a listing of list.sql: %v", err))
	}
	st.each = true // a listing's best plan depends on its filters' values
	// Last, so that a schema name that looks like a placeholder stays what it is.
	return names.Replace(st.sql), st.args(p)
}

// listing is the statement that lists columns of the newest f.Limit jobs f selects, its
// parameters still named (the fields of listParams, of which it uses those it needs) and
// {schema} still in it, and the values of its parameters.
func listing(f ListFilter, columns string) (string, listParams) {
	var filters strings.Builder // kind and time; the queue is added where a part needs it
	if f.Kind != "" {
		filters.WriteString(" " + fragment("filterKind"))
	}
	if !f.From.IsZero() {
		filters.WriteString(" " + fragment("filterFrom"))
	}
	if !f.To.IsZero() {
		filters.WriteString(" " + fragment("filterTo"))
	}
	withQueue := filters.String()
	if f.Queue != "" {
		withQueue = " " + fragment("filterQueue") + withQueue
	}

	var sql string
	var finished []string // the finished states asked for: the {finished} parameter
	if len(f.States) == 0 && f.Queue == "" {
		// Every job may match: the primary key, newest first, is the shortest way.
		sql = strings.ReplaceAll(fragment("listNewest"), "{filters}", withQueue)
	} else {
		states := f.States
		if len(states) == 0 {
			states = []string{StatePending, StateScheduled, StateRunning, StateHeld, StateSucceeded, StateFailed, StateCancelled}
		}
		var parts []string
		for _, st := range states {
			switch st {
			case StatePending:
				parts = append(parts, strings.ReplaceAll(fragment("partPending"), "{filters}", withQueue))
			case StateScheduled:
				parts = append(parts, strings.ReplaceAll(fragment("partScheduled"), "{filters}", withQueue))
			case StateRunning:
				parts = append(parts, strings.ReplaceAll(fragment("partRunning"), "{filters}", withQueue))
			case StateHeld:
				parts = append(parts, strings.ReplaceAll(fragment("partHeld"), "{filters}", withQueue))
			default:
				finished = append(finished, st)
			}
		}
		if len(finished) > 0 {
			name := "partFinished"
			if f.Queue != "" {
				name = "partFinishedInQueue"
			}
			parts = append(parts, strings.ReplaceAll(fragment(name), "{filters}", filters.String()))
		}
		sql = strings.ReplaceAll(fragment("listByState"), "{parts}", strings.Join(parts, "\nUNION ALL\n"))
	}
	sql = strings.ReplaceAll(sql, "{columns}", columns)

	after := f.After
	if after <= 0 {
		after = math.MaxInt64
	}
	return sql, listParams{
		After: after, Limit: f.Limit, Finished: finished,
		Queue: f.Queue, Kind: f.Kind, From: f.From, To: f.To,
	}
}

// scanRecord reads one row of list.sql's {columns}.
func scanRecord(row pgx.Row) (*Record, error) {
	var (
		r                                   Record
		maxAttempts, timeoutMS              pgtype.Int4
		sizes                               [5]pgtype.Int4
		attemptedAt, finishedAt, leaseUntil pgtype.Timestamptz
		attemptedBy, schedule               pgtype.Text
		slot                                pgtype.Timestamptz
		attempts, policy                    []byte
		heldUntil, committedAt              pgtype.Timestamptz
	)
	err := row.Scan(&r.ID, &r.Kind, &r.Queue, &r.State, &r.Attempt,
		&maxAttempts, &r.CreatedAt, &r.RunAt, &attemptedAt, &attemptedBy, &finishedAt, &leaseUntil, &timeoutMS, &attempts, &r.Scheduled,
		&r.Priority, &r.OrderKey, &r.Blocking, &r.UniqueKey, &schedule, &slot, &r.Args, &r.Checkpoint, &r.Output, &r.Payload, &r.Metadata,
		&sizes[0], &sizes[1], &sizes[2], &sizes[3], &sizes[4],
		&heldUntil, &committedAt, &policy)
	if err != nil {
		return nil, err
	}
	r.ArgsSize, r.CheckpointSize, r.OutputSize, r.PayloadSize = int(sizes[0].Int32), int(sizes[1].Int32), int(sizes[2].Int32), int(sizes[3].Int32)
	r.MetadataSize = int(sizes[4].Int32)
	r.HeldUntil, r.CommittedAt, r.Backoff = heldUntil.Time, committedAt.Time, decodePolicy(policy)
	r.MaxAttempts = int(maxAttempts.Int32)
	r.AttemptedAt, r.AttemptedBy, r.FinishedAt, r.LeaseExpiresAt = attemptedAt.Time, attemptedBy.String, finishedAt.Time, leaseUntil.Time
	r.Schedule, r.Slot = schedule.String, slot.Time
	if timeoutMS.Valid {
		d := time.Duration(timeoutMS.Int32) * time.Millisecond
		r.Timeout = &d
	}
	if err := json.Unmarshal(attempts, &r.Attempts); err != nil {
		return nil, fmt.Errorf("job %d: decode attempt history: %w", r.ID, err)
	}
	return &r, nil
}
