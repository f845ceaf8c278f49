package main

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/cpustat"
	"github.com/relayq/relay/relayotel"
)

const (
	// overheadPairs is how many times the overhead workload measures each variant in
	// drains and latency runs of their own.
	overheadPairs = 4
	// interleavedRuns is how many drains it then switches telemetry on and off in: one
	// drain's figure moves by several points from the next (−1 % to 8 % for metrics), so
	// the target applies to their mean, whose 95 % interval eight drains narrow to ±1–2.
	interleavedRuns = 8
)

// overheadRates are the rates at which the overhead workload measures pickup latency.
var overheadRates = []int{100, 1000}

// runOverhead measures what relayotel costs: drain and latency at R=100 and R=1000, each
// run with telemetry off and on, alternating (off, on, then on, off, …) so that a drift of
// the machine's load touches both alike. "On" is the -telemetry variant (default on: what
// an application with tracing, every span recorded, and metrics pays — the middleware on
// the client (a span, the started counter and the pickup histogram per attempt), Observe
// feeding the outcome counters and the duration histogram, the enqueue middleware (a span
// per EnqueueMany, the trace context stored in every job's metadata, which every claim
// then carries and decodes), the depth gauges registered, spans handed to a batch
// processor). Each measurement reports the CPU that other processes used meanwhile (the
// machine is shared), and a drain the CPU time it took per job, here and in PostgreSQL,
// which the machine's other load hardly changes. Then interleavedRuns drains in which the
// client's instrumentation is switched on and off every 200 ms (runInterleaved): the
// measure the target applies to, since separate drains of the same code differ by more
// than the overhead.
func runOverhead(ctx context.Context, b *bench) (*RunResult, error) {
	tel, err := newTelemetry(ctx, b)
	if err != nil {
		return nil, err
	}
	defer tel.close()

	latencyDuration := max(b.opts.duration/4, time.Second)
	samples := map[string][]sample{}
	var notes []string
	measure := func(name string, on bool, run func(context.Context) (*RunResult, error)) error {
		variant := "off"
		runCtx := ctx
		if on {
			variant, runCtx, b.tel = "on", tel.ctx, tel
		}
		defer func() {
			b.tel = nil
			for _, stop := range b.telStops {
				stop()
			}
			b.telStops = nil
		}()
		s, note, err := b.measure(runCtx, name+" "+variant, run)
		if err != nil {
			return fmt.Errorf("%s, telemetry %s: %w", name, variant, err)
		}
		samples[name+" "+variant] = append(samples[name+" "+variant], s)
		notes = append(notes, note)
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
		for _, rate := range overheadRates {
			for _, on := range order {
				b.opts.duration = latencyDuration
				err := measure(fmt.Sprintf("latency R=%d", rate), on, func(ctx context.Context) (*RunResult, error) { return runLatency(ctx, b, rate) })
				b.opts.duration = saved
				if err != nil {
					return nil, err
				}
			}
		}
	}

	// The same comparison within single drains, telemetry switched on and off.
	var mixed []interleaved
	for i := range interleavedRuns {
		if tel.tel == nil {
			break // the metadata variant has no instrumentation to switch
		}
		r, err := runInterleaved(ctx, b, tel)
		if err != nil {
			return nil, err
		}
		b.log.Info("measured", "run", fmt.Sprintf("interleaved drain %d", i+1), "off jobs/s", int(r.off.rate()), "on jobs/s", int(r.on.rate()),
			"overhead %", fmt.Sprintf("%.1f", r.overhead()))
		notes = append(notes, fmt.Sprintf("interleaved drain %d: %d slices of %v; off %.0f/s, on %.0f/s: %.1f %%",
			i+1, r.on.n+r.off.n, interleavedSlice, r.off.rate(), r.on.rate(), r.overhead()))
		mixed = append(mixed, r)
	}

	med := func(key string, of func(sample) float64) float64 { return medianOf(samples[key], of) }
	value, p50, p99, other := sample.rate, sample.latencyP50, sample.latencyP99, sample.others
	best := func(key string) float64 { return bestRate(samples[key]) }
	off, on := med("drain off", value), med("drain on", value)
	res := &RunResult{Metrics: []Metric{
		{Name: "drain off (median jobs/s)", Unit: unitRate, Value: off},
		{Name: "drain on (median jobs/s)", Unit: unitRate, Value: on},
		{Name: "drain overhead (1 − on/off, %)", Unit: unitFloat, Value: 100 * (1 - on/off)},
		// The best run of each is the one least disturbed by the machine's other load.
		{Name: "drain off (best jobs/s)", Unit: unitRate, Value: best("drain off")},
		{Name: "drain on (best jobs/s)", Unit: unitRate, Value: best("drain on")},
		{Name: "drain overhead, best runs (%)", Unit: unitFloat, Value: 100 * (1 - best("drain on")/best("drain off"))},
		// CPU time per job hardly depends on the machine's other load, as throughput does.
		{Name: "drain off, cpu per job here (median)", Unit: unitMicros, Value: med("drain off", func(s sample) float64 { return s.clientCPU })},
		{Name: "drain on, cpu per job here (median)", Unit: unitMicros, Value: med("drain on", func(s sample) float64 { return s.clientCPU })},
		{Name: "drain off, cpu per job in PostgreSQL (median)", Unit: unitMicros, Value: med("drain off", func(s sample) float64 { return s.pgCPU })},
		{Name: "drain on, cpu per job in PostgreSQL (median)", Unit: unitMicros, Value: med("drain on", func(s sample) float64 { return s.pgCPU })},
		{Name: "other processes, drain off/on (median cores)", Unit: unitFloat, Value: med("drain off", other)},
		{Name: "  … drain on", Unit: unitFloat, Value: med("drain on", other)},
	}, Notes: append([]string{fmt.Sprintf("on: -telemetry %s", cmp.Or(b.opts.telemetry, "on"))}, notes...)}
	if len(mixed) > 0 {
		// Each drain's figures, not the slices of all pooled: drains differ in speed and in
		// how their time splits between the halves, and pooled slices would weigh the two
		// halves by different drains.
		medianDrains := func(of func(interleaved) float64) float64 {
			v := make([]float64, len(mixed))
			for i, r := range mixed {
				v[i] = of(r)
			}
			return median(v)
		}
		overheads := make([]float64, len(mixed))
		for i, r := range mixed {
			overheads[i] = r.overhead()
		}
		mean, within := meanInterval(overheads)
		res.Metrics = append(res.Metrics,
			Metric{Name: "interleaved drains: off (median jobs/s)", Unit: unitRate, Value: medianDrains(func(r interleaved) float64 { return r.off.rate() })},
			Metric{Name: "interleaved drains: on (median jobs/s)", Unit: unitRate, Value: medianDrains(func(r interleaved) float64 { return r.on.rate() })},
			Metric{Name: "interleaved drains: overhead (median, %)", Unit: unitFloat, Value: medianDrains(interleaved.overhead)},
			Metric{Name: "interleaved drains: overhead (mean, %)", Unit: unitFloat, Value: mean, Target: atMost(5)},
			Metric{Name: "  … its 95 % interval, ±", Unit: unitFloat, Value: within},
		)
	}
	for _, rate := range overheadRates {
		l := fmt.Sprintf("latency R=%d", rate)
		res.Metrics = append(res.Metrics,
			Metric{Name: l + " off p50", Unit: unitMs, Value: med(l+" off", p50)},
			Metric{Name: l + " on p50", Unit: unitMs, Value: med(l+" on", p50)},
			Metric{Name: l + " off p99", Unit: unitMs, Value: med(l+" off", p99)},
			Metric{Name: l + " on p99", Unit: unitMs, Value: med(l+" on", p99)},
		)
	}

	// The telemetry saw what ran: a check that "on" measured what it claims to.
	if tel.reader == nil {
		return res, nil
	}
	var rm metricdata.ResourceMetrics
	if err := tel.reader.Collect(ctx, &rm); err != nil {
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

// sample is what one measured run of a comparison reports.
type sample struct{ value, p50, p99, other, clientCPU, pgCPU float64 }

func (s sample) rate() float64       { return s.value }
func (s sample) latencyP50() float64 { return s.p50 }
func (s sample) latencyP99() float64 { return s.p99 }
func (s sample) others() float64     { return s.other }

// measure runs one run of a comparison (named key) on a freshly migrated schema, and
// returns its sample and a note that says what it measured.
func (b *bench) measure(ctx context.Context, key string, run func(context.Context) (*RunResult, error)) (sample, string, error) {
	pgPID := b.db.postmasterPID()
	if err := b.db.reset(ctx); err != nil {
		return sample{}, "", err
	}
	cpu0 := cpustat.Take(pgPID)
	res, err := run(ctx)
	if err != nil {
		return sample{}, "", err
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
		case m.Name == "cpu per job: this process":
			s.clientCPU = m.Value
		case m.Name == "cpu per job: its PostgreSQL server":
			s.pgCPU = m.Value
		}
	}
	note := fmt.Sprintf("%s: %.0f/s, cpu per job %.1f µs here, %.1f µs in PostgreSQL", key, s.value, s.clientCPU, s.pgCPU)
	if strings.HasPrefix(key, "latency") {
		note = fmt.Sprintf("%s: p50 %.2f ms, p99 %.2f ms", key, s.p50, s.p99)
	}
	b.log.Info("measured", "run", note, "other processes (cores)", fmt.Sprintf("%.2f", s.other))
	return s, fmt.Sprintf("%s (other processes %.2f cores)", note, s.other), nil
}

// medianOf is the median of of over samples.
func medianOf(samples []sample, of func(sample) float64) float64 {
	v := make([]float64, 0, len(samples))
	for _, s := range samples {
		v = append(v, of(s))
	}
	return median(v)
}

// bestRate is the highest rate of samples: the run least disturbed by the machine's load.
func bestRate(samples []sample) float64 {
	var v float64
	for _, s := range samples {
		v = max(v, s.value)
	}
	return v
}

// telemetryVariants are the values of -telemetry.
var telemetryVariants = []string{"on", "sampled", "metrics", "metadata"}

// telemetry is what a -telemetry variant adds to every client and enqueue.
type telemetry struct {
	tel *relayotel.Telemetry // nil for the metadata variant
	// enqueue is the option every enqueue is given: tel's enqueue middleware, or the
	// metadata variant's trace context.
	enqueue relay.EnqueueOption
	ctx     context.Context         // the producer's request, under which enqueues are traced
	reader  *sdkmetric.ManualReader // nil for the metadata variant
	close   func()
}

// newTelemetry is relayotel as an application has it, per b.opts.telemetry (default on):
//   - on: every span recorded and handed to a batch processor (whose exporter discards
//     them), metrics read by a manual reader (kept, to check what was counted), the depth
//     gauges registered;
//   - sampled: the same with spans sampled at 1 % (ParentBased(TraceIDRatioBased(0.01)));
//     the producer's request is one of the 99 % not sampled, so every span of the run is
//     not recording: what an unsampled job costs, which is what 99 % of them cost;
//   - metrics: metrics only (no spans, no trace context stored);
//   - metadata: no relayotel, only the W3C trace context a traced enqueue would store in
//     every job, which every claim then returns: its cost on the database.
func newTelemetry(ctx context.Context, b *bench) (*telemetry, error) {
	variant := cmp.Or(b.opts.telemetry, "on")
	if variant == "metadata" {
		return &telemetry{ctx: ctx, close: func() {}, enqueue: relay.Metadata(map[string]string{
			"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
		})}, nil
	}
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	sampler := sdktrace.AlwaysSample()
	if variant == "sampled" {
		sampler = sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01))
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	cfg := relayotel.Config{MeterProvider: mp, TracerProvider: tp, DB: b.db.admin, Schema: b.opts.schema}
	if variant == "metrics" {
		cfg.TracerProvider = nil
	}
	tel, err := relayotel.New(cfg)
	if err != nil {
		return nil, err
	}
	requests := tp
	if variant == "sampled" {
		requests = sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
	}
	tracedCtx, request := requests.Tracer("bench").Start(ctx, "producer")
	return &telemetry{tel: tel, enqueue: tel.EnqueueMiddleware(), ctx: tracedCtx, reader: reader, close: func() {
		request.End()
		tel.Close()
		mp.Shutdown(context.WithoutCancel(ctx))
		tp.Shutdown(context.WithoutCancel(ctx))
	}}, nil
}
