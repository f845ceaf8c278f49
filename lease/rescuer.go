package lease

import (
	"context"
	"log/slog"
	"time"

	"github.com/relayq/relay/backoff"
)

// rescueBatch bounds one rescue statement; a larger backlog is rescued in several.
const rescueBatch = 1000

// RescuerConfig configures a [Rescuer].
type RescuerConfig struct {
	// Rescue retries (or fails, when out of attempts) up to limit running jobs whose lease
	// has expired, and says when the next lease expires. Rescuers on many clients may run
	// it at once: each expired job must be rescued by exactly one of them. relay's client
	// implements it on its jobs table with one SKIP LOCKED statement.
	Rescue func(ctx context.Context, limit int) (Rescued, error)
	// MaxWait is the longest the rescuer sleeps between passes. It usually wakes sooner:
	// each pass learns when the next lease expires and sleeps until just after then.
	MaxWait time.Duration
	Logger  *slog.Logger
}

// Rescuer retries running jobs whose lease expired. Every client runs one; the rescue
// statement skips rows another rescuer holds, so each job is rescued exactly once.
type Rescuer struct {
	cfg       RescuerConfig
	recovered chan struct{} // room for one signal: see Recover
}

// NewRescuer returns a Rescuer for cfg.
func NewRescuer(cfg RescuerConfig) *Rescuer {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Rescuer{cfg: cfg, recovered: make(chan struct{}, 1)}
}

// Recover tells the Rescuer that the database answers again: it rescues at once, with its
// backoff reset, rather than at the end of its wait. Leases that expired while the
// database was away are then retried within moments of its return. It never blocks.
func (r *Rescuer) Recover() {
	select {
	case r.recovered <- struct{}{}:
	default:
	}
}

// Run rescues expired leases until ctx ends.
func (r *Rescuer) Run(ctx context.Context) error {
	retry := backoff.Policy{Initial: 100 * time.Millisecond, Multiplier: 2, Max: r.cfg.MaxWait, Jitter: 0.2}.Series()
	for {
		wait := r.cfg.MaxWait
		res, err := r.cfg.Rescue(ctx, rescueBatch)
		switch {
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			r.cfg.Logger.Warn("relay: rescuing expired leases failed; retrying", "error", err)
			wait = retry.Next()
		default:
			retry.Reset()
			r.logRescued(res)
			if len(res.IDs) == rescueBatch {
				wait = 0 // more may be waiting
			} else if res.HasNext {
				// Just past the expiry: the statement rescues leases that ended before now().
				wait = min(wait, max(res.NextIn, 0)+time.Millisecond)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		case <-r.recovered:
			t.Stop()
			retry.Reset()
		}
	}
}

// logRescued logs a rescue pass: each job on a line of its own, with its kind, queue and
// attempt, when the rescue function described them.
func (r *Rescuer) logRescued(res Rescued) {
	const msg = "relay: rescued a job whose client stopped renewing its lease"
	if len(res.Jobs) == 0 {
		if len(res.IDs) > 0 {
			r.cfg.Logger.Warn(msg, "jobs", res.IDs)
		}
		return
	}
	for _, j := range res.Jobs {
		r.cfg.Logger.Warn(msg, slog.Group("job", "id", j.ID, "kind", j.Kind, "queue", j.Queue, "attempt", j.Attempt),
			"failed", j.Failed)
	}
}
