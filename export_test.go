package relay

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PauseLeaseRenewal stops (true) or resumes (false) the keep-alive ticker of a started
// client, as if it were cut off from the database: tests of partitioned workers use it.
func PauseLeaseRenewal(c *Client, paused bool) { c.keeper.Pause(paused) }

// WorkedQueues returns the queues c has a dispatcher for now, so that tests can watch
// dispatchers of groups appear and retire.
func WorkedQueues(c *Client) []string { return c.queues.names() }

// ConnectionLost is connectionLost: whether a handler's error is an infrastructure fault.
var ConnectionLost = connectionLost

// FreeInfraAttempts is the attempt from which infrastructure faults count.
const FreeInfraAttempts = freeInfraAttempts

// CheckUnhandledEvery makes c look for jobs no live client can run every d (and count
// jobs due for d) instead of every minute. Call it before Start.
func CheckUnhandledEvery(c *Client, d time.Duration) { c.unhandledEvery = d }

// ProbeListenerWithin makes c's listener warn that it hears nothing when its probe has not
// arrived within d, instead of 5 s. Call it before Start.
func ProbeListenerWithin(c *Client, d time.Duration) { c.probeTimeout = d }

// PruneNow runs one prune of c's (as its pruner does every so often) and reports whether
// another client was pruning at the time, which cut it short.
// A client that keeps everything forever has no pruner: its prune does nothing.
func PruneNow(ctx context.Context, c *Client) (busy bool, err error) {
	if c.pruner == nil {
		return false, nil
	}
	return c.pruner.prune(ctx)
}

// PrunedJobs is how many jobs c's pruner has deleted.
func PrunedJobs(c *Client) int64 { return c.pruner.deleted.Load() }

// SlotAfter is the first slot of t after at.
func SlotAfter(t Timing, at time.Time) time.Time { return t.after(at) }

// ClientConns is what a client's own statements run on (see conns).
type ClientConns interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// NewClientConns returns the connections of client id over pool, with up to reserved of
// its own, closed when t ends.
func NewClientConns(t testing.TB, pool *pgxpool.Pool, reserved int, id string) ClientConns {
	c, err := newConns(context.Background(), pool, reserved, id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c
}

// SharedWait bounds how long a statement waits for a shared pool without room.
const SharedWait = sharedWait

// ForgetHandOffsAfter makes c forget a hand-off it heard d ago, instead of a minute ago.
// Call it before Start.
func ForgetHandOffsAfter(c *Client, d time.Duration) { c.handOffs.memory = d }

// LookForHandOffs runs one look for the jobs handed off to c and not acknowledged, as c
// does once its listener LISTENs again, and returns how many it found once each has been
// taken or skipped.
func LookForHandOffs(c *Client) (int, error) { return c.lookForHandOffs(context.Background()) }

// HeldLeases is how many attempts' leases c's keeper holds: running, or their outcomes
// still to be written.
func HeldLeases(c *Client) int { return c.keeper.Held() }

// AcknowledgeHandOffsAfter makes c acknowledge a hand-off once its handler has run for d
// (negative: as it starts), instead of a millisecond. Call it before Start.
func AcknowledgeHandOffsAfter(c *Client, d time.Duration) { c.handOffs.ackAfter = d }

// BeforeAcknowledgement makes c call fn before each statement that acknowledges hand-offs
// it starts, on that statement's goroutine: the statement waits for fn. Call it before
// Start, and not with AcknowledgementGate.
func BeforeAcknowledgement(c *Client, fn func()) { c.handOffs.beforeAck = fn }

// AcknowledgementGate puts a gate before c's acknowledgements of the hand-offs it starts:
// after hold, none goes out until release. Call it before Start.
func AcknowledgementGate(c *Client) (hold func(), release func()) {
	var gate sync.RWMutex
	c.handOffs.beforeAck = func() {
		gate.RLock()
		gate.RUnlock() // a gate: it only waits for hold to be released
	}
	var held sync.Once
	return func() { gate.Lock() }, func() { held.Do(gate.Unlock) }
}

// OnStopAwaitingProducers makes c call fn as its Stop, having given back the hand-offs it
// did not hear, starts waiting for the producers that may still hand it jobs. Call it
// before Start.
func OnStopAwaitingProducers(c *Client, fn func()) { c.handOffs.awaitingProducers = fn }
