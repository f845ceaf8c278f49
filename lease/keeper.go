// Package lease keeps the leases of a client's running jobs and rescues the jobs of
// clients that stopped keeping theirs.
//
// Claiming a job leases it to the claiming client until now + TTL. A [Keeper] renews the
// leases of every job its client is running in one statement per tick; that tick is also
// the client's heartbeat in the clients table. A job missing from a renewal was rescued,
// cancelled or deleted: its handler's context is cancelled at once with [ErrLostLease].
// While the database cannot be reached the Keeper keeps trying, and once a lease has
// certainly expired it cancels that handler itself with [ErrLeaseExpired]. A [Rescuer]
// retries running jobs whose lease expired, on every client, each exactly once.
//
// The package knows jobs but not relay's public API.
package lease

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayq/relay/internal/store"
)

// Causes with which the Keeper cancels a handler's context.
var (
	// ErrLostLease: a renewal found that the job is no longer this client's (rescued after
	// the lease expired, cancelled, or deleted). Its outcome must not be written.
	ErrLostLease = errors.New("relay: the job's lease was lost; another client may be running it")
	// ErrLeaseExpired: renewals failed for longer than the lease lasts, so the lease has
	// certainly expired and the job is up for rescue by another client.
	ErrLeaseExpired = errors.New("relay: the job's lease expired while the database was unreachable")
)

// KeeperConfig configures a [Keeper].
type KeeperConfig struct {
	Store    *store.Store
	DB       store.DB
	Client   store.ClientInfo // Client.Lease is the TTL every claim and renewal grants
	Interval time.Duration    // how often to renew; well under Client.Lease
	Logger   *slog.Logger
}

// Keeper renews the leases of a client's running jobs. Create it with [NewKeeper].
type Keeper struct {
	cfg    KeeperConfig
	paused atomic.Bool

	mu   sync.Mutex
	held map[int64]*lease
}

type lease struct {
	attempt int
	cancel  context.CancelCauseFunc
	expires time.Time // local time by which the lease has certainly expired unless renewed
}

// NewKeeper returns a Keeper for cfg.
func NewKeeper(cfg KeeperConfig) *Keeper {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Keeper{cfg: cfg, held: map[int64]*lease{}}
}

// Hold starts keeping the lease of attempt of job id, granted by a claim whose answer
// arrived no later than now. cancel cancels the job's handler.
func (k *Keeper) Hold(id int64, attempt int, cancel context.CancelCauseFunc) {
	k.mu.Lock()
	k.held[id] = &lease{attempt: attempt, cancel: cancel, expires: time.Now().Add(k.cfg.Client.Lease)}
	k.mu.Unlock()
}

// Release stops keeping the lease of job id: its handler has returned.
func (k *Keeper) Release(id int64) {
	k.mu.Lock()
	delete(k.held, id)
	k.mu.Unlock()
}

// Cancel cancels the handler of job id with cause, if this client is running it, and
// reports whether it was.
func (k *Keeper) Cancel(id int64, cause error) bool {
	k.mu.Lock()
	l, ok := k.held[id]
	delete(k.held, id)
	k.mu.Unlock()
	if ok {
		l.cancel(cause)
	}
	return ok
}

// Held is how many leases the Keeper holds.
func (k *Keeper) Held() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.held)
}

// Pause stops (true) or resumes (false) renewals, as if the client were cut off from the
// database. It exists for tests of partitioned workers.
func (k *Keeper) Pause(paused bool) { k.paused.Store(paused) }

// Run renews leases every Interval until ctx ends. The first renewal, which also records
// the client's first heartbeat, happens at once.
func (k *Keeper) Run(ctx context.Context) error {
	tick := time.NewTicker(k.cfg.Interval)
	defer tick.Stop()
	for {
		if !k.paused.Load() {
			k.renew(ctx)
		} else {
			k.expire(time.Now())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// renew runs one keep-alive tick.
func (k *Keeper) renew(ctx context.Context) {
	k.mu.Lock()
	held := make([]store.Held, 0, len(k.held))
	for id, l := range k.held {
		held = append(held, store.Held{ID: id, Attempt: l.attempt})
	}
	k.mu.Unlock()

	// A renewal must not outlive the lease it renews.
	renewCtx, cancel := context.WithTimeout(ctx, k.cfg.Client.Lease/2)
	defer cancel()
	kept, err := k.cfg.Store.RenewLeases(renewCtx, k.cfg.DB, k.cfg.Client, held)
	now := time.Now()
	if err != nil {
		if ctx.Err() == nil {
			k.cfg.Logger.Warn("relay: renewing job leases failed; retrying", "held", len(held), "error", err)
		}
		k.expire(now)
		return
	}
	k.mu.Lock()
	var lost []*lease
	for _, h := range held {
		l, ok := k.held[h.ID]
		switch {
		case !ok || l.attempt != h.Attempt:
			// Released (or re-held) while the renewal was in flight: not ours to judge.
		case kept[h.ID]:
			l.expires = now.Add(k.cfg.Client.Lease)
		default:
			delete(k.held, h.ID)
			lost = append(lost, l)
		}
	}
	k.mu.Unlock()
	for _, l := range lost {
		l.cancel(ErrLostLease)
	}
	if len(lost) > 0 {
		k.cfg.Logger.Warn("relay: lost the lease of running jobs; their handlers are cancelled", "jobs", len(lost))
	}
}

// expire cancels the handlers whose lease has certainly expired by now.
func (k *Keeper) expire(now time.Time) {
	k.mu.Lock()
	var expired []*lease
	for id, l := range k.held {
		if !now.Before(l.expires) {
			delete(k.held, id)
			expired = append(expired, l)
		}
	}
	k.mu.Unlock()
	for _, l := range expired {
		l.cancel(ErrLeaseExpired)
	}
	if len(expired) > 0 {
		k.cfg.Logger.Error("relay: leases expired while renewals failed; cancelling their handlers", "jobs", len(expired))
	}
}
