package relay

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayq/relay/dispatcher"
	"github.com/relayq/relay/lease"
)

// recovery notices when the database answers again after the client's own statements
// found it unreachable, and then makes every service of the client that was backing off
// retry at once: the dispatchers' claims, the lease keeper, the rescuer, the outcome
// writer and the outcomes of CompleteTx attempts. Without it each would wait out its own
// backoff — up to seconds — after the database came back. The listener, which tries to
// reconnect a few times a second, is usually the first to get through.
type recovery struct {
	down   atomic.Bool
	onBack func()

	mu   sync.Mutex
	back chan struct{} // closed, and replaced, when the database answers again
}

func newRecovery(onBack func()) *recovery {
	return &recovery{onBack: onBack, back: make(chan struct{})}
}

// observe records how one of the client's statements went.
func (r *recovery) observe(err error) {
	switch {
	case err == nil:
		r.worked()
	case unreachable(err):
		r.down.Store(true)
	}
}

// worked records that a statement reached the database.
func (r *recovery) worked() {
	if !r.down.CompareAndSwap(true, false) {
		return
	}
	r.mu.Lock()
	close(r.back)
	r.back = make(chan struct{})
	r.mu.Unlock()
	r.onBack()
}

// wait returns a channel closed the next time the database answers again after failing.
func (r *recovery) wait() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.back
}

// observedClaimer is a Claimer whose claims tell recovery how they went.
type observedClaimer struct {
	dispatcher.Claimer
	rec *recovery
}

func (o observedClaimer) Claim(ctx context.Context, r dispatcher.ClaimRequest) (dispatcher.Claimed, error) {
	c, err := o.Claimer.Claim(ctx, r)
	o.rec.observe(err)
	return c, err
}

// observedRenewer is a Renewer whose renewals tell recovery how they went.
type observedRenewer struct {
	lease.Renewer
	rec *recovery
}

func (o observedRenewer) Renew(ctx context.Context, held []lease.Held, ttl time.Duration) (lease.Renewal, error) {
	r, err := o.Renewer.Renew(ctx, held, ttl)
	o.rec.observe(err)
	return r, err
}

// observed wraps a sweep's pass (a rescue, an expiry) so that it tells r how it went.
func observed[T any](r *recovery, pass func(ctx context.Context, limit int) (T, error)) func(context.Context, int) (T, error) {
	return func(ctx context.Context, limit int) (T, error) {
		res, err := pass(ctx, limit)
		r.observe(err)
		return res, err
	}
}
