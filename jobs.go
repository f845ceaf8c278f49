package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/internal/store"
)

// Errors of [Cancel], [Retry], [GetJob] and [DeleteJob].
var (
	// ErrJobNotFound: no job has the id (in that schema).
	ErrJobNotFound = errors.New("relay: job not found")
	// ErrJobFinished: Cancel of a job that has already succeeded, failed or been cancelled.
	ErrJobFinished = errors.New("relay: job has already finished")
	// ErrJobNotRetryable: Retry of a job that is neither failed nor cancelled.
	ErrJobNotRetryable = errors.New("relay: only a failed or cancelled job can be retried")
)

// JobOption changes what [Cancel], [Retry], [GetJob] and the queue functions ([SetQueue],
// [PauseQueue], [ResumeQueue], [GetQueue]) work on: [Schema].
type JobOption interface{ applyJob(*jobOptions) }

type jobOptions struct{ schema string }

// Cancel cancels job id. A pending, scheduled or held job will never run (cancelling a
// reservation gives it up at once, without waiting for its deadline); a running job ends
// cancelled at once and the client running it cancels its handler's context (with cause
// [ErrCancelled]) within milliseconds, by NOTIFY, or at its next lease renewal if it missed
// that. A failed job that blocks its key of an ordered queue is cancelled too, which lets
// the jobs behind it run (see [SetQueue]).
// Cancelling any other job that has finished returns an error wrapping [ErrJobFinished];
// an unknown id, [ErrJobNotFound].
func Cancel(ctx context.Context, db DB, id int64, opts ...JobOption) error {
	if err := checkDB(db, "Cancel"); err != nil {
		return err
	}
	s, err := jobStore(opts)
	if err != nil {
		return err
	}
	was, blocking, err := s.Cancel(ctx, db, id)
	switch {
	case errors.Is(err, store.ErrNoJob):
		return fmt.Errorf("%w: %d", ErrJobNotFound, id)
	case err != nil:
		return fmt.Errorf("relay: cancel job %d: %w", id, err)
	case was != store.StatePending && was != store.StateRunning && was != store.StateHeld && !blocking:
		return fmt.Errorf("%w: job %d is %s", ErrJobFinished, id, was)
	}
	return nil
}

// Retry puts a failed or cancelled job back to run now. A job that had used up its
// attempts is given one more. Any other state returns an error wrapping
// [ErrJobNotRetryable], and so does a reservation that was never committed ([Reserved]):
// it expired or was cancelled while held, and its producer decided it must not run. An
// unknown id returns [ErrJobNotFound].
func Retry(ctx context.Context, db DB, id int64, opts ...JobOption) error {
	if err := checkDB(db, "Retry"); err != nil {
		return err
	}
	s, err := jobStore(opts)
	if err != nil {
		return err
	}
	was, uncommitted, err := s.Retry(ctx, db, id)
	switch {
	case errors.Is(err, store.ErrNoJob):
		return fmt.Errorf("%w: %d", ErrJobNotFound, id)
	case errors.Is(err, store.ErrUniqueKeyHeld):
		return fmt.Errorf("%w: job %d", ErrUniqueKeyHeld, id)
	case err != nil:
		return fmt.Errorf("relay: retry job %d: %w", id, err)
	case was != store.StateFailed && was != store.StateCancelled:
		return fmt.Errorf("%w: job %d is %s", ErrJobNotRetryable, id, was)
	case uncommitted:
		return fmt.Errorf("%w: job %d is a reservation that was never committed; enqueue the work anew if it is to run", ErrJobNotRetryable, id)
	}
	return nil
}

// JobState is the state of a job as [GetJob] reports it.
type JobState string

// Job states. Scheduled is a pending job whose time has not come. Held is a reservation
// ([Reserved]) not yet committed ([CommitJobs]): it keeps its place but never runs until it
// is committed, and is cancelled (reason [ReasonExpired]) if its deadline passes first.
const (
	StatePending   JobState = "pending"
	StateScheduled JobState = "scheduled"
	StateRunning   JobState = "running"
	StateSucceeded JobState = "succeeded"
	StateFailed    JobState = "failed"
	StateCancelled JobState = "cancelled"
	StateHeld      JobState = "held"
)

