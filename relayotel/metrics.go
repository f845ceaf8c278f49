package relayotel

import (
	"context"
	"errors"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/relayq/relay"
)

// The names of relay's instruments, after OpenTelemetry's semantic conventions for
// messaging where one fits (a job is a message, its queue the destination), and under
// "relay." where none does. The README lists them with their attributes.
const (
	MetricEnqueued   = "messaging.client.sent.messages"     // counter, {message}
	MetricStarted    = "messaging.client.consumed.messages" // counter, {message}
	MetricFinished   = "relay.jobs.finished"                // counter, {job}
	MetricDuration   = "messaging.process.duration"         // histogram, s
	MetricPickup     = "relay.job.pickup.latency"           // histogram, s
	MetricDepth      = "relay.queue.depth"                  // gauge, {job}
	MetricOldest     = "relay.queue.oldest_job.age"         // gauge, s
	MetricRunning    = "relay.client.jobs.running"          // gauge, {job}
	MetricFreeSlots  = "relay.client.slots.free"            // gauge, {slot}
	MetricBacklog    = "relay.client.outcome.backlog"       // gauge, {outcome}
	MetricReconnects = "relay.client.listener.reconnects"   // counter, {reconnect}
	systemName       = "relay"
	operationEnqueue = "enqueue"
	operationProcess = "process"
	attrKind         = attribute.Key("relay.job.kind")
	attrOutcome      = attribute.Key("relay.job.outcome")
	attrState        = attribute.Key("relay.job.state")
	attrAttempt      = attribute.Key("relay.job.attempt")
)

// Bucket boundaries, in seconds. A handler's duration: the semantic conventions' for
// messaging, and longer jobs. Pickup latency: from a fraction of a millisecond (a job
// picked up on its NOTIFY) to minutes (a backlog).
var (
	durationBuckets = []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30, 60, 300, 900}
	pickupBuckets   = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}
)

// instruments are relay's instruments on one meter.
type instruments struct {
	meter                                metric.Meter
	enqueued, started, finished          metric.Int64ObservableCounter
	duration, pickup                     metric.Float64Histogram
	depth, running, free, backlog        metric.Int64ObservableGauge
	oldest                               metric.Float64ObservableGauge
	reconnects                           metric.Int64ObservableCounter
	counts                               cache[setKey, *count]       // the counters' points
	processes                            cache[processKey, *process] // what the attempts of one kind in one queue share
	ended                                recent                      // the process of the last attempt Observe reported
	systemAttr, enqueueAttr, processAttr attribute.KeyValue
}

func newInstruments(meter metric.Meter) (*instruments, error) {
	m := &instruments{
		meter:       meter,
		systemAttr:  semconv.MessagingSystemKey.String(systemName),
		enqueueAttr: semconv.MessagingOperationName(operationEnqueue),
		processAttr: semconv.MessagingOperationName(operationProcess),
	}
	var errs [12]error
	m.enqueued, errs[0] = meter.Int64ObservableCounter(MetricEnqueued, metric.WithUnit("{message}"),
		metric.WithDescription("Jobs enqueued: each job an enqueue statement was sent for, by queue and kind (error.type when it failed)."))
	m.started, errs[1] = meter.Int64ObservableCounter(MetricStarted, metric.WithUnit("{message}"),
		metric.WithDescription("Attempts started: jobs claimed and handed to their handler."))
	m.finished, errs[2] = meter.Int64ObservableCounter(MetricFinished, metric.WithUnit("{job}"),
		metric.WithDescription("Attempts ended, once their outcome is committed, by queue, kind, outcome and the job's state after it."))
	m.duration, errs[3] = meter.Float64Histogram(MetricDuration, metric.WithUnit("s"),
		metric.WithDescription("How long handlers ran, by queue, kind and outcome (lost leases excluded: when their handler stopped is not known)."),
		metric.WithExplicitBucketBoundaries(durationBuckets...))
	m.pickup, errs[4] = meter.Float64Histogram(MetricPickup, metric.WithUnit("s"),
		metric.WithDescription("Pickup latency: from the time a job was due to the start of its handler."),
		metric.WithExplicitBucketBoundaries(pickupBuckets...))
	m.depth, errs[5] = meter.Int64ObservableGauge(MetricDepth, metric.WithUnit("{job}"),
		metric.WithDescription("Unfinished jobs of each queue by state (pending: due; scheduled: due later; running; held: reservations not yet committed), read from the database."))
	m.oldest, errs[6] = meter.Float64ObservableGauge(MetricOldest, metric.WithUnit("s"),
		metric.WithDescription("How long the oldest due pending job of each queue has been due (0 when none is), read from the database."))
	m.running, errs[7] = meter.Int64ObservableGauge(MetricRunning, metric.WithUnit("{job}"),
		metric.WithDescription("Handlers running on the client, by queue."))
	m.free, errs[8] = meter.Int64ObservableGauge(MetricFreeSlots, metric.WithUnit("{slot}"),
		metric.WithDescription("Jobs the client could start now: idle workers, within MaxWorkers."))
	m.backlog, errs[9] = meter.Int64ObservableGauge(MetricBacklog, metric.WithUnit("{outcome}"),
		metric.WithDescription("Outcomes of ended attempts waiting to be written; the client stops claiming at 5,000."))
	m.reconnects, errs[10] = meter.Int64ObservableCounter(MetricReconnects, metric.WithUnit("{reconnect}"),
		metric.WithDescription("Times the client's LISTEN connection was lost and made again."))
	if errors.Join(errs[:11]...) == nil {
		_, errs[11] = meter.RegisterCallback(m.observeCounts, m.enqueued, m.started, m.finished)
	}
	return m, errors.Join(errs[:]...)
}

