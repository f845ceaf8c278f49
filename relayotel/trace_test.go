package relayotel_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relayotel"
)

type orderArgs struct{ Order int }

var chargeCard = relay.NewKind[orderArgs]("charge-card")

// TestTraceOfAJobRetriedOnce enqueues a job inside a request's span and runs it: the first
// attempt fails, the second succeeds. The trace is request → enqueue → one span per attempt,
// each attempt a child of the enqueue, all in the request's trace, with the job's
// attributes and outcome; and relay's log line of the failed attempt carries the trace id.
func TestTraceOfAJobRetriedOnce(t *testing.T) {
	t.Parallel()
	s := newOtelSetup(t)
	c := s.client(relay.Config{Queues: map[string]relay.QueueConfig{"billing": {Workers: 2}}}, func(c *relay.Client) {
		handle(t, c, chargeCard, func(_ context.Context, job *relay.Job[orderArgs]) error {
			if job.Attempt == 1 {
				return errors.New("card declined")
			}
			return nil
		}, fastRetries)
	})
	ch := events(t, c)

	ctx, request := s.tp.Tracer("test").Start(context.Background(), "POST /orders")
	id, err := relay.Enqueue(ctx, s.db, chargeCard, orderArgs{Order: 7}, relay.Queue("billing"), s.tel.EnqueueMiddleware())
	if err != nil {
		t.Fatal(err)
	}
	request.End()
	got := awaitEvents(t, ch, 2) // each span ends before its attempt's outcome is committed
	if got[0].Outcome() != relay.OutcomeRetried || got[1].Outcome() != relay.OutcomeSucceeded {
		t.Fatalf("outcomes %s, %s; want retried, succeeded", got[0].Outcome(), got[1].Outcome())
	}

	spans := s.spans.GetSpans()
	byName := map[string][]tracetest.SpanStub{}
	for _, sp := range spans {
		byName[sp.Name] = append(byName[sp.Name], sp)
	}
	if len(spans) != 4 || len(byName["POST /orders"]) != 1 || len(byName["enqueue billing"]) != 1 || len(byName["process billing"]) != 2 {
		t.Fatalf("spans %v; want POST /orders, enqueue billing and two process billing", names(spans))
	}
	req, enq := byName["POST /orders"][0], byName["enqueue billing"][0]
	traceID := req.SpanContext.TraceID()
	if enq.Parent.SpanID() != req.SpanContext.SpanID() || enq.SpanKind != trace.SpanKindProducer {
		t.Errorf("enqueue span: parent %v kind %v; want the request's span, producer", enq.Parent.SpanID(), enq.SpanKind)
	}
	wantAttrs(t, "enqueue", enq.Attributes, map[string]string{
		"messaging.system": "relay", "messaging.operation.name": "enqueue", "messaging.operation.type": "send",
		"messaging.destination.name": "billing", "relay.job.kind": "charge-card", "messaging.message.id": strconv.FormatInt(id, 10),
	})

	// The job carries the enqueue span's context, which the attempts continue.
	rec, err := relay.GetJob(context.Background(), s.db, id)
	if err != nil {
		t.Fatal(err)
	}
	if tp := rec.Metadata["traceparent"]; tp != "00-"+traceID.String()+"-"+enq.SpanContext.SpanID().String()+"-01" {
		t.Errorf("the job's traceparent is %q; want the enqueue span's", tp)
	}

	attempts := byName["process billing"]
	if attempts[0].StartTime.After(attempts[1].StartTime) {
		attempts[0], attempts[1] = attempts[1], attempts[0]
	}
	for i, a := range attempts {
		if a.SpanContext.TraceID() != traceID || a.Parent.SpanID() != enq.SpanContext.SpanID() || a.SpanKind != trace.SpanKindConsumer {
			t.Errorf("attempt %d: trace %v parent %v kind %v; want the request's trace, the enqueue span as parent, consumer",
				i+1, a.SpanContext.TraceID(), a.Parent.SpanID(), a.SpanKind)
		}
		outcome, status := "retried", codes.Error
		if i == 1 {
			outcome, status = "succeeded", codes.Unset
		}
		wantAttrs(t, "attempt "+strconv.Itoa(i+1), a.Attributes, map[string]string{
			"messaging.system": "relay", "messaging.operation.name": "process", "messaging.operation.type": "process",
			"messaging.destination.name": "billing", "messaging.message.id": strconv.FormatInt(id, 10),
			"relay.job.kind": "charge-card", "relay.job.attempt": strconv.Itoa(i + 1), "relay.job.outcome": outcome,
		})
		if a.Status.Code != status {
			t.Errorf("attempt %d: status %v %q; want %v", i+1, a.Status.Code, a.Status.Description, status)
		}
	}
	if len(attempts[0].Events) == 0 || attempts[0].Events[0].Name != "exception" {
		t.Errorf("the failed attempt's span records no exception: %+v", attempts[0].Events)
	}

	// relay's log line of the failed attempt joins the trace.
	lines := s.logs.find("relay: job attempt failed")
	if len(lines) != 1 {
		t.Fatalf("%d lines say the attempt failed; want 1", len(lines))
	}
	wantLog := map[string]string{
		"job.id": strconv.FormatInt(id, 10), "job.kind": "charge-card", "job.queue": "billing", "job.attempt": "1",
		"trace_id": traceID.String(), "span_id": attempts[0].SpanContext.SpanID().String(),
	}
	for k, v := range wantLog {
		if lines[0][k] != v {
			t.Errorf("log line: %s=%q; want %q (line %v)", k, lines[0][k], v, lines[0])
		}
	}
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}

