package store

import (
	"time"

	"github.com/relayq/relay/backoff"
)

// Job states as stored in the state column. A pending job whose run_at is in the future
// is what users see as scheduled; there is no separate state for it. A held job is a
// reservation not yet committed: never claimed, it keeps its ordered and unique keys.
const (
	StatePending   = "pending"
	StateRunning   = "running"
	StateSucceeded = "succeeded"
	StateFailed    = "failed"
	StateCancelled = "cancelled"
	StateHeld      = "held"
)

// NewJob is a job to insert.
type NewJob struct {
	Kind        string
	Queue       string
	Args        []byte    // JSON; nil with Payload
	RunAt       time.Time // zero: now, on the database's clock
	MaxAttempts int       // zero: the kind's default, filled in when first claimed
	Timeout     *time.Duration
	Priority    int
	OrderKey    *string  // its key in an ordered queue; nil: the queue-wide sequence
	UniqueKey   string   // empty: not unique
	UniqueIn    []string // the states in which UniqueKey is held; include pending and running
	Payload     []byte   // raw args instead of JSON ones, when not nil
	Metadata    []byte   // a JSON object; nil for none (NULL)
	// Hold, if positive, makes the job a reservation, held for this long from its insert.
	Hold    time.Duration
	Backoff *backoff.Policy // its own retry policy; nil: its kind's
}
