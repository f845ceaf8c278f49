package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/relayq/relay/internal/store"
)

// Enqueue inserts a job of kind with args and returns its id. Args are encoded as JSON,
// except args of type []byte, which are stored as they are (bytea) for payloads serialised
// otherwise (protobuf, msgpack): declare such kinds as Kind[[]byte]. Run it on your
// transaction: the job, and the NOTIFY that wakes a worker, take effect when the
// transaction commits and not at all if it rolls back. Passing a pool instead commits at
// once. No client needs to be running; the job waits in the table until one that handles
// kind claims it.
//
// Args that cannot be encoded as JSON PostgreSQL can store return an error wrapping
// [ErrEncodeArgs]; args over their size limit ([MaxArgsSize], default [DefaultMaxSize]),
// one wrapping [ErrTooLarge] and [ErrInvalidJob]; a zero [Kind], invalid names or keys and
// invalid options, one wrapping [ErrInvalidJob]; a nil db, [ErrNilDB]. All of these are
// found before anything is sent: nothing is inserted, and the transaction passed as db is
// still usable.
//
// With [Unique], the id is that of the job already holding the key, if one does; use
// [EnqueueJob] to also learn whether the job was inserted.
func Enqueue[T any](ctx context.Context, db DB, kind Kind[T], args T, opts ...EnqueueOption) (int64, error) {
	e, err := EnqueueJob(ctx, db, kind, args, opts...)
	return e.ID, err
}

// Enqueued is the result of [EnqueueJob] and [EnqueueJobs].
type Enqueued struct {
	ID int64
	// Duplicate is true when the job was not inserted because the job ID holds its
	// [Unique] key.
	Duplicate bool
}

// EnqueueJob is [Enqueue] that also reports whether the job was a duplicate of one
// holding the same [Unique] key.
func EnqueueJob[T any](ctx context.Context, db DB, kind Kind[T], args T, opts ...EnqueueOption) (Enqueued, error) {
	return enqueueJob(ctx, db, kind.Job(args, opts...))
}

// enqueueJob is [EnqueueJob] past its type parameter.
func enqueueJob(ctx context.Context, db DB, spec JobSpec) (Enqueued, error) {
	if err := checkDB(db, "Enqueue"); err != nil {
		return Enqueued{}, err
	}
	o := defaultEnqueueOptions()
	for _, opt := range spec.opts {
		opt.applyEnqueue(&o)
	}
	j, err := newJob(spec.kind, spec.args, o)
	if err != nil {
		return Enqueued{}, err
	}
	s, err := store.For(o.schema)
	if err != nil {
		return Enqueued{}, fmt.Errorf("relay: enqueue: %w", err)
	}
	b := batch{store: s, db: db, one: true, middleware: o.middleware}
	if err := b.add(j, o); err != nil {
		return Enqueued{}, err
	}
	ins, err := b.insert(ctx)
	if err != nil {
		return Enqueued{}, err
	}
	return Enqueued{ID: ins[0].ID, Duplicate: !ins[0].Inserted}, nil
}

// EnqueueMany inserts many jobs, made with [Kind.Job], in one round trip and returns their
// ids in the order of jobs; the jobs may be of different kinds:
//
//	ids, err := relay.EnqueueMany(ctx, tx, []relay.JobSpec{
//		SendEmail.Job(EmailArgs{To: "ada@example.com"}),
//		ResizeImage.Job(ResizeArgs{URL: url}, relay.Queue("images")),
//	})
//
// It sends one NOTIFY per queue. opts apply to every job (a [Schema] option may only be
// given here, since one statement writes one schema); each job's own options are applied
// after them. If any job is invalid, nothing is inserted.
//
// With [Unique], a job whose key is held gets the holder's id, and of jobs sharing a key
// within the call only the first is inserted; [EnqueueJobs] also reports which.
func EnqueueMany(ctx context.Context, db DB, jobs []JobSpec, opts ...EnqueueOption) ([]int64, error) {
	es, err := EnqueueJobs(ctx, db, jobs, opts...)
	if err != nil || es == nil {
		return nil, err
	}
	ids := make([]int64, len(es))
	for i, e := range es {
		ids[i] = e.ID
	}
	return ids, nil
}

// EnqueueJobs is [EnqueueMany] that also reports, for each job, whether it was a
// duplicate of one holding the same [Unique] key.
func EnqueueJobs(ctx context.Context, db DB, jobs []JobSpec, opts ...EnqueueOption) ([]Enqueued, error) {
	if err := checkDB(db, "EnqueueMany"); err != nil {
		return nil, err
	}
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
	b := batch{store: s, db: db, middleware: base.middleware}
	for i, spec := range jobs {
		o := base
		for _, opt := range spec.opts {
			opt.applyEnqueue(&o)
		}
		switch {
		case o.schema != base.schema:
			return nil, fmt.Errorf("%w: job %d (%q) sets Schema %q; give Schema to EnqueueMany itself", ErrInvalidJob, i, spec.kind, o.schema)
		case len(o.middleware) != len(base.middleware):
			return nil, fmt.Errorf("%w: job %d (%q) has an EnqueueMiddleware of its own; give it to EnqueueMany itself, which inserts the jobs together", ErrInvalidJob, i, spec.kind)
		}
		j, err := newJob(spec.kind, spec.args, o)
		if err == nil {
			err = b.add(j, o)
		}
		if err != nil {
			return nil, fmt.Errorf("job %d: %w", i, err)
		}
	}
	ins, err := b.insert(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]Enqueued, len(ins))
	for i, in := range ins {
		out[i] = Enqueued{ID: in.ID, Duplicate: !in.Inserted}
	}
	return out, nil
}

