package main

import (
	"context"
	"fmt"
)

// poolerRounds is how many times the poolers workload measures each variant.
const poolerRounds = 2

// poolerVariant is one way of reaching PostgreSQL that the poolers workload compares.
type poolerVariant struct {
	name     string
	via      bool // the pools go through PgBouncer in transaction mode
	pollOnly bool // the clients run with Config.PollOnly
}

var poolerVariants = []poolerVariant{
	{name: "direct"},
	{name: "pgbouncer", via: true},                 // listener direct (ListenerConnString)
	{name: "poll-only", via: true, pollOnly: true}, // through PgBouncer alone
}

// runPoolers measures what a pooler costs: pickup latency at R=100 and drain, each with the
// pools connected to PostgreSQL directly, through PgBouncer in transaction mode (the
// listener direct, Config.ListenerConnString), and through PgBouncer alone with
// Config.PollOnly (at -poll-interval, default relay's), taking turns so that a drift of the
// machine's load touches every variant alike.
func runPoolers(ctx context.Context, b *bench) (*RunResult, error) {
	if err := b.db.startBouncer(ctx); err != nil {
		return nil, err
	}
	savedVia, savedPoll := b.db.via, b.opts.pollOnly
	defer func() { b.db.via, b.opts.pollOnly = savedVia, savedPoll }()
	samples := map[string][]sample{}
	var notes []string
	for round := range poolerRounds {
		for i := range poolerVariants {
			v := poolerVariants[(i+round)%len(poolerVariants)]
			b.db.via, b.opts.pollOnly = v.via, v.pollOnly
			for _, w := range []struct {
				name string
				run  func(context.Context) (*RunResult, error)
			}{
				{"drain", func(ctx context.Context) (*RunResult, error) { return runDrain(ctx, b) }},
				{"latency R=100", func(ctx context.Context) (*RunResult, error) { return runLatency(ctx, b, 100) }},
			} {
				key := w.name + " " + v.name
				s, note, err := b.measure(ctx, key, w.run)
				if err != nil {
					return nil, fmt.Errorf("%s: %w", key, err)
				}
				samples[key] = append(samples[key], s)
				notes = append(notes, note)
			}
		}
	}

	res := &RunResult{Notes: append([]string{
		fmt.Sprintf("poll-only polls every %v; pgbouncer: transaction mode, statements unprepared (default_query_exec_mode=exec); its CPU counts in \"other processes\"",
			pollInterval(options{pollOnly: true, pollInterval: b.opts.pollInterval})),
	}, notes...)}
	direct := medianOf(samples["drain direct"], sample.rate)
	for _, v := range poolerVariants {
		drain := medianOf(samples["drain "+v.name], sample.rate)
		l := "latency R=100 " + v.name
		res.Metrics = append(res.Metrics, Metric{Name: "drain " + v.name + " (median jobs/s)", Unit: unitRate, Value: drain})
		if v.name != "direct" {
			res.Metrics = append(res.Metrics, Metric{Name: "drain " + v.name + " / direct", Unit: unitRatio, Value: drain / direct})
		}
		res.Metrics = append(res.Metrics,
			Metric{Name: "drain " + v.name + ", cpu per job in PostgreSQL (median)", Unit: unitMicros,
				Value: medianOf(samples["drain "+v.name], func(s sample) float64 { return s.pgCPU })},
			Metric{Name: l + " p50", Unit: unitMs, Value: medianOf(samples[l], sample.latencyP50)},
			Metric{Name: l + " p99", Unit: unitMs, Value: medianOf(samples[l], sample.latencyP99)},
			Metric{Name: "other processes, " + v.name + " (median cores)", Unit: unitFloat,
				Value: medianOf(append(samples["drain "+v.name], samples[l]...), sample.others)},
		)
	}
	return res, nil
}
