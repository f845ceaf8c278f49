package lease

import (
	"context"
	"log/slog"
	"time"

	"github.com/relayq/relay/backoff"
)

// RescuerConfig configures a [Rescuer].
type RescuerConfig struct {
	// Rescue retries (or fails, when out of attempts) up to limit running jobs whose lease
	// has expired, and says when the next lease expires. Rescuers on many clients may run
	// it at once: each expired job must be rescued by exactly one of them. relay's client
	// implements it on its jobs table with one SKIP LOCKED statement. A limit of 0 rescues
	// nothing: the pass only says when the next lease expires.
	Rescue func(ctx context.Context, limit int) (Rescued, error)
	// MaxWait is the longest the rescuer sleeps between passes. It usually wakes sooner:
	// each pass learns when the next lease expires and sleeps until just after then.
	MaxWait time.Duration
	// Grace is how long the rescuer waits, once the database answers again after its passes
	// failed, before it rescues anything. An outage of the database cuts off every client
	// at once, and leases expire meanwhile whose clients are alive, often with outcomes
	// written and waiting to be sent: they renew within moments of its return, and are
	// given Grace to do so. Without it, the first client back would retry every job the
	// others were running or had finished. Set it to at least the renewal interval; 0
	// rescues at once. A client that died during the outage has its jobs rescued Grace later.
	Grace  time.Duration
	Logger *slog.Logger
}

// Rescuer retries running jobs whose lease expired. Every client runs one; the rescue
// statement skips rows another rescuer holds, so each job is rescued exactly once.
type Rescuer struct {
	cfg       RescuerConfig
	recovered backoff.Signal // see Recover
}

// NewRescuer returns a Rescuer for cfg.
func NewRescuer(cfg RescuerConfig) *Rescuer {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Rescuer{cfg: cfg, recovered: backoff.NewSignal()}
}

// Recover tells the Rescuer that the database answers again: it looks at once, with its
// backoff reset, rather than at the end of its wait, and rescues [RescuerConfig].Grace
// after the database answered it. Leases that expired while the database was away and
// whose clients did not renew them meanwhile are then retried soon after its return. It
// never blocks.
func (r *Rescuer) Recover() { r.recovered.Send() }

// Run rescues expired leases until ctx ends.
func (r *Rescuer) Run(ctx context.Context) error {
	return sweep{
		run: func(ctx context.Context, limit int) (pass, error) {
			res, err := r.cfg.Rescue(ctx, limit)
			if err != nil {
				return pass{}, err
			}
			r.logRescued(res)
			return pass{full: len(res.IDs) == limit, hasNext: res.HasNext, nextIn: res.NextIn}, nil
		},
		maxWait: r.cfg.MaxWait, logger: r.cfg.Logger, failed: "relay: rescuing expired leases failed; retrying",
		recovered: r.recovered.C(), grace: r.cfg.Grace,
	}.loop(ctx)
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