// setKey names one point of the counters and histograms: one combination of attributes.
type setKey struct {
	op                     string // operationEnqueue or operationProcess
	queue, kind            string
	outcome, state, errTyp string
}

// count is one point of a counter. relayotel keeps the counters' sums itself and reports
// them when the metrics are collected (observable counters): a job pays an atomic add, not
// an SDK measurement, which checks every attribute of its set each time.
type count struct {
	n      atomic.Int64
	of     metric.Int64ObservableCounter
	points metric.MeasurementOption // the point's attribute set
	// record is points as the options of a histogram's Record, made once: a variadic
	// argument built at each call would be allocated at each call.
	record []metric.RecordOption
}

// countOf returns the point of key, made on first use.
func (m *instruments) countOf(k setKey) *count {
	return m.counts.get(k, func() *count {
		kv := []attribute.KeyValue{
			m.systemAttr, semconv.MessagingOperationName(k.op),
			semconv.MessagingDestinationName(k.queue), attrKind.String(k.kind),
		}
		if k.outcome != "" {
			kv = append(kv, attrOutcome.String(k.outcome), attrState.String(k.state))
		}
		if k.errTyp != "" {
			kv = append(kv, semconv.ErrorTypeKey.String(k.errTyp))
		}
		points := metric.WithAttributeSet(attribute.NewSet(kv...))
		c := &count{of: m.started, points: points, record: []metric.RecordOption{points}}
		switch {
		case k.op == operationEnqueue:
			c.of = m.enqueued
		case k.outcome != "":
			c.of = m.finished
		}
		return c
	})
}

// observeCounts reports the counters' sums.
func (m *instruments) observeCounts(_ context.Context, o metric.Observer) error {
	m.counts.each(func(c *count) { o.ObserveInt64(c.of, c.n.Load(), c.points) })
	return nil
}

// processKey names the attempts of one kind in one queue.
type processKey struct{ queue, kind string }

// process is what every attempt of one kind in one queue shares, made once: its point of
// the started counter and pickup histogram, its span's name and start options, and its
// point of the finished counter and duration histogram for a success.
type process struct {
	processKey
	started *count
	// succeeded is made at the first success: a point made before would report 0
	// successes for a kind that never had one.
	succeeded atomic.Pointer[count]
	spanName  string
	spanStart []trace.SpanStartOption
}

func (m *instruments) processOf(queue, kind string) *process {
	return m.processes.get(processKey{queue, kind}, func() *process {
		return &process{
			processKey: processKey{queue, kind},
			started:    m.countOf(setKey{op: operationProcess, queue: queue, kind: kind}),
			spanName:   operationProcess + " " + queue,
			spanStart: []trace.SpanStartOption{
				trace.WithSpanKind(trace.SpanKindConsumer),
				trace.WithAttributes(
					m.systemAttr, m.processAttr, semconv.MessagingOperationTypeProcess,
					semconv.MessagingDestinationName(queue), attrKind.String(kind),
				),
			},
		}
	})
}

// recent remembers the process last looked up, for a caller that sees the same kind in the
// same queue again and again (the middleware of one kind, Observe in a drain): comparing
// two strings with its own costs less than the lookup of the pair in the cache's map.
type recent struct{ last atomic.Pointer[process] }

// of returns the process of kind in queue.
func (r *recent) of(m *instruments, queue, kind string) *process {
	if p := r.last.Load(); p != nil && p.queue == queue && p.kind == kind {
		return p
	}
	p := m.processOf(queue, kind)
	r.last.Store(p)
	return p
}

// startedAttempt records the start of an attempt of p, due wait seconds ago. Its pickup
// latency has no exemplar, as its duration has none: the attempt's span does not exist
// yet, and a span in the handler's context would be another's. A context without one
// also spares the SDK the search of a long context for a span at every measurement.
func (m *instruments) startedAttempt(p *process, wait float64) {
	p.started.n.Add(1)
	m.pickup.Record(context.Background(), wait, p.started.record...)
}

