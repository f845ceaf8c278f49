package relayotel

import (
	"context"
	"log/slog"
	"maps"
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
// the request that enqueued the job. It starts with the job's queue and kind (what a
// sampler may decide on) and, if it is recorded, ends with the job's id, attempt and
// outcome; a failed attempt sets the span's status to error. Log lines relay writes about
// the attempt carry its trace_id and span_id.
//
// An attempt of a job whose enqueuing trace was not sampled starts no span (unless
// [Config].SpanUnsampled): its handler runs in that trace's context, not sampled.
//
// Each attempt costs a few microseconds of CPU, most of them in the SDK: the span, when
// it is recorded, and the pickup and duration histograms. Sample spans (for instance
// sdktrace.ParentBased(sdktrace.TraceIDRatioBased(0.01))): an attempt of a trace that was
// not sampled costs a fraction of one that is. The README measures it.
func (t *Telemetry) Middleware() relay.Middleware {
	return func(next relay.JobFunc) relay.JobFunc {
		var processes recent // this function runs one kind's attempts, most often of one queue
		return func(ctx context.Context, job *relay.JobInfo) error {
			started := time.Now()
			p := processes.of(t.m, job.Queue, job.Kind)
			if t.metrics {
				t.m.startedAttempt(p, max(started.Sub(job.ScheduledAt), 0).Seconds())
			}
			if !t.traces {
				return next(ctx, job)
			}
			// A child, not a link: one job is processed at a time, and its trace is then the
			// whole story of the request that enqueued it, every attempt in it.
			parent := ctx
			if len(job.Metadata) > 0 { // else there is no context to extract
				parent = t.propagator.Extract(ctx, propagation.MapCarrier(job.Metadata))
				if sc := trace.SpanContextFromContext(parent); !sc.IsSampled() && sc.IsValid() && !t.spanUnsampled {
					// The trace was not sampled: the span would record nothing (see
					// Config.SpanUnsampled), and the handler's work stays in the trace, unsampled.
					job.AddLogAttrs(slog.Any("trace_id", traceID{&spanIDs{trace: sc.TraceID()}}))
					return next(parent, job)
				}
			}
			ctx, span := t.tracer.Start(parent, p.spanName, p.spanStart...)
			sc := span.SpanContext()
			if sc.IsValid() {
				ids := &spanIDs{sc.TraceID(), sc.SpanID()}
				job.AddLogAttrs(slog.Any("trace_id", traceID{ids}), slog.Any("span_id", spanID{ids}))
			}
			err := next(ctx, job)
			// A span the sampler dropped records nothing: what is only for the record (the
			// job's id and attempt, which the sampler does not need, and the outcome) is not
			// even worked out.
			if span.IsRecording() {
				outcome := job.Outcome(ctx, err)
				span.SetAttributes(
					semconv.MessagingMessageID(strconv.FormatInt(job.ID, 10)), attrAttempt.Int(job.Attempt),
					attrOutcome.String(string(outcome)),
				)
				if err != nil && outcome != relay.OutcomeSnoozed && outcome != relay.OutcomeSucceeded {
					span.RecordError(err)
					span.SetStatus(codes.Error, err.Error())
				}
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
			if !t.traces {
				// No span, and no trace context stored: no attempt would read it.
				err := next(ctx, jobs)
				t.m.enqueuedJobs(jobs, err)
				return err
			}
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
				// The same context for every job: written once, copied to each.
				carrier := propagation.MapCarrier{}
				t.propagator.Inject(ctx, carrier)
				for _, j := range jobs {
					maps.Copy(j.Metadata, carrier)
				}
			}
			err := next(ctx, jobs)
			t.m.enqueuedJobs(jobs, err)
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
// Both point to the one spanIDs of the attempt, and a pointer is stored in an slog.Value
// as it is: one allocation for the two.
type (
	spanIDs struct {
		trace trace.TraceID
		span  trace.SpanID
	}
	traceID struct{ *spanIDs }
	spanID  struct{ *spanIDs }
)

func (t traceID) LogValue() slog.Value { return slog.StringValue(t.trace.String()) }
func (s spanID) LogValue() slog.Value  { return slog.StringValue(s.span.String()) }
