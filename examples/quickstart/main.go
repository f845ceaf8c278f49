// Quickstart: a worker and a producer in one process.
//
//	go run ./examples/quickstart                         # starts a throwaway PostgreSQL
//	DATABASE_URL=postgres://... go run ./examples/quickstart
//
// It migrates relay's schema, registers a handler for a typed kind, starts a client,
// enqueues jobs in a transaction (and rolls one transaction back to show that it enqueues
// nothing), waits for the jobs to run and stops gracefully.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/lmittmann/tint"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/exampledb"
)

// EmailArgs are the args of a SendEmail job, stored as JSON.
type EmailArgs struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
}

// SendEmail is the kind of job that sends an email. Declared once and used by the handler
// and every producer, it makes enqueueing args of another type a compile error.
var SendEmail = relay.NewKind[EmailArgs]("email")

func main() {
	logger := slog.New(tint.NewTextHandler(os.Stderr, &tint.Options{TimeFormat: time.TimeOnly}))
	if err := run(context.Background(), logger); err != nil {
		logger.Error(err.Error())
		os.Exit(1)
	}
}

func run(ctx context.Context, logger *slog.Logger) error {
	pool, closeDB, err := exampledb.Open(ctx, logger) // DATABASE_URL, or a throwaway server
	if err != nil {
		return err
	}
	defer closeDB()

	// Safe to call from every process at start-up: it takes an advisory lock.
	if err := relay.Migrate(ctx, pool); err != nil {
		return err
	}

	done := make(chan string, 3)
	client := relay.New(relay.Config{Logger: logger})
	err = relay.Handle(client, SendEmail, func(ctx context.Context, job *relay.Job[EmailArgs]) error {
		logger.Info("sending email", "job", job.ID, "to", job.Args.To, "attempt", job.Attempt)
		done <- job.Args.To
		return nil
	})
	if err != nil {
		return err
	}
	if err := client.Start(ctx, pool); err != nil {
		return err
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := client.Stop(stopCtx); err != nil {
			logger.Error("stop", "error", err)
		}
	}()

	// Enqueue inside your own transaction: the jobs exist once it commits.
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	for _, to := range []string{"ada@example.com", "grace@example.com"} {
		if _, err := relay.Enqueue(ctx, tx, SendEmail, EmailArgs{To: to, Subject: "Welcome"}); err != nil {
			tx.Rollback(ctx)
			return err
		}
	}
	if err := tx.Commit(ctx); err != nil {
		return err
	}

	// A rolled-back transaction enqueues nothing.
	tx, err = pool.Begin(ctx)
	if err != nil {
		return err
	}
	if _, err := relay.Enqueue(ctx, tx, SendEmail, EmailArgs{To: "nobody@example.com"}); err != nil {
		return err
	}
	tx.Rollback(ctx)

	// A scheduled job: runs in half a second.
	if _, err := relay.Enqueue(ctx, pool, SendEmail, EmailArgs{To: "later@example.com"}, relay.RunIn(500*time.Millisecond)); err != nil {
		return err
	}

	timeout := time.After(10 * time.Second)
	for range 3 {
		select {
		case to := <-done:
			if to == "nobody@example.com" {
				return errors.New("the rolled-back job ran")
			}
		case <-timeout:
			return errors.New("jobs did not run within 10s")
		}
	}
	fmt.Println("all jobs ran")
	return nil
}
