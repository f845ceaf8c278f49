package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/relayq/relay/backoff"
)

// ErrNoJob is returned when a job id does not exist.
var ErrNoJob = errors.New("no such job")

// ErrUniqueKeyHeld is returned when a job cannot become pending again because another job
// now holds its unique key.
var ErrUniqueKeyHeld = errors.New("another job holds its unique key")

// jobParams are the parameters of cancel and retry.
type jobParams struct {
	ID int64 `db:"id"`
}

// idParams are the parameters of getJob.
type idParams struct {
	ID int64 `db:"id"`
}

// Cancel cancels job id unless it has finished (a failed job that blocks its ordered key
// counts as unfinished) and returns its state before and whether it was blocking.
func (s *Store) Cancel(ctx context.Context, db DB, id int64) (was string, blocking bool, err error) {
	err = s.q.cancel.queryRow(ctx, db, jobParams{ID: id}).Scan(&was, &blocking)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, ErrNoJob
	}
	return was, blocking, err
}

// Retry makes failed or cancelled job id pending again and returns its state before, and
// whether it is a reservation that was never committed, which is left as it is.
func (s *Store) Retry(ctx context.Context, db DB, id int64) (was string, uncommitted bool, err error) {
	err = s.q.retry.queryRow(ctx, db, jobParams{ID: id}).Scan(&was, &uncommitted)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, ErrNoJob
	}
	if isUniqueViolation(err, "jobs_unique_idx") {
		return "", false, ErrUniqueKeyHeld
	}
	return was, uncommitted, err
}

// Attempt is one ended attempt of a job, as kept in its history.
type Attempt struct {
	Attempt   int       `json:"attempt"`
	StartedAt time.Time `json:"started_at"`
	EndedAt   time.Time `json:"ended_at"`
	Client    string    `json:"client"`
	Outcome   string    `json:"outcome"` // the state the attempt left the job in
	Reason    string    `json:"reason"`
	Error     string    `json:"error,omitempty"`
	Stack     string    `json:"stack,omitempty"`
	// Data is the structured data of the attempt's error, as JSON; DataError says why data
	// it carried could not be recorded.
	Data      json.RawMessage `json:"data,omitempty"`
	DataError string          `json:"data_error,omitempty"`
}

// Record is a job's row.
type Record struct {
	ID             int64
	Kind           string
	Queue          string
	Args           []byte
	State          string
	Attempt        int
	MaxAttempts    int // zero until first claimed, when the producer did not choose
	CreatedAt      time.Time
	RunAt          time.Time
	AttemptedAt    time.Time
	AttemptedBy    string
	FinishedAt     time.Time
	LeaseExpiresAt time.Time
	Timeout        *time.Duration
	Attempts       []Attempt
	Scheduled      bool // run_at is in the future, on the database's clock
	Priority       int
	OrderKey       *string
	Blocking       bool
	UniqueKey      *string
	Schedule       string    // the periodic schedule that enqueued it, if any
	Slot           time.Time // the slot it was enqueued for
	Checkpoint     []byte
	Output         []byte
	Payload        []byte
	Metadata       []byte
	// The bytes each value takes as stored (pg_column_size), read also when the values
	// themselves are not.
	ArgsSize, CheckpointSize, OutputSize, PayloadSize, MetadataSize int
	HeldUntil, CommittedAt                                          time.Time // of a reservation
	Backoff                                                         *backoff.Policy
}

// GetJob reads job id.
func (s *Store) GetJob(ctx context.Context, db DB, id int64) (*Record, error) {
	r, err := scanRecord(s.q.getJob.queryRow(ctx, db, idParams{ID: id}))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrNoJob
	}
	if err != nil {
		return nil, fmt.Errorf("get job %d: %w", id, err)
	}
	return r, nil
}

// isUniqueViolation reports whether err is a unique violation of the named index.
func isUniqueViolation(err error, index string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == index
}
