package relay_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/relayq/relay"
)

// A job every second: every client that registers the schedule enqueues its slots, and
// the database keeps one job per slot. The handler knows the slot its job is for.
func ExampleSchedule() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	type TickArgs struct{}
	tick := relay.NewKind[TickArgs]("tick")
	ran := make(chan *relay.Job[TickArgs], 1)
	client := relay.New(relay.Config{Schema: schema})
	err := relay.Handle(client, tick, func(ctx context.Context, job *relay.Job[TickArgs]) error {
		select {
		case ran <- job:
		default:
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	err = relay.Schedule(client, "tick", relay.Every(time.Second), tick.Job(TickArgs{}, relay.Queue("default")),
		relay.CatchUp(relay.Backfill(time.Minute)))
	if err != nil {
		log.Fatal(err)
	}
	if err := client.Start(ctx, pool); err != nil {
		log.Fatal(err)
	}
	defer client.Stop(ctx)

	job := <-ran
	fmt.Println(job.Schedule, "slot on a whole second:", job.Slot.Equal(job.Slot.Truncate(time.Second)))
	schedules, err := relay.ListSchedules(ctx, pool, relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	s := schedules[0]
	fmt.Println(s.Name, s.Spec, s.CatchUp, s.LastSlot.Before(s.NextSlot))
	// Output:
	// tick slot on a whole second: true
	// tick every 1s backfill 1m0s true
}

// Bulk actions count first: a dry run says how many jobs the filter selects.
func ExampleDeleteJobs() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	for range 3 {
		if _, err := relay.Enqueue(ctx, pool, SendEmail, EmailArgs{}, relay.Queue("outbox"), relay.Schema(schema)); err != nil {
			log.Fatal(err)
		}
	}
	pending := relay.ListFilter{Queue: "outbox", States: []relay.JobState{relay.StatePending}}
	n, err := relay.CancelJobs(ctx, pool, pending, relay.DryRun(), relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("would cancel", n)
	if n, err = relay.CancelJobs(ctx, pool, pending, relay.Schema(schema)); err != nil {
		log.Fatal(err)
	}
	fmt.Println("cancelled", n)
	cancelled := relay.ListFilter{Queue: "outbox", States: []relay.JobState{relay.StateCancelled}}
	if n, err = relay.DeleteJobs(ctx, pool, cancelled, relay.Schema(schema)); err != nil {
		log.Fatal(err)
	}
	fmt.Println("deleted", n)
	// Output:
	// would cancel 3
	// cancelled 3
	// deleted 3
}
