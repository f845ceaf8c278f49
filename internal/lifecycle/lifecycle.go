// Package lifecycle is the one way relay runs a background service: a loop that runs until
// its context is cancelled, started with [Go] and stopped with [Service.Stop], which cancels
// it and waits for it to return. Every long-lived goroutine of a client is one of these,
// so start-up and shutdown read the same everywhere.
package lifecycle

import (
	"context"
	"errors"
)

// Service is a running background loop.
type Service struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Go runs run in a new goroutine with a context derived from ctx.
func Go(ctx context.Context, run func(ctx context.Context) error) *Service {
	ctx, cancel := context.WithCancel(ctx)
	s := &Service{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.err = run(ctx)
	}()
	return s
}

// Done is closed when the loop has returned.
func (s *Service) Done() <-chan struct{} { return s.done }

// Stop cancels the loop, waits for it to return and returns its error, if it was
// anything but the cancellation itself. Stop may be called more than once.
func (s *Service) Stop() error {
	s.cancel()
	<-s.done
	if errors.Is(s.err, context.Canceled) {
		return nil
	}
	return s.err
}
