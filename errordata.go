package relay

import (
	"encoding/json"
	"errors"
	"fmt"
)

// DataError is an error that carries structured data about the failure — an upstream
// status code, the field that failed validation, a provider's error id — for its attempt's
// history. When a handler's error is or wraps one (found with [errors.As]), ErrorData's
// value is encoded as JSON into the attempt's entry, next to its error text and reason:
// [GetJob] returns it as [Attempt].Data, and [Attempt.DecodeData] decodes it into the type
// the caller names. Any error type can
// implement it; [ErrorData] wraps an error with a value.
type DataError interface {
	error
	// ErrorData returns the data to record. nil records none.
	ErrorData() any
}

// ErrorData returns an error that wraps err (its text is err's, and [errors.Is] and
// [errors.As] see through it) and carries v, recorded as JSON with the attempt (see
// [DataError]):
//
//	if resp.StatusCode != http.StatusOK {
//		return relay.ErrorData(errUpstream, UpstreamFailure{Status: resp.StatusCode, RequestID: resp.Header.Get("X-Request-Id")})
//	}
//
// It combines with the handler's decisions either way round: relay.Discard(relay.ErrorData(err, v))
// and relay.ErrorData(relay.Discard(err), v) both fail the job at once and record v.
// ErrorData(nil, v) is nil: there is no failure to describe.
//
// v is encoded when the attempt ends. If it cannot be encoded as JSON that PostgreSQL's
// jsonb stores, or its JSON is longer than [Config].MaxErrorDataSize, the attempt is
// recorded all the same, with [Attempt].DataError saying why its data is missing.
func ErrorData(err error, v any) error {
	if err == nil {
		return nil
	}
	return &dataError{err: err, data: v}
}

type dataError struct {
	err  error
	data any
}

func (e *dataError) Error() string  { return e.err.Error() }
func (e *dataError) Unwrap() error  { return e.err }
func (e *dataError) ErrorData() any { return e.data }

// DefaultMaxErrorDataSize is the default of [Config].MaxErrorDataSize: 16 KiB of JSON.
// Every failed attempt keeps its own data in the job's history, which every listing reads:
// the data is meant for a few fields, not for payloads.
const DefaultMaxErrorDataSize = 16 << 10

var errorDataLimit = sizeLimit{"error data", "Config.MaxErrorDataSize", DefaultMaxErrorDataSize}

// encodeErrorData returns the JSON of the data that err carries (nil when it carries
// none), or why it could not be recorded. It never fails the attempt: whatever the data
// is, the attempt's outcome is written. whose names the job, for the message.
func encodeErrorData(err error, limit int, whose func() string) (data []byte, problem string) {
	de, ok := errors.AsType[DataError](err)
	if !ok {
		return nil, ""
	}
	var v any
	data, err = func() (b []byte, err error) {
		// A MarshalJSON (or an ErrorData method) that panics must not take the client down.
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		v = de.ErrorData()
		if v == nil {
			return nil, nil
		}
		b, err = json.Marshal(v)
		if err == nil {
			err = checkJSON(b)
		}
		return b, err
	}()
	switch {
	case err != nil:
		return nil, storableText(fmt.Sprintf("the error data (%T) could not be encoded as JSON: %v", v, err))
	case data == nil || string(data) == "null":
		return nil, ""
	}
	if err := errorDataLimit.check(len(data), limit, whose); err != nil {
		return nil, err.Error()
	}
	return data, ""
}

// ErrDecodeErrorData is wrapped by [Attempt.DecodeData] when an attempt's error data does
// not decode into the value given.
var ErrDecodeErrorData = errors.New("relay: the error data does not decode into the type asked for")

// DecodeData decodes the structured data the attempt's error carried ([ErrorData]) into
// v, a pointer to the type the handler recorded, as [json.Unmarshal] does: the typed
// counterpart of a.Data, for attempts read with [GetJob], [GetJobOf] or [ListJobs]. It
// reports false, and leaves v alone, when the attempt recorded no data. Data that does not
// decode into v returns an error wrapping [ErrDecodeErrorData].
//
//	rec, err := relay.GetJob(ctx, pool, id)
//	…
//	var f UpstreamFailure
//	for _, a := range rec.Attempts {
//		if ok, err := a.DecodeData(&f); ok && err == nil && f.Status == http.StatusTooManyRequests { … }
//	}
func (a Attempt) DecodeData(v any) (bool, error) {
	if a.Data == nil {
		return false, nil
	}
	if err := json.Unmarshal(a.Data, v); err != nil {
		return true, fmt.Errorf("%w: attempt %d, into %T: %w", ErrDecodeErrorData, a.Number, v, err)
	}
	return true, nil
}