// Failure reasons recorded in a job's [Attempt] history.
const (
	ReasonError     = store.ReasonError     // the handler returned an error
	ReasonPanic     = store.ReasonPanic     // the handler panicked (Attempt.Stack has the stack)
	ReasonTimeout   = store.ReasonTimeout   // the handler ran past its timeout
	ReasonLostLease = store.ReasonLostLease // its client stopped renewing the lease: died or cut off
	ReasonDiscarded = store.ReasonDiscarded // the handler returned Discard(err)
	ReasonSnoozed   = store.ReasonSnoozed   // the handler returned Snooze(d)
	ReasonDecode    = store.ReasonDecode    // the args did not decode into the handler's type
	ReasonCancelled = store.ReasonCancelled // Cancel was called while it ran
	ReasonShutdown  = store.ReasonShutdown  // its client stopped before the handler returned
	// ReasonInfrastructure: the handler's database connection failed, not the handler: its
	// error says PostgreSQL ended or refused the session (SQLSTATE class 08 or 57, but
	// 57014), or a connection could not be made or was closed. Retried at once, and not
	// counted against MaxAttempts (see the README's "Delivery semantics").
	ReasonInfrastructure = store.ReasonInfrastructure
	// ReasonExpired: a reservation's deadline passed before it was committed. Its entry in
	// the history is not an attempt (Number 0: the job never ran); Client is the client
	// that expired it.
	ReasonExpired = store.ReasonExpired
)

// MaxAttemptHistory is how many ended attempts a job's history keeps, the last ones: a job
// that snoozes again and again (its attempt given back each time) would otherwise gain an
// entry at every snooze, without end.
const MaxAttemptHistory = 100

// MaxAttemptText bounds the error text and the stack an attempt's history entry keeps, in
// bytes; what is cut is replaced by a note of how much. One error that carried a whole
// response body must not make every later outcome of its job rewrite megabytes.
const MaxAttemptText = 16 << 10

// Attempt is one attempt of a job, from its history.
type Attempt struct {
	Number    int
	StartedAt time.Time
	EndedAt   time.Time
	Client    string // the client that ran it
	// Outcome is the state the attempt left the job in: "succeeded", "failed",
	// "cancelled", or "pending" when it is to run again.
	Outcome string
	Reason  string // one of the Reason constants; empty for a success
	// Error is the text of the handler's error, and Stack the stack of a panic, each cut
	// to [MaxAttemptText] bytes.
	Error string
	Stack string
	// Data is the structured data the handler's error carried ([ErrorData], [DataError]),
	// as JSON; nil if none. [Attempt.DecodeData] decodes it into the type the handler
	// recorded.
	Data json.RawMessage
	// DataError says why the data the error carried was not recorded (it did not encode
	// as JSON, or was over [Config].MaxErrorDataSize); the attempt's outcome was recorded
	// all the same.
	DataError string
}

// JobRecord is a job as stored, with its history.
type JobRecord struct {
	ID          int64
	Kind        string
	Queue       string
	Args        json.RawMessage
	State       JobState
	Attempt     int // attempts started so far
	MaxAttempts int // zero until first claimed, if the producer did not choose
	CreatedAt   time.Time
	ScheduledAt time.Time // when the current or next attempt is due
	AttemptedAt time.Time // when the latest attempt started (zero if none)
	AttemptedBy string    // the client that ran the latest attempt
	FinishedAt  time.Time // zero until the job succeeded, failed or was cancelled
	// LeaseExpiresAt is when a running job's lease runs out unless its client renews it.
	LeaseExpiresAt time.Time
	Timeout        *time.Duration // the job's own timeout, if it was enqueued with one
	// Attempts holds the ended attempts, oldest first: every one that did not succeed, or
	// the last [MaxAttemptHistory] of them for a job that had more (each has its Number),
	// then its success, if it succeeded. A running attempt is not in it yet.
	Attempts []Attempt
	Priority int
	// OrderKey is the job's key in an ordered queue ("" for the queue-wide sequence); nil
	// when the queue was not ordered.
	OrderKey *string
	// Blocking is true for a failed job that holds its ordered key: the jobs behind it
	// wait until it is retried or cancelled.
	Blocking  bool
	UniqueKey string // its [Unique] key, if any
	// Schedule is the periodic schedule that enqueued the job, and Slot the time it was
	// enqueued for (see [Job].Slot); "" and zero for any other job.
	Schedule string
	Slot     time.Time
	// Output is what the handler of a succeeded job returned or recorded, as JSON; nil if
	// none (see [Job.SetOutput], [HandleWithOutput]).
	Output json.RawMessage
	// Checkpoint is the progress last saved with [Checkpoint], as JSON; nil if none.
	Checkpoint json.RawMessage
	// Payload holds the raw args of a job enqueued with []byte args (Args is then null).
	Payload []byte
	// Metadata is what the job was enqueued with ([Metadata], [EnqueueMiddleware]); nil if
	// none. [ListJobs] reads it only with ListFilter.WithArgs.
	Metadata map[string]string
	// Sizes are the bytes Args, Checkpoint, Output, Payload and Metadata take in the table.
	// [ListJobs] reports them also when it leaves the values themselves out.
	Sizes ValueSizes
	// HeldUntil is the deadline of a job enqueued as a reservation ([Reserved]): while it
	// is held, when it expires unless committed ([CommitJobs]) or extended
	// ([ExtendReservation]); afterwards, the last deadline it had. Zero for other jobs.
	HeldUntil time.Time
	// CommittedAt is when a reservation was committed; zero while it is held, for one that
	// expired or was cancelled uncommitted, and for other jobs.
	CommittedAt time.Time
	// Backoff is the job's own retry policy ([Backoff] given to [Enqueue]); nil if it
	// retries by its kind's.
	Backoff *backoff.Policy
}

