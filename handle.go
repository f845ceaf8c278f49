package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"time"

	"github.com/relayq/relay/dispatcher"
)

// Job is a job as its handler sees it, with its args decoded into T.
type Job[T any] struct {
	ID          int64
	Kind        string
	Queue       string
	Args        T
	Attempt     int // 1 on the first attempt
	MaxAttempts int
	CreatedAt   time.Time
	ScheduledAt time.Time // when this attempt was due
	AttemptedAt time.Time // when this attempt was claimed
	// Checkpoint is the progress last saved with [Checkpoint], by this attempt or an earlier
	// one, as JSON; nil if none. [Job.Resume] decodes it.
	Checkpoint json.RawMessage
	// Metadata is what the job was enqueued with ([Metadata], [EnqueueMiddleware]); nil if
	// none.
	Metadata map[string]string
	// Schedule is the periodic schedule that enqueued the job ([Schedule]), and Slot the
	// time it was enqueued for: the slot of its cron expression or interval (or, for a
	// job of [RunOnStart], the time it was enqueued). "" and zero for any other job.
	Schedule string
	Slot     time.Time

	run *running // the attempt this is; nil for a Job not run by a client
}

// HandlerFunc handles jobs whose args decode into T. Returning nil marks the job
// succeeded; returning an error retries it after a backoff delay until it runs out of
// attempts, then marks it failed. ctx is cancelled when the client stops.
type HandlerFunc[T any] func(ctx context.Context, job *Job[T]) error

// runner runs one claimed job through its typed handler.
type runner func(ctx context.Context, j *dispatcher.Job, r *running) error

// Handle registers fn as the handler of kind on c, with options such as [MaxAttempts],
// [Timeout] and [Backoff] for the kind:
//
//	err := relay.Handle(c, SendEmail, func(ctx context.Context, job *relay.Job[EmailArgs]) error { … })
//
// Register every handler before [Client.Start]; it returns an error wrapping
// [ErrDuplicateKind] if the kind's name already has one, [ErrAlreadyStarted] after Start,
// [ErrInvalidJob] for a zero [Kind] or an invalid name (see [NewKind]), or
// [ErrInvalidConfig] for invalid options (such as a [MaxAttempts] outside 1 to 2147483647)
// or a nil c or fn.
func Handle[T any](c *Client, kind Kind[T], fn HandlerFunc[T], opts ...HandleOption) error {
	if err := validateKind(kind.name); err != nil {
		return err
	}
	if c == nil {
		return fmt.Errorf("%w: Handle of %q on a nil *Client; make clients with relay.New", ErrInvalidConfig, kind.name)
	}
	if fn == nil {
		return fmt.Errorf("%w: the handler of %q is nil", ErrInvalidConfig, kind.name)
	}
	k := kindConfig{maxAttempts: DefaultMaxAttempts}
	for _, opt := range opts {
		opt.applyHandle(&k)
	}
	if err := k.validate(kind.name); err != nil {
		return err
	}
	argsType := reflect.TypeFor[T]().String()
	return c.register(kind.name, k, func(ctx context.Context, j *dispatcher.Job, r *running) error {
		job := &Job[T]{
			ID: j.ID, Kind: j.Kind, Queue: j.Queue, Attempt: j.Attempt, MaxAttempts: j.MaxAttempts,
			CreatedAt: j.CreatedAt, ScheduledAt: j.RunAt, AttemptedAt: j.AttemptedAt, Checkpoint: j.Checkpoint,
			Metadata: r.metadata, Schedule: j.Schedule, Slot: j.Slot, run: r,
		}
		if err := decodeArgs(j.Args, j.Payload, &job.Args); err != nil {
			// Retrying cannot fix stored args, so this fails the job at once.
			return &permanentError{fmt.Errorf("decode args of job %d (%s) into %s: %w", j.ID, j.Kind, argsType, err)}
		}
		return fn(ctx, job)
	})
}

func (k kindConfig) validate(kind string) error {
	switch {
	case k.maxAttempts < 1 || k.maxAttempts > maxCount:
		return checkCount(ErrInvalidConfig, fmt.Sprintf("kind %q: MaxAttempts", kind), k.maxAttempts, 1)
	case k.timeout != nil && *k.timeout < 0:
		return fmt.Errorf("%w: kind %q: Timeout must not be negative, got %v", ErrInvalidConfig, kind, *k.timeout)
	case k.backoff != nil:
		if err := k.backoff.Validate(); err != nil {
			return fmt.Errorf("%w: kind %q: %w", ErrInvalidConfig, kind, err)
		}
	}
	return nil
}

// decodeArgs decodes a job's stored args into v: the raw payload of a job enqueued with
// []byte args goes as it is into a *[]byte, and JSON args are unmarshalled.
func decodeArgs[T any](args, payload []byte, v *T) error {
	if payload != nil {
		raw, ok := any(v).(*[]byte)
		if !ok {
			return fmt.Errorf("the job carries raw []byte args, which only a []byte handler can take")
		}
		*raw = payload
		return nil
	}
	return json.Unmarshal(args, v)
}
