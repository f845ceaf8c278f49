package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
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
	ReasonExpired   = "expired"    // a reservation's deadline passed before it was committed
	// ReasonInfrastructure: the handler's database connection failed (SQLSTATE class 08 or
	// 57, a failed connect, a closed connection), not the handler.
	ReasonInfrastructure = "infrastructure"
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
	// Data is the structured data the attempt's error carried, as JSON, or nil; DataError
	// says why data it carried could not be recorded.
	Data      []byte
	DataError string
	// Uncounted: the attempt does not use up one of the job's attempts; the job is given
	// one more (max_attempts + 1), so that attempt numbers still only grow.
	Uncounted bool

	// Not written: what the client's events report of the attempt.
	Kind, Queue            string
	ScheduledAt, StartedAt time.Time
	CompletedTx            bool        // the handler called CompleteTx
	LogAttrs               []slog.Attr // what middleware added to the attempt's log lines
}

// WriteOutcomes writes many outcomes of client's attempts in one statement and returns
// those it left out: an outcome whose attempt no longer holds its job (rescued, cancelled,
// re-claimed, completed by [Store.CompleteTx]) changes nothing. The statement goes in one
// batch after genericPlan: still one round trip.
func (s *Store) WriteOutcomes(ctx context.Context, db BatchDB, client string, outcomes []Outcome) (Skipped, error) {
	b := &pgx.Batch{}
	s.q.genericPlan.queue(b, struct{}{})
	s.q.writeOutcomes.queue(b, s.outcomeParams(client, outcomes))
	var skipped Skipped
	err := afterSetting(db.SendBatch(ctx, b), func(rows pgx.Rows) error {
		var k heldAttempt
		_, err := pgx.ForEachRow(rows, []any{&k.id, &k.attempt}, func() error {
			if skipped == nil {
				skipped = Skipped{}
			}
			skipped[k] = notHeld
			return nil
		})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("write %d job outcomes: %w", len(outcomes), err)
	}
	return skipped, nil
}

// afterSetting reads the results of a batch of two statements, the first of which sets how
// the second runs (genericPlan, lockQueue): read is given the second's rows.
// The batch is closed before it returns, and a failure to close it is its error: the
// batch's implicit transaction commits at its end, and only Close reports a failed commit.
func afterSetting(br pgx.BatchResults, read func(pgx.Rows) error) error {
	err := func() error {
		if _, err := br.Exec(); err != nil {
			return err
		}
		rows, err := br.Query()
		if err != nil {
			return err
		}
		defer rows.Close()
		return read(rows)
	}()
	if closeErr := br.Close(); err == nil {
		err = closeErr
	}
	return err
}

// Skipped holds the outcomes of a write that changed nothing, and why: usually none (nil).
type Skipped map[heldAttempt]skip

type heldAttempt struct {
	id      int64
	attempt int
}

// skip is why an outcome changed nothing.
type skip uint8

const (
	notHeld skip = iota + 1 // its attempt no longer held the job
	refused                 // PostgreSQL refused it: the job is still running, left to its lease
)

// SkippedAll is the Skipped of outcomes whose attempt no longer holds its job: none of them
// was written.
func SkippedAll(outcomes []Outcome) Skipped { return skippedAs(outcomes, notHeld) }

// RefusedAll is the Skipped of outcomes PostgreSQL refused: none of them was written, and
// their jobs still run, until their leases expire.
func RefusedAll(outcomes []Outcome) Skipped { return skippedAs(outcomes, refused) }

func skippedAs(outcomes []Outcome, why skip) Skipped {
	s := make(Skipped, len(outcomes))
	for _, o := range outcomes {
		s[heldAttempt{o.ID, o.Attempt}] = why
	}
	return s
}

// BadValue reports whether err is PostgreSQL refusing a value (SQLSTATE classes 22, data
// exception, and 23, integrity constraint violation): the same statement with the same
// values fails again, unlike one whose connection failed.
func BadValue(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && (strings.HasPrefix(pe.Code, "22") || strings.HasPrefix(pe.Code, "23"))
}

// Wrote reports whether the write that returned s changed the job of o, one of its outcomes.
func (s Skipped) Wrote(o Outcome) bool { return s[heldAttempt{o.ID, o.Attempt}] == 0 }

// Refused reports whether PostgreSQL refused o, one of the outcomes of the write that
// returned s: its job still runs.
func (s Skipped) Refused(o Outcome) bool { return s[heldAttempt{o.ID, o.Attempt}] == refused }

// outcomeParams are the parameters of writeOutcomes: the outcomes as aligned arrays, one
// element per outcome.
type outcomeParams struct {
	IDs        []int64              `db:"ids"`
	Attempts   []int32              `db:"attempts"`
	States     []string             `db:"states"`
	EndedAts   []time.Time          `db:"ended_ats"`
	RunAts     []pgtype.Timestamptz `db:"run_ats"`
	Reasons    []pgtype.Text        `db:"reasons"`
	Errors     []pgtype.Text        `db:"errors"`
	Stacks     []pgtype.Text        `db:"stacks"`
	Outputs    []pgtype.Text        `db:"outputs"`     // see jsonParam; nil when no outcome has one
	Datas      []pgtype.Text        `db:"datas"`       // the same
	DataErrors []pgtype.Text        `db:"data_errors"` // the same
	Uncounted  []bool               `db:"uncounted"`
	Client     string               `db:"client"`
}

func (s *Store) outcomeParams(client string, outcomes []Outcome) outcomeParams {
	n := len(outcomes)
	p := outcomeParams{
		IDs: make([]int64, n), Attempts: make([]int32, n), States: make([]string, n), EndedAts: make([]time.Time, n),
		RunAts: make([]pgtype.Timestamptz, n), Reasons: make([]pgtype.Text, n), Errors: make([]pgtype.Text, n),
		Stacks: make([]pgtype.Text, n), Uncounted: make([]bool, n), Client: client,
	}
	for i, o := range outcomes {
		p.IDs[i], p.Attempts[i], p.States[i], p.EndedAts[i] = o.ID, int32(o.Attempt), o.State, o.EndedAt
		p.RunAts[i] = pgtype.Timestamptz{Time: o.RunAt, Valid: !o.RunAt.IsZero()}
		p.Reasons[i] = nullText(o.Reason)
		p.Errors[i] = nullText(o.Error)
		p.Stacks[i] = nullText(o.Stack)
		setSparse(&p.Outputs, n, i, jsonParam(o.Output), o.Output != nil)
		setSparse(&p.Datas, n, i, jsonParam(o.Data), o.Data != nil)
		setSparse(&p.DataErrors, n, i, nullText(o.DataError), o.DataError != "")
		p.Uncounted[i] = o.Uncounted
	}
	return p
}

// setSparse sets (*values)[i] to v, of n values, if set: values stays nil — a NULL array,
// which unnest pads with NULLs — until one value is set, as in most batches none is.
func setSparse[T any](values *[]T, n, i int, v T, set bool) {
	if !set {
		return
	}
	if *values == nil {
		*values = make([]T, n)
	}
	(*values)[i] = v
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

// heldParams name an attempt of a job by one client: the parameters of endedBy, and part
// of those of every statement that acts only while that attempt holds the job.
type heldParams struct {
	ID      int64  `db:"id"`
	Client  string `db:"client"`
	Attempt int    `db:"attempt"`
}

func (a Holder) params() heldParams {
	return heldParams{ID: a.ID, Client: a.Client, Attempt: a.Attempt}
}

type completeTxParams struct {
	heldParams
	Output pgtype.Text `db:"output"`
}

type setOutputParams struct {
	heldParams
	Output pgtype.Text `db:"output"`
}

type checkpointParams struct {
	heldParams
	Checkpoint pgtype.Text   `db:"checkpoint"`
	Lease      time.Duration `db:"lease"`
}

// CompleteTx marks the job of holder a succeeded, with output if not nil, on db (the
// caller's transaction): it takes effect when that commits.
func (s *Store) CompleteTx(ctx context.Context, db DB, a Holder, output []byte) error {
	return ifHeld(s.q.completeTx.queryRow(ctx, db, completeTxParams{heldParams: a.params(), Output: jsonParam(output)}))
}

// SetOutput stores output on the job of holder a once that attempt has succeeded: for an
// output recorded after CompleteTx.
func (s *Store) SetOutput(ctx context.Context, db DB, a Holder, output []byte) error {
	return ifHeld(s.q.setOutput.queryRow(ctx, db, setOutputParams{heldParams: a.params(), Output: jsonParam(output)}))
}

// EndedBy returns the state of the job of holder a if that attempt was its last (so the
// state is that attempt's doing, or a cancel's), and "" otherwise.
func (s *Store) EndedBy(ctx context.Context, db DB, a Holder) (string, error) {
	var state string
	err := s.q.endedBy.queryRow(ctx, db, a.params()).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	return state, err
}

// Checkpoint saves the progress of the job of holder a.
func (s *Store) Checkpoint(ctx context.Context, db DB, a Holder, state []byte) error {
	return ifHeld(s.q.checkpoint.queryRow(ctx, db, checkpointParams{heldParams: a.params(), Checkpoint: jsonParam(state), Lease: a.Lease}))
}

// ifHeld reads the row of a statement that acts only while an attempt holds its job.
func ifHeld(row pgx.Row) error {
	var id int64
	err := row.Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return ErrNotHeld
	}
	return err
}
