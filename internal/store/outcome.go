package store

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// Failure reasons, as recorded in a job's attempt history.
const (
	ReasonError     = "error"      // the handler returned an error
	ReasonPanic     = "panic"      // the handler panicked
	ReasonTimeout   = "timeout"    // the handler ran past its timeout
	ReasonLostLease = "lost lease" // the client stopped renewing the lease (died, partitioned)
	ReasonDiscarded = "discarded"  // the handler asked to fail the job without retrying
	ReasonSnoozed   = "snoozed"    // the handler asked to run again later, attempt not counted
	ReasonDecode    = "decode"     // the args could not be decoded into the handler's type
	ReasonCancelled = "cancelled"  // relay.Cancel was called
	ReasonShutdown  = "shutdown"   // the client stopped before the handler returned
)

// Outcome is how one attempt of a running job ended.
type Outcome struct {
	ID      int64
	Attempt int       // the attempt this outcome belongs to
	State   string    // StateSucceeded, StateFailed, or StatePending to retry
	EndedAt time.Time // when the attempt ended
	RunAt   time.Time // for StatePending: when to run next
	Reason  string    // one of the Reason constants; empty when it succeeded
	Error   string    // the attempt's error
	Stack   string    // the stack of a panic
}

// WriteOutcomes writes many outcomes of client's attempts in one statement and returns
// how many jobs it changed. An outcome whose attempt no longer holds its job (rescued,
// cancelled, re-claimed) is left out.
func (s *Store) WriteOutcomes(ctx context.Context, db DB, client string, outcomes []Outcome) (int, error) {
	n := len(outcomes)
	ids := make([]int64, n)
	attempts := make([]int32, n)
	states := make([]string, n)
	endedAts := make([]time.Time, n)
	runAts := make([]pgtype.Timestamptz, n)
	reasons := make([]pgtype.Text, n)
	errs := make([]pgtype.Text, n)
	stacks := make([]pgtype.Text, n)
	for i, o := range outcomes {
		ids[i], attempts[i], states[i], endedAts[i] = o.ID, int32(o.Attempt), o.State, o.EndedAt
		runAts[i] = pgtype.Timestamptz{Time: o.RunAt, Valid: !o.RunAt.IsZero()}
		reasons[i] = nullText(o.Reason)
		errs[i] = nullText(o.Error)
		stacks[i] = nullText(o.Stack)
	}
	var written int
	err := db.QueryRow(ctx, s.q.writeOutcomes, planEachTime, ids, attempts, states, endedAts, runAts, reasons, errs, stacks, client, s.channel).Scan(&written)
	if err != nil {
		return 0, fmt.Errorf("write %d job outcomes: %w", n, err)
	}
	return written, nil
}

func nullText(s string) pgtype.Text { return pgtype.Text{String: s, Valid: s != ""} }
