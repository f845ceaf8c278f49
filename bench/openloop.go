package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
)

// loopResult is what an open-loop producer did.
type loopResult struct {
	sent    int64
	elapsed time.Duration // first scheduled send → last Commit returned
	maxLag  time.Duration // the most a send was behind its schedule
	commit  histogram     // each transaction, Begin → Commit returned
}

func (l loopResult) rate() float64 {
	if l.sent < 2 {
		return 0
	}
	return rateOver(l.sent, l.elapsed)
}

// openLoop commits n transactions, one at a time, at rate a second on an open-loop
// schedule: behind schedule it sends at once and skips nothing, and it gives up 2 × dur
// + 5 s in. send(i) commits the i-th and returns the time its Commit returned.
func openLoop(ctx context.Context, b *bench, rate int, n int64, dur time.Duration, send func(i int64) (time.Time, error)) (loopResult, error) {
	r := loopResult{commit: newHist()}
	interval := float64(time.Second) / float64(rate)
	giveUp := 2*dur + 5*time.Second
	start := time.Now()
	var last time.Time
	for i := range n {
		due := start.Add(time.Duration(float64(i) * interval))
		sleepUntil(ctx, due)
		if ctx.Err() != nil {
			break
		}
		t0 := time.Now()
		r.maxLag = max(r.maxLag, t0.Sub(due))
		var err error
		if last, err = send(i); err != nil {
			return r, fmt.Errorf("producer: %w", err)
		}
		record(r.commit, last.Sub(t0))
		r.sent++
		if last.Sub(start) > giveUp {
			b.log.Warn("producer too far behind schedule; stopping early", "sent", r.sent, "of", n)
			break
		}
	}
	r.elapsed = last.Sub(start)
	return r, nil
}

// enqueueOpenLoop is the producer of latency, ordered, limited and retention: openLoop
// of n jobs, sequence numbers lo, lo+1, …, each enqueued with the options opts(seq) in a
// transaction of its own on pool. It records each job's Commit in rec and its id in ids
// (if not nil), and counts the jobs sent in sent.
func enqueueOpenLoop(ctx context.Context, b *bench, pool *pgxpool.Pool, rec *recorder, ids []int64, lo, n int64, rate int, dur time.Duration, sent *atomic.Int64, opts func(seq int64) []relay.EnqueueOption) (loopResult, error) {
	return openLoop(ctx, b, rate, n, dur, func(i int64) (time.Time, error) {
		seq := lo + i
		committed, id, err := enqueueOne(ctx, pool, rec, seq, opts(seq))
		if err != nil {
			return time.Time{}, err
		}
		if ids != nil {
			ids[seq] = id
		}
		sent.Add(1)
		return committed, nil
	})
}

// rateOver is n jobs over span, in jobs/s (0 for an empty span).
func rateOver(n int64, span time.Duration) float64 {
	if span <= 0 {
		return 0
	}
	return float64(n) / span.Seconds()
}
