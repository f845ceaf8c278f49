package relay

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/relayq/relay/internal/store"
)

// KeepForever, as a retention, keeps jobs (or clients' rows) forever.
const KeepForever time.Duration = -1

// Defaults of [Config].Retention and ClientRetention.
const (
	DefaultSucceededRetention = 24 * time.Hour
	DefaultFailedRetention    = 7 * 24 * time.Hour
	DefaultCancelledRetention = 24 * time.Hour
	DefaultClientRetention    = 24 * time.Hour
)

// Retention says how long finished jobs are kept, by state, counted from when they
// finished. A zero field takes its default: [DefaultSucceededRetention] (24 h),
// [DefaultFailedRetention] (7 days: long enough to investigate a failure after a
// weekend), [DefaultCancelledRetention] (24 h); [KeepForever] keeps them.
type Retention struct {
	Succeeded, Failed, Cancelled time.Duration
}

// keepOf is how long the finished jobs of state are kept under r.
func (r Retention) keepOf(state string) time.Duration {
	switch state {
	case store.StateSucceeded:
		return r.Succeeded
	case store.StateFailed:
		return r.Failed
	}
	return r.Cancelled
}

// over is r with its zero fields taken from base.
func (r Retention) over(base Retention) Retention {
	for _, f := range []struct{ field, from *time.Duration }{
		{&r.Succeeded, &base.Succeeded}, {&r.Failed, &base.Failed}, {&r.Cancelled, &base.Cancelled},
	} {
		if *f.field == 0 {
			*f.field = *f.from
		}
	}
	return r
}

// validate refuses a negative retention other than KeepForever.
func (r Retention) validate(what string) error {
	for _, f := range []struct {
		name string
		d    time.Duration
	}{{"Succeeded", r.Succeeded}, {"Failed", r.Failed}, {"Cancelled", r.Cancelled}} {
		if err := checkKeep(what+"."+f.name, f.d); err != nil {
			return err
		}
	}
	return nil
}

func checkKeep(what string, d time.Duration) error {
	if d < 0 && d != KeepForever {
		return fmt.Errorf("%w: %s is negative (%v); use relay.KeepForever to keep forever", ErrInvalidConfig, what, d)
	}
	return nil
}

var finishedStates = []string{store.StateSucceeded, store.StateFailed, store.StateCancelled}

// retentionRules are the rules of cfg's retention as the prune statement takes them:
// each state's, then each queue's own, or none if every job is kept forever.
func retentionRules(cfg Config) []store.KeepRule {
	var rules []store.KeepRule
	finite := false
	add := func(queue string, r Retention) {
		for _, st := range finishedStates {
			keep := r.keepOf(st)
			finite = finite || keep >= 0
			rules = append(rules, store.KeepRule{State: st, Queue: queue, Keep: keep})
		}
	}
	add("", cfg.Retention)
	for queue, r := range cfg.QueueRetention {
		add(queue, r)
	}
	if !finite {
		return nil
	}
	return rules
}

// pruneBatch is the most jobs one prune statement deletes: its locks (finished rows only)
// and its WAL are bounded by it.
const pruneBatch = 1000

// pruner deletes the client's share of expired finished jobs and long-gone clients: a
// background service of every client. The clients take turns by an advisory lock that a
// prune only tries, so no two delete at once and none waits for another.
type pruner struct {
	store      *store.Store
	db         store.DB
	rules      []store.KeepRule // nil: keep every job
	clientKeep time.Duration    // KeepForever: keep every client's row
	every      time.Duration    // between prunes that found nothing more to delete
	logger     *slog.Logger
	deleted    atomic.Int64 // jobs deleted so far
}

// pruneEvery is how often a client prunes: a tenth of the shortest retention, from a
// second to a minute. A job is then deleted at most that long after its time is up.
func pruneEvery(rules []store.KeepRule, clientKeep time.Duration) time.Duration {
	shortest := time.Duration(-1)
	for _, r := range rules {
		if r.Keep >= 0 && (shortest < 0 || r.Keep < shortest) {
			shortest = r.Keep
		}
	}
	if clientKeep >= 0 && (shortest < 0 || clientKeep < shortest) {
		shortest = clientKeep
	}
	return min(max(shortest/10, time.Second), time.Minute)
}

// Run prunes at once, then every p.every, until ctx ends.
func (p *pruner) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
		}
		if _, err := p.prune(ctx); err != nil && ctx.Err() == nil {
			p.logger.Warn("relay: could not delete expired jobs", "error", err)
		}
		timer.Reset(p.every)
	}
}

// prune makes a pass over the ranges of expired jobs, deleting a batch at a time, until
// none is left or another client is pruning (busy), then deletes the rows of clients
// gone for longer than their retention.
func (p *pruner) prune(ctx context.Context) (busy bool, err error) {
	var deleted int64
	began := time.Now()
	defer func() {
		p.deleted.Add(deleted)
		if deleted > 0 {
			p.logger.Debug("relay: deleted expired jobs", "jobs", deleted, "took", time.Since(began))
		}
	}()
	var ranges []*store.Range
	if p.rules != nil {
		var err error
		if ranges, err = p.store.Expired(ctx, p.db, p.rules); err != nil {
			return false, err
		}
	}
	for len(ranges) > 0 {
		r, err := p.store.Prune(ctx, p.db, p.rules, pruneBatch, ranges)
		if err != nil {
			return false, err
		}
		deleted += r.Total()
		if r.Busy || r.Total() < pruneBatch {
			busy = r.Busy
			break
		}
	}
	if p.clientKeep >= 0 {
		if _, err := p.store.PruneClients(ctx, p.db, p.clientKeep); err != nil {
			return busy, err
		}
	}
	return busy, nil
}
