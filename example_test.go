package relay_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/internal/pgtest"
)

// exampleDB connects to the test server and gives the example a schema of its own, so
// examples run as tests beside everything else; Close drops the schema.
func exampleDB(ctx context.Context) (*pgxpool.Pool, string, func()) {
	url, err := pgtest.SharedURL(ctx)
	if err != nil {
		log.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, url)
	if err != nil {
		log.Fatal(err)
	}
	schema := "relay_example_" + randomHex()
	return pool, schema, func() {
		pool.Exec(context.Background(), "DROP SCHEMA IF EXISTS "+schema+" CASCADE")
		pool.Close()
	}
}

// migratedExampleDB is exampleDB with relay's tables already in the schema.
func migratedExampleDB(ctx context.Context) (*pgxpool.Pool, string, func()) {
	pool, schema, cleanup := exampleDB(ctx)
	if err := relay.Migrate(ctx, pool, relay.Schema(schema)); err != nil {
		cleanup()
		log.Fatal(err)
	}
	return pool, schema, cleanup
}

// EmailArgs are the args of a SendEmail job.
type EmailArgs struct {
	To      string
	Subject string
}

// SendEmail is the kind of job that sends an email: declared once, it ties the name
// "email" to EmailArgs for the handler and every producer.
var SendEmail = relay.NewKind[EmailArgs]("email")

// A worker and a producer: the handler runs once the enqueueing transaction commits.
func Example() {
	ctx := context.Background()
	pool, schema, cleanup := exampleDB(ctx)
	defer cleanup()

	if err := relay.Migrate(ctx, pool, relay.Schema(schema)); err != nil {
		log.Fatal(err)
	}

	sent := make(chan string)
	client := relay.New(relay.Config{Schema: schema})
	err := relay.Handle(client, SendEmail, func(ctx context.Context, job *relay.Job[EmailArgs]) error {
		sent <- job.Args.To
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := client.Start(ctx, pool); err != nil {
		log.Fatal(err)
	}
	defer client.Stop(ctx)

	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := relay.Enqueue(ctx, tx, SendEmail, EmailArgs{To: "ada@example.com", Subject: "Hi"}, relay.Schema(schema)); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println("sent to", <-sent)
	// Output: sent to ada@example.com
}

// Enqueue takes part in the caller's transaction: rolled back, it enqueues nothing.
func ExampleEnqueue() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	_, err = relay.Enqueue(ctx, tx, SendEmail, EmailArgs{To: "ada@example.com"},
		relay.Schema(schema), relay.Queue("mail"), relay.RunIn(time.Hour), relay.MaxAttempts(5))
	if err != nil {
		log.Fatal(err)
	}
	tx.Rollback(ctx)

	var n int
	pool.QueryRow(ctx, "SELECT count(*) FROM "+schema+".jobs").Scan(&n)
	fmt.Println("jobs after rollback:", n)
	// Output: jobs after rollback: 0
}

// EnqueueMany inserts a batch, made with Kind.Job, in one round trip and returns the ids in
// order.
func ExampleEnqueueMany() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	jobs := []relay.JobSpec{
		SendEmail.Job(EmailArgs{To: "ada@example.com"}),
		SendEmail.Job(EmailArgs{To: "grace@example.com"}, relay.Queue("bulk")),
	}
	ids, err := relay.EnqueueMany(ctx, pool, jobs, relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(ids), "jobs, ids ascending:", ids[0] < ids[1])
	// Output: 2 jobs, ids ascending: true
}

// Migrate is safe to call from every process at start-up.
func ExampleMigrate() {
	ctx := context.Background()
	pool, schema, cleanup := exampleDB(ctx)
	defer cleanup()

	for range 2 { // the second call finds nothing to do
		if err := relay.Migrate(ctx, pool, relay.Schema(schema)); err != nil {
			log.Fatal(err)
		}
	}
	fmt.Println("migrated")
	// Output: migrated
}

// GetJob returns a job with the history of its attempts: here a first attempt that failed
// and a second that succeeded.
func ExampleGetJob() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	done := make(chan int64)
	client := relay.New(relay.Config{
		Schema:  schema,
		Backoff: backoff.Policy{Initial: time.Millisecond, Multiplier: 2, Max: time.Millisecond},
	})
	flaky := relay.NewKind[struct{}]("flaky")
	err := relay.Handle(client, flaky, func(ctx context.Context, job *relay.Job[struct{}]) error {
		if job.Attempt == 1 {
			return errors.New("upstream timed out")
		}
		done <- job.ID
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := client.Start(ctx, pool); err != nil {
		log.Fatal(err)
	}
	defer client.Stop(ctx)

	if _, err := relay.Enqueue(ctx, pool, flaky, struct{}{}, relay.Schema(schema)); err != nil {
		log.Fatal(err)
	}
	id := <-done
	// Stop writes every outcome before it returns.
	if err := client.Stop(ctx); err != nil {
		log.Fatal(err)
	}
	job, err := relay.GetJob(ctx, pool, id, relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	for _, a := range job.Attempts {
		fmt.Println("attempt", a.Number, a.Outcome, a.Reason, a.Error)
	}
	// Output:
	// attempt 1 pending error upstream timed out
	// attempt 2 succeeded
}

// Cancel stops a job that has not finished: a scheduled job never runs.
func ExampleCancel() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	report := relay.NewKind[struct{}]("report")
	id, err := relay.Enqueue(ctx, pool, report, struct{}{}, relay.Schema(schema), relay.RunIn(time.Hour))
	if err != nil {
		log.Fatal(err)
	}
	if err := relay.Cancel(ctx, pool, id, relay.Schema(schema)); err != nil {
		log.Fatal(err)
	}
	job, err := relay.GetJob(ctx, pool, id, relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.State)
	err = relay.Cancel(ctx, pool, id, relay.Schema(schema))
	fmt.Println(errors.Is(err, relay.ErrJobFinished))
	// Output:
	// cancelled
	// true
}
