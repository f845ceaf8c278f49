package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/relayq/relay/internal/cpustat"
	"github.com/relayq/relay/relayotel"
)

// overheadPairs is how many times the overhead workload measures each variant.
const overheadPairs = 4

// runOverhead measures what relayotel costs: drain and latency R=1000, each run with
// telemetry off and on, alternating (off, on, then on, off, …) so that a drift of the
// machine's load touches both alike. "On" is what an application with tracing and metrics
// pays: the middleware on the client (a span and two instruments per attempt), Observe
// feeding the outcome counters, the enqueue middleware (a span per EnqueueMany, the trace
// context stored in every job's metadata, which every claim then carries and decodes), the
// depth gauges registered, every span sampled and handed to a batch processor. Each
// measurement reports the CPU that other processes used meanwhile: the machine is shared.
func runOverhead(ctx context.Context, b *bench) (*RunResult, error) {
	tel, tracedCtx, reader, closeTel, err := newTelemetry(ctx, b)
	if err != nil {
		return nil, err
	}
	defer closeTel()

	pgPID := b.db.postmasterPID()
	latencyDuration := max(b.opts.duration/4, time.Second)
	type sample struct{ value, p50, p99, other float64 }
	samples := map[string][]sample{}
	var notes []string
	measure := func(name string, on bool, run func(context.Context) (*RunResult, error)) error {
		variant := "off"
		runCtx := ctx
		if on {
			variant, runCtx, b.tel = "on", tracedCtx, tel
		}
		defer func() {
			b.tel = nil
			for _, stop := range b.telStops {
				stop()
			}
			b.telStops = nil
		}()
		if err := b.db.reset(ctx); err != nil {
			return err
		}
		cpu0 := cpustat.Take(pgPID)
		res, err := run(runCtx)
		if err != nil {
			return fmt.Errorf("%s, telemetry %s: %w", name, variant, err)
		}
		if err := b.db.waitBackendsGone(ctx); err != nil {
			b.log.Warn("waiting for the run's connections to close", "error", err)
		}
		cpu := cpuMetrics(cpu0, cpustat.Take(pgPID))
		s := sample{other: -1}
		if len(cpu) == 4 {
			s.other = cpu[3].Value
		}
		for _, m := range res.Metrics {
			switch {
			case strings.HasPrefix(m.Name, "throughput"), m.Name == "rate achieved":
				s.value = m.Value
			case m.Name == "latency p50":
				s.p50 = m.Value
			case m.Name == "latency p99":
				s.p99 = m.Value
			}
		}
		key := name + " " + variant
		samples[key] = append(samples[key], s)
		note := fmt.Sprintf("%s: %.0f/s", key, s.value)
		if name == "latency" {
			note = fmt.Sprintf("%s: p50 %.2f ms, p99 %.2f ms", key, s.p50, s.p99)
		}
		notes = append(notes, fmt.Sprintf("%s (other processes %.2f cores)", note, s.other))
		b.log.Info("overhead", "measured", note, "other processes (cores)", fmt.Sprintf("%.2f", s.other))
		return nil
	}
	saved := b.opts.duration
	defer func() { b.opts.duration = saved }()
	for i := range overheadPairs {
		order := []bool{false, true}
		if i%2 == 1 {
			order = []bool{true, false}
		}
		for _, on := range order {
			if err := measure("drain", on, func(ctx context.Context) (*RunResult, error) { return runDrain(ctx, b) }); err != nil {
				return nil, err
			}
		}
		for _, on := range order {
			b.opts.duration = latencyDuration
			err := measure("latency", on, func(ctx context.Context) (*RunResult, error) { return runLatency(ctx, b, 1000) })
			b.opts.duration = saved
			if err != nil {
				return nil, err
			}
		}
	}

	med := func(key string, of func(sample) float64) float64 {
		var v []float64
		for _, s := range samples[key] {
			v = append(v, of(s))
		}
		return median(v)
	}
	value := func(s sample) float64 { return s.value }
	p50 := func(s sample) float64 { return s.p50 }
	p99 := func(s sample) float64 { return s.p99 }
	other := func(s sample) float64 { return s.other }
	best := func(key string) float64 {
		var v float64
		for _, s := range samples[key] {
			v = max(v, s.value)
		}
		return v
	}
	off, on := med("drain off", value), med("drain on", value)
	res := &RunResult{Metrics: []Metric{
		{Name: "drain off (median jobs/s)", Unit: unitRate, Value: off},
		{Name: "drain on (median jobs/s)", Unit: unitRate, Value: on},
		{Name: "drain overhead (1 − on/off, %)", Unit: unitFloat, Value: 100 * (1 - on/off), Target: atMost(5)},
		// The best run of each is the one least disturbed by the machine's other load.
		{Name: "drain off (best jobs/s)", Unit: unitRate, Value: best("drain off")},
		{Name: "drain on (best jobs/s)", Unit: unitRate, Value: best("drain on")},
		{Name: "drain overhead, best runs (%)", Unit: unitFloat, Value: 100 * (1 - best("drain on")/best("drain off"))},
		{Name: "latency R=1000 off p50", Unit: unitMs, Value: med("latency off", p50)},
		{Name: "latency R=1000 on p50", Unit: unitMs, Value: med("latency on", p50)},
		{Name: "latency R=1000 off p99", Unit: unitMs, Value: med("latency off", p99)},
		{Name: "latency R=1000 on p99", Unit: unitMs, Value: med("latency on", p99)},
		{Name: "other processes, drain off/on (median cores)", Unit: unitFloat, Value: med("drain off", other)},
		{Name: "  … drain on", Unit: unitFloat, Value: med("drain on", other)},
	}, Notes: notes}

	// The telemetry saw what ran: a check that "on" measured what it claims to.
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		return nil, err
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != relayotel.MetricFinished {
				continue
			}
			var n int64
			if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, p := range sum.DataPoints {
					n += p.Value
				}
			}
			res.Notes = append(res.Notes, fmt.Sprintf("%s counted %d attempts over the \"on\" runs", relayotel.MetricFinished, n))
		}
	}
	return res, nil
}

// newTelemetry is relayotel as an application with tracing and metrics has it: every span
// sampled and handed to a batch processor (whose exporter discards them), metrics read by
// a manual reader (returned, to check what was counted), the depth gauges registered.
// tracedCtx holds the span of a producer's request, under which enqueues are traced.
func newTelemetry(ctx context.Context, b *bench) (tel *relayotel.Telemetry, tracedCtx context.Context, reader *sdkmetric.ManualReader, closeAll func(), err error) {
	reader = sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	cfg := relayotel.Config{MeterProvider: mp, TracerProvider: tp, DB: b.db.admin, Schema: b.opts.schema}
	if b.opts.telemetry == "metrics" {
		cfg.TracerProvider = nil
	}
	if tel, err = relayotel.New(cfg); err != nil {
		return nil, nil, nil, nil, err
	}
	tracedCtx, request := tp.Tracer("bench").Start(ctx, "producer")
	return tel, tracedCtx, reader, func() {
		request.End()
		tel.Close()
		mp.Shutdown(context.WithoutCancel(ctx))
		tp.Shutdown(context.WithoutCancel(ctx))
	}, nil
}
