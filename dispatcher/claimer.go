package dispatcher

import (
	"context"
	"time"
)

// Claimer is what a [Dispatcher] claims jobs through. relay's client implements it on
// its jobs table (one statement per claim, FOR UPDATE SKIP LOCKED), binding what every
// claim of one client shares: the database, the kinds the client runs and their default
// attempts, the client's name and the lease a claim grants. A dispatcher only says which
// queue, how many, and from where.
//
// Claim is called from the dispatcher's own goroutine, one claim at a time per
// dispatcher; the dispatchers of one client may call it concurrently.
type Claimer interface {
	Claim(ctx context.Context, r ClaimRequest) (Claimed, error)
}

// ClaimRequest is one claim a [Dispatcher] asks of its [Claimer].
type ClaimRequest struct {
	Queue string
	// Limit is the most jobs to claim: the dispatcher's free worker slots. Claim takes
	// the most urgent due jobs first.
	Limit int
	// From is where a plain queue's claim resumes: every due job before it was claimed
	// already or is locked by another client's claim. The zero Cursor is the queue's start.
	// A gated claim ignores it.
	From Cursor
	// Gated claims from a queue whose settings were last seen ordered or limited
	// ([QueueSettings.Gated]): under a lock on the queue and with no cursor, so that its
	// rules hold across every client.
	Gated bool
	// Busy says that the dispatcher works through a backlog (its last claim filled every
	// slot it had): it claims again as soon as a slot frees, without being woken, until a
	// claim finds fewer jobs than slots, and then calls [Config].Wait before it waits for a
	// wakeup. A Claimer may record it, so that enqueues need not wake a dispatcher that will
	// find their jobs anyway. Never set for a gated claim.
	Busy bool
}

// Claimed is the result of one claim.
type Claimed struct {
	// Jobs are the jobs claimed, each now leased to the client; the dispatcher runs each
	// with [Config].Run.
	Jobs []*Job
	// Last is the claim position of the last job claimed (zero if none).
	Last Cursor
	// NextIn is how long until the queue's earliest scheduled job is due; HasNext is false
	// when no job is scheduled or the claim filled every slot (then the dispatcher claims
	// again as soon as a slot frees and need not know).
	NextIn  time.Duration
	HasNext bool
	// Settings are the queue's settings as the claim found them. A claim made with the
	// wrong Gated for them should claim nothing: the dispatcher claims again in the mode
	// they call for.
	Settings QueueSettings
}

// QueueSettings are what decides how a queue is claimed from.
type QueueSettings struct {
	Ordered bool // its jobs start one at a time per order key
	Limited bool // it has a cluster-wide limit on running jobs
	Paused  bool
}

// Gated reports whether the queue must be claimed from with [ClaimRequest].Gated.
func (q QueueSettings) Gated() bool { return q.Ordered || q.Limited }

// Cursor is a position in a queue's claim order: higher priority first, then run_at, then
// id. The zero Cursor (zero RunAt) is before every job.
type Cursor struct {
	Priority int
	RunAt    time.Time
	ID       int64
}

// Before reports whether c comes before other in claim order.
func (c Cursor) Before(other Cursor) bool {
	switch {
	case c.RunAt.IsZero() || other.RunAt.IsZero():
		return c.RunAt.IsZero() && !other.RunAt.IsZero()
	case c.Priority != other.Priority:
		return c.Priority > other.Priority
	case !c.RunAt.Equal(other.RunAt):
		return c.RunAt.Before(other.RunAt)
	}
	return c.ID < other.ID
}
