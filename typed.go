package relay

import (
	"context"
	"encoding/json"
	"fmt"
)

// JobRecordOf is a [JobRecord] with its args and output decoded: T as the kind's
// handler takes them, O as it returns (see [HandleWithOutput]).
type JobRecordOf[T, O any] struct {
	*JobRecord
	Args T
	// Output is nil until the job succeeded with an output.
	Output *O
}

// GetJobOf is [GetJob] with the job's args decoded into T and its output into O. Args or
// an output that do not decode return an error (with the record still readable through
// [GetJob]). The error data of its attempts ([ErrorData]) decodes with
// [Attempt.DecodeData], into the type the handler recorded:
//
//	rec, err := relay.GetJobOf[ChargeArgs, Receipt](ctx, pool, id)
//	…
//	var declined Declined
//	if ok, err := rec.Attempts[0].DecodeData(&declined); ok && err == nil { … }
func GetJobOf[T, O any](ctx context.Context, db DB, id int64, opts ...JobOption) (*JobRecordOf[T, O], error) {
	rec, err := GetJob(ctx, db, id, opts...)
	if err != nil {
		return nil, err
	}
	typed := &JobRecordOf[T, O]{JobRecord: rec}
	if err := decodeArgs(rec.Args, rec.Payload, &typed.Args); err != nil {
		return nil, fmt.Errorf("relay: decode the args of job %d: %w", id, err)
	}
	if rec.Output != nil {
		typed.Output = new(O)
		if err := json.Unmarshal(rec.Output, typed.Output); err != nil {
			return nil, fmt.Errorf("relay: decode the output of job %d: %w", id, err)
		}
	}
	return typed, nil
}
