package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"github.com/relayq/relay/dispatcher"
	"github.com/relayq/relay/internal/store"
)

// JobInfo is a running attempt of a job as [Middleware] sees it, whatever the Go type of
// its kind's args.
type JobInfo struct {
	ID          int64
	Kind        string
	Queue       string
	Attempt     int // 1 on the first attempt
	MaxAttempts int
	Priority    int
	CreatedAt   time.Time // when it was enqueued (the start of the enqueueing transaction)
	ScheduledAt time.Time // when this attempt was due
	AttemptedAt time.Time // when this attempt was claimed: picked up
	// Metadata is what the job was enqueued with ([Metadata], [EnqueueMiddleware]); nil if
	// none. The handler sees the same map: read it, do not change it.
	Metadata map[string]string

	job    *dispatcher.Job
	run    *running
	client *Client
}

// JobFunc handles a job for [Middleware]: the next middleware, and in the end the kind's
// handler.
type JobFunc func(ctx context.Context, job *JobInfo) error

// Middleware wraps the handling of jobs, whatever their kind: for tracing, logging,
// metrics, recovering panics, tenancy, authorisation. It is called once, when the client
// starts, with the next handling in the chain; the function it returns runs for every
// attempt, and must call next (with the same job, and a context derived from the one it
// was given) for the handler to run:
//
//	func logged(next relay.JobFunc) relay.JobFunc {
//		return func(ctx context.Context, job *relay.JobInfo) error {
//			err := next(ctx, job)
//			slog.InfoContext(ctx, "job ran", "id", job.ID, "outcome", job.Outcome(ctx, err))
//			return err
//		}
//	}
//
// Middleware in [Config].Middleware wraps every kind, the first outermost; a Middleware
// given to [Handle] (it is a [HandleOption]) wraps that kind only, inside the client's.
// What the outermost returns decides the attempt, as a handler's error does. A panic in a
// middleware or below it reaches the middleware above as an error (the outcome
// [OutcomePanic]), and ends the attempt as a panic of the handler would: with reason
// [ReasonPanic] and the stack recorded, the client carrying on.
type Middleware func(next JobFunc) JobFunc

func (m Middleware) applyHandle(k *kindConfig) { k.middleware = append(k.middleware, m) }

// Outcome is how an attempt of a job ended, as metrics and traces name it.
type Outcome string

// Outcomes of an attempt. Timeouts, panics and lost leases are named as such whether the
// job is retried or failed for good; the job's state tells which ([Event].State).
const (
	OutcomeSucceeded Outcome = "succeeded"
	OutcomeRetried   Outcome = "retried"   // an error; runs again after its backoff
	OutcomeFailed    Outcome = "failed"    // an error on its last attempt, or args that did not decode
	OutcomeCancelled Outcome = "cancelled" // by [Cancel]
	OutcomeSnoozed   Outcome = "snoozed"   // [Snooze]: runs again, the attempt not counted
	OutcomeDiscarded Outcome = "discarded" // [Discard]: failed at once
	OutcomeLostLease Outcome = "lost lease"
	OutcomeTimeout   Outcome = "timeout"
	OutcomePanic     Outcome = "panic"
	// OutcomeInfrastructure: the handler's database connection failed, not the handler
	// ([ReasonInfrastructure]); runs again at once, the attempt not counted.
	OutcomeInfrastructure Outcome = "infrastructure"
)

// outcomeOfState names the outcome of an attempt that left its job in state for reason.
func outcomeOfState(state JobState, reason string) Outcome {
	switch {
	case state == StateSucceeded:
		return OutcomeSucceeded
	case state == StateCancelled || reason == ReasonCancelled:
		return OutcomeCancelled
	}
	switch reason {
	case ReasonSnoozed:
		return OutcomeSnoozed
	case ReasonDiscarded:
		return OutcomeDiscarded
	case ReasonTimeout:
		return OutcomeTimeout
	case ReasonPanic:
		return OutcomePanic
	case ReasonLostLease:
		return OutcomeLostLease
	case ReasonInfrastructure:
		return OutcomeInfrastructure
	}
	if state == StateFailed {
		return OutcomeFailed
	}
	return OutcomeRetried
}

// Outcome is what the client makes of this attempt if the handling returns err now, with
// ctx the context the middleware was given: [OutcomeTimeout] once the job's timeout has
// passed, [OutcomeLostLease] or [OutcomeCancelled] once the job is no longer this attempt's
// (those are not recorded by this client), and otherwise what err says. A middleware
// outside this one may still change the error, and with it the outcome.
func (j *JobInfo) Outcome(ctx context.Context, err error) Outcome {
	cause := context.Cause(ctx)
	if j.run != nil && j.run.completed.Load() {
		// CompleteTx succeeded: the handler's transaction decides, and did commit if the
		// handler returned nil, as it should only then.
		if err == nil {
			return OutcomeSucceeded
		}
		cause, err = nil, errors.Join(errNotCommitted, err)
	}
	stopping := j.client != nil && j.client.work.Err() != nil
	v := decide(cause, err, j.Attempt, j.MaxAttempts, stopping)
	return outcomeOfState(JobState(v.state), v.reason)
}

// AddLogAttrs adds attributes to every line relay logs about this attempt from now on,
// after the job's own (a group "job" with its id, kind, queue and attempt): a trace id,
// say. It is safe to call from any goroutine.
func (j *JobInfo) AddLogAttrs(attrs ...slog.Attr) {
	if j.run == nil {
		return
	}
	j.run.mu.Lock()
	j.run.logAttrs = append(j.run.logAttrs, attrs...)
	j.run.mu.Unlock()
}

