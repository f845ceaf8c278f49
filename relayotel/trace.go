package relayotel

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/relayq/relay"
)

// Middleware returns the handler middleware that records each attempt: a span, and the
// started counter and pickup latency. Put it first in [relay.Config].Middleware, so that its
// span covers the other middleware, and the outcome it records is the one the client
// decides.
//
// The span ("process <queue>", kind consumer) is a child of the span that enqueued the job,
// read from the job's metadata: each attempt, retries included, is a span of the trace of
// the request that enqueued the job. It carries the job's queue, kind, id and attempt and,
// at its end, its outcome; a failed attempt sets the span's status to error. Log lines relay
// writes about the attempt carry its trace_id and span_id.
func (t *Telemetry) Middleware() relay.Middleware {
	return func(next relay.JobFunc) relay.JobFunc {
		return func(ctx context.Context, job *relay.JobInfo) error {
			started := time.Now()
			t.m.startedAttempt(ctx, job, max(started.Sub(job.ScheduledAt), 0).Seconds())
			// A child, not a link: one job is processed at a time, and its trace is then the
			// whole story of the request that enqueued it, every attempt in it.
			parent := t.propagator.Extract(ctx, propagation.MapCarrier(job.Metadata))
			ctx, span := t.tracer.Start(parent, operationProcess+" "+job.Queue,
				trace.WithSpanKind(trace.SpanKindConsumer), trace.WithTimestamp(started),
				trace.WithAttributes(
					t.m.systemAttr, t.m.procAt, semconv.MessagingOperationTypeProcess,
					semconv.MessagingDestinationName(job.Queue), semconv.MessagingMessageID(strconv.FormatInt(job.ID, 10)),
					attrKind.String(job.Kind), attrAttempt.Int(job.Attempt),
				))
			if sc := span.SpanContext(); sc.IsValid() {
				job.AddLogAttrs(slog.Any("trace_id", traceID(sc.TraceID())), slog.Any("span_id", spanID(sc.SpanID())))
			}
			err := next(ctx, job)
			outcome := job.Outcome(ctx, err)
			span.SetAttributes(attrOutcome.String(string(outcome)))
			if err != nil && outcome != relay.OutcomeSnoozed && outcome != relay.OutcomeSucceeded {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
			}
			span.End()
			return err
		}
	}
}

// EnqueueMiddleware returns the enqueue middleware that records each enqueue: a span
// ("enqueue <queue>", kind producer) whose context it stores in each job's metadata, and
// the enqueued counter. Pass it to every enqueue whose jobs are to be traced:
//
//	relay.Enqueue(ctx, tx, SendEmail, args, tel.EnqueueMiddleware())
//
// The span is a child of the span in ctx (the request's). Jobs enqueued in a transaction
// that then rolls back are counted all the same: PostgreSQL tells no one of a rollback.
func (t *Telemetry) EnqueueMiddleware() relay.EnqueueMiddleware {
	return func(next relay.EnqueueFunc) relay.EnqueueFunc {
		return func(ctx context.Context, jobs []*relay.EnqueueInfo) error {
			attrs := []attribute.KeyValue{t.m.systemAttr, t.m.enqueueAttr, semconv.MessagingOperationTypeSend}
			name := operationEnqueue
			if queue, ok := same(jobs, func(j *relay.EnqueueInfo) string { return j.Queue }); ok {
				attrs, name = append(attrs, semconv.MessagingDestinationName(queue)), name+" "+queue
			}
			if kind, ok := same(jobs, func(j *relay.EnqueueInfo) string { return j.Kind }); ok {
				attrs = append(attrs, attrKind.String(kind))
			}
			if len(jobs) > 1 {
				attrs = append(attrs, semconv.MessagingBatchMessageCount(len(jobs)))
			}
			ctx, span := t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindProducer), trace.WithAttributes(attrs...))
			defer span.End()
			if span.SpanContext().IsValid() {
				for _, j := range jobs {
					t.propagator.Inject(ctx, propagation.MapCarrier(j.Metadata))
				}
			}
			err := next(ctx, jobs)
			t.m.enqueuedJobs(ctx, jobs, err)
			if err != nil {
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
				return err
			}
			if len(jobs) == 1 {
				span.SetAttributes(semconv.MessagingMessageID(strconv.FormatInt(jobs[0].ID, 10)))
			}
			return nil
		}
	}
}

// same returns the value of every job, if they all have the same.
func same(jobs []*relay.EnqueueInfo, of func(*relay.EnqueueInfo) string) (string, bool) {
	if len(jobs) == 0 {
		return "", false
	}
	v := of(jobs[0])
	for _, j := range jobs[1:] {
		if of(j) != v {
			return "", false
		}
	}
	return v, true
}

// traceID and spanID are written in hex only if a line is logged: most attempts log none.
type (
	traceID trace.TraceID
	spanID  trace.SpanID
)

func (t traceID) LogValue() slog.Value { return slog.StringValue(trace.TraceID(t).String()) }
func (s spanID) LogValue() slog.Value  { return slog.StringValue(trace.SpanID(s).String()) }