// wantAttrs fails the test unless kvs hold every attribute of want with its value.
func wantAttrs(t *testing.T, what string, kvs []attribute.KeyValue, want map[string]string) {
	t.Helper()
	have := map[string]string{}
	for _, kv := range kvs {
		have[string(kv.Key)] = kv.Value.Emit()
	}
	for k, v := range want {
		if have[k] != v {
			t.Errorf("%s: attribute %s = %q; want %q (all: %v)", what, k, have[k], v, have)
		}
	}
}

// TestUnsampledJobsRecordNoSpans: with a sampler that follows the parent, a job enqueued
// in a request that is not sampled records no span, enqueue or attempt, yet still carries
// the request's trace context (not sampled) to its handler, and is counted.
func TestUnsampledJobsRecordNoSpans(t *testing.T) {
	t.Parallel()
	s := newOtelSetupWith(t, sdktrace.ParentBased(sdktrace.NeverSample()), true)
	handlerSpan := make(chan trace.SpanContext, 1)
	c := s.client(relay.Config{}, func(c *relay.Client) {
		handle(t, c, chargeCard, func(ctx context.Context, _ *relay.Job[orderArgs]) error {
			handlerSpan <- trace.SpanContextFromContext(ctx)
			return nil
		})
	})
	ch := events(t, c)
	ctx, request := s.tp.Tracer("test").Start(context.Background(), "POST /orders")
	defer request.End()
	if request.IsRecording() {
		t.Fatal("the request's span is recording; the sampler should drop it")
	}
	id, err := relay.Enqueue(ctx, s.db, chargeCard, orderArgs{}, s.tel.EnqueueMiddleware())
	if err != nil {
		t.Fatal(err)
	}
	awaitEvents(t, ch, 1)
	if got := s.spans.GetSpans(); len(got) != 0 {
		t.Errorf("recorded %v; want no span", names(got))
	}
	rec, err := relay.GetJob(context.Background(), s.db, id)
	if err != nil {
		t.Fatal(err)
	}
	traceID := request.SpanContext().TraceID()
	if tp := rec.Metadata["traceparent"]; !strings.HasPrefix(tp, "00-"+traceID.String()+"-") || !strings.HasSuffix(tp, "-00") {
		t.Errorf("the job's traceparent is %q; want the request's trace, not sampled", tp)
	}
	// No span was started for the attempt: the handler runs in the enqueue's span context.
	enqueueSpan := strings.Split(rec.Metadata["traceparent"], "-")[2]
	if sc := <-handlerSpan; sc.TraceID() != traceID || sc.IsSampled() || sc.SpanID().String() != enqueueSpan || !sc.IsRemote() {
		t.Errorf("the handler's span context: trace %v span %v sampled %v remote %v; want the request's trace, not sampled, the enqueue's span %s, remote",
			sc.TraceID(), sc.SpanID(), sc.IsSampled(), sc.IsRemote(), enqueueSpan)
	}
	m := s.collect()
	for _, name := range []string{relayotel.MetricStarted, relayotel.MetricFinished, relayotel.MetricEnqueued} {
		if got := total(sums(t, m[name])); got != 1 {
			t.Errorf("%s counts %d; want 1", name, got)
		}
	}
}

