package relay_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/backoff"
)

// A client-wide middleware that reports each attempt with its outcome, and an enqueue
// middleware that adds a request id to each job's metadata, which the handler reads.
func ExampleMiddleware() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	done := make(chan struct{})
	reported := func(next relay.JobFunc) relay.JobFunc {
		return func(ctx context.Context, job *relay.JobInfo) error {
			err := next(ctx, job)
			fmt.Printf("%s #%d attempt %d: %s\n", job.Kind, job.ID, job.Attempt, job.Outcome(ctx, err))
			if job.Attempt == 2 {
				close(done)
			}
			return err
		}
	}
	client := relay.New(relay.Config{Schema: schema, Middleware: []relay.Middleware{reported}})
	err := relay.Handle(client, SendEmail, func(ctx context.Context, job *relay.Job[EmailArgs]) error {
		if job.Attempt == 1 {
			return fmt.Errorf("request %s: mail server busy", job.Metadata["request_id"])
		}
		return nil
	}, relay.Backoff(backoff.Policy{Initial: time.Millisecond, Multiplier: 2, Max: time.Millisecond}))
	if err != nil {
		log.Fatal(err)
	}
	if err := client.Start(ctx, pool); err != nil {
		log.Fatal(err)
	}
	defer client.Stop(ctx)

	var withRequestID relay.EnqueueMiddleware = func(next relay.EnqueueFunc) relay.EnqueueFunc {
		return func(ctx context.Context, jobs []*relay.EnqueueInfo) error {
			for _, j := range jobs {
				j.Metadata["request_id"] = "r-42" // from ctx, in an application
			}
			return next(ctx, jobs)
		}
	}
	id, err := relay.Enqueue(ctx, pool, SendEmail, EmailArgs{To: "ada@example.com"}, relay.Schema(schema), withRequestID)
	if err != nil {
		log.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		log.Fatal("the job did not run twice")
	}
	rec, err := relay.GetJob(ctx, pool, id, relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("metadata:", rec.Metadata, "first error:", rec.Attempts[0].Error)
	// Output:
	// email #1 attempt 1: retried
	// email #1 attempt 2: succeeded
	// metadata: map[request_id:r-42] first error: request r-42: mail server busy
}
