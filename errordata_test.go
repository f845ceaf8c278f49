package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/relayq/relay"
)

// Tests of typed error data (relay.ErrorData, relay.DataError): the data a handler's error
// carries is recorded as JSON in its attempt's history entry, read back raw by GetJob and
// ListJobs and in events, decoded by Attempt.DecodeData; data that cannot be recorded is
// said so, and the attempt's outcome is written all the same.

// upstreamFailure is the data a handler records with ErrorData.
type upstreamFailure struct {
	Status    int    `json:"status"`
	RequestID string `json:"request_id"`
	Retryable bool   `json:"retryable"`
}

// fieldError is an error type that carries its own data: a DataError found with errors.As.
type fieldError struct{ Field string }

func (e *fieldError) Error() string  { return "invalid " + e.Field }
func (e *fieldError) ErrorData() any { return map[string]string{"field": e.Field} }

// panicky panics when encoded: its attempt must be recorded, and the client go on.
type panicky struct{}

func (panicky) MarshalJSON() ([]byte, error) { panic("cannot encode") }

func TestErrorDataIsRecordedWithItsAttempt(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	const maxData = 256
	c := b.client(relay.Config{MaxErrorDataSize: maxData})
	events := b.subscribe(c, 16)
	upstream := upstreamFailure{Status: 503, RequestID: "req-7", Retryable: true}
	errUpstream := errors.New("upstream answered 503")
	// Each job's handler fails in its own way, by its args' N.
	failures := map[int]error{
		1: relay.ErrorData(errUpstream, upstream),
		2: relay.Discard(fmt.Errorf("check the address: %w", &fieldError{Field: "email"})),
		3: relay.ErrorData(relay.Discard(errors.New("cannot encode")), make(chan int)),
		4: relay.ErrorData(errors.New("too much"), strings.Repeat("x", maxData)),
		5: relay.ErrorData(errors.New("panics when encoded"), panicky{}),
		6: relay.ErrorData(errors.New("no data"), nil),
		7: relay.ErrorData(errors.New("a NUL"), "a\x00b"),
		8: relay.RetryAfter(time.Hour, relay.ErrorData(errUpstream, upstream)),
	}
	handle(t, c, testKind, func(_ context.Context, job *relay.Job[numArgs]) error { return failures[job.Args.N] })
	b.start(c)
	if relay.ErrorData(nil, upstream) != nil {
		t.Error("ErrorData(nil, v) is not nil")
	}
	if err := failures[1]; !errors.Is(err, errUpstream) || err.Error() != errUpstream.Error() {
		t.Errorf("ErrorData(err, v) = %q; want err's text, and errors.Is to see err through it", err)
	}

	ids := map[int]int64{}
	for n := range failures {
		attempts := 1 // all but job 8 fail at once, whatever their data
		if n == 8 {
			attempts = 2
		}
		ids[n] = enqueue(b, testKind, numArgs{N: n}, relay.MaxAttempts(attempts))
	}
	var all []int64
	for _, id := range ids {
		all = append(all, id)
	}
	byJob := b.eventsOf(events, len(ids), all...)
	attempt := func(n int) relay.Attempt {
		t.Helper()
		rec := b.record(ids[n])
		if len(rec.Attempts) != 1 {
			t.Fatalf("job %d has %d attempts in its history; want 1", n, len(rec.Attempts))
		}
		return rec.Attempts[0]
	}

	// Recorded: raw as JSON, decoded by DecodeData, in the event too.
	a := attempt(1)
	var got upstreamFailure
	if ok, err := a.DecodeData(&got); !ok || err != nil || got != upstream || a.DataError != "" || a.Reason != relay.ReasonError {
		t.Errorf("job 1: DecodeData = %v, %v, %+v (data %s, data error %q, reason %s); want %+v", ok, err, got, a.Data, a.DataError, a.Reason, upstream)
	}
	if !sameJSON(t, a.Data, `{"status": 503, "request_id": "req-7", "retryable": true}`) {
		t.Errorf("job 1: Data = %s", a.Data)
	}
	if e := byJob[ids[1]][0]; !sameJSON(t, e.Data, string(a.Data)) {
		t.Errorf("job 1: the event's Data = %s; want %s", e.Data, a.Data)
	}
	if ok, err := a.DecodeData(new(int)); !ok || !errors.Is(err, relay.ErrDecodeErrorData) {
		t.Errorf("job 1: DecodeData into an int = %v, %v; want ErrDecodeErrorData", ok, err)
	}
	typed, err := relay.GetJobOf[numArgs, struct{}](ctx, b, ids[1], relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	got = upstreamFailure{}
	if ok, err := typed.Attempts[0].DecodeData(&got); !ok || err != nil || got != upstream {
		t.Errorf("job 1 by GetJobOf: DecodeData = %v, %v, %+v", ok, err, got)
	}
	// A DataError of its own, wrapped, and discarded: found with errors.As.
	if a := attempt(2); a.Reason != relay.ReasonDiscarded || !sameJSON(t, a.Data, `{"field": "email"}`) {
		t.Errorf("job 2: reason %s, data %s; want discarded, the field", a.Reason, a.Data)
	}
	// Retried with its data.
	if a := attempt(8); a.Outcome != string(relay.StatePending) || !sameJSON(t, a.Data, string(attempt(1).Data)) {
		t.Errorf("job 8: outcome %s, data %s; want pending, the upstream failure", a.Outcome, a.Data)
	}

	// Not recorded, and said why; the outcome is written all the same.
	for n, want := range map[int]string{
		3: "could not be encoded as JSON", 4: "over the limit of 256 set by Config.MaxErrorDataSize",
		5: "panic: cannot encode", 7: "NUL",
	} {
		a := attempt(n)
		if a.Data != nil || !strings.Contains(a.DataError, want) || a.Error == "" {
			t.Errorf("job %d: data %s, data error %q, error %q; want no data, a data error saying %q, the error text", n, a.Data, a.DataError, a.Error, want)
		}
	}
	if a := attempt(3); a.Reason != relay.ReasonDiscarded {
		t.Errorf("job 3: reason %s; want discarded, whatever became of its data", a.Reason)
	}
	// nil data: none, and no complaint.
	if a := attempt(6); a.Data != nil || a.DataError != "" {
		t.Errorf("job 6: data %s, data error %q; want neither", a.Data, a.DataError)
	}
	if ok, err := attempt(6).DecodeData(&got); ok || err != nil {
		t.Errorf("DecodeData of an attempt without data = %v, %v; want false, nil", ok, err)
	}
	for n, id := range ids {
		if want := map[bool]relay.JobState{true: relay.StateScheduled, false: relay.StateFailed}[n == 8]; b.record(id).State != want {
			t.Errorf("job %d is %s; want %s", n, b.record(id).State, want)
		}
	}

	page, err := relay.ListJobs(ctx, b, relay.ListFilter{States: []relay.JobState{relay.StateFailed}, Kind: testKind.Name()}, relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range page.Jobs {
		if rec.ID == ids[1] && !sameJSON(t, rec.Attempts[0].Data, string(attempt(1).Data)) {
			t.Errorf("ListJobs: job 1's data = %s", rec.Attempts[0].Data)
		}
	}
}

// sameJSON reports whether JSON got and want hold the same value (jsonb reorders keys).
func sameJSON(t *testing.T, got json.RawMessage, want string) bool {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		return false
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad JSON in the test: %s", want)
	}
	return reflect.DeepEqual(g, w)
}
