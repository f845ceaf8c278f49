// Package relayotel makes relay's jobs visible to OpenTelemetry: traces that follow a job
// from the request that enqueued it through every attempt, and metrics of what was
// enqueued, started and finished, how long jobs waited and ran, how deep each queue is and
// how each client fares. Prometheus reads the metrics through OpenTelemetry's Prometheus
// exporter (see examples/prometheus).
//
// It is a package of its own so that programs without OpenTelemetry never import it. It
// keeps no global state: it uses the providers it is given, never otel's globals.
//
//	tel, err := relayotel.New(relayotel.Config{
//		MeterProvider: mp, TracerProvider: tp, // yours
//		DB:            pool,                   // for the queue depth gauges
//	})
//	client := relay.New(relay.Config{Middleware: []relay.Middleware{tel.Middleware()}})
//	stop, err := tel.Instrument(client) // outcomes and the client's own figures
//	…
//	relay.Enqueue(ctx, tx, SendEmail, args, tel.EnqueueMiddleware())
//
// Counters of outcomes count only what is committed: they are fed by [relay.Client.Observe],
// which reports an attempt once its outcome is in the database.
package relayotel

import (
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/relayq/relay"
)

// scope names relayotel's meter and tracer.
const scope = "github.com/relayq/relay/relayotel"

// DefaultDepthInterval is how long the queue depths read from the database are reused:
// every collection within it reports the same figures.
const DefaultDepthInterval = 15 * time.Second

// Config configures [New].
type Config struct {
	// MeterProvider makes relay's instruments; nil records no metrics.
	MeterProvider metric.MeterProvider
	// TracerProvider makes the spans of enqueues and attempts; nil records no spans.
	TracerProvider trace.TracerProvider
	// Propagator writes the trace context into a job's metadata when it is enqueued, and
	// reads it back when the job runs; default the W3C trace context
	// (propagation.TraceContext, keys "traceparent" and "tracestate").
	Propagator propagation.TextMapPropagator
	// SpanUnsampled starts a span for an attempt even when the trace that enqueued its job
	// was not sampled. By default such an attempt has no span of its own, and its handler's
	// context carries the enqueuing trace's context, not sampled: what a sampler that follows
	// its parent (sdktrace.ParentBased, the SDK's default) decides anyway, without the cost of
	// a span it would drop. Set it for a sampler that may record a child of a trace it did not
	// sample.
	SpanUnsampled bool
	// DB, if set, is where the queue depth gauges are read ([relay.QueueDepths]): a pool.
	// Without it there are no depth gauges.
	DB relay.DB
	// Schema is relay's schema in DB; default [relay.DefaultSchema].
	Schema string
	// DepthInterval is the shortest time between two reads of the queue depths; default
	// [DefaultDepthInterval]. A collection within it reports the last figures read, so
	// however many readers and collections there are, this Telemetry queries the database
	// at most once per interval. Negative reads at every collection.
	DepthInterval time.Duration
}

// Telemetry instruments relay for one meter and tracer provider: make one per process (and
// schema), and share it between its clients and producers.
type Telemetry struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	m          *instruments
	depth      metric.Registration // nil without DB
	// metrics and traces are false without a provider: the middleware skips that work.
	metrics, traces bool
	spanUnsampled   bool // Config.SpanUnsampled
}

// ErrConfig is returned by [New] for a configuration it cannot use.
var ErrConfig = errors.New("relayotel: invalid config")

// New makes the instruments and, with [Config].DB, registers the queue depth gauges.
func New(cfg Config) (*Telemetry, error) {
	metrics, traces := cfg.MeterProvider != nil, cfg.TracerProvider != nil
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = metricnoop.NewMeterProvider()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = tracenoop.NewTracerProvider()
	}
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.TraceContext{}
	}
	if cfg.Schema == "" {
		cfg.Schema = relay.DefaultSchema
	}
	if cfg.DepthInterval == 0 {
		cfg.DepthInterval = DefaultDepthInterval
	}
	m, err := newInstruments(cfg.MeterProvider.Meter(scope))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	t := &Telemetry{tracer: cfg.TracerProvider.Tracer(scope), propagator: cfg.Propagator, m: m, metrics: metrics, traces: traces,
		spanUnsampled: cfg.SpanUnsampled}
	if cfg.DB != nil {
		d := &depths{db: cfg.DB, schema: cfg.Schema, interval: cfg.DepthInterval, known: map[string]time.Time{}}
		if t.depth, err = m.observeDepths(d); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrConfig, err)
		}
	}
	return t, nil
}

// Close unregisters the queue depth gauges: the database is no longer read.
func (t *Telemetry) Close() error {
	if t.depth == nil {
		return nil
	}
	return t.depth.Unregister()
}

// Instrument records what client c reports: each attempt it ends or rescues (once
// committed), and its own figures — running jobs, free slots, outcome backlog, listener
// reconnects — as gauges. stop undoes it. Call it once per client; the middleware
// ([Telemetry.Middleware]) is what records starts and traces.
func (t *Telemetry) Instrument(c *relay.Client) (stop func(), err error) {
	reg, err := t.m.observeClient(c)
	if err != nil {
		return nil, fmt.Errorf("relayotel: %w", err)
	}
	stopObserving := c.Observe(t.m.finishedAttempt)
	return func() {
		stopObserving()
		_ = reg.Unregister() // only fails for a registration made elsewhere
	}, nil
}
