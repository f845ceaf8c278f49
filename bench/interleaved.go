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

// interleaved is what one interleaved drain measured: jobs run, and the time, with
// telemetry on and with it off.
type interleaved struct {
	onJobs, offJobs int64
	on, off         time.Duration
	slices          int
}

func (r interleaved) onRate() float64  { return float64(r.onJobs) / r.on.Seconds() }
func (r interleaved) offRate() float64 { return float64(r.offJobs) / r.off.Seconds() }

// overhead is 1 − on/off, in percent.
func (r interleaved) overhead() float64 { return 100 * (1 - r.onRate()/r.offRate()) }

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
	opts := []relay.EnqueueOption{relay.Schema(b.opts.schema), relay.Queue(benchQueue), tel.enqueue}
	if _, err := enqueueNoOps(tel.ctx, b, interleavedJobs, opts); err != nil {
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

	var uninstrument func()
	set := func(to bool) error {
		if to == on.Load() {
			return nil
		}
		on.Store(to)
		if !to {
			uninstrument()
			return nil
		}
		stop, err := tel.tel.Instrument(c)
		uninstrument = stop
		return err
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
			if state {
				res.onJobs, res.on = res.onJobs+n-last, res.on+at.Sub(lastAt)
			} else {
				res.offJobs, res.off = res.offJobs+n-last, res.off+at.Sub(lastAt)
			}
			res.slices++
		}
		last, lastAt = n, at
		if at.After(deadline) {
			return res, fmt.Errorf("interleaved drain: only %d of %d jobs ran within 5 minutes", last, interleavedJobs)
		}
	}
	if res.on == 0 || res.off == 0 {
		return res, fmt.Errorf("interleaved drain: the backlog ran in %d slices, too few to compare", res.slices)
	}
	return res, nil
}
