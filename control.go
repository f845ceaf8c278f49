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
	// ErrCancelled: the job was cancelled with [Cancel] while it ran: its outcome is not
	// written, and the attempt is reported cancelled.
	ErrCancelled = lease.ErrCancelled
	// ErrLostLease: another client rescued the job after this client's lease on it
	// expired, or the job was deleted. This attempt's outcome is not recorded.
	ErrLostLease = lease.ErrLostLease
	// ErrLeaseExpired: this client could not renew the job's lease for as long as the lease
	// lasts, so another client may already be running it. This attempt's outcome is
	// recorded once the database answers, unless another client rescued the job meanwhile:
	// a handler that returns nil anyway succeeds, any other return retries the job at once
	// (reason [ReasonLostLease]).
	ErrLeaseExpired = lease.ErrLeaseExpired
)

// The decisions a handler returns with [Discard], [Snooze] and [RetryAfter], for tests:
// errors.Is(err, relay.ErrSnoozed) tells whether err (or an error wrapping it) is one made
// by Snooze, and [RetryDelay] reads the delay it asks for:
//
//	err := relaytest.Work(ctx, t, SendEmail, sendEmail, args)
//	if !errors.Is(err, relay.ErrSnoozed) { … }
//	if d, _ := relay.RetryDelay(err); d != time.Minute { … }
//
// A handler returns one decision: if it wraps one in another, the outermost decides, while
// errors.Is matches both.
var (
	// ErrDiscarded matches an error made by [Discard]: the job fails at once.
	ErrDiscarded = errors.New("relay: job discarded")
	// ErrSnoozed matches an error made by [Snooze]: the job runs again later, the attempt
	// not counted.
	ErrSnoozed = errors.New("relay: job snoozed")
	// ErrRetryAfter matches an error made by [RetryAfter]: the job is retried after a delay
	// of the handler's choosing.
	ErrRetryAfter = errors.New("relay: job retried after a chosen delay")
)

// Discard returns an error that fails the job at once, without retrying it, whatever
// attempts it has left. The attempt is recorded with reason "discarded" and err's text.
// The error matches [ErrDiscarded] and err with [errors.Is].
func Discard(err error) error { return &endJob{how: endDiscard, err: err} }

// Snooze returns an error that puts the job back to run again after d, without counting
// this attempt against its max attempts. The attempt is recorded with reason "snoozed".
// The error matches [ErrSnoozed] with [errors.Is]; [RetryDelay] returns d.
func Snooze(d time.Duration) error { return &endJob{how: endSnooze, delay: d} }

// RetryAfter returns an error that retries the job after d instead of its backoff delay
// (or fails it, if it is out of attempts). The attempt is recorded with reason "error" and
// err's text. The error matches [ErrRetryAfter] and err with [errors.Is]; [RetryDelay]
// returns d.
func RetryAfter(d time.Duration, err error) error {
	return &endJob{how: endRetryAfter, delay: d, err: err}
}

// RetryDelay returns the delay that err asks for, if err is or wraps an error made by
// [Snooze] or [RetryAfter]: how long the job waits before it runs again. It reports false
// for any other error, [Discard]'s included.
func RetryDelay(err error) (time.Duration, bool) {
	var end *endJob
	if !errors.As(err, &end) || end.how == endDiscard {
		return 0, false
	}
	return end.delay, true
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

// Is matches the sentinel of e's decision.
func (e *endJob) Is(target error) bool {
	switch e.how {
	case endDiscard:
		return target == ErrDiscarded
	case endSnooze:
		return target == ErrSnoozed
	default:
		return target == ErrRetryAfter
	}
}

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
