package lease

import (
	"context"
	"time"
)

// Renewer is what a [Keeper] renews leases through. relay's client implements it on its
// jobs table, binding the database and the client whose leases they are (its name, and
// the queues and kinds its heartbeat reports).
type Renewer interface {
	// Renew records the client's heartbeat and extends by ttl the leases of the attempts
	// in held that still hold their jobs, in one go. It reports which attempts still hold
	// their jobs, and of those which leases it extended: a held attempt left unextended
	// (its job was busy, say a handler's own transaction held it) is renewed on its own
	// with RenewLocked. An attempt it reports not held has lost its job.
	Renew(ctx context.Context, held []Held, ttl time.Duration) (Renewal, error)
	// RenewLocked extends by ttl the lease of attempt h on its own, waiting up to wait for
	// whatever keeps the job busy. It reports whether the attempt still holds the job; a
	// wait that runs out is an error, and the lease is left as it was.
	RenewLocked(ctx context.Context, h Held, ttl, wait time.Duration) (held bool, err error)
}

// Held is an attempt of a job whose lease a client holds.
type Held struct {
	ID      int64
	Attempt int
}

// Renewal is the result of [Renewer].Renew, by job id: the attempts that still hold their
// jobs, and of those the ones whose lease was extended.
type Renewal struct {
	Held, Renewed map[int64]bool
	// Cancelled are attempts of held whose job was cancelled while they ran: their handlers
	// are cancelled with [ErrCancelled], not [ErrLostLease], when the wakeup that tells the
	// client so did not come first (its listener was away, say).
	Cancelled map[int64]bool
	// Lapsed is true when the client's previous heartbeat had expired before this one (or
	// the client was marked stopped): other clients took it for dead meanwhile.
	Lapsed bool
}

// RescuedJob is one job a rescue pass retried, or failed when it was out of attempts.
type RescuedJob struct {
	ID          int64
	Kind, Queue string
	Attempt     int       // the attempt whose lease was lost
	Failed      bool      // it had no attempts left: failed for good
	StartedAt   time.Time // when that attempt was claimed
	DueAt       time.Time // when that attempt was due
}

// Rescued is the result of one rescue pass (see [RescuerConfig].Rescue).
type Rescued struct {
	IDs []int64 // the jobs rescued
	// Jobs, if the rescue function knows them, describe the rescued jobs, aligned with IDs:
	// the rescuer then logs each with its kind, queue and attempt.
	Jobs []RescuedJob
	// NextIn is how long until the next lease expires; HasNext is false when no job is
	// running.
	NextIn  time.Duration
	HasNext bool
}
