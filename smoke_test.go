package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

type smokeArgs struct{ N int }

func TestSmoke(t *testing.T) {
	db := relaytest.NewDB(t)
	ctx := context.Background()
	c := relay.New(relay.Config{Schema: db.Schema, PollInterval: time.Hour})
	got := make(chan int, 10)
	if err := relay.Handle(c, "smoke", func(ctx context.Context, job *relay.Job[smokeArgs]) error {
		got <- job.Args.N
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, db.Pool); err != nil {
		t.Fatal(err)
	}
	defer c.Stop(ctx)
	start := time.Now()
	tx, _ := db.Begin(ctx)
	if _, err := relay.Enqueue(ctx, tx, "smoke", smokeArgs{N: 7}, relay.Schema(db.Schema)); err != nil {
		t.Fatal(err)
	}
	tx.Commit(ctx)
	select {
	case n := <-got:
		t.Logf("got %d after %v", n, time.Since(start))
	case <-time.After(2 * time.Second):
		t.Fatal("not run")
	}
	ids, err := relay.EnqueueMany(ctx, db, []relay.JobSpec{{Kind: "smoke", Args: smokeArgs{1}}, {Kind: "smoke", Args: smokeArgs{2}, Options: []relay.EnqueueOption{relay.RunIn(100 * time.Millisecond)}}}, relay.Schema(db.Schema))
	if err != nil {
		t.Fatal(err)
	}
	t.Log(ids)
	for range 2 {
		select {
		case n := <-got:
			t.Logf("got %d after %v", n, time.Since(start))
		case <-time.After(2 * time.Second):
			t.Fatal("not run")
		}
	}
	relaytest.WaitFor(t, 2*time.Second, "succeeded", func() bool {
		js := relaytest.Jobs(t, db)
		for _, j := range js {
			if j.State != "succeeded" {
				return false
			}
		}
		return true
	})
	t.Log(relaytest.Jobs(t, db))
}