func enqueueError(err error, schema string) error {
	if e, ok := errors.AsType[*store.NotOrderedError](err); ok {
		return fmt.Errorf("%w: %q; declare it ordered with relay.SetQueue before enqueueing with an OrderKey", ErrQueueNotOrdered, e.Queue)
	}
	// A producer of a newer relay than its schema: Start checks, but an enqueue does not
	// ask first (a round trip per job). Which statement an enqueue sends depends on the
	// one before it (Store.Insert), so an older schema may fail only some of them.
	if isUndefinedTable(err) || isUndefinedFunction(err) {
		return fmt.Errorf("%w: schema %q lacks what this version of relay uses (%w); %s", ErrNotMigrated, schema, err, howToMigrate(schema))
	}
	return err
}

// newJob validates a job and encodes its args.
func newJob(kind string, args any, o enqueueOptions) (store.NewJob, error) {
	if err := validateKind(kind); err != nil {
		return store.NewJob{}, err
	}
	if err := validateName("queue", o.queue); err != nil {
		return store.NewJob{}, err
	}
	maxAttempts := 0 // the kind's default, filled in at the first claim
	if o.maxAttempts != nil {
		maxAttempts = *o.maxAttempts
		if err := checkCount(ErrInvalidJob, "MaxAttempts", maxAttempts, 1); err != nil {
			return store.NewJob{}, err
		}
	}
	runAt, err := runAtParam(o.runAt)
	if err != nil {
		return store.NewJob{}, err
	}
	if o.timeout != nil && (*o.timeout < 0 || *o.timeout > maxTimeout) {
		return store.NewJob{}, fmt.Errorf("%w: Timeout must be between 0 (none) and %v, got %v", ErrInvalidJob, maxTimeout, *o.timeout)
	}
	if o.priority < MinPriority || o.priority > MaxPriority {
		return store.NewJob{}, fmt.Errorf("%w: Priority must be between %d and %d, got %d", ErrInvalidJob, MinPriority, MaxPriority, o.priority)
	}
	if o.orderKey != nil {
		if err := validateKey("OrderKey", *o.orderKey); err != nil {
			return store.NewJob{}, err
		}
	}
	uniqueIn, err := uniqueStates(o)
	if err != nil {
		return store.NewJob{}, err
	}
	maxSize := DefaultMaxSize
	if o.maxArgsSize != nil {
		if maxSize = *o.maxArgsSize; maxSize < 1 {
			return store.NewJob{}, fmt.Errorf("%w: MaxArgsSize must be at least 1, got %d", ErrInvalidJob, maxSize)
		}
	}
	if o.backoff != nil {
		if err := o.backoff.Validate(); err != nil {
			return store.NewJob{}, fmt.Errorf("%w: Backoff: %w", ErrInvalidJob, err)
		}
	}
	if o.reserved && o.hold <= 0 {
		return store.NewJob{}, fmt.Errorf("%w: Reserved needs a positive time to hold the job for, got %v", ErrInvalidJob, o.hold)
	}
	j := store.NewJob{
		Kind: kind, Queue: o.queue, RunAt: runAt, MaxAttempts: maxAttempts, Timeout: o.timeout,
		Priority: o.priority, OrderKey: o.orderKey, UniqueKey: o.uniqueKey, UniqueIn: uniqueIn,
		Hold: o.hold, Backoff: o.backoff,
	}
	whose := func() string { return fmt.Sprintf("of kind %q", kind) }
	if raw, ok := args.([]byte); ok {
		// Binary args (protobuf, msgpack, …) are stored as they are, in payload.
		if err := payloadLimit.check(len(raw), maxSize, whose); err != nil {
			return store.NewJob{}, alsoMatching(err, ErrInvalidJob)
		}
		j.Args, j.Payload = []byte("null"), raw
		if raw == nil {
			j.Payload = []byte{}
		}
		return j, nil
	}
	encoded, err := json.Marshal(args)
	if err == nil {
		err = checkJSON(encoded)
	}
	if err != nil {
		return store.NewJob{}, fmt.Errorf("%w of kind %q: %w", ErrEncodeArgs, kind, err)
	}
	if err := argsLimit.check(len(encoded), maxSize, whose); err != nil {
		return store.NewJob{}, alsoMatching(err, ErrInvalidJob)
	}
	j.Args = encoded
	return j, nil
}

// uniqueStates are the stored states in which a unique job holds its key: pending, running
// and held always, and whichever finished states the producer named.
func uniqueStates(o enqueueOptions) ([]string, error) {
	switch {
	case !o.unique:
		return nil, nil
	case o.uniqueKey == "":
		return nil, fmt.Errorf("%w: Unique needs a non-empty key", ErrInvalidJob)
	}
	if err := validateKey("Unique key", o.uniqueKey); err != nil {
		return nil, err
	}
	in := []string{store.StatePending, store.StateRunning, store.StateHeld}
	for _, st := range o.uniqueIn {
		switch st {
		case StatePending, StateScheduled, StateRunning, StateHeld: // always held
		case StateSucceeded, StateFailed, StateCancelled:
			if !slices.Contains(in, string(st)) {
				in = append(in, string(st))
			}
		default:
			return nil, fmt.Errorf("%w: Unique: %q is not a job state", ErrInvalidJob, st)
		}
	}
	return in, nil
}

// maxTimeout is the longest per-job timeout: it is stored in milliseconds as an integer.
const maxTimeout = 24 * 24 * time.Hour
