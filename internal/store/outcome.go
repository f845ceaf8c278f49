package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
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
	Output  []byte    // for StateSucceeded: the handler's output as JSON, or nil

	// Not written: what the client's events report of the attempt.
	Kind, Queue            string
	ScheduledAt, StartedAt time.Time
	CompletedTx            bool // the handler called CompleteTx
}

// WriteOutcomes writes many outcomes of client's attempts in one statement and returns
// the ids of the jobs it changed, successes included only if withSuccesses. An outcome
// whose attempt no longer holds its job (rescued, cancelled, re-claimed, completed by
// [Store.CompleteTx]) is left out.
func (s *Store) WriteOutcomes(ctx context.Context, db DB, client string, outcomes []Outcome, withSuccesses bool) (map[int64]bool, error) {
	n := len(outcomes)
	rows, err := db.Query(ctx, s.q.writeOutcomes, s.outcomeArgs(client, outcomes, withSuccesses)...)
	if err != nil {
		return nil, fmt.Errorf("write %d job outcomes: %w", n, err)
	}
	changed, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("write %d job outcomes: %w", n, err)
	}
	written := make(map[int64]bool, len(changed))
	for _, id := range changed {
		written[id] = true
	}
	return written, nil
}

// outcomeArgs are the arguments of writeOutcomes: the outcomes as aligned arrays.
func (s *Store) outcomeArgs(client string, outcomes []Outcome, withSuccesses bool) []any {
	n := len(outcomes)
	ids := make([]int64, n)
	attempts := make([]int32, n)
	states := make([]string, n)
	endedAts := make([]time.Time, n)
	runAts := make([]pgtype.Timestamptz, n)
	reasons := make([]pgtype.Text, n)
	errs := make([]pgtype.Text, n)
	stacks := make([]pgtype.Text, n)
	var outputs []pgtype.Text // see jsonParam
	for i, o := range outcomes {
		ids[i], attempts[i], states[i], endedAts[i] = o.ID, int32(o.Attempt), o.State, o.EndedAt
		runAts[i] = pgtype.Timestamptz{Time: o.RunAt, Valid: !o.RunAt.IsZero()}
		reasons[i] = nullText(o.Reason)
		errs[i] = nullText(o.Error)
		stacks[i] = nullText(o.Stack)
		if o.Output != nil {
			if outputs == nil {
				outputs = make([]pgtype.Text, n)
			}
			outputs[i] = jsonParam(o.Output)
		}
	}
	return []any{ids, attempts, states, endedAts, runAts, reasons, errs, stacks, client, s.channel, outputs, withSuccesses}
}

// ErrNotHeld is returned by [Store.CompleteTx] and [Store.Checkpoint] when the attempt no
// longer holds the job; nothing was written.
var ErrNotHeld = errors.New("the attempt no longer holds the job")

// Holder identifies one attempt of a job by one client.
type Holder struct {
	ID      int64
	Client  string
	Attempt int
	Lease   time.Duration // the client's lease TTL
}

// CompleteTx marks the job of holder a succeeded, with output if not nil, on db (the
// caller's transaction): it takes effect when that commits.
func (s *Store) CompleteTx(ctx context.Context, db DB, a Holder, output []byte) error {
	return s.ifHeld(ctx, db, s.q.completeTx, a, jsonParam(output), s.channel)
}

// SetOutput stores output on the job of holder a once that attempt has succeeded: for an
// output recorded after CompleteTx.
func (s *Store) SetOutput(ctx context.Context, db DB, a Holder, output []byte) error {
	return s.ifHeld(ctx, db, s.q.setOutput, a, jsonParam(output))
}

// EndedBy returns the state of the job of holder a if that attempt was its last (so the
// state is that attempt's doing, or a cancel's), and "" otherwise.
func (s *Store) EndedBy(ctx context.Context, db DB, a Holder) (string, error) {
	var state string
	err := db.QueryRow(ctx, s.q.endedBy, a.ID, a.Client, a.Attempt).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return state, err
}

// Checkpoint saves the progress of the job of holder a.
func (s *Store) Checkpoint(ctx context.Context, db DB, a Holder, state []byte) error {
	return s.ifHeld(ctx, db, s.q.checkpoint, a, jsonParam(state), a.Lease)
}

func (s *Store) ifHeld(ctx context.Context, db DB, query string, a Holder, args ...any) error {
	var id int64
	err := db.QueryRow(ctx, query, append([]any{a.ID, a.Client, a.Attempt}, args...)...).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotHeld
	}
	return err
}
