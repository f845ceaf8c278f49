package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// Tests of typed kinds: relay.Kind at both ends, Kind.Job, and the kinds whose args are
// not encoded as a struct's JSON ([]byte, json.RawMessage).

// invoiceArgs is the args type of invoiceKind.
type invoiceArgs struct {
	Customer string
	Cents    int
}

var invoiceKind = relay.NewKind[invoiceArgs]("knd-invoice")

// A kind names its jobs as stored and delivers the args it was given to its handler, typed,
// whether the job came through Enqueue, EnqueueJob or EnqueueMany; EnqueueMany mixes
// kinds in one batch and applies each job's own options after the batch's.
func TestKindRoundTripsThroughHandleAndEnqueue(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	if got := invoiceKind.Name(); got != "knd-invoice" {
		t.Errorf("Name() = %q, want knd-invoice", got)
	}
	if got := fmt.Sprint(invoiceKind); got != "knd-invoice" {
		t.Errorf("a Kind prints as %q, want its name knd-invoice", got)
	}

	c := b.client(relay.Config{Queues: map[string]relay.QueueConfig{relay.DefaultQueue: {Workers: 4}, "knd-other": {Workers: 4}}})
	type seen struct {
		id          int64
		kind, queue string
		args        invoiceArgs
	}
	invoices := make(chan seen, 10)
	handle(t, c, invoiceKind, func(ctx context.Context, job *relay.Job[invoiceArgs]) error {
		invoices <- seen{job.ID, job.Kind, job.Queue, job.Args}
		return nil
	})
	nums := make(chan int64, 10)
	handle(t, c, testKind, reportIDs(nums))
	b.start(c)

	want := map[int64]seen{}
	one := invoiceArgs{Customer: "ada", Cents: 1250}
	id, err := relay.Enqueue(ctx, b, invoiceKind, one, relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	want[id] = seen{id, "knd-invoice", relay.DefaultQueue, one}
	two := invoiceArgs{Customer: "grace", Cents: 99}
	e, err := relay.EnqueueJob(ctx, b, invoiceKind, two, relay.Schema(b.Schema))
	if err != nil || e.Duplicate {
		t.Fatalf("EnqueueJob: %+v, %v", e, err)
	}
	want[e.ID] = seen{e.ID, "knd-invoice", relay.DefaultQueue, two}

	three, four := invoiceArgs{Customer: "alan", Cents: 1}, invoiceArgs{Customer: "edsger", Cents: 2}
	ids, err := relay.EnqueueMany(ctx, b, []relay.JobSpec{
		invoiceKind.Job(three),
		testKind.Job(numArgs{N: 3}),
		invoiceKind.Job(four, relay.Queue("knd-other")), // after the batch's Queue
	}, relay.Queue(relay.DefaultQueue), relay.Schema(b.Schema))
	if err != nil || len(ids) != 3 {
		t.Fatalf("EnqueueMany: %v, %v", ids, err)
	}
	want[ids[0]] = seen{ids[0], "knd-invoice", relay.DefaultQueue, three}
	want[ids[2]] = seen{ids[2], "knd-invoice", "knd-other", four}

	for range len(want) {
		got := recv(t, invoices, "an invoice job")
		if got != want[got.id] {
			t.Errorf("handler saw %+v, want %+v", got, want[got.id])
		}
		delete(want, got.id)
	}
	if got := recv(t, nums, "the other kind's job of the batch"); got != ids[1] {
		t.Errorf("the numArgs handler ran job %d, want %d", got, ids[1])
	}
	if rec := b.record(ids[1]); rec.Kind != testKind.Name() {
		t.Errorf("job %d is stored with kind %q, want %q", ids[1], rec.Kind, testKind.Name())
	}
}

// A zero Kind (one not made with NewKind) and an over-long name are refused wherever they
// are used, with ErrInvalidJob and an error that says what to do, and nothing is inserted;
// so is a JobSpec not made with Kind.Job.
func TestZeroKindAndInvalidNamesAreRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	noop := func(context.Context, *relay.Job[numArgs]) error { return nil }
	var zero relay.Kind[numArgs]
	long := relay.NewKind[numArgs](strings.Repeat("k", relay.MaxNameLen+1))
	saysNewKind := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, relay.ErrInvalidJob) || !strings.Contains(err.Error(), "relay.NewKind") {
			t.Errorf("%s: %v; want ErrInvalidJob saying to use relay.NewKind", what, err)
		}
	}

	c := b.client(relay.Config{})
	saysNewKind("Handle of the zero Kind", relay.Handle(c, zero, noop))
	saysNewKind("HandleWithOutput of the zero Kind", relay.HandleWithOutput(c, zero, func(context.Context, *relay.Job[numArgs]) (int, error) { return 0, nil }))
	if err := relay.Handle(c, long, noop); !errors.Is(err, relay.ErrInvalidJob) {
		t.Errorf("Handle of an over-long name: %v, want ErrInvalidJob", err)
	}
	// Nothing was registered: the valid kinds of the same names can still be.
	handle(t, c, relay.NewKind[numArgs](strings.Repeat("k", relay.MaxNameLen)), noop)

	schema := relay.Schema(b.Schema)
	id, err := relay.Enqueue(ctx, b, zero, numArgs{N: 1}, schema)
	saysNewKind("Enqueue of the zero Kind", err)
	if id != 0 {
		t.Errorf("Enqueue of the zero Kind returned id %d", id)
	}
	_, err = relay.EnqueueJob(ctx, b, zero, numArgs{N: 1}, schema)
	saysNewKind("EnqueueJob of the zero Kind", err)
	good := testKind.Job(numArgs{N: 2})
	ids, err := relay.EnqueueMany(ctx, b, []relay.JobSpec{good, zero.Job(numArgs{N: 3})}, schema)
	saysNewKind("EnqueueMany with a job of the zero Kind", err)
	if ids != nil {
		t.Errorf("EnqueueMany with a job of the zero Kind returned ids %v", ids)
	}
	_, err = relay.EnqueueJobs(ctx, b, []relay.JobSpec{good, {}}, schema)
	saysNewKind("EnqueueJobs with a zero JobSpec", err)
	if _, err := relay.EnqueueMany(ctx, b, []relay.JobSpec{good, long.Job(numArgs{})}, schema); !errors.Is(err, relay.ErrInvalidJob) {
		t.Errorf("EnqueueMany with an over-long kind: %v, want ErrInvalidJob", err)
	}
	if n := b.count(""); n != 0 {
		t.Errorf("refused enqueues left %d jobs: %+v", n, relaytest.Jobs(t, b.DB))
	}
}