// finishedAttempt records an attempt whose outcome is committed: what [relay.Client.Observe]
// reports.
func (m *instruments) finishedAttempt(e relay.Event) {
	outcome := e.Outcome()
	c := m.finishedCount(e, outcome)
	c.n.Add(1)
	if outcome != relay.OutcomeLostLease {
		m.duration.Record(context.Background(), e.Ran().Seconds(), c.record...)
	}
}

// finishedCount is the point of the finished counter and duration histogram of attempt e,
// which ended with outcome. A success, what most attempts are, finds it without a lookup
// of its six attributes in the cache's map.
func (m *instruments) finishedCount(e relay.Event, outcome relay.Outcome) *count {
	k := setKey{op: operationProcess, queue: e.Queue, kind: e.Kind, outcome: string(outcome), state: string(e.State)}
	switch outcome {
	case relay.OutcomeSucceeded, relay.OutcomeSnoozed:
	default:
		k.errTyp = e.Reason // the attempt failed: the semantic conventions want error.type
	}
	if outcome != relay.OutcomeSucceeded || e.State != relay.StateSucceeded {
		return m.countOf(k)
	}
	p := m.ended.of(m, e.Queue, e.Kind)
	c := p.succeeded.Load()
	if c == nil {
		c = m.countOf(k)
		p.succeeded.Store(c)
	}
	return c
}

// enqueuedJobs records the jobs of one enqueue; err is its error, if it failed. Jobs
// alike (an EnqueueMany of one kind) are counted with one add.
func (m *instruments) enqueuedJobs(jobs []*relay.EnqueueInfo, err error) {
	errTyp := ""
	if err != nil {
		errTyp = errorType(err)
	}
	for i := 0; i < len(jobs); {
		j := i + 1
		for j < len(jobs) && jobs[j].Queue == jobs[i].Queue && jobs[j].Kind == jobs[i].Kind {
			j++
		}
		m.countOf(setKey{op: operationEnqueue, queue: jobs[i].Queue, kind: jobs[i].Kind, errTyp: errTyp}).n.Add(int64(j - i))
		i = j
	}
}

// errorType names the class of an enqueue's error, for error.type: one of relay's
// sentinels, or "_OTHER" (a database error, say).
func errorType(err error) string {
	for _, e := range []struct {
		err  error
		name string
	}{
		{relay.ErrTooLarge, "too_large"}, {relay.ErrEncodeArgs, "encode_args"},
		{relay.ErrQueueNotOrdered, "queue_not_ordered"}, {relay.ErrInvalidJob, "invalid_job"},
		{context.Canceled, "canceled"}, {context.DeadlineExceeded, "deadline_exceeded"},
	} {
		if errors.Is(err, e.err) {
			return e.name
		}
	}
	return semconv.ErrorTypeOther.Value.AsString()
}

// observeClient registers the gauges of client c's own figures.
func (m *instruments) observeClient(c *relay.Client) (metric.Registration, error) {
	return m.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		id := c.ID()
		if id == "" {
			return nil // not started: no figures yet
		}
		s := c.Stats()
		client := semconv.MessagingClientID(id)
		for queue, q := range s.Queues {
			o.ObserveInt64(m.running, int64(q.Running), metric.WithAttributes(m.systemAttr, client, semconv.MessagingDestinationName(queue)))
		}
		attrs := metric.WithAttributes(m.systemAttr, client)
		o.ObserveInt64(m.free, int64(s.FreeSlots), attrs)
		o.ObserveInt64(m.backlog, int64(s.OutcomeBacklog), attrs)
		o.ObserveInt64(m.reconnects, s.ListenerReconnects, attrs)
		return nil
	}, m.running, m.free, m.backlog, m.reconnects)
}

// observeDepths registers the gauges read from the database, through d.
func (m *instruments) observeDepths(d *depths) (metric.Registration, error) {
	return m.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		qs, err := d.read(ctx)
		if err != nil {
			return err
		}
		for queue, q := range qs {
			dest := semconv.MessagingDestinationName(queue)
			for _, st := range []struct {
				state relay.JobState
				n     int64
			}{{relay.StatePending, q.Pending}, {relay.StateScheduled, q.Scheduled}, {relay.StateRunning, q.Running}, {relay.StateHeld, q.Held}} {
				o.ObserveInt64(m.depth, st.n, metric.WithAttributes(m.systemAttr, dest, attrState.String(string(st.state))))
			}
			o.ObserveFloat64(m.oldest, q.OldestDue.Seconds(), metric.WithAttributes(m.systemAttr, dest))
		}
		return nil
	}, m.depth, m.oldest)
}
