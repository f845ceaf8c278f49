package relay

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// recoveryBundle is a recovery whose two steps are recorded, of a client that stops with
// stop.
type recoveryBundle struct {
	*recovery
	claims, rest chan struct{}
	stop         context.CancelFunc
}

func newRecoveryBundle(t *testing.T, claimsFirst time.Duration) *recoveryBundle {
	ctx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	b := &recoveryBundle{claims: make(chan struct{}, 4), rest: make(chan struct{}, 4), stop: stop}
	b.recovery = newRecovery(ctx.Done(),
		func() { b.claims <- struct{}{} },
		func() { b.rest <- struct{}{} })
	b.claimsFirst = claimsFirst
	b.observe(syscall.ECONNREFUSED) // the database is away
	return b
}

func (b *recoveryBundle) await(t *testing.T, step <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-step:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s never came", what)
	}
}

// When the database answers again, the dispatchers claim at once, and the other services
// (and CompleteTx outcomes waiting in untilReachable) go once a claim has returned: not
// all at once, each opening a connection to a database that has just started.
func TestRecoveryLetsAClaimGoFirst(t *testing.T) {
	b := newRecoveryBundle(t, time.Hour) // only a claim can let the rest go
	back := b.wait()
	b.second() // a claim of before: not the one that waits
	b.observe(nil)
	b.await(t, b.claims, "the claims")
	select {
	case <-back:
		t.Fatal("the rest went before a claim returned")
	case <-b.rest:
		t.Fatal("the rest went before a claim returned")
	default:
	}
	b.second()
	b.await(t, b.rest, "the rest")
	b.await(t, back, "the waiters' signal")
	b.observe(nil) // answering, as it did: no step again
	select {
	case <-b.claims:
		t.Fatal("the claims went again while the database answered all along")
	default:
	}
}

// A client that makes no claim (its workers are all busy) lets the rest go after
// claimsFirst.
func TestRecoveryLetsTheRestGoWithoutAClaim(t *testing.T) {
	b := newRecoveryBundle(t, 10*time.Millisecond)
	b.observe(nil)
	b.await(t, b.claims, "the claims")
	b.await(t, b.rest, "the rest")
}

// A client that stops before the second step takes none: its services have stopped. Those
// waiting for the database (untilReachable) are let go all the same, to see it stop.
func TestRecoveryTakesNoSecondStepOnceTheClientStops(t *testing.T) {
	b := newRecoveryBundle(t, time.Hour) // only a claim can take the second step
	back := b.wait()
	b.observe(nil)
	b.await(t, b.claims, "the claims")
	b.stop()
	b.second() // the claim that returns as the client stops
	select {
	case <-b.rest:
		t.Fatal("the second step went after the client stopped")
	default:
	}
	select {
	case <-back:
	default:
		t.Fatal("the waiters were not let go")
	}
}
