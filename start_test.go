package relay_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
)

// silentServer accepts TCP connections on 127.0.0.1 and never answers: a database host
// that hangs. It returns a pool that points at it.
func silentServer(t *testing.T) *pgxpool.Pool {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // held open, never read or answered
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	pool, err := pgxpool.New(context.Background(), fmt.Sprintf("postgres://relay@%s/relay?sslmode=disable", ln.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// Start against a server that never answers gives up after StartTimeout, with an error
// that says so, even when its context has no deadline.
func TestStartGivesUpOnASilentServer(t *testing.T) {
	t.Parallel()
	pool := silentServer(t)
	c := relay.New(relay.Config{StartTimeout: 300 * time.Millisecond})
	if err := relay.Handle(c, relay.NewKind[struct{}]("k"), func(context.Context, *relay.Job[struct{}]) error { return nil }); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 1)
	go func() { errs <- c.Start(context.Background(), pool) }()
	var err error
	select {
	case err = <-errs:
	case <-time.After(30 * time.Second):
		t.Fatal("Start against a silent server has not returned after 30 s")
	}
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "StartTimeout") {
		t.Fatalf("Start = %v, want an error naming StartTimeout and wrapping context.DeadlineExceeded", err)
	}
	if err := c.Stop(context.Background()); err != nil {
		t.Fatalf("Stop after a failed Start: %v", err)
	}
}

// A negative StartTimeout is refused; an earlier deadline of Start's context wins.
func TestStartTimeoutConfig(t *testing.T) {
	t.Parallel()
	handled := func(cfg relay.Config) *relay.Client {
		c := relay.New(cfg)
		if err := relay.Handle(c, relay.NewKind[struct{}]("k"), func(context.Context, *relay.Job[struct{}]) error { return nil }); err != nil {
			t.Fatal(err)
		}
		return c
	}
	if err := handled(relay.Config{StartTimeout: -time.Second}).Start(context.Background(), silentServer(t)); !errors.Is(err, relay.ErrInvalidConfig) {
		t.Fatalf("negative StartTimeout: %v, want ErrInvalidConfig", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	began := time.Now()
	err := handled(relay.Config{StartTimeout: time.Hour}).Start(ctx, silentServer(t))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(began) > 10*time.Second {
		t.Fatalf("Start with a 200 ms context: %v after %v, want DeadlineExceeded soon", err, time.Since(began))
	}
}
