package dispatcher_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/relayq/relay/dispatcher"
)

// memQueue is a [dispatcher.Claimer] on an in-memory list of due jobs, in claim order: what
// a program that keeps its jobs elsewhere than in relay's tables would write. A claim
// takes up to the request's Limit jobs and bumps their attempt, as a lease would.
type memQueue struct {
	mu   sync.Mutex
	jobs []*dispatcher.Job
}

func (q *memQueue) add(j *dispatcher.Job) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.jobs = append(q.jobs, j)
}

func (q *memQueue) Claim(_ context.Context, r dispatcher.ClaimRequest) (dispatcher.Claimed, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(r.Limit, len(q.jobs))
	c := dispatcher.Claimed{Jobs: slices.Clone(q.jobs[:n])}
	q.jobs = q.jobs[n:]
	for _, j := range c.Jobs {
		j.Attempt++
		c.Last = dispatcher.Cursor{Priority: j.Priority, RunAt: j.RunAt, ID: j.ID}
	}
	return c, nil
}

// A dispatcher runs the jobs its Claimer hands out, at most Workers at a time: the ones
// waiting when it starts, and those it is told of with Notify.
func Example() {
	q := &memQueue{}
	now := time.Now()
	for id := range int64(3) {
		q.add(&dispatcher.Job{ID: id + 1, Kind: "greet", Queue: "default", RunAt: now})
	}

	var (
		mu   sync.Mutex
		ran  []string
		jobs sync.WaitGroup
	)
	jobs.Add(5)
	d := dispatcher.New(dispatcher.Config{
		Claimer: q, Queue: "default", Workers: 2, Poll: time.Minute,
		Run: func(j *dispatcher.Job) {
			defer jobs.Done()
			mu.Lock()
			defer mu.Unlock()
			ran = append(ran, fmt.Sprintf("%s #%d (attempt %d)", j.Kind, j.ID, j.Attempt))
		},
	})
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }() // claims the waiting jobs at once

	// Two more jobs become due; Notify says where in the queue the first of them lies.
	for id := int64(4); id <= 5; id++ {
		q.add(&dispatcher.Job{ID: id, Kind: "greet", Queue: "default", RunAt: now})
	}
	d.Notify(0, dispatcher.Cursor{RunAt: now, ID: 4})

	jobs.Wait()
	stop()
	<-done
	d.Wait()
	slices.Sort(ran)
	for _, r := range ran {
		fmt.Println(r)
	}
	// Output:
	// greet #1 (attempt 1)
	// greet #2 (attempt 1)
	// greet #3 (attempt 1)
	// greet #4 (attempt 1)
	// greet #5 (attempt 1)
}
