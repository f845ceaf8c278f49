package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// Outcome is how one attempt of a running job ended.
type Outcome struct {
	ID      int64
	State   string    // StateSucceeded, StateFailed, StateCancelled, or StatePending to retry
	EndedAt time.Time // when the attempt ended
	RunAt   time.Time // for StatePending: when to retry
	Error   string    // the attempt's error; empty when it succeeded
}

// WriteOutcomes writes many outcomes in one statement and returns how many jobs it
// changed. Jobs no longer running (cancelled or rescued meanwhile) are left alone.
func (s *Store) WriteOutcomes(ctx context.Context, db DB, outcomes []Outcome) (int, error) {
	ids := make([]int64, len(outcomes))
	states := make([]string, len(outcomes))
	endedAts := make([]time.Time, len(outcomes))
	runAts := make([]pgtype.Timestamptz, len(outcomes))
	errs := make([]pgtype.Text, len(outcomes))
	for i, o := range outcomes {
		ids[i], states[i], endedAts[i] = o.ID, o.State, o.EndedAt
		runAts[i] = pgtype.Timestamptz{Time: o.RunAt, Valid: !o.RunAt.IsZero()}
		errs[i] = pgtype.Text{String: o.Error, Valid: o.Error != ""}
	}
	var n int
	if err := db.QueryRow(ctx, s.q.writeOutcomes, ids, states, endedAts, runAts, errs, s.channel).Scan(&n); err != nil {
		return 0, fmt.Errorf("write %d job outcomes: %w", len(outcomes), err)
	}
	return n, nil
}
