package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/relayq/relay"
)

const (
	// interleavedJobs is the backlog of the interleaved drain: about ten seconds of work.
	interleavedJobs = 300_000
	// interleavedSlice is how long telemetry stays on, or off, in the interleaved drain: long
	// enough that the jobs of a slice are claimed, run and observed within it, short enough
	// for dozens of slices of each.
	interleavedSlice = 200 * time.Millisecond
	// interleavedWarmup slices are not counted: the client's first claims and statements.
	interleavedWarmup = 2
)

// interleaved is what an interleaved drain measured: the slices with telemetry on, and
// those with it off.
type interleaved struct {
	on, off half
}

// half is one half of an interleaved drain: how many slices, the jobs that ran in them,
// and the time they took together.
type half struct {
	n    int
	jobs int64
	took time.Duration
}

func (h *half) add(o half) { h.n, h.jobs, h.took = h.n+o.n, h.jobs+o.jobs, h.took+o.took }

func (h half) rate() float64 { return float64(h.jobs) / h.took.Seconds() }

// overhead is 1 − on/off, in percent.
func (r interleaved) overhead() float64 { return 100 * (1 - r.on.rate()/r.off.rate()) }

// runInterleaved drains one backlog of interleavedJobs no-op jobs with one client whose
// telemetry (tel's middleware and its Instrument: everything a client gets) is switched
// on and off every interleavedSlice, in the order off, on, on, off, … so that a drift
// touches both alike, and counts the handlers that ran in each slice.
//
// Separate drains, one with telemetry and one without, differ by up to 25 % from one to
// the next on this machine whatever they run: each starts a client on a freshly migrated
// schema, and the database's state (its buffers, WAL, the table's growth) differs. One
// drain, switched, compares the two on the same client and the same table at the same
// moment. What it leaves out: the trace context in each job's metadata, which both halves
// carry (the "metadata" variant measures it), and work the on-slices cause later, such as
// garbage collection and the span exporter, which falls in either half alike, so that at
// most half of it counts.
func runInterleaved(ctx context.Context, b *bench, tel *telemetry) (interleaved, error) {
	var res interleaved
	if err := b.db.reset(ctx); err != nil {
		return res, err
	}
	// b.tel is not set: this client's instrumentation is switched by hand, below.
	if _, err := enqueueNoOps(tel.ctx, b, interleavedJobs, append(b.enqueueOpts(benchQueue), tel.enqueue)); err != nil {
		return res, err
	}

	clientPool, err := b.db.newPool(ctx, b.opts.poolConns)
	if err != nil {
		return res, err
	}
	defer clientPool.Close()
	var on atomic.Bool
	switched := func(next relay.JobFunc) relay.JobFunc {
		instrumented := tel.tel.Middleware()(next)
		return func(ctx context.Context, job *relay.JobInfo) error {
			if on.Load() {
				return instrumented(ctx, job)
			}
			return next(ctx, job)
		}
	}
	var done atomic.Int64
	c, err := b.startClient(ctx, clientPool, map[string]relay.QueueConfig{benchQueue: {Workers: 100}},
		func(context.Context, *relay.Job[seqArgs]) error {
			done.Add(1)
			return nil
		},
		func(cfg *relay.Config) { cfg.Middleware = []relay.Middleware{switched} })
	if err != nil {
		return res, err
	}
	defer stopClient(ctx, c)

	var uninstrument func() // set while on
	set := func(to bool) error {
		switch {
		case to == (uninstrument != nil):
		case to:
			stop, err := tel.tel.Instrument(c)
			if err != nil {
				return err
			}
			uninstrument = stop
		default:
			uninstrument()
			uninstrument = nil
		}
		on.Store(to)
		return nil
	}
	defer func() { _ = set(false) }()
	// Slices until nine tenths of the backlog have run: the drain's tail, when claims come
	// back short, is left out.
	last, lastAt := done.Load(), time.Now()
	deadline := lastAt.Add(5 * time.Minute)
	for i := 0; last < interleavedJobs*9/10; i++ {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		state := i%4 == 1 || i%4 == 2 // off, on, on, off
		if err := set(state); err != nil {
			return res, err
		}
		time.Sleep(interleavedSlice) // a measured period, not a wait for an event
		n, at := done.Load(), time.Now()
		if i >= interleavedWarmup {
			h := &res.off
			if state {
				h = &res.on
			}
			h.add(half{n: 1, jobs: n - last, took: at.Sub(lastAt)})
		}
		last, lastAt = n, at
		if at.After(deadline) {
			return res, fmt.Errorf("interleaved drain: only %d of %d jobs ran within 5 minutes", last, interleavedJobs)
		}
	}
	if res.on.n == 0 || res.off.n == 0 {
		return res, fmt.Errorf("interleaved drain: the backlog ran in %d slices, too few to compare", res.on.n+res.off.n)
	}
	return res, nil
}
