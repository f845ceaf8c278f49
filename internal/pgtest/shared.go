package pgtest

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"
)

// sharedStartTimeout bounds the shared server's start. The start is detached
// from the first caller's context (see SharedURL), so it needs its own limit.
const sharedStartTimeout = 2 * time.Minute

// shared is the process-wide server behind SharedURL: one initdb per test
// binary instead of one per test keeps suites fast.
var shared struct {
	mu      sync.Mutex
	done    chan struct{} // nil until first use; closed once srv/err are set
	srv     *Server
	err     error
	stopped bool
}

// errSharedStopped is returned by SharedURL after StopShared, because handing
// out the URL of a server that no longer exists would only fail later and
// less clearly.
var errSharedStopped = errors.New("pgtest: shared server already stopped (SharedURL called after StopShared)")

// SharedURL returns the URL of a process-wide server started on first use.
// It is what test packages use. If DATABASE_URL is set it wins: SharedURL
// returns it without starting anything, so CI can point tests at a managed
// database.
//
// The server is started once; a failed start is returned to every caller
// rather than retried, so a broken installation fails fast instead of
// costing each test another timeout. The start runs detached from ctx so
// that one test's cancelled context cannot poison the server for the rest;
// ctx only bounds how long this caller waits.
func SharedURL(ctx context.Context) (string, error) {
	if url := os.Getenv("DATABASE_URL"); url != "" {
		return url, nil
	}

	shared.mu.Lock()
	if shared.stopped {
		shared.mu.Unlock()
		return "", errSharedStopped
	}
	if shared.done == nil {
		done := make(chan struct{})
		shared.done = done
		startCtx := context.WithoutCancel(ctx)
		go func() {
			defer close(done)
			ctx, cancel := context.WithTimeout(startCtx, sharedStartTimeout)
			defer cancel()
			shared.srv, shared.err = Start(ctx, Options{})
		}()
	}
	done := shared.done
	shared.mu.Unlock()

	select {
	case <-done:
	case <-ctx.Done():
		return "", ctx.Err()
	}
	if shared.err != nil {
		return "", shared.err
	}
	return shared.srv.URL(), nil
}

// StopShared stops the shared server if one was started, waiting for an
// in-flight start to finish first so that it cannot leak. Meant for TestMain
// after m.Run(); see RunMain.
func StopShared() {
	shared.mu.Lock()
	shared.stopped = true
	done := shared.done
	shared.mu.Unlock()
	if done == nil {
		return
	}
	<-done
	if shared.srv != nil {
		_ = shared.srv.Stop()
	}
}

// RunMain is the TestMain helper for packages using SharedURL:
//
//	func TestMain(m *testing.M) { pgtest.RunMain(m) }
//
// It runs the tests, stops the shared server and exits with the tests'
// status. os.Exit skips deferred calls, which is why the stop cannot simply
// be deferred in TestMain.
func RunMain(m *testing.M) {
	code := m.Run()
	StopShared()
	os.Exit(code)
}
