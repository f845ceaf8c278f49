package lease

import (
	"context"
	"log/slog"
	"time"

	"github.com/relayq/relay/backoff"
)

// sweepBatch bounds one pass of a sweep; a larger backlog is worked through in several.
const sweepBatch = 1000

// pass is what one pass of a sweep found: whether it worked a full batch (more may be
// due), and when the next deadline comes.
type pass struct {
	full bool
	// hasNext says whether a deadline is ahead; next is it, on the database's clock, and
	// nextIn how long from now that is.
	hasNext bool
	next    time.Time
	nextIn  time.Duration
	// lagging: something was due but locked by another transaction, and left: look again
	// soon, not at the next deadline.
	lagging bool
}

// sweep is the loop of the rescuer and the expirer: every client runs one of each, and
// each pass acts, with SKIP LOCKED, on what has come due — expired leases, lapsed
// reservations — so that the clients share the work without a leader and act on each
// thing once. Between passes it sleeps until just after the next deadline the last pass
// reported, at most maxWait; a failed pass is retried with backoff.
type sweep struct {
	run     func(ctx context.Context, limit int) (pass, error)
	maxWait time.Duration
	logger  *slog.Logger
	failed  string // the warning logged when a pass fails
	// wake, if not nil, signals that a deadline may have come closer than the one the loop
	// sleeps for; sooner, called then with that deadline (and whether there is one), says
	// whether to pass at once.
	wake   <-chan struct{}
	sooner func(next time.Time, hasNext bool) bool
	// recovered, if not nil, signals that the database answers again: pass at once, with
	// the backoff of failed passes reset.
	recovered <-chan struct{}
	// grace, if positive, is how long the sweep holds back once the database answers again
	// after a failed pass. Until a pass succeeds, its passes have a limit of 0: they act on
	// nothing, and only tell whether the database is back. Then it waits grace before it
	// acts. Other clients that lost the database as this one did are back within moments
	// too, and get that long to renew what they hold before it counts as lost.
	grace time.Duration
}

func (s sweep) loop(ctx context.Context) error {
	retry := backoff.Policy{Initial: 100 * time.Millisecond, Multiplier: 2, Max: s.maxWait, Jitter: 0.2}.Series()
	// A thing due but locked is usually being acted on (a commit under way, another client's
	// pass): look again within milliseconds, then less and less often.
	lag := backoff.Policy{Initial: 10 * time.Millisecond, Multiplier: 2, Max: s.maxWait}.Series()
	away := false // a pass failed, and none has succeeded since
	for {
		wait := s.maxWait
		limit := sweepBatch
		if away && s.grace > 0 {
			limit = 0
		}
		p, err := s.run(ctx, limit)
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			s.logger.Warn(s.failed, "error", err)
			wait = retry.Next()
			away = true
		case limit == 0:
			away = false
			retry.Reset()
			if s.holdBack(ctx) != nil {
				return ctx.Err()
			}
			continue
		default:
			retry.Reset()
			if p.full {
				wait = 0 // more may be waiting
			} else if p.hasNext {
				// Just past the deadline: the passes act on what came due before now().
				wait = min(wait, max(p.nextIn, 0)+time.Millisecond)
			}
			if !p.lagging {
				lag.Reset()
			} else if wait > 0 {
				wait = min(wait, lag.Next())
			}
		}
		switch s.sleep(ctx, wait, p) {
		case slept:
		case recovered:
			retry.Reset()
		default:
			return ctx.Err()
		}
	}
}

// holdBack waits grace, whatever signals come meanwhile: the database answering again is
// what started it.
func (s sweep) holdBack(ctx context.Context) error {
	t := time.NewTimer(s.grace)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	}
	select {
	case <-s.recovered: // sent for the return the grace was for
	default:
	}
	return nil
}

// How a sweep's sleep ended.
const (
	cancelled = iota // ctx ended
	slept            // the wait ended, or a sooner deadline was announced
	recovered        // the database answers again
)

// sleep waits d, or less if woken for a deadline sooner than the one of p or told the
// database is back, and says which.
func (s sweep) sleep(ctx context.Context, d time.Duration, p pass) int {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return cancelled
		case <-t.C:
			return slept
		case <-s.recovered: // a nil channel: never
			return recovered
		case <-s.wake: // a nil channel: never
			if s.sooner(p.next, p.hasNext) {
				return slept
			}
		}
	}
}
