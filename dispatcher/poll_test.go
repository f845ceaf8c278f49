package dispatcher_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/relayq/relay/dispatcher"
	"github.com/relayq/relay/internal/loadavg"
)

// emptyQueues is a Claimer of queues that never have a job: it only records when each
// queue's claims were made, and signals each queue's second one.
type emptyQueues struct {
	mu     sync.Mutex
	claims map[string][]time.Time
	second chan string
}

func (e *emptyQueues) Claim(_ context.Context, r dispatcher.ClaimRequest) (dispatcher.Claimed, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.claims[r.Queue] = append(e.claims[r.Queue], time.Now())
	if len(e.claims[r.Queue]) == 2 {
		e.second <- r.Queue
	}
	return dispatcher.Claimed{}, nil
}

// The dispatchers of a client start together; if they polled in step, a client of many
// queues would send all their claims at once every interval, more than its pool has
// connections, and every pickup at that moment would wait for them. Each dispatcher's first
// poll comes after a random part of the interval instead, so the polls are spread over it.
func TestDispatchersThatStartTogetherPollApart(t *testing.T) {
	t.Parallel()
	const (
		queues = 20
		poll   = 400 * time.Millisecond
	)
	claimer := &emptyQueues{claims: map[string][]time.Time{}, second: make(chan string, queues)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for i := range queues {
		d := dispatcher.New(dispatcher.Config{
			Claimer: claimer, Queue: fmt.Sprintf("q%02d", i), Workers: 1, Poll: poll, Run: func(*dispatcher.Job) {},
		})
		wg.Go(func() { d.Run(ctx) })
	}
	// Each dispatcher claims once as it starts, and then at each poll: nothing else wakes it.
	for range queues {
		recv(t, claimer.second, "a dispatcher's first poll")
	}
	claimer.mu.Lock()
	var polls []time.Time
	for q, at := range claimer.claims {
		if gap := at[1].Sub(at[0]); gap > poll+loadavg.Scaled(poll/2) {
			t.Errorf("queue %s first polled %v after it started, with a poll interval of %v (×%.1f for the machine's load)",
				q, gap, poll, loadavg.Overload())
		}
		polls = append(polls, at[1])
	}
	claimer.mu.Unlock()
	// Spread uniformly over the interval, 20 first polls all fall within a quarter of it
	// with a probability below 1e-10; in step, they fall within a few milliseconds.
	first, last := slices.MinFunc(polls, time.Time.Compare), slices.MaxFunc(polls, time.Time.Compare)
	if spread := last.Sub(first); spread < poll/4 {
		t.Errorf("the %d dispatchers' first polls came within %v of each other; want them spread over the %v interval", queues, spread, poll)
	}
}
