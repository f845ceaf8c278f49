package store

import (
	"context"
	_ "embed"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

//go:embed retention.sql
var retentionSQL string

// retentionQueries are retention.sql's statements.
type retentionQueries struct {
	prune        statement[pruneParams]
	pruneClients statement[keepParams]
}

func buildRetentionQueries(quotedSchema string) retentionQueries {
	var q retentionQueries
	bindAll(retentionSQL, "retention.sql", schemaReplacer(quotedSchema), []named{
		{"prune", &q.prune}, {"pruneClients", &q.pruneClients},
	})
	// Which queues hold old jobs, and how many, changes from one prune to the next.
	q.prune.each = true
	checkBuilt(q)
	return q
}

// KeepRule is how long the finished jobs of one state are kept: in one queue, or in
// every queue that has no rule of its own ("").
type KeepRule struct {
	State string
	Queue string        // "" for every queue
	Keep  time.Duration // negative: forever
}

type pruneParams struct {
	LockKey    string            `db:"lock_key"`
	States     []string          `db:"states"`
	Queues     []pgtype.Text     `db:"queues"`
	Keeps      []pgtype.Interval `db:"keeps"`
	FromStates []string          `db:"from_states"`
	FromQueues []string          `db:"from_queues"`
	FromTimes  []time.Time       `db:"from_times"`
	Limit      int               `db:"limit"`
}

type keepParams struct {
	Keep time.Duration `db:"keep"`
}

// Pruned is what one prune did.
type Pruned struct {
	// Busy is true when another client was pruning: this one deleted nothing.
	Busy                         bool
	Succeeded, Failed, Cancelled int64
	// Resume says where each (state, queue) range it deleted from stopped: pass it to the
	// next prune of the same pass.
	Resume Resume
}

// Total is how many jobs the prune deleted.
func (p Pruned) Total() int64 { return p.Succeeded + p.Failed + p.Cancelled }

// Resume is where a pass of prunes stands in each (state, queue) range: the latest
// finished_at it deleted there.
type Resume map[[2]string]time.Time

// Prune deletes up to limit finished jobs whose time under rules has passed, in one
// statement, unless another client is pruning the schema at the same moment. Within a
// pass of prunes, from is the Resume of the previous ones (nil for the first).
func (s *Store) Prune(ctx context.Context, db DB, rules []KeepRule, limit int, from Resume) (Pruned, error) {
	p := pruneParams{LockKey: s.schema, Limit: limit}
	for _, r := range rules {
		p.States = append(p.States, r.State)
		p.Queues = append(p.Queues, nullText(r.Queue))
		p.Keeps = append(p.Keeps, pgtype.Interval{Microseconds: r.Keep.Microseconds(), Valid: r.Keep >= 0})
	}
	for k, at := range from {
		p.FromStates, p.FromQueues, p.FromTimes = append(p.FromStates, k[0]), append(p.FromQueues, k[1]), append(p.FromTimes, at)
	}
	rows, err := s.r.prune.query(ctx, db, p)
	if err != nil {
		return Pruned{}, fmt.Errorf("prune jobs: %w", err)
	}
	out := Pruned{Resume: Resume{}}
	var (
		state, queue pgtype.Text
		n            pgtype.Int8
		latest       pgtype.Timestamptz
		held         pgtype.Bool
	)
	_, err = pgx.ForEachRow(rows, []any{&state, &queue, &n, &latest, &held}, func() error {
		switch state.String {
		case "":
			out.Busy = !held.Bool
			return nil
		case StateSucceeded:
			out.Succeeded += n.Int64
		case StateFailed:
			out.Failed += n.Int64
		case StateCancelled:
			out.Cancelled += n.Int64
		}
		out.Resume[[2]string{state.String, queue.String}] = latest.Time
		return nil
	})
	if err != nil {
		return Pruned{}, fmt.Errorf("prune jobs: %w", err)
	}
	return out, nil
}

// PruneClients deletes the rows of clients gone for longer than keep, and returns how many.
func (s *Store) PruneClients(ctx context.Context, db DB, keep time.Duration) (int64, error) {
	var n int64
	if err := s.r.pruneClients.queryRow(ctx, db, keepParams{Keep: keep}).Scan(&n); err != nil {
		return 0, fmt.Errorf("prune clients: %w", err)
	}
	return n, nil
}