// TestSpanUnsampledRecordsAttemptsOfUnsampledTraces: with a sampler that records every
// attempt whatever its parent decided, an attempt of a job enqueued in a trace that was not
// sampled gets a span, a child of the enqueue's, only with Config.SpanUnsampled.
func TestSpanUnsampledRecordsAttemptsOfUnsampledTraces(t *testing.T) {
	t.Parallel()
	for _, spanUnsampled := range []bool{false, true} {
		t.Run(fmt.Sprintf("SpanUnsampled=%v", spanUnsampled), func(t *testing.T) {
			t.Parallel()
			s := newOtelSetupWith(t, processSpansOnly{}, true, func(cfg *relayotel.Config) { cfg.SpanUnsampled = spanUnsampled })
			c := s.client(relay.Config{}, func(c *relay.Client) {
				handle(t, c, chargeCard, func(context.Context, *relay.Job[orderArgs]) error { return nil })
			})
			ch := events(t, c)
			ctx, request := s.tp.Tracer("test").Start(context.Background(), "POST /orders")
			defer request.End()
			id, err := relay.Enqueue(ctx, s.db, chargeCard, orderArgs{}, s.tel.EnqueueMiddleware())
			if err != nil {
				t.Fatal(err)
			}
			awaitEvents(t, ch, 1)
			rec, err := relay.GetJob(context.Background(), s.db, id)
			if err != nil {
				t.Fatal(err)
			}
			spans := s.spans.GetSpans()
			if !spanUnsampled {
				if len(spans) != 0 {
					t.Errorf("recorded %v; want no span", names(spans))
				}
				return
			}
			if len(spans) != 1 || spans[0].Name != "process default" {
				t.Fatalf("recorded %v; want one span, process default", names(spans))
			}
			parent := spans[0].Parent
			if tp := rec.Metadata["traceparent"]; tp != "00-"+parent.TraceID().String()+"-"+parent.SpanID().String()+"-00" ||
				parent.TraceID() != request.SpanContext().TraceID() {
				t.Errorf("the attempt's parent is %v/%v; want the enqueue's span, in the request's trace (traceparent %q)",
					parent.TraceID(), parent.SpanID(), tp)
			}
		})
	}
}

// processSpansOnly samples the spans of attempts, whatever their parent decided, and no other.
type processSpansOnly struct{}

func (processSpansOnly) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	decision := sdktrace.Drop
	if strings.HasPrefix(p.Name, "process ") {
		decision = sdktrace.RecordAndSample
	}
	return sdktrace.SamplingResult{Decision: decision, Tracestate: trace.SpanContextFromContext(p.ParentContext).TraceState()}
}

func (processSpansOnly) Description() string { return "processSpansOnly" }

// TestNoTracerProviderNoTraceContext: a Telemetry without a tracer provider records
// metrics, and stores no trace context in the jobs it enqueues (no attempt would read it),
// even inside a traced request.
func TestNoTracerProviderNoTraceContext(t *testing.T) {
	t.Parallel()
	s := newOtelSetupWith(t, sdktrace.AlwaysSample(), false)
	c := s.client(relay.Config{}, func(c *relay.Client) {
		handle(t, c, chargeCard, func(context.Context, *relay.Job[orderArgs]) error { return errors.New("declined") },
			relay.MaxAttempts(1))
	})
	ch := events(t, c)
	ctx, request := s.tp.Tracer("test").Start(context.Background(), "POST /orders")
	id, err := relay.Enqueue(ctx, s.db, chargeCard, orderArgs{}, s.tel.EnqueueMiddleware())
	if err != nil {
		t.Fatal(err)
	}
	request.End()
	awaitEvents(t, ch, 1)
	rec, err := relay.GetJob(context.Background(), s.db, id)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Metadata != nil {
		t.Errorf("the job's metadata is %v; want none", rec.Metadata)
	}
	if got := names(s.spans.GetSpans()); len(got) != 1 || got[0] != "POST /orders" {
		t.Errorf("spans %v; want only the test's own", got)
	}
	lines := s.logs.find("relay: job attempt failed")
	if len(lines) != 1 || lines[0]["trace_id"] != "" || lines[0]["job.id"] != strconv.FormatInt(id, 10) {
		t.Errorf("log lines %v; want one, of the job, without a trace id", lines)
	}
	m := s.collect()
	for _, name := range []string{relayotel.MetricStarted, relayotel.MetricFinished, relayotel.MetricEnqueued} {
		if got := total(sums(t, m[name])); got != 1 {
			t.Errorf("%s counts %d; want 1", name, got)
		}
	}
}

// total adds up a metric's points.
func total(points map[string]int64) int64 {
	var n int64
	for _, v := range points {
		n += v
	}
	return n
}
