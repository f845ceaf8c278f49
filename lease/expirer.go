package lease

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// A reservation is a job its producer holds a place for until a deadline: it never runs
// unless the producer commits it in time. An [Expirer] ends those whose deadline passed,
// on every client, each exactly once, within milliseconds of the deadline.

// ExpiredJob is one reservation an expiry pass ended.
type ExpiredJob struct {
	ID          int64
	Kind, Queue string
	Deadline    time.Time
}

// Expired is the result of one expiry pass (see [ExpirerConfig].Expire).
type Expired struct {
	Jobs []ExpiredJob
	// HasNext says whether a reservation's deadline is ahead: Next is the earliest, on the
	// database's clock, and NextIn how long from now that is.
	HasNext bool
	Next    time.Time
	NextIn  time.Duration
	// Lagging is true when a lapsed reservation was locked (its commit under way, or
	// another client expiring it) and left as it was: the expirer looks again soon.
	Lagging bool
}

// ExpirerConfig configures an [Expirer].
type ExpirerConfig struct {
	// Expire ends up to limit reservations whose deadline has passed, and says when the
	// next deadline passes. Expirers on many clients may run it at once: each lapsed
	// reservation must be ended by exactly one of them. relay's client implements it on
	// its jobs table with one SKIP LOCKED statement.
	Expire func(ctx context.Context, limit int) (Expired, error)
	// MaxWait is the longest the expirer sleeps between passes. It usually wakes sooner:
	// each pass learns the next deadline, and [Expirer.Notify] tells it of earlier ones.
	MaxWait time.Duration
	Logger  *slog.Logger
}

// Expirer ends lapsed reservations. Every client runs one, and sleeps until the earliest
// deadline it knows of. A new reservation whose deadline is earlier than that must be
// announced to it with Notify (relay's producers do, by a NOTIFY every client's listener
// receives), and so must a lost announcement (Notify with the zero time, when the
// listener reconnects).
type Expirer struct {
	cfg ExpirerConfig

	mu       sync.Mutex
	notified time.Time // the earliest deadline announced since the loop last looked
	any      bool      // an announcement came; with a zero notified: look in any case
	signal   chan struct{}
}

// NewExpirer returns an Expirer for cfg.
func NewExpirer(cfg ExpirerConfig) *Expirer {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Expirer{cfg: cfg, signal: make(chan struct{}, 1)}
}

// Notify tells the expirer of a reservation whose deadline is at deadline (on the
// database's clock): if it sleeps until later, it looks at once. The zero time makes it
// look at once in any case. Notify never blocks.
func (e *Expirer) Notify(deadline time.Time) {
	e.mu.Lock()
	if !e.any || deadline.IsZero() || (!e.notified.IsZero() && deadline.Before(e.notified)) {
		e.notified = deadline
	}
	e.any = true
	e.mu.Unlock()
	select {
	case e.signal <- struct{}{}:
	default:
	}
}

// sooner takes the announcements made since the last look and reports whether one is
// earlier than next, the deadline the loop sleeps for.
func (e *Expirer) sooner(next time.Time, hasNext bool) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	notified, any := e.notified, e.any
	e.notified, e.any = time.Time{}, false
	return any && (notified.IsZero() || !hasNext || notified.Before(next))
}

// Run ends lapsed reservations until ctx ends.
func (e *Expirer) Run(ctx context.Context) error {
	return sweep{
		run: func(ctx context.Context, limit int) (pass, error) {
			// Announcements made before this pass are covered by it; those that arrive while
			// it runs are looked at against what it finds.
			e.sooner(time.Time{}, false)
			res, err := e.cfg.Expire(ctx, limit)
			if err != nil {
				return pass{}, err
			}
			for _, j := range res.Jobs {
				e.cfg.Logger.Info("relay: a reservation expired uncommitted; it will not run",
					slog.Group("job", "id", j.ID, "kind", j.Kind, "queue", j.Queue), "deadline", j.Deadline)
			}
			return pass{full: len(res.Jobs) == limit, hasNext: res.HasNext, next: res.Next, nextIn: res.NextIn,
				lagging: res.Lagging}, nil
		},
		maxWait: e.cfg.MaxWait, logger: e.cfg.Logger, failed: "relay: expiring lapsed reservations failed; retrying",
		wake: e.signal, sooner: e.sooner,
	}.loop(ctx)
}