// A Kind[json.RawMessage] sends JSON as it is: a handler of the same kind gets it back, a
// handler of a struct type of the same name decodes it, and invalid JSON is refused
// before anything is inserted. A Kind[[]byte]'s args are stored as they are.
func TestRawMessageAndByteKinds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	raw := relay.NewKind[json.RawMessage]("knd-raw")
	blob := relay.NewKind[[]byte]("knd-blob")

	c := b.client(relay.Config{})
	raws := make(chan json.RawMessage, 1)
	handle(t, c, raw, func(ctx context.Context, job *relay.Job[json.RawMessage]) error {
		raws <- job.Args
		return nil
	})
	blobs := make(chan []byte, 1)
	handle(t, c, blob, func(ctx context.Context, job *relay.Job[[]byte]) error {
		blobs <- job.Args
		return nil
	})
	b.start(c)

	if _, err := relay.Enqueue(ctx, b, raw, json.RawMessage(`{"x":`), relay.Schema(b.Schema)); !errors.Is(err, relay.ErrEncodeArgs) {
		t.Errorf("Enqueue of invalid raw JSON: %v, want ErrEncodeArgs", err)
	}
	if n := b.count(""); n != 0 {
		t.Fatalf("the refused enqueue left %d jobs", n)
	}

	id := enqueue(b, raw, json.RawMessage(`{"to": ["ada", "grace"], "n": 2}`))
	if got := recv(t, raws, "the raw JSON job"); !jsonEqual(got, `{"to":["ada","grace"],"n":2}`) {
		t.Errorf("the json.RawMessage handler got %s", got)
	}
	if rec := b.waitRecord(id, relay.StateSucceeded); rec.Payload != nil || !jsonEqual(rec.Args, `{"to":["ada","grace"],"n":2}`) {
		t.Errorf("raw JSON stored as args %s, payload %x; want the JSON as args and no payload", rec.Args, rec.Payload)
	}

	payload := []byte{0x00, 0xff, '{', 0x80}
	id = enqueue(b, blob, payload)
	if got := recv(t, blobs, "the []byte job"); string(got) != string(payload) {
		t.Errorf("the []byte handler got %x, want %x", got, payload)
	}
	if rec := b.waitRecord(id, relay.StateSucceeded); string(rec.Payload) != string(payload) || string(rec.Args) != "null" {
		t.Errorf("[]byte args stored as args %s, payload %x; want null args and payload %x", rec.Args, rec.Payload, payload)
	}
}

// relaytest takes kinds: Enqueued lists the waiting jobs of a kind, Work runs a handler of
// the kind on args that went through JSON, with the kind's name on the Job.
func TestRelaytestTakesKinds(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	want := invoiceArgs{Customer: "ada", Cents: 5}
	id := enqueue(b, invoiceKind, want)
	enqueue(b, testKind, numArgs{})
	if jobs := relaytest.Enqueued(t, b.DB, invoiceKind); len(jobs) != 1 || jobs[0].ID != id || jobs[0].Kind != invoiceKind.Name() {
		t.Errorf("Enqueued(invoiceKind) = %+v, want job %d alone", jobs, id)
	}
	var got *relay.Job[invoiceArgs]
	err := relaytest.Work(ctx, t, invoiceKind, func(ctx context.Context, job *relay.Job[invoiceArgs]) error {
		got = job
		return errors.New("handler error")
	}, want)
	if err == nil || err.Error() != "handler error" {
		t.Errorf("Work returned %v, want the handler's error", err)
	}
	if got == nil || got.Kind != invoiceKind.Name() || got.Args != want || got.Attempt != 1 {
		t.Errorf("Work ran the handler on %+v, want kind %q, args %+v, attempt 1", got, invoiceKind.Name(), want)
	}
}
