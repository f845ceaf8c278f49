package relay

import (
	"errors"
	"fmt"
	"time"

	"github.com/relayq/relay/lease"
)

// Causes of a handler's context being cancelled, as reported by [context.Cause].
var (
	// ErrTimeout: the handler ran past its timeout (see [Timeout]).
	ErrTimeout = errors.New("relay: job timed out")
	// ErrCancelled: the job was cancelled with [Cancel] while it ran.
	ErrCancelled = errors.New("relay: job was cancelled")
	// ErrLostLease: another client rescued the job after this client's lease on it
	// expired, or the job was deleted. This attempt's outcome is not recorded.
	ErrLostLease = lease.ErrLostLease
	// ErrLeaseExpired: this client could not renew the job's lease for as long as the lease
	// lasts, so another client may already be running it. This attempt's outcome is not
	// recorded.
	ErrLeaseExpired = lease.ErrLeaseExpired
)

// Discard returns an error that fails the job at once, without retrying it, whatever
// attempts it has left. The attempt is recorded with reason "discarded" and err's text.
func Discard(err error) error { return &endJob{how: endDiscard, err: err} }

// Snooze returns an error that puts the job back to run again after d, without counting
// this attempt against its max attempts. The attempt is recorded with reason "snoozed".
func Snooze(d time.Duration) error { return &endJob{how: endSnooze, delay: d} }

// RetryAfter returns an error that retries the job after d instead of its backoff delay
// (or fails it, if it is out of attempts). The attempt is recorded with reason "error" and
// err's text.
func RetryAfter(d time.Duration, err error) error {
	return &endJob{how: endRetryAfter, delay: d, err: err}
}

type endHow int

const (
	endDiscard endHow = iota + 1
	endSnooze
	endRetryAfter
)

// endJob is a handler's explicit decision about its job.
type endJob struct {
	how   endHow
	delay time.Duration
	err   error
}

func (e *endJob) Error() string {
	switch e.how {
	case endDiscard:
		return fmt.Sprintf("discarded: %v", e.err)
	case endSnooze:
		return fmt.Sprintf("snoozed for %v", e.delay)
	default:
		return fmt.Sprintf("retry after %v: %v", e.delay, e.err)
	}
}

func (e *endJob) Unwrap() error { return e.err }

// message is the error text recorded for the attempt.
func (e *endJob) message() string {
	if e.how == endSnooze {
		return e.Error()
	}
	if e.err == nil {
		return e.Error()
	}
	return e.err.Error()
}

// panicError is a recovered handler panic.
type panicError struct {
	value any
	stack string
}

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.value) }

// permanentError fails a job without retrying it: its args cannot be decoded.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }
