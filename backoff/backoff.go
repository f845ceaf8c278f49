// Package backoff computes retry delays: exponential growth with random jitter and a
// cap, on top of github.com/cenkalti/backoff/v4.
//
// It knows nothing of jobs. A [Policy] is a value; [Policy.Delay] is a pure function of the
// attempt number (and the random jitter), so any number of goroutines can share a Policy.
package backoff

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	cenkalti "github.com/cenkalti/backoff/v4"
)

// Policy describes how delays grow from one attempt to the next.
type Policy struct {
	// Initial is the delay after the first failed attempt.
	Initial time.Duration
	// Multiplier scales the delay after each further attempt (at least 1).
	Multiplier float64
	// Max caps every delay, before jitter.
	Max time.Duration
	// Jitter spreads each delay by up to ±Jitter of itself (0 to 1), so that jobs that
	// failed together do not all retry together.
	Jitter float64
}

// Default is the policy relay uses when none is configured: 1 s, doubling, capped at 24 h,
// ±25 % jitter. With 20 attempts a job keeps retrying for about four days.
func Default() Policy {
	return Policy{Initial: time.Second, Multiplier: 2, Max: 24 * time.Hour, Jitter: 0.25}
}

// ErrInvalidPolicy is wrapped by [Policy.Validate] errors.
var ErrInvalidPolicy = errors.New("invalid backoff policy")

// Validate reports a policy that cannot produce sensible delays: Initial must be
// positive, Multiplier finite and at least 1, Max at least Initial, Jitter from 0 to 1, and
// the longest delay, Max × (1 + Jitter), must fit a [time.Duration] (about 292 years).
func (p Policy) Validate() error {
	switch {
	case p.Initial <= 0:
		return fmt.Errorf("%w: Initial must be positive, got %v", ErrInvalidPolicy, p.Initial)
	case !(p.Multiplier >= 1) || math.IsInf(p.Multiplier, 1): // NaN fails every comparison
		return fmt.Errorf("%w: Multiplier must be a finite number of at least 1, got %v", ErrInvalidPolicy, p.Multiplier)
	case p.Max < p.Initial:
		return fmt.Errorf("%w: Max (%v) must be at least Initial (%v)", ErrInvalidPolicy, p.Max, p.Initial)
	case !(p.Jitter >= 0 && p.Jitter <= 1):
		return fmt.Errorf("%w: Jitter must be between 0 and 1, got %v", ErrInvalidPolicy, p.Jitter)
	case float64(p.Max)*(1+p.Jitter) >= math.MaxInt64:
		// A jittered delay past it would wrap around to a negative one.
		return fmt.Errorf("%w: Max (%v) with Jitter %v can reach %.0f years, longer than a time.Duration holds; lower Max",
			ErrInvalidPolicy, p.Max, p.Jitter, float64(p.Max)*(1+p.Jitter)/float64(365*24*time.Hour))
	}
	return nil
}

// Delay returns the wait after failed attempt number attempt (1 for the first attempt):
// Initial × Multiplier^(attempt-1), capped at Max, then jittered.
func (p Policy) Delay(attempt int) time.Duration {
	base := float64(p.Initial)
	for i := 1; i < attempt && base < float64(p.Max); i++ {
		base *= p.Multiplier
	}
	b := p.exponential()
	b.InitialInterval = time.Duration(min(base, float64(p.Max)))
	b.Reset()
	return b.NextBackOff()
}

// Series is a run of delays for one series of retries, such as reconnect attempts: each
// [Series.Next] is the delay after one more failure, [Series.Reset] starts over after a
// success. A Series is not safe for concurrent use.
type Series struct {
	policy  Policy
	attempt int
}

// Series starts a new run of delays following p.
func (p Policy) Series() *Series { return &Series{policy: p} }

// Next returns the delay after one more failure.
func (s *Series) Next() time.Duration {
	s.attempt++
	return s.policy.Delay(s.attempt)
}

// Reset starts the series over, after a success.
func (s *Series) Reset() { s.attempt = 0 }

// Wait waits out the delay after one more failure ([Series.Next]), or less: until resume
// delivers (then the series starts over, as the reason for the failures is likely gone)
// or ctx ends (then it returns ctx's error).
//
// resume is the caller's "try again now" signal, typically a [Signal]'s channel: the
// database answers again, say. A nil channel never delivers.
func (s *Series) Wait(ctx context.Context, resume <-chan struct{}) error {
	t := time.NewTimer(s.Next())
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	case <-resume:
		s.Reset()
	}
	return nil
}

// Outage is the policy of retries of a statement that failed because the database could
// not be reached: 10 ms, doubling, capped at 2 s, ±20 % jitter. Quick at first, so that a
// killed connection costs milliseconds, and at most 2 s apart, so that an outage is
// noticed to end soon after it does (sooner still with a [Signal]).
func Outage() Policy {
	return Policy{Initial: 10 * time.Millisecond, Multiplier: 2, Max: 2 * time.Second, Jitter: 0.2}
}

// Signal is a "try again now" signal with room for one: [Signal.Send] never blocks, and a
// signal sent while no one waits ends the next wait. Waiters receive from [Signal.C]. The
// zero Signal is not usable: make one with [NewSignal].
type Signal struct{ c chan struct{} }

// NewSignal returns a Signal that has not been sent.
func NewSignal() Signal { return Signal{c: make(chan struct{}, 1)} }

// Send signals; a signal already waiting is not doubled.
func (s Signal) Send() {
	select {
	case s.c <- struct{}{}:
	default:
	}
}

// C delivers the signal, once per Send that found no signal waiting.
func (s Signal) C() <-chan struct{} { return s.c }

func (p Policy) exponential() *cenkalti.ExponentialBackOff {
	b := &cenkalti.ExponentialBackOff{
		InitialInterval:     p.Initial,
		RandomizationFactor: p.Jitter,
		Multiplier:          p.Multiplier,
		MaxInterval:         p.Max,
		MaxElapsedTime:      0, // never give up: callers decide when to stop
		Stop:                cenkalti.Stop,
		Clock:               cenkalti.SystemClock,
	}
	b.Reset()
	return b
}