// ValueSizes are the bytes a job's values take as PostgreSQL stores them, 0 for none: JSON
// in its binary jsonb form, and large values compressed, so they tell large values from
// small ones rather than give the length of the JSON text.
type ValueSizes struct {
	Args, Checkpoint, Output, Payload, Metadata int
}

// GetJob returns job id with its attempt history, or an error wrapping [ErrJobNotFound].
func GetJob(ctx context.Context, db DB, id int64, opts ...JobOption) (*JobRecord, error) {
	if err := checkDB(db, "GetJob"); err != nil {
		return nil, err
	}
	s, err := jobStore(opts)
	if err != nil {
		return nil, err
	}
	r, err := s.GetJob(ctx, db, id)
	if errors.Is(err, store.ErrNoJob) {
		return nil, fmt.Errorf("%w: %d", ErrJobNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	return newJobRecord(r), nil
}

// newJobRecord converts a stored job for [GetJob] and [ListJobs].
func newJobRecord(r *store.Record) *JobRecord {
	rec := &JobRecord{
		ID: r.ID, Kind: r.Kind, Queue: r.Queue, Args: r.Args, State: JobState(r.State),
		Attempt: r.Attempt, MaxAttempts: r.MaxAttempts, CreatedAt: r.CreatedAt, ScheduledAt: r.RunAt,
		AttemptedAt: r.AttemptedAt, AttemptedBy: r.AttemptedBy, FinishedAt: r.FinishedAt,
		LeaseExpiresAt: r.LeaseExpiresAt, Timeout: r.Timeout,
		Priority: r.Priority, OrderKey: r.OrderKey, Blocking: r.Blocking, Schedule: r.Schedule, Slot: r.Slot,
		Output: r.Output, Checkpoint: r.Checkpoint, Payload: r.Payload, Metadata: decodeMetadata(r.Metadata),
		Sizes: ValueSizes{
			Args: r.ArgsSize, Checkpoint: r.CheckpointSize, Output: r.OutputSize, Payload: r.PayloadSize, Metadata: r.MetadataSize,
		},
		HeldUntil: r.HeldUntil, CommittedAt: r.CommittedAt, Backoff: r.Backoff,
	}
	if r.UniqueKey != nil {
		rec.UniqueKey = *r.UniqueKey
	}
	if rec.State == StatePending && r.Scheduled {
		rec.State = StateScheduled
	}
	for _, a := range r.Attempts {
		rec.Attempts = append(rec.Attempts, Attempt{
			Number: a.Attempt, StartedAt: a.StartedAt, EndedAt: a.EndedAt, Client: a.Client,
			Outcome: a.Outcome, Reason: a.Reason, Error: a.Error, Stack: a.Stack, Data: a.Data, DataError: a.DataError,
		})
	}
	if rec.State == StateSucceeded {
		// A success is the row itself, not an entry of the history: add it back.
		rec.Attempts = append(rec.Attempts, Attempt{
			Number: r.Attempt, StartedAt: r.AttemptedAt, EndedAt: r.FinishedAt, Client: r.AttemptedBy,
			Outcome: string(StateSucceeded),
		})
	}
	return rec
}

func jobStore(opts []JobOption) (*store.Store, error) {
	o := jobOptions{schema: DefaultSchema}
	for _, opt := range opts {
		opt.applyJob(&o)
	}
	s, err := store.For(o.schema)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	return s, nil
}
