package relayotel_test

import (
	"context"
	"fmt"
	"log"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relayotel"
)

// Telemetry with an application's providers: here an in-memory span exporter and a manual
// metric reader. The middleware is called by hand on one attempt of a job enqueued inside
// a trace; a client calls it for every attempt.
func ExampleNew() {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans))
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	tel, err := relayotel.New(relayotel.Config{MeterProvider: mp, TracerProvider: tp})
	if err != nil {
		log.Fatal(err)
	}
	// In an application: relay.New(relay.Config{Middleware: []relay.Middleware{tel.Middleware()}}),
	// tel.Instrument(client), and tel.EnqueueMiddleware() passed to the enqueues.
	handle := tel.Middleware()(func(context.Context, *relay.JobInfo) error { return nil })
	job := &relay.JobInfo{ID: 7, Kind: "email", Queue: "default", Attempt: 1, MaxAttempts: 20,
		Metadata: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	if err := handle(context.Background(), job); err != nil {
		log.Fatal(err)
	}

	s := spans.GetSpans()[0]
	fmt.Println(s.Name, s.SpanKind, "in trace", s.SpanContext.TraceID(), "under", s.Parent.SpanID())
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		log.Fatal(err)
	}
	for _, m := range rm.ScopeMetrics[0].Metrics {
		if m.Name == relayotel.MetricStarted {
			fmt.Println(m.Name, m.Data.(metricdata.Sum[int64]).DataPoints[0].Value)
		}
	}
	// Output:
	// process default consumer in trace 4bf92f3577b34da6a3ce929d0e0e4736 under 00f067aa0ba902b7
	// messaging.client.consumed.messages 1
}
