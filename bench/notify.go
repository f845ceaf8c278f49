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
// connection LISTENs, another sends n NOTIFYs (each in its own transaction), the i-th at
// sendAt(i) after the first, and the latency of each is its arrival minus its send.
func notifyRoundTrip(ctx context.Context, b *bench, n int, sendAt func(i int) time.Duration) (histogram, error) {
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
	for i := range n {
		sleepUntil(ctx, base.Add(sendAt(i)))
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
		return nil, fmt.Errorf("%d notifications did not arrive within 10 s", n-int(hist.TotalCount()))
	}
}

// notifyAtRate is notifyRoundTrip at rate NOTIFYs per second for dur.
func notifyAtRate(ctx context.Context, b *bench, rate int, dur time.Duration) (histogram, error) {
	interval := time.Second / time.Duration(rate)
	return notifyRoundTrip(ctx, b, int(float64(rate)*dur.Seconds()), func(i int) time.Duration { return time.Duration(i) * interval })
}

// againstNotify reports the NOTIFY reference ref and the ratios of pickup latency to it;
// with targets, at most 2× at p50 and 5× at p99.
func againstNotify(name string, pickup, ref histogram, targets bool) []Metric {
	var p50, p99 *Target
	if targets {
		p50, p99 = atMost(2), atMost(5)
	}
	return []Metric{
		{Name: "NOTIFY round trip p50", Unit: unitMs, Value: ms(ref.ValueAtQuantile(50))},
		{Name: "NOTIFY round trip p99", Unit: unitMs, Value: ms(ref.ValueAtQuantile(99))},
		{Name: name + " p50 / NOTIFY p50", Unit: unitRatio, Value: float64(pickup.ValueAtQuantile(50)) / float64(max(ref.ValueAtQuantile(50), 1)), Target: p50},
		{Name: name + " p99 / NOTIFY p99", Unit: unitRatio, Value: float64(pickup.ValueAtQuantile(99)) / float64(max(ref.ValueAtQuantile(99), 1)), Target: p99},
	}
}

// statementRoundTrips measures the other floor under a pickup: the round trip of a one-row
// statement on a connection of its own, n of them sent at sendAt(i) after the first (the
// server process idle in between, as a pool connection is between claims at a low rate),
// and as many again back to back. A pickup pays one NOTIFY and then one claim, which on an
// idle client goes to a server process that has been asleep: on the machine of the README,
// waking one costs about as much as the rest of the round trip.
func statementRoundTrips(ctx context.Context, b *bench, n int, sendAt func(i int) time.Duration) (idle, hot histogram, err error) {
	conn, err := pgx.Connect(ctx, b.db.url)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	one := func(h histogram) error {
		began := time.Now()
		var x int
		if err := conn.QueryRow(ctx, "SELECT 1").Scan(&x); err != nil {
			return err
		}
		record(h, time.Since(began))
		return nil
	}
	idle, hot = newHist(), newHist()
	base := time.Now()
	for i := range n {
		sleepUntil(ctx, base.Add(sendAt(i)))
		if err := one(idle); err != nil {
			return nil, nil, err
		}
	}
	for range n {
		if err := one(hot); err != nil {
			return nil, nil, err
		}
	}
	return idle, hot, nil
}
