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

// LedgerEntry are the args of a PostEntry job: one entry of an account's ledger, posted
// in the order the entries were reserved.
type LedgerEntry struct {
	Account string
	Amount  int
	Memo    string
}

var PostEntry = relay.NewKind[LedgerEntry]("post-entry")

// A producer reserves an entry's place in its account's sequence before it knows whether
// the payment goes through: the entries enqueued after it wait behind it. Once the
// payment provider accepts, the producer commits the reservation, in the transaction of
// its own writes; a reservation it never commits (the card was declined) expires at its
// deadline without running, and the account's sequence moves on.
func ExampleReserved() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	if err := relay.SetQueue(ctx, pool, "ledger", relay.QueueSettings{Ordered: true}, relay.Schema(schema)); err != nil {
		log.Fatal(err)
	}
	posted := make(chan string)
	c := relay.New(relay.Config{Schema: schema, Queues: map[string]relay.QueueConfig{"ledger": {Workers: 4}}})
	err := relay.Handle(c, PostEntry, func(ctx context.Context, job *relay.Job[LedgerEntry]) error {
		posted <- fmt.Sprintf("%s %+d %s", job.Args.Account, job.Args.Amount, job.Args.Memo)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Start(ctx, pool); err != nil {
		log.Fatal(err)
	}
	defer c.Stop(ctx)

	// reserve holds a place in the account's sequence for a minute at most.
	reserve := func(e LedgerEntry, within time.Duration) int64 {
		id, err := relay.Enqueue(ctx, pool, PostEntry, e, relay.Queue("ledger"), relay.OrderKey(e.Account),
			relay.Reserved(within), relay.Schema(schema))
		if err != nil {
			log.Fatal(err)
		}
		return id
	}
	charge := reserve(LedgerEntry{Account: "acct-1", Amount: 100, Memo: "card payment"}, time.Minute)
	declined := reserve(LedgerEntry{Account: "acct-1", Amount: 250, Memo: "declined card"}, 200*time.Millisecond)
	_, err = relay.Enqueue(ctx, pool, PostEntry, LedgerEntry{Account: "acct-1", Amount: -30, Memo: "fee"},
		relay.Queue("ledger"), relay.OrderKey("acct-1"), relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}

	// … the payment provider accepts the first charge: commit it with the producer's own writes.
	tx, err := pool.Begin(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// (the producer's own writes go here, in tx)
	if err := relay.CommitJobs(ctx, tx, []int64{charge}, relay.Schema(schema)); err != nil {
		log.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(<-posted)
	// The second charge is declined and never committed: it expires, then the fee posts.
	fmt.Println(<-posted)
	rec, err := relay.GetJob(ctx, pool, declined, relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("declined entry:", rec.State, rec.Attempts[0].Reason)
	err = relay.CommitJobs(ctx, pool, []int64{declined}, relay.Schema(schema))
	fmt.Println("commit after the deadline:", errors.Is(err, relay.ErrReservationExpired))
	// Output:
	// acct-1 +100 card payment
	// acct-1 -30 fee
	// declined entry: cancelled expired
	// commit after the deadline: true
}

// Declined is the structured data a PostEntry handler records when a payment provider
// declines a charge.
type Declined struct {
	Code       string `json:"code"`
	ProviderID string `json:"provider_id"`
}

// A handler's error can carry structured data: it is recorded as JSON with the attempt,
// next to the error's text, and read back typed by operators and retry logic.
func ExampleErrorData() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	c := relay.New(relay.Config{Schema: schema})
	errDeclined := errors.New("the card was declined")
	err := relay.Handle(c, PostEntry, func(ctx context.Context, job *relay.Job[LedgerEntry]) error {
		// Retrying will not make the card good: fail the job now, with the provider's answer.
		return relay.Discard(relay.ErrorData(errDeclined, Declined{Code: "insufficient_funds", ProviderID: "ch_123"}))
	})
	if err != nil {
		log.Fatal(err)
	}
	events, unsubscribe := c.Subscribe(1)
	defer unsubscribe()
	if err := c.Start(ctx, pool); err != nil {
		log.Fatal(err)
	}
	defer c.Stop(ctx)

	id, err := relay.Enqueue(ctx, pool, PostEntry, LedgerEntry{Account: "acct-1", Amount: 250}, relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	<-events // the attempt's outcome is committed

	rec, err := relay.GetJob(ctx, pool, id, relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	a := rec.Attempts[0]
	var d Declined
	if ok, err := a.DecodeData(&d); !ok || err != nil {
		log.Fatal("no data: ", err, a.DataError)
	}
	fmt.Println(rec.State, a.Reason, a.Error)
	fmt.Println(d.Code, d.ProviderID)
	// Output:
	// failed discarded the card was declined
	// insufficient_funds ch_123
}

// A job may carry its own retry policy, stored with it: whichever client runs it retries
// it so, whatever its kind's policy says.
func ExampleBackoff_job() {
	ctx := context.Background()
	pool, schema, cleanup := migratedExampleDB(ctx)
	defer cleanup()

	done := make(chan int)
	// This client retries after an hour; the job's own policy wins.
	hourly := backoff.Policy{Initial: time.Hour, Multiplier: 1, Max: time.Hour}
	c := startExampleClient(ctx, pool, relay.Config{Schema: schema, Backoff: hourly}, func(ctx context.Context, job *relay.Job[StepArgs]) error {
		if job.Attempt < 3 {
			return errors.New("not yet")
		}
		done <- job.Attempt
		return nil
	})
	defer c.Stop(ctx)

	// Retried after about 10 ms, then 20 ms.
	quick := backoff.Policy{Initial: 10 * time.Millisecond, Multiplier: 2, Max: time.Second, Jitter: 0.1}
	_, err := relay.Enqueue(ctx, pool, RunStep, StepArgs{N: 1}, relay.Backoff(quick), relay.Schema(schema))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("succeeded on attempt", <-done)
	// Output:
	// succeeded on attempt 3
}
