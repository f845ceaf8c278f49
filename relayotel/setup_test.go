package relayotel_test

import (
	"context"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/relayq/relay"
	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/relayotel"
	"github.com/relayq/relay/relaytest"
)

func TestMain(m *testing.M) { relaytest.Main(m) }

const waitTimeout = 15 * time.Second

// fastRetries retry within milliseconds.
var fastRetries = relay.Backoff(backoff.Policy{Initial: time.Millisecond, Multiplier: 2, Max: 5 * time.Millisecond})

// otelSetup is one test's telemetry: spans kept in memory, metrics read on demand.
type otelSetup struct {
	t      *testing.T
	db     *relaytest.DB
	tel    *relayotel.Telemetry
	spans  *tracetest.InMemoryExporter
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	logs   *logRecords
}

func newOtelSetup(t *testing.T) *otelSetup {
	t.Helper()
	return newOtelSetupWith(t, sdktrace.AlwaysSample(), true)
}

// newOtelSetupWith is newOtelSetup with spans sampled by sampler, and without a tracer
// provider in the telemetry's config unless traces (s.tp still makes the test's own spans);
// configure, if given, changes the telemetry's config last.
func newOtelSetupWith(t *testing.T, sampler sdktrace.Sampler, traces bool, configure ...func(*relayotel.Config)) *otelSetup {
	t.Helper()
	s := &otelSetup{t: t, db: relaytest.NewDB(t), spans: tracetest.NewInMemoryExporter(),
		reader: sdkmetric.NewManualReader(), logs: &logRecords{}}
	s.tp = sdktrace.NewTracerProvider(sdktrace.WithSyncer(s.spans), sdktrace.WithSampler(sampler))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(s.reader))
	t.Cleanup(func() {
		_ = s.tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	cfg := relayotel.Config{MeterProvider: mp, DB: s.db.Pool, DepthInterval: -1}
	if traces {
		cfg.TracerProvider = s.tp
	}
	for _, f := range configure {
		f(&cfg)
	}
	var err error
	s.tel, err = relayotel.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.tel.Close() })
	return s
}

// client returns a client with the telemetry's middleware, short leases, and a logger that
// keeps every record; it is instrumented and started, and stopped when the test ends.
func (s *otelSetup) client(cfg relay.Config, register func(*relay.Client)) *relay.Client {
	s.t.Helper()
	cfg.Middleware = append([]relay.Middleware{s.tel.Middleware()}, cfg.Middleware...)
	cfg.Logger = slog.New(s.logs)
	if cfg.PollInterval == 0 {
		cfg.PollInterval = time.Hour // anything picked up promptly was woken by NOTIFY
	}
	c := relay.New(cfg)
	register(c)
	stop, err := s.tel.Instrument(c)
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := c.Start(ctx, s.db.Pool); err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			s.t.Errorf("Stop: %v", err)
		}
		stop()
	})
	return c
}

// handle registers fn for kind, failing the test on error.
func handle[T any](t *testing.T, c *relay.Client, kind relay.Kind[T], fn relay.HandlerFunc[T], opts ...relay.HandleOption) {
	t.Helper()
	if err := relay.Handle(c, kind, fn, opts...); err != nil {
		t.Fatal(err)
	}
}

// events subscribes to c's events until the test ends.
func events(t *testing.T, c *relay.Client) <-chan relay.Event {
	ch, stop := c.Subscribe(1000)
	t.Cleanup(stop)
	return ch
}

// awaitEvents receives n events.
func awaitEvents(t *testing.T, ch <-chan relay.Event, n int) []relay.Event {
	t.Helper()
	var got []relay.Event
	for range n {
		got = append(got, relaytest.Receive(t, ch, waitTimeout, "an event"))
	}
	return got
}

// collect reads every metric now.
func (s *otelSetup) collect() map[string]metricdata.Metrics {
	s.t.Helper()
	var rm metricdata.ResourceMetrics
	if err := s.reader.Collect(context.Background(), &rm); err != nil {
		s.t.Fatal(err)
	}
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// attrs renders an attribute set as "k=v,k=v" in key order, dropping the keys in skip.
func attrs(set attribute.Set, skip ...string) string {
	var parts []string
	for _, kv := range set.ToSlice() {
		if !contains(skip, string(kv.Key)) {
			parts = append(parts, string(kv.Key)+"="+kv.Value.Emit())
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// common are the attributes every relay measurement has, left out of the keys below.
var common = []string{"messaging.system"}

// sums returns the points of an int64 counter or gauge, by attributes.
func sums(t *testing.T, m metricdata.Metrics) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		for _, p := range d.DataPoints {
			out[attrs(p.Attributes, common...)] = p.Value
		}
	case metricdata.Gauge[int64]:
		for _, p := range d.DataPoints {
			out[attrs(p.Attributes, common...)] = p.Value
		}
	default:
		t.Fatalf("%s holds %T, not int64 points", m.Name, m.Data)
	}
	return out
}

// histogramCounts returns how many values a histogram holds, by attributes.
func histogramCounts(t *testing.T, m metricdata.Metrics) map[string]int64 {
	t.Helper()
	d, ok := m.Data.(metricdata.Histogram[float64])
	if !ok {
		t.Fatalf("%s holds %T, not a float64 histogram", m.Name, m.Data)
	}
	out := map[string]int64{}
	for _, p := range d.DataPoints {
		out[attrs(p.Attributes, common...)] = int64(p.Count)
	}
	return out
}

// logRecords is a slog.Handler that keeps every record.
type logRecords struct {
	mu      sync.Mutex
	records []slog.Record
}

func (l *logRecords) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecords) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logRecords) WithGroup(string) slog.Handler            { return l }
func (l *logRecords) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.records = append(l.records, r.Clone())
	return nil
}

// find returns the attributes of the records with message msg, flattened ("job.id").
func (l *logRecords) find(msg string) []map[string]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]string
	for _, r := range l.records {
		if r.Message != msg {
			continue
		}
		m := map[string]string{}
		r.Attrs(func(a slog.Attr) bool {
			flatten(m, "", a)
			return true
		})
		out = append(out, m)
	}
	return out
}

func flatten(m map[string]string, prefix string, a slog.Attr) {
	a.Value = a.Value.Resolve() // as slog's own handlers do
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			flatten(m, prefix+a.Key+".", g)
		}
		return
	}
	m[prefix+a.Key] = a.Value.String()
}
