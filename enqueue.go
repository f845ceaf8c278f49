package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/relayq/relay/internal/store"
)

// Enqueue inserts a job of kind with args encoded as JSON and returns its id. Run it on
// your transaction: the job, and the NOTIFY that wakes a worker, take effect when the
// transaction commits and not at all if it rolls back. Passing a pool instead commits at
// once. No client needs to be running; the job waits in the table until one that handles
// kind claims it.
//
// Args that cannot be encoded return an error wrapping [ErrEncodeArgs]; invalid names or
// options return one wrapping [ErrInvalidJob]. Either way nothing is inserted.
func Enqueue(ctx context.Context, db DB, kind string, args any, opts ...EnqueueOption) (int64, error) {
	o := defaultEnqueueOptions()
	for _, opt := range opts {
		opt.applyEnqueue(&o)
	}
	j, err := newJob(kind, args, o)
	if err != nil {
		return 0, err
	}
	s, err := store.For(o.schema)
	if err != nil {
		return 0, fmt.Errorf("relay: enqueue: %w", err)
	}
	id, err := s.Insert(ctx, db, j)
	if err != nil {
		return 0, fmt.Errorf("relay: enqueue %q: %w", kind, err)
	}
	return id, nil
}

// JobSpec is one job for [EnqueueMany].
type JobSpec struct {
	Kind    string
	Args    any
	Options []EnqueueOption // applied after the options given to EnqueueMany
}

// EnqueueMany inserts many jobs in one round trip and returns their ids in the order of
// jobs. It sends one NOTIFY per queue. opts apply to every job (a [Schema] option may only
// be given here, since one statement writes one schema); each JobSpec's own options are
// applied after them. If any job is invalid, nothing is inserted.
func EnqueueMany(ctx context.Context, db DB, jobs []JobSpec, opts ...EnqueueOption) ([]int64, error) {
	if len(jobs) == 0 {
		return nil, nil
	}
	base := defaultEnqueueOptions()
	for _, opt := range opts {
		opt.applyEnqueue(&base)
	}
	s, err := store.For(base.schema)
	if err != nil {
		return nil, fmt.Errorf("relay: enqueue: %w", err)
	}
	news := make([]store.NewJob, len(jobs))
	for i, spec := range jobs {
		o := base
		for _, opt := range spec.Options {
			opt.applyEnqueue(&o)
		}
		if o.schema != base.schema {
			return nil, fmt.Errorf("%w: job %d (%q) sets Schema %q; give Schema to EnqueueMany itself", ErrInvalidJob, i, spec.Kind, o.schema)
		}
		if news[i], err = newJob(spec.Kind, spec.Args, o); err != nil {
			return nil, fmt.Errorf("job %d: %w", i, err)
		}
	}
	ids, err := s.InsertMany(ctx, db, news)
	if err != nil {
		return nil, fmt.Errorf("relay: enqueue %d jobs: %w", len(jobs), err)
	}
	return ids, nil
}

// newJob validates a job and encodes its args.
func newJob(kind string, args any, o enqueueOptions) (store.NewJob, error) {
	if err := validateName("kind", kind); err != nil {
		return store.NewJob{}, err
	}
	if err := validateName("queue", o.queue); err != nil {
		return store.NewJob{}, err
	}
	maxAttempts := 0 // the kind's default, filled in at the first claim
	if o.maxAttempts != nil {
		if maxAttempts = *o.maxAttempts; maxAttempts < 1 {
			return store.NewJob{}, fmt.Errorf("%w: MaxAttempts must be at least 1, got %d", ErrInvalidJob, maxAttempts)
		}
	}
	if o.timeout != nil && (*o.timeout < 0 || *o.timeout > maxTimeout) {
		return store.NewJob{}, fmt.Errorf("%w: Timeout must be between 0 (none) and %v, got %v", ErrInvalidJob, maxTimeout, *o.timeout)
	}
	encoded, err := json.Marshal(args)
	if err != nil {
		return store.NewJob{}, fmt.Errorf("%w of kind %q: %w", ErrEncodeArgs, kind, err)
	}
	return store.NewJob{Kind: kind, Queue: o.queue, Args: encoded, RunAt: o.runAt, MaxAttempts: maxAttempts, Timeout: o.timeout}, nil
}

func validateName(what, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: %s is empty", ErrInvalidJob, what)
	case len(name) > MaxNameLen:
		return fmt.Errorf("%w: %s %.20q… is %d bytes long, the limit is %d", ErrInvalidJob, what, name, len(name), MaxNameLen)
	}
	return nil
}

// maxTimeout is the longest per-job timeout: it is stored in milliseconds as an integer.
const maxTimeout = 24 * 24 * time.Hour
