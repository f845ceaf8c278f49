package main

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// notifyRoundTrip measures the floor under relay's pickup latency on this machine: one
// connection LISTENs, another sends NOTIFY (each in its own transaction) at rate per second
// for dur, and the latency of each is its arrival minus the moment its statement returned,
// as relay's latency is a job's start minus the moment its Commit returned.
func notifyRoundTrip(ctx context.Context, b *bench, rate int, dur time.Duration) (histogram, error) {
	listen, err := pgx.Connect(ctx, b.db.url)
	if err != nil {
		return nil, err
	}
	defer listen.Close(context.WithoutCancel(ctx))
	send, err := pgx.Connect(ctx, b.db.url)
	if err != nil {
		return nil, err
	}
	defer send.Close(context.WithoutCancel(ctx))
	channel := "relay_bench_reference"
	if _, err := listen.Exec(ctx, "LISTEN "+channel); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx) // ends the receiver before the connections close
	defer cancel()

	n := int(float64(rate) * dur.Seconds())
	sent := make([]atomic.Int64, n) // ns since base when each NOTIFY was sent
	hist := newHist()
	received := make(chan error, 1)
	base := time.Now()
	go func() {
		for got := 0; got < n; got++ {
			msg, err := listen.WaitForNotification(ctx)
			if err != nil {
				received <- err
				return
			}
			at := time.Since(base)
			i, err := strconv.Atoi(msg.Payload)
			if err != nil || i < 0 || i >= n {
				received <- fmt.Errorf("unexpected payload %q", msg.Payload)
				return
			}
			for sent[i].Load() == 0 { // the sender stores it before it sends
				time.Sleep(10 * time.Microsecond)
			}
			record(hist, max(at-time.Duration(sent[i].Load()), 0))
		}
		received <- nil
	}()
	interval := time.Second / time.Duration(rate)
	for i := range n {
		sleepUntil(ctx, base.Add(time.Duration(i)*interval))
		// From the send, not from its return: the notification is delivered as the
		// sender's commit completes, as its reply is, so timing from the reply measured
		// nothing but which of the two processes ran first (0 on a quiet machine).
		sent[i].Store(max(int64(time.Since(base)), 1))
		if _, err := send.Exec(ctx, "SELECT pg_notify($1, $2)", channel, strconv.Itoa(i)); err != nil {
			return nil, err
		}
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	select {
	case err := <-received:
		return hist, err
	case <-timeout.C:
		cancel()
		<-received
		return nil, fmt.Errorf("NOTIFY reference: %d notifications did not arrive within 10 s", n-int(hist.TotalCount()))
	}
}
