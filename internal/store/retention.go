package store

import (
	"context"
	_ "embed"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

//go:embed retention.sql
var retentionSQL string

// retentionQueries are retention.sql's statements.
type retentionQueries struct {
	expired      statement[rulesParams]
	prune        statement[pruneParams]
	pruneClients statement[keepParams]
}

func buildRetentionQueries(names *strings.Replacer) retentionQueries {
	var q retentionQueries
	bindAll(retentionSQL, "retention.sql", names, []named{
		{"expired", &q.expired}, {"prune", &q.prune}, {"pruneClients", &q.pruneClients},
	})
	// Which queues hold old jobs, and how many, changes from one prune to the next.
	q.expired.each, q.prune.each = true, true
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

type rulesParams struct {
	States []string          `db:"states"`
	Queues []pgtype.Text     `db:"queues"`
	Keeps  []pgtype.Interval `db:"keeps"`
}

func rulesParamsOf(rules []KeepRule) rulesParams {
	var p rulesParams
	for _, r := range rules {
		p.States = append(p.States, r.State)
		p.Queues = append(p.Queues, nullText(r.Queue))
		p.Keeps = append(p.Keeps, pgtype.Interval{Microseconds: r.Keep.Microseconds(), Valid: r.Keep >= 0})
	}
	return p
}

type pruneParams struct {
	rulesParams
	LockKey     string               `db:"lock_key"`
	RangeStates []string             `db:"range_states"`
	RangeQueues []string             `db:"range_queues"`
	RangeFroms  []pgtype.Timestamptz `db:"range_froms"`
	Limit       int                  `db:"limit"`
}

type keepParams struct {
	Keep time.Duration `db:"keep"`
}

// Range is the finished jobs of one state in one queue, as a pass of prunes works
// through them: From is the latest finished_at a prune of the pass deleted there (zero
// before the first), where the next one resumes.
type Range struct {
	State, Queue string
	From         time.Time
}

// Expired returns the ranges that hold jobs expired under rules, for a pass of prunes.
func (s *Store) Expired(ctx context.Context, db DB, rules []KeepRule) ([]*Range, error) {
	rows, err := s.r.expired.query(ctx, db, rulesParamsOf(rules))
	if err != nil {
		return nil, fmt.Errorf("find expired jobs: %w", err)
	}
	ranges, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (*Range, error) {
		var r Range
		err := row.Scan(&r.State, &r.Queue)
		return &r, err
	})
	if err != nil {
		return nil, fmt.Errorf("find expired jobs: %w", err)
	}
	return ranges, nil
}

// Pruned is what one prune did.
type Pruned struct {
	// Busy is true when another client was pruning: this one deleted nothing.
	Busy                         bool
	Succeeded, Failed, Cancelled int64
}

// Total is how many jobs the prune deleted.
func (p Pruned) Total() int64 { return p.Succeeded + p.Failed + p.Cancelled }

// Prune deletes up to limit jobs of ranges whose time under rules has passed, in one
// statement, unless another client is pruning the schema at the same moment, and moves
// each range's From past what it deleted.
func (s *Store) Prune(ctx context.Context, db DB, rules []KeepRule, limit int, ranges []*Range) (Pruned, error) {
	p := pruneParams{rulesParams: rulesParamsOf(rules), LockKey: s.schema, Limit: limit}
	byKey := make(map[[2]string]*Range, len(ranges))
	for _, r := range ranges {
		p.RangeStates, p.RangeQueues = append(p.RangeStates, r.State), append(p.RangeQueues, r.Queue)
		p.RangeFroms = append(p.RangeFroms, pgtype.Timestamptz{Time: r.From, Valid: !r.From.IsZero()})
		byKey[[2]string{r.State, r.Queue}] = r
	}
	rows, err := s.r.prune.query(ctx, db, p)
	if err != nil {
		return Pruned{}, fmt.Errorf("prune jobs: %w", err)
	}
	var (
		out          Pruned
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
		if r := byKey[[2]string{state.String, queue.String}]; r != nil {
			r.From = latest.Time
		}
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