// chain returns the handling of a kind whose handler is run, wrapped in middleware (the
// first outermost). Each layer's panic becomes an error for the layer above it.
func chain(run runner, middleware []Middleware) (JobFunc, error) {
	f := recovering(func(ctx context.Context, job *JobInfo) error { return run(ctx, job.job, job.run) })
	for i := len(middleware) - 1; i >= 0; i-- {
		if middleware[i] == nil {
			return nil, fmt.Errorf("%w: middleware %d is nil", ErrInvalidConfig, i)
		}
		next := middleware[i](f)
		if next == nil {
			return nil, fmt.Errorf("%w: middleware %d returned a nil JobFunc", ErrInvalidConfig, i)
		}
		f = recovering(next)
	}
	return f, nil
}

func recovering(next JobFunc) JobFunc {
	return func(ctx context.Context, job *JobInfo) (err error) {
		defer recoverInto(&err)
		return next(ctx, job)
	}
}

// recoverInto turns a panic into the error *err, with its stack: one bad job (or
// middleware) cannot take the process or the other jobs down.
func recoverInto(err *error) {
	if r := recover(); r != nil {
		*err = &panicError{value: r, stack: string(debug.Stack())}
	}
}

// verdict is what the client makes of an attempt that ended: the job's state and the
// attempt's reason, its error text and stack, and when it runs next.
type verdict struct {
	state, reason  string
	message, stack string
	// abandoned: the job is no longer this attempt's (lost lease, cancelled), and its
	// outcome must not be written.
	abandoned bool
	// retryIn, if set, is the delay before the next attempt; otherwise the backoff's,
	// after the attempt numbered backoffFrom if set, else after this one.
	retryIn     time.Duration
	hasRetryIn  bool
	backoffFrom int
	// uncounted: the attempt does not use up one of the job's (an infrastructure fault).
	uncounted bool
}

// decide judges an attempt, the job's attempt-th of maxAttempts, that ended with err while
// its context's cause was cause; stopping says that the client is shutting down.
func decide(cause, err error, attempt, maxAttempts int, stopping bool) verdict {
	outOfAttempts := attempt >= maxAttempts
	switch {
	case errors.Is(cause, ErrLostLease):
		return verdict{state: store.StatePending, reason: store.ReasonLostLease, abandoned: true}
	case errors.Is(cause, ErrCancelled):
		return verdict{state: store.StateCancelled, reason: store.ReasonCancelled, abandoned: true}
	}
	v := verdict{state: store.StatePending}
	switch {
	case errors.Is(cause, ErrTimeout):
		// Whatever the handler returned, it returned too late.
		v.reason, v.message = store.ReasonTimeout, cause.Error()
		if err != nil && !errors.Is(err, context.DeadlineExceeded) {
			v.message += ": " + err.Error()
		}
	case errors.Is(cause, ErrLeaseExpired) && err != nil:
		// The client gave the lease up for lost, the database being away, and the handler
		// did not finish. Written once the database answers, the retry comes then, rather
		// than when a rescuer gets to the lease (see lease.RescuerConfig.Grace); stale, and
		// skipped, if one did.
		v.reason, v.message, v.hasRetryIn = store.ReasonLostLease, cause.Error(), true
	case err == nil:
		// A success stands, also one that came as the client gave the lease up for lost
		// (ErrLeaseExpired): unless another client rescued the job meanwhile (then the write
		// skips this outcome as stale), nobody else ran it.
		return verdict{state: store.StateSucceeded}
	default:
		v = judgeError(err, attempt, &outOfAttempts, stopping)
	}
	if v.state == store.StatePending && outOfAttempts {
		v.state = store.StateFailed
	}
	if v.message == "" {
		v.message = fmt.Sprintf("%T with an empty message", err)
	}
	return v
}

// judgeError is decide's verdict on an attempt that returned err in time. It is a function
// of its own so that the targets of errors.As, which escape to the heap, are allocated
// only for an error, not for every job that succeeds. A snooze sets *outOfAttempts to
// false: it does not use up an attempt.
func judgeError(err error, attempt int, outOfAttempts *bool, stopping bool) verdict {
	v := verdict{state: store.StatePending}
	var (
		end       *endJob
		panicked  *panicError
		permanent *permanentError
	)
	switch {
	case errors.As(err, &permanent):
		v.state, v.reason, v.message = store.StateFailed, store.ReasonDecode, err.Error()
	case errors.As(err, &end):
		v.message = end.message()
		switch end.how {
		case endDiscard:
			v.state, v.reason = store.StateFailed, store.ReasonDiscarded
		case endSnooze:
			v.reason, v.retryIn, v.hasRetryIn = store.ReasonSnoozed, end.delay, true
			*outOfAttempts = false
		default:
			v.reason, v.retryIn, v.hasRetryIn = store.ReasonError, end.delay, true
		}
	case errors.As(err, &panicked):
		v.reason, v.message, v.stack = store.ReasonPanic, panicked.Error(), panicked.stack
	case stopping:
		// Interrupted by shutdown, not by a fault of the job: let another client have it now.
		v.reason, v.message, v.hasRetryIn = store.ReasonShutdown, err.Error(), true
	case connectionLost(err):
		// The database or the way to it failed, not the handler: retry as soon as it is back
		// (the outcome is written only then), without using up an attempt (see infra.go).
		v.reason, v.message = store.ReasonInfrastructure, err.Error()
		if attempt < freeInfraAttempts {
			v.uncounted, *outOfAttempts = true, false
			v.retryIn, v.hasRetryIn = infraDelay(attempt), true
		} else {
			// The backoff starts over: the attempts before were most likely such faults.
			v.backoffFrom = attempt - freeInfraAttempts + 1
		}
	default:
		v.reason, v.message = store.ReasonError, err.Error()
	}
	return v
}
