package store

import (
	"context"
	_ "embed"
	"fmt"
	"time"

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
	LockKey string            `db:"lock_key"`
	States  []string          `db:"states"`
	Queues  []pgtype.Text     `db:"queues"`
	Keeps   []pgtype.Interval `db:"keeps"`
	Limit   int               `db:"limit"`
}

type keepParams struct {
	Keep time.Duration `db:"keep"`
}

// Pruned is what one prune did.
type Pruned struct {
	// Busy is true when another client was pruning: this one deleted nothing.
	Busy                         bool
	Succeeded, Failed, Cancelled int64
}

// Total is how many jobs the prune deleted.
func (p Pruned) Total() int64 { return p.Succeeded + p.Failed + p.Cancelled }

// Prune deletes up to limit finished jobs whose time under rules has passed, in one
// statement, unless another client is pruning the schema at the same moment.
func (s *Store) Prune(ctx context.Context, db DB, rules []KeepRule, limit int) (Pruned, error) {
	p := pruneParams{LockKey: s.schema, Limit: limit}
	for _, r := range rules {
		p.States = append(p.States, r.State)
		p.Queues = append(p.Queues, nullText(r.Queue))
		p.Keeps = append(p.Keeps, pgtype.Interval{Microseconds: r.Keep.Microseconds(), Valid: r.Keep >= 0})
	}
	var out Pruned
	var held pgtype.Bool
	err := s.r.prune.queryRow(ctx, db, p).Scan(&held, &out.Succeeded, &out.Failed, &out.Cancelled)
	if err != nil {
		return Pruned{}, fmt.Errorf("prune jobs: %w", err)
	}
	out.Busy = !held.Bool
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
