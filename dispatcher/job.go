package dispatcher

import (
	"time"

	"github.com/relayq/relay/backoff"
)

// Job is a claimed job: what a [Claimer] returns and [Config].Run runs. The dispatcher
// itself reads none of it; the fields are those relay's handlers need.
type Job struct {
	ID          int64
	Kind        string
	Queue       string
	Args        []byte // JSON
	Attempt     int    // 1 for the first attempt
	MaxAttempts int
	CreatedAt   time.Time
	RunAt       time.Time // when this attempt was due
	AttemptedAt time.Time // when this attempt was claimed
	// Timeout is the job's own handler timeout; HasTimeout is false when the job defers
	// to its kind's or queue's setting.
	Timeout    time.Duration
	HasTimeout bool
	Priority   int
	Checkpoint []byte // JSON saved by an earlier attempt; nil if none
	Payload    []byte // raw args of a job enqueued with []byte args; nil otherwise
	Metadata   []byte // a JSON object of strings set when it was enqueued; nil if none
	// Backoff is the job's own retry policy, given when it was enqueued; nil for its kind's.
	Backoff *backoff.Policy
	// Schedule is the periodic schedule that enqueued the job, and Slot the time it was
	// enqueued for; "" and zero for a job enqueued otherwise.
	Schedule string
	Slot     time.Time
	// HandedOff says that the job's producer leased it to this client (a hand-off) and
	// that the client has yet to acknowledge it, which it does as the job runs (or its
	// outcome does, for a job that ends at once).
	HandedOff bool
}
