// Command outside uses relay's public subpackages from another module, as a program that
// brings its own storage would: a dispatcher claiming from an in-memory queue, a lease
// keeper and a rescuer working on in-memory leases, a listener and a backoff policy.
// internal/outside builds and vets it against the module's public API.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/dispatcher"
	"github.com/relayq/relay/lease"
	"github.com/relayq/relay/listener"
)

// memQueue is an in-memory dispatcher.Claimer: one queue of due jobs.
type memQueue struct {
	mu      sync.Mutex
	pending []*dispatcher.Job
}

func (q *memQueue) Claim(_ context.Context, r dispatcher.ClaimRequest) (dispatcher.Claimed, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := min(r.Limit, len(q.pending))
	c := dispatcher.Claimed{Jobs: q.pending[:n:n], Settings: dispatcher.QueueSettings{}}
	q.pending = q.pending[n:]
	for _, j := range c.Jobs {
		j.Attempt++
		if last := (dispatcher.Cursor{Priority: j.Priority, RunAt: j.RunAt, ID: j.ID}); c.Last.Before(last) {
			c.Last = last
		}
	}
	return c, nil
}

// memLeases is an in-memory lease.Renewer.
type memLeases struct {
	mu      sync.Mutex
	expires map[int64]time.Time
}

func (m *memLeases) Renew(_ context.Context, held []lease.Held, ttl time.Duration) (lease.Renewal, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r := lease.Renewal{Held: map[int64]bool{}, Renewed: map[int64]bool{}}
	for _, h := range held {
		if _, ok := m.expires[h.ID]; ok {
			m.expires[h.ID] = time.Now().Add(ttl)
			r.Held[h.ID], r.Renewed[h.ID] = true, true
		}
	}
	return r, nil
}

func (m *memLeases) RenewLocked(ctx context.Context, h lease.Held, ttl, _ time.Duration) (bool, error) {
	r, err := m.Renew(ctx, []lease.Held{h}, ttl)
	return r.Held[h.ID], err
}

func (m *memLeases) rescue(_ context.Context, limit int) (lease.Rescued, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var r lease.Rescued
	for id, at := range m.expires {
		if len(r.IDs) < limit && at.Before(time.Now()) {
			r.IDs = append(r.IDs, id)
			delete(m.expires, id)
		}
	}
	return r, nil
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	logger := slog.Default()

	leases := &memLeases{expires: map[int64]time.Time{}}
	keeper := lease.NewKeeper(lease.KeeperConfig{Renewer: leases, TTL: time.Second, Interval: 100 * time.Millisecond, Logger: logger})
	rescuer := lease.NewRescuer(lease.RescuerConfig{Rescue: leases.rescue, MaxWait: time.Second, Logger: logger})
	go keeper.Run(ctx)
	go rescuer.Run(ctx)

	q := &memQueue{}
	for i := range 10 {
		q.pending = append(q.pending, &dispatcher.Job{ID: int64(i + 1), Kind: "print", Queue: "default", RunAt: time.Now()})
	}
	var done sync.WaitGroup
	done.Add(len(q.pending))
	d := dispatcher.New(dispatcher.Config{
		Claimer: q, Queue: "default", Workers: 4, Poll: time.Second, Slots: dispatcher.NewSlots(8), Logger: logger,
		Run: func(j *dispatcher.Job) {
			defer done.Done()
			jobCtx, stop := context.WithCancelCause(ctx)
			defer stop(nil)
			keeper.Hold(j.ID, j.Attempt, stop)
			defer keeper.Release(j.ID, j.Attempt)
			if errors.Is(context.Cause(jobCtx), lease.ErrLostLease) {
				return
			}
			fmt.Println("ran job", j.ID, "attempt", j.Attempt)
		},
	})
	go d.Run(ctx)
	d.Notify(0, dispatcher.Cursor{RunAt: time.Now()})
	done.Wait()
	d.Wait()

	l := listener.New(listener.Config{
		Connect:  func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, "") },
		Channel:  "outside",
		OnNotify: func(string) { d.Wake() },
		Reconnect: backoff.Policy{
			Initial: 50 * time.Millisecond, Multiplier: 2, Max: time.Second, Jitter: 0.2,
		},
	})
	_ = l.Listening()
	fmt.Println("first retry after about", backoff.Default().Delay(1))
}
