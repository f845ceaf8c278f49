package relayotel

import (
	"context"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/relayq/relay"
)

// attemptCost runs what relayotel does for each attempt of a job — the middleware around a
// handler that returns nil, then the committed outcome as Observe reports it — with the
// SDK's providers: spans sampled by sampler (none without traces) and handed to a batch
// processor, metrics (if metrics) read by a manual reader.
type attemptCost struct {
	tel   *Telemetry
	run   relay.JobFunc
	job   relay.JobInfo
	event relay.Event
	close func()
}

func newAttemptCost(tb testing.TB, sampler sdktrace.Sampler, traces, metrics bool) *attemptCost {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithBatcher(tracetest.NewNoopExporter()))
	var cfg Config
	if traces {
		cfg.TracerProvider = tp
	}
	if metrics {
		cfg.MeterProvider = mp
	}
	tel, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	// The job was enqueued in a request's trace, sampled or not as the sampler decides.
	ctx, request := tp.Tracer("test").Start(context.Background(), "request")
	meta := map[string]string{}
	propagation.TraceContext{}.Inject(ctx, propagation.MapCarrier(meta))
	request.End()
	now := time.Now()
	return &attemptCost{
		tel: tel,
		run: tel.Middleware()(func(context.Context, *relay.JobInfo) error { return nil }),
		job: relay.JobInfo{ID: 1, Kind: "email", Queue: "default", Attempt: 1, MaxAttempts: 25, ScheduledAt: now, AttemptedAt: now, Metadata: meta},
		event: relay.Event{JobID: 1, Kind: "email", Queue: "default", Attempt: 1, State: relay.StateSucceeded,
			ScheduledAt: now, StartedAt: now, EndedAt: now},
		close: func() {
			_ = mp.Shutdown(context.Background())
			_ = tp.Shutdown(context.Background())
		},
	}
}

func (a *attemptCost) attempt() {
	_ = a.run(context.Background(), &a.job)
	a.tel.m.finishedAttempt(a.event)
}

// TestMetricsOfAnAttemptAllocateNothing: with metrics and no traces, an attempt is counted
// and its pickup and duration recorded without an allocation (the SDK's histograms
// included, for the attribute sets relayotel makes once).
func TestMetricsOfAnAttemptAllocateNothing(t *testing.T) {
	a := newAttemptCost(t, sdktrace.AlwaysSample(), false, true)
	defer a.close()
	if n := testing.AllocsPerRun(100, a.attempt); n != 0 {
		t.Errorf("an attempt allocates %.0f times; want 0", n)
	}
}

// BenchmarkAttempt measures what relayotel costs each attempt, in CPU and allocations, for
// the configurations the README compares; go run ./bench -workload overhead measures what
// that does to a drain.
func BenchmarkAttempt(b *testing.B) {
	for _, c := range []struct {
		name            string
		sampler         sdktrace.Sampler
		traces, metrics bool
	}{
		{"traces=always,metrics", sdktrace.AlwaysSample(), true, true},
		{"traces=unsampled,metrics", sdktrace.ParentBased(sdktrace.NeverSample()), true, true},
		{"traces=always", sdktrace.AlwaysSample(), true, false},
		{"metrics", nil, false, true},
		{"none", nil, false, false},
	} {
		b.Run(c.name, func(b *testing.B) {
			sampler := c.sampler
			if sampler == nil {
				sampler = sdktrace.AlwaysSample()
			}
			a := newAttemptCost(b, sampler, c.traces, c.metrics)
			defer a.close()
			b.ReportAllocs()
			for b.Loop() {
				a.attempt()
			}
		})
	}
}

// TestCacheMakesEachValueOnce: goroutines that ask for the same keys at once get the same
// values, each made once, and each lists them all.
func TestCacheMakesEachValueOnce(t *testing.T) {
	var (
		c    cache[int, *int]
		mu   sync.Mutex
		made = map[int]int{}
		wg   sync.WaitGroup
	)
	got := make([][]*int, 8)
	for g := range got {
		wg.Go(func() {
			for k := range 50 {
				got[g] = append(got[g], c.get(k, func() *int {
					mu.Lock()
					defer mu.Unlock()
					made[k]++
					return new(k)
				}))
			}
		})
	}
	wg.Wait()
	for k := range 50 {
		if made[k] != 1 {
			t.Errorf("key %d: made %d times; want once", k, made[k])
		}
		for g := range got {
			if got[g][k] != got[0][k] || *got[g][k] != k {
				t.Errorf("key %d: goroutine %d got %d at %p, goroutine 0 %d at %p", k, g, *got[g][k], got[g][k], *got[0][k], got[0][k])
			}
		}
	}
	n := 0
	c.each(func(*int) { n++ })
	if n != 50 {
		t.Errorf("each lists %d values; want 50", n)
	}
}
