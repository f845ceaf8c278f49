package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/fleet"
	"github.com/relayq/relay/internal/lifecycle"
)

// producer enqueues the steady load: rate jobs per second, each in a transaction of its
// own, from the suite's own pool. Enqueues that fail (the database is down) are counted
// and not retried; a job is counted as enqueued only once its Commit returned.
type producer struct {
	r       *run
	svc     *lifecycle.Service
	ticks   chan int64 // the jobs to enqueue, by number
	workers sync.WaitGroup
	stopped sync.Once
	n       atomic.Int64 // jobs offered so far

	mu        sync.Mutex
	committed []int64
	// commitLag is, per job of the steady load, how long its Commit returned after its
	// transaction began: the job became visible to the workers that long after its
	// created_at (the transaction's start, on the database's clock).
	commitLag map[int64]time.Duration
	uncertain []int64 // Commit failed: the job may or may not exist
	failed    int     // refused before Commit
	skipped   int     // ticks dropped while every producer was stuck
}

// producers is how many goroutines enqueue at once: a slow commit must not hold up the
// rate.
const producers = 4

func startProducer(r *run, rate int) *producer {
	p := &producer{r: r, ticks: make(chan int64, rate), commitLag: map[int64]time.Duration{}}
	for range producers {
		p.workers.Go(func() {
			for n := range p.ticks {
				p.enqueue(context.Background(), n)
			}
		})
	}
	p.svc = every(time.Second/time.Duration(rate), func(context.Context) {
		select {
		case p.ticks <- p.n.Add(1):
		default:
			p.mu.Lock()
			p.skipped++
			p.mu.Unlock()
		}
	})
	return p
}

// stop stops offering jobs and waits for the enqueues under way.
func (p *producer) stop() {
	p.stopped.Do(func() {
		p.svc.Stop()
		close(p.ticks)
		p.workers.Wait()
	})
}

func (p *producer) enqueue(ctx context.Context, n int64) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	r := p.r
	tx, err := r.s.pool.Begin(ctx)
	if err != nil {
		p.count(0, false, false, 0)
		return
	}
	began := time.Now()
	defer tx.Rollback(context.WithoutCancel(ctx))
	id, err := relay.Enqueue(ctx, tx, fleet.Kind, workMix(n), relay.Queue(r.queue), relay.Schema(r.schema))
	if err != nil {
		p.count(0, false, false, 0)
		return
	}
	err = tx.Commit(ctx)
	p.count(id, err == nil, err != nil, time.Since(began))
}

// count records one enqueue: committed (lag after its transaction began), or uncertain
// (its Commit failed), or failed.
func (p *producer) count(id int64, committed, uncertain bool, lag time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case committed:
		p.committed = append(p.committed, id)
		p.commitLag[id] = lag
	case uncertain:
		p.uncertain = append(p.uncertain, id)
	default:
		p.failed++
	}
}

// enqueueMany enqueues works in batches of 1,000 (one statement each, committed at once)
// and records them with the producer's jobs.
func (p *producer) enqueueMany(ctx context.Context, works []fleet.Work) error {
	r := p.r
	for len(works) > 0 {
		n := min(len(works), 1000)
		specs := make([]relay.JobSpec, n)
		for i, w := range works[:n] {
			specs[i] = fleet.Kind.Job(w)
		}
		ids, err := relay.EnqueueMany(ctx, r.s.pool, specs, relay.Queue(r.queue), relay.Schema(r.schema))
		if err != nil {
			return err
		}
		p.mu.Lock()
		p.committed = append(p.committed, ids...)
		p.mu.Unlock()
		works = works[n:]
	}
	return nil
}

// monitor samples the queue every 100 ms: how many jobs are due and waiting, and how many
// are running. A sample the database does not answer is left out.
type monitor struct {
	svc *lifecycle.Service

	mu      sync.Mutex
	samples []sample
}

type sample struct {
	at           time.Time
	due, running int
	reserved     int // connections the clients reserved for themselves
}

const sampleEvery = 100 * time.Millisecond

func startMonitor(r *run) *monitor {
	m := &monitor{}
	m.svc = every(sampleEvery, func(ctx context.Context) {
		qctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		var s sample
		err := r.s.pool.QueryRow(qctx, `SELECT count(*) FILTER (WHERE state = 'pending' AND run_at <= now()),
			count(*) FILTER (WHERE state = 'running'),
			(SELECT count(*) FROM pg_stat_activity WHERE `+reservedBackends+`)
			FROM `+r.jobs()+` WHERE state IN ('pending', 'running')`).Scan(&s.due, &s.running, &s.reserved)
		if err == nil {
			s.at = time.Now()
			m.mu.Lock()
			m.samples = append(m.samples, s)
			m.mu.Unlock()
		}
	})
	return m
}

// every runs tick every interval, until the service is stopped.
func every(interval time.Duration, tick func(ctx context.Context)) *lifecycle.Service {
	return lifecycle.Go(context.Background(), func(ctx context.Context) error {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-t.C:
				tick(ctx)
			}
		}
	})
}

func (m *monitor) stop() { m.svc.Stop() }

func (m *monitor) all() []sample {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]sample(nil), m.samples...)
}
