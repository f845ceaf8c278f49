package relay_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/backoff"
)

// OrderArgs are the args of the jobs that bill or charge an order.
type OrderArgs struct{ OrderID int }

var (
	BillOrder   = relay.NewKind[OrderArgs]("bill")
	ChargeOrder = relay.NewKind[OrderArgs]("charge")
)

// CompleteTx makes the job's success part of the handler's own transaction: the invoice
// row and the job's success commit together, or neither does and the job is retried.
func ExampleCompleteTx() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()
	if _, err := pool.Exec(ctx, "CREATE TABLE "+schema+".invoices (order_id int PRIMARY KEY)"); err != nil {
		log.Fatal(err)
	}

	done := make(chan int64)
	client := relay.New(relay.Config{Schema: schema})
	err := relay.Handle(client, BillOrder, func(ctx context.Context, job *relay.Job[OrderArgs]) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, "INSERT INTO "+schema+".invoices VALUES ($1)", job.Args.OrderID); err != nil {
			return err
		}
		if err := relay.CompleteTx(ctx, tx, job); err != nil {
			return err // relay.ErrJobNotHeld: this attempt lost the job; write nothing
		}
		if err := tx.Commit(ctx); err != nil {
			return err
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

	if _, err := relay.Enqueue(ctx, pool, BillOrder, OrderArgs{OrderID: 1001}, relay.Schema(schema)); err != nil {
		log.Fatal(err)
	}
	id := <-done
	var invoices int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM "+schema+".invoices").Scan(&invoices); err != nil {
		log.Fatal(err)
	}
	job, err := relay.GetJob(ctx, pool, id, relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("invoices:", invoices)
	fmt.Println("job:", job.State)
	// Output:
	// invoices: 1
	// job: succeeded
}

// ImportArgs are the args of an ImportRows job.
type ImportArgs struct{ Rows int }

var ImportRows = relay.NewKind[ImportArgs]("import")

type ImportProgress struct{ Next int }

// A long job saves its progress with Checkpoint; after a failure, the next attempt
// resumes where the last checkpoint left off instead of starting over.
func ExampleCheckpoint() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	imported := make(chan int)
	client := relay.New(relay.Config{Schema: schema})
	err := relay.Handle(client, ImportRows, func(ctx context.Context, job *relay.Job[ImportArgs]) error {
		var p ImportProgress
		resumed, err := job.Resume(&p)
		if err != nil {
			return err
		}
		fmt.Printf("attempt %d starts at row %d (resumed: %v)\n", job.Attempt, p.Next, resumed)
		for p.Next < job.Args.Rows {
			if job.Attempt == 1 && p.Next == 2 {
				return errors.New("connection reset") // the first attempt fails halfway
			}
			// ... import row p.Next ...
			p.Next++
			if err := relay.Checkpoint(ctx, pool, job, p); err != nil {
				return err
			}
		}
		imported <- p.Next
		return nil
	}, relay.Backoff(backoff.Policy{Initial: time.Millisecond, Multiplier: 1, Max: time.Millisecond}))
	if err != nil {
		log.Fatal(err)
	}
	if err := client.Start(ctx, pool); err != nil {
		log.Fatal(err)
	}
	defer client.Stop(ctx)

	if _, err := relay.Enqueue(ctx, pool, ImportRows, ImportArgs{Rows: 5}, relay.Schema(schema)); err != nil {
		log.Fatal(err)
	}
	fmt.Println("imported", <-imported, "rows")
	// Output:
	// attempt 1 starts at row 0 (resumed: false)
	// attempt 2 starts at row 2 (resumed: true)
	// imported 5 rows
}

// ResizeArgs are the args of a ResizeImage job.
type ResizeArgs struct {
	URL   string
	Width int
}

var ResizeImage = relay.NewKind[ResizeArgs]("resize")

type Thumbnail struct {
	Path  string
	Width int
}

// A handler registered with HandleWithOutput returns a value, stored with the job when it
// succeeds; GetJobOf reads the job back with its args and output typed.
func ExampleHandleWithOutput() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	client := relay.New(relay.Config{Schema: schema})
	err := relay.HandleWithOutput(client, ResizeImage, func(ctx context.Context, job *relay.Job[ResizeArgs]) (Thumbnail, error) {
		// ... fetch job.Args.URL and resize it ...
		return Thumbnail{Path: fmt.Sprintf("/thumbs/cat-%d.png", job.Args.Width), Width: job.Args.Width}, nil
	})
	if err != nil {
		log.Fatal(err)
	}
	events, unsubscribe := client.Subscribe(1)
	defer unsubscribe()
	if err := client.Start(ctx, pool); err != nil {
		log.Fatal(err)
	}
	defer func() {
		stopCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		client.Stop(stopCtx)
	}()

	id, err := relay.Enqueue(ctx, pool, ResizeImage, ResizeArgs{URL: "https://example.com/cat.png", Width: 128}, relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	select {
	case <-events: // the outcome is committed
	case <-time.After(10 * time.Second):
		fmt.Println("the job did not finish")
		return
	}
	job, err := relay.GetJobOf[ResizeArgs, Thumbnail](ctx, pool, id, relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(job.State, job.Args.URL)
	fmt.Printf("%+v\n", *job.Output)
	// Output:
	// succeeded https://example.com/cat.png
	// {Path:/thumbs/cat-128.png Width:128}
}

// Subscribe reports each attempt the client ends, once its outcome is committed: here a
// first attempt that is retried, then a success.
func ExampleClient_Subscribe() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	client := relay.New(relay.Config{Schema: schema})
	err := relay.Handle(client, ChargeOrder, func(ctx context.Context, job *relay.Job[OrderArgs]) error {
		if job.Attempt == 1 {
			return relay.RetryAfter(time.Millisecond, errors.New("card declined"))
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	events, unsubscribe := client.Subscribe(10)
	defer unsubscribe()
	if err := client.Start(ctx, pool); err != nil {
		log.Fatal(err)
	}
	defer client.Stop(ctx)

	if _, err := relay.Enqueue(ctx, pool, ChargeOrder, OrderArgs{OrderID: 7}, relay.Schema(schema)); err != nil {
		log.Fatal(err)
	}
	for e := range events {
		switch e.State {
		case relay.StatePending:
			fmt.Printf("%s attempt %d: %s (%s: %s), runs again in %v\n", e.Kind, e.Attempt, e.State, e.Reason, e.Error, e.RetryAt.Sub(e.EndedAt))
			continue
		default:
			fmt.Printf("%s attempt %d: %s in queue %s\n", e.Kind, e.Attempt, e.State, e.Queue)
		}
		break
	}
	// Output:
	// charge attempt 1: pending (error: card declined), runs again in 1ms
	// charge attempt 2: succeeded in queue default
}
