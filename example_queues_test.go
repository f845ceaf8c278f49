package relay_test

import (
	"context"
	"fmt"
	"log"
	"sync/atomic"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
)

// StepArgs are the args of a RunStep job.
type StepArgs struct{ N int }

var RunStep = relay.NewKind[StepArgs]("step")

// startExampleClient starts a client on schema whose handler of RunStep is fn.
func startExampleClient(ctx context.Context, pool *pgxpool.Pool, cfg relay.Config, fn relay.HandlerFunc[StepArgs]) *relay.Client {
	c := relay.New(cfg)
	if err := relay.Handle(c, RunStep, fn); err != nil {
		log.Fatal(err)
	}
	if err := c.Start(ctx, pool); err != nil {
		log.Fatal(err)
	}
	return c
}

// An ordered queue starts the jobs of each key one at a time, in the order they were
// enqueued, across every client: here three clients with ten workers each still run one
// customer's jobs strictly in sequence.
func ExampleSetQueue_ordered() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	err := relay.SetQueue(ctx, pool, "billing", relay.QueueSettings{Ordered: true}, relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	ran := make(chan int)
	for range 3 {
		c := startExampleClient(ctx, pool, relay.Config{Schema: schema, Queues: map[string]relay.QueueConfig{"billing": {Workers: 10}}},
			func(ctx context.Context, job *relay.Job[StepArgs]) error {
				ran <- job.Args.N
				return nil
			})
		defer c.Stop(ctx)
	}
	for n := 1; n <= 4; n++ {
		_, err := relay.Enqueue(ctx, pool, RunStep, StepArgs{N: n}, relay.Queue("billing"), relay.OrderKey("customer-42"), relay.Schema(schema))
		if err != nil {
			log.Fatal(err)
		}
	}
	for range 4 {
		fmt.Println("step", <-ran)
	}
	// Output:
	// step 1
	// step 2
	// step 3
	// step 4
}

// A cluster-wide limit holds however many clients serve the queue: two clients with five
// workers each never run more than one job of "reports" at once.
func ExampleSetQueue_globalLimit() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	err := relay.SetQueue(ctx, pool, "reports", relay.QueueSettings{GlobalLimit: 1}, relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	var running, most atomic.Int64
	done := make(chan struct{})
	for range 2 {
		c := startExampleClient(ctx, pool, relay.Config{Schema: schema, Queues: map[string]relay.QueueConfig{"reports": {Workers: 5}}},
			func(ctx context.Context, job *relay.Job[StepArgs]) error {
				n := running.Add(1)
				for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
				}
				running.Add(-1)
				done <- struct{}{}
				return nil
			})
		defer c.Stop(ctx)
	}
	for n := range 10 {
		if _, err := relay.Enqueue(ctx, pool, RunStep, StepArgs{N: n}, relay.Queue("reports"), relay.Schema(schema)); err != nil {
			log.Fatal(err)
		}
	}
	for range 10 {
		<-done
	}
	fmt.Println("most running at once:", most.Load())
	// Output: most running at once: 1
}

// Higher priorities are claimed first; equal priorities keep their order.
func ExamplePriority() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	for n, p := range []int{0, 10, -5, 10} {
		if _, err := relay.Enqueue(ctx, pool, RunStep, StepArgs{N: n}, relay.Priority(p), relay.Schema(schema)); err != nil {
			log.Fatal(err)
		}
	}
	ran := make(chan int)
	c := startExampleClient(ctx, pool, relay.Config{Schema: schema, Queues: map[string]relay.QueueConfig{relay.DefaultQueue: {Workers: 1}}},
		func(ctx context.Context, job *relay.Job[StepArgs]) error {
			ran <- job.Args.N
			return nil
		})
	defer c.Stop(ctx)
	for range 4 {
		fmt.Print(<-ran, " ")
	}
	fmt.Println()
	// Output: 1 3 0 2
}

// A unique key makes a repeated enqueue return the job already holding it.
func ExampleUnique() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	first, err := relay.EnqueueJob(ctx, pool, RunStep, StepArgs{N: 1}, relay.Unique("nightly-report:2026-11-22"), relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	again, err := relay.EnqueueJob(ctx, pool, RunStep, StepArgs{N: 1}, relay.Unique("nightly-report:2026-11-22"), relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("same job:", again.ID == first.ID, "duplicate:", again.Duplicate)
	// Output: same job: true duplicate: true
}

// A paused queue keeps its jobs until it is resumed, on every client and across restarts.
func ExamplePauseQueue() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	if err := relay.PauseQueue(ctx, pool, "default", relay.Schema(schema)); err != nil {
		log.Fatal(err)
	}
	ran := make(chan int)
	c := startExampleClient(ctx, pool, relay.Config{Schema: schema}, func(ctx context.Context, job *relay.Job[StepArgs]) error {
		ran <- job.Args.N
		return nil
	})
	defer c.Stop(ctx)
	id, err := relay.Enqueue(ctx, pool, RunStep, StepArgs{N: 7}, relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	q, _ := relay.GetQueue(ctx, pool, "default", relay.Schema(schema))
	rec, _ := relay.GetJob(ctx, pool, id, relay.Schema(schema))
	fmt.Println("paused:", q.Paused, "job:", rec.State)

	if err := relay.ResumeQueue(ctx, pool, "default", relay.Schema(schema)); err != nil {
		log.Fatal(err)
	}
	fmt.Println("ran", <-ran)
	// Output:
	// paused: true job: pending
	// ran 7
}

// A group of queues ("tenant-*") needs no list of its queues: a dispatcher for a queue of
// the group starts when its first job's wakeup arrives, and goes away once idle.
func ExampleConfig_groups() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	ran := make(chan string)
	c := startExampleClient(ctx, pool, relay.Config{Schema: schema, Queues: map[string]relay.QueueConfig{"tenant-*": {Workers: 5}}},
		func(ctx context.Context, job *relay.Job[StepArgs]) error {
			ran <- job.Queue
			return nil
		})
	defer c.Stop(ctx)
	if _, err := relay.Enqueue(ctx, pool, RunStep, StepArgs{}, relay.Queue("tenant-acme"), relay.Schema(schema)); err != nil {
		log.Fatal(err)
	}
	fmt.Println("ran a job of", <-ran)
	// Output: ran a job of tenant-acme
}
