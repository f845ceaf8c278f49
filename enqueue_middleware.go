package relay

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/relayq/relay/internal/store"
)

// EnqueueInfo is a job about to be inserted, as [EnqueueMiddleware] sees it.
type EnqueueInfo struct {
	Kind     string
	Queue    string
	Priority int
	RunAt    time.Time // zero: now
	// Metadata is the job's metadata so far ([Metadata]), never nil: a middleware may add
	// to it before it calls next, and what it holds then is stored with the job.
	Metadata map[string]string

	// ID and Duplicate are set once next has returned nil: the job's id and whether it was
	// not inserted because the job ID holds its [Unique] key.
	ID        int64
	Duplicate bool
}

// EnqueueFunc inserts jobs for [EnqueueMiddleware]: the next middleware, and in the end the
// statement that inserts them.
type EnqueueFunc func(ctx context.Context, jobs []*EnqueueInfo) error

// EnqueueMiddleware wraps the insert of jobs by [Enqueue], [EnqueueMany] and their kin: it
// sees each job before it is inserted and may add to its metadata (a trace context, a
// request id, a tenant), and it learns the outcome of the insert — the one place for
// tracing and counting enqueues. It is called at every enqueue with the next step; the
// function it returns must call next with the jobs it was given for them to be inserted:
//
//	var tenant relay.EnqueueMiddleware = func(next relay.EnqueueFunc) relay.EnqueueFunc {
//		return func(ctx context.Context, jobs []*relay.EnqueueInfo) error {
//			for _, j := range jobs {
//				j.Metadata["tenant"] = tenantOf(ctx)
//			}
//			return next(ctx, jobs)
//		}
//	}
//
// An EnqueueMiddleware is an [EnqueueOption]: pass it to each enqueue, or keep the options
// your enqueues share in one slice. Several wrap in the order given, the first outermost.
// [EnqueueMany] inserts its jobs with one statement, so its middleware sees them all in
// one call; a job's own options ([Kind.Job]) must not hold one. An error returned by the
// middleware is returned by the enqueue; the metadata is checked ([MaxMetadataSize]) once
// every middleware has called next, before anything is sent.
type EnqueueMiddleware func(next EnqueueFunc) EnqueueFunc

func (m EnqueueMiddleware) applyEnqueue(o *enqueueOptions) { o.middleware = append(o.middleware, m) }

// errNotInserted is returned by an enqueue whose middleware returned nil without letting
// the jobs be inserted.
var errNotInserted = errors.New("an EnqueueMiddleware returned nil without calling next: nothing was inserted")

// batch is the jobs of one enqueue, inserted by one statement through the enqueue's
// middleware.
type batch struct {
	store      *store.Store
	db         DB
	one        bool // one job, by the insert statement rather than insertMany
	middleware []EnqueueMiddleware

	jobs     []store.NewJob
	metadata []map[string]string // each job's, before middleware
	limits   []int               // each job's MaxMetadataSize
}

// add adds a validated job, enqueued with options o.
func (b *batch) add(j store.NewJob, o enqueueOptions) error {
	limit := DefaultMaxMetadataSize
	if o.maxMetadataSize != nil {
		if limit = *o.maxMetadataSize; limit < 1 {
			return fmt.Errorf("%w: MaxMetadataSize must be at least 1, got %d", ErrInvalidJob, limit)
		}
	}
	b.jobs = append(b.jobs, j)
	b.metadata = append(b.metadata, o.metadata)
	b.limits = append(b.limits, limit)
	return nil
}

// insert inserts the jobs through the middleware.
func (b *batch) insert(ctx context.Context) ([]store.Inserted, error) {
	if len(b.middleware) == 0 {
		return b.send(ctx, b.metadata)
	}
	infos := make([]*EnqueueInfo, len(b.jobs))
	for i, j := range b.jobs {
		meta := maps.Clone(b.metadata[i])
		if meta == nil {
			meta = map[string]string{}
		}
		infos[i] = &EnqueueInfo{Kind: j.Kind, Queue: j.Queue, Priority: j.Priority, RunAt: j.RunAt, Metadata: meta}
	}
	var inserted []store.Inserted
	next := func(ctx context.Context, jobs []*EnqueueInfo) error {
		if len(jobs) != len(infos) {
			return fmt.Errorf("%w: an EnqueueMiddleware passed on %d of the %d jobs it was given", ErrInvalidJob, len(jobs), len(infos))
		}
		meta := make([]map[string]string, len(jobs))
		for i, j := range jobs {
			meta[i] = j.Metadata
		}
		ins, err := b.send(ctx, meta)
		if err != nil {
			return err
		}
		for i, in := range ins {
			jobs[i].ID, jobs[i].Duplicate = in.ID, !in.Inserted
		}
		inserted = ins
		return nil
	}
	f := EnqueueFunc(next)
	for i := len(b.middleware) - 1; i >= 0; i-- {
		if f = b.middleware[i](f); f == nil {
			return nil, fmt.Errorf("%w: EnqueueMiddleware %d returned a nil EnqueueFunc", ErrInvalidJob, i)
		}
	}
	if err := f(ctx, infos); err != nil {
		return nil, err
	}
	if inserted == nil {
		return nil, fmt.Errorf("relay: enqueue %s: %w", b.what(), errNotInserted)
	}
	return inserted, nil
}

// what names the jobs for errors: `"email"`, `3 jobs`. Made only for an error: formatted
// at every enqueue, it was 4 % of the enqueue's CPU in the client (the enqueue bench's
// profile).
func (b *batch) what() string {
	if b.one {
		return strconv.Quote(b.jobs[0].Kind)
	}
	return fmt.Sprintf("%d jobs", len(b.jobs))
}

// send encodes each job's metadata meta[i] and inserts the jobs in one statement.
func (b *batch) send(ctx context.Context, meta []map[string]string) ([]store.Inserted, error) {
	for i := range b.jobs {
		if len(meta[i]) == 0 {
			b.jobs[i].Metadata = nil // none: NULL, and no closure to make for each job
			continue
		}
		whose := func() string { return fmt.Sprintf("of kind %q", b.jobs[i].Kind) }
		encoded, err := encodeMetadata(meta[i], b.limits[i], whose)
		if err != nil {
			if !b.one {
				err = fmt.Errorf("job %d: %w", i, err)
			}
			return nil, err
		}
		b.jobs[i].Metadata = encoded
	}
	var (
		ins []store.Inserted
		err error
	)
	if b.one {
		var in store.Inserted
		in, err = b.store.Insert(ctx, b.db, b.jobs[0])
		ins = []store.Inserted{in}
	} else {
		ins, err = b.store.InsertMany(ctx, b.db, b.jobs)
	}
	if err != nil {
		return nil, fmt.Errorf("relay: enqueue %s: %w", b.what(), enqueueError(err, b.store.Schema()))
	}
	return ins, nil
}
