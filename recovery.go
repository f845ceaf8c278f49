package relay

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayq/relay/dispatcher"
	"github.com/relayq/relay/internal/outcome"
	"github.com/relayq/relay/lease"
)

// recovery notices when the database answers again after the client's own statements
// found it unreachable, and then makes every service of the client that was backing off
// retry at once: the dispatchers' claims, the lease keeper, the rescuer, the outcome
// writer and the outcomes of CompleteTx attempts. Without it each would wait out its own
// backoff — up to seconds — after the database came back. The listener, which tries to
// reconnect a few times a second, is usually the first to get through.
//
// It does so in two steps: the claims first, which resume the work, and the rest once a
// claim has returned, or after claimsFirst. Each of these statements needs a connection,
// and the pools' connections died with the database, so each would open one at the same
// moment, in every client: a process for the server to start, which costs some
// milliseconds of CPU each (19 ms on the 2-core machine the chaos suite ran on), at the
// moment a database that has just started is busiest. One step after the other, the
// claim's new connection serves the rest, and the claims are not queued behind them.
type recovery struct {
	down        atomic.Bool
	claims      func() // the first step
	rest        func() // the second
	claimsFirst time.Duration
	done        <-chan struct{} // the client stops: no second step

	mu      sync.Mutex
	pending *time.Timer   // the second step is due: at the latest when it fires
	back    chan struct{} // closed, and replaced, at the second step
}

// claimsFirst is how long the second step waits at most for a claim to return: a client
// whose workers are all busy makes none.
const claimsFirst = 250 * time.Millisecond

func newRecovery(done <-chan struct{}, claims, rest func()) *recovery {
	return &recovery{claims: claims, rest: rest, claimsFirst: claimsFirst, done: done, back: make(chan struct{})}
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
	if r.pending == nil {
		r.pending = time.AfterFunc(r.claimsFirst, r.second)
	}
	r.mu.Unlock()
	r.claims()
}

// second takes the second step of a recovery, if one is due: once a claim has returned,
// or when pending fires.
func (r *recovery) second() {
	r.mu.Lock()
	if r.pending == nil {
		r.mu.Unlock()
		return
	}
	r.pending.Stop()
	r.pending = nil
	close(r.back)
	r.back = make(chan struct{})
	r.mu.Unlock()
	select {
	case <-r.done:
	default:
		r.rest()
	}
}

// wait returns a channel closed the next time the database answers again after failing
// (at the second step).
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
	if err == nil {
		o.rec.second()
	}
	return c, err
}

// maxRenewalWait bounds how long a renewal waits for an outcome batch in flight (see
// observedRenewer): longer, and a slow batch would put every lease at risk.
const maxRenewalWait = time.Second

// observedRenewer is a Renewer whose renewals tell recovery how they went, and which do not
// overlap the client's outcome batches unless one holds them up for longer than wait (see
// [outcome.Writer.SerializeWithin]): a retry written beside a renewal could be left locked
// by it, and skipped by the claim its wakeup sends.
type observedRenewer struct {
	lease.Renewer
	rec    *recovery
	writer *outcome.Writer
	wait   time.Duration
}

func (o observedRenewer) Renew(ctx context.Context, held []lease.Held, ttl time.Duration) (r lease.Renewal, err error) {
	o.writer.SerializeWithin(o.wait, func() { r, err = o.Renewer.Renew(ctx, held, ttl) })
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
