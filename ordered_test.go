package relay_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/backoff"
)

// Tests of ordered queues (relay.SetQueue with Ordered, relay.OrderKey): the jobs of a key
// start one at a time in enqueue order across all clients, the next one pushed by NOTIFY;
// a head waiting for a retry holds its key; a head that fails for good blocks its key until
// an operator retries or cancels it, or lets the key move on, as the queue says; other keys
// and queues are never held up.
//
// Every test name starts with TestOrdered: go test -run Ordered runs them all.

// orderedArgs are the args of the jobs of these tests: the job's order key (repeated in the
// args, since a handler does not see it otherwise) and its place in its key's sequence.
type orderedArgs struct {
	Key string `json:"key"`
	N   int    `json:"n"`
}

// orderedStart is one attempt as a handler saw it start.
type orderedStart struct {
	Key     string
	N       int
	ID      int64
	Attempt int
	Client  int // the index of the client that ran it, as the test numbered them
}

func (s orderedStart) String() string { return fmt.Sprintf("%s/%d#%d", s.Key, s.N, s.Attempt) }

// recorder records the starts of attempts, in order, and how many attempts of each key
// (and in all) ran at once. A handler counts as running from its first to its last line,
// which lies inside the time its job is running in the table.
type recorder struct {
	mu       sync.Mutex
	starts   []orderedStart
	running  map[string]int
	maxByKey map[string]int
	total    int
	maxTotal int
	started  chan orderedStart // every start, for tests to wait on
}

func newRecorder() *recorder {
	return &recorder{running: map[string]int{}, maxByKey: map[string]int{}, started: make(chan orderedStart, 1024)}
}

// handler returns a handler, for the client numbered client, that records each attempt
// around body (nil: succeed).
func (r *recorder) handler(client int, body relay.HandlerFunc[orderedArgs]) relay.HandlerFunc[orderedArgs] {
	return func(ctx context.Context, job *relay.Job[orderedArgs]) error {
		s := orderedStart{Key: job.Args.Key, N: job.Args.N, ID: job.ID, Attempt: job.Attempt, Client: client}
		r.mu.Lock()
		r.starts = append(r.starts, s)
		r.running[s.Key]++
		r.maxByKey[s.Key] = max(r.maxByKey[s.Key], r.running[s.Key])
		r.total++
		r.maxTotal = max(r.maxTotal, r.total)
		r.mu.Unlock()
		defer func() {
			r.mu.Lock()
			r.running[s.Key]--
			r.total--
			r.mu.Unlock()
		}()
		r.started <- s
		if body == nil {
			return nil
		}
		return body(ctx, job)
	}
}

// startsOf returns the recorded starts of key's attempts, in order, as "key/n#attempt".
func (r *recorder) startsOf(key string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, s := range r.starts {
		if s.Key == key {
			out = append(out, s.String())
		}
	}
	return out
}

func (r *recorder) all() []orderedStart {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.starts)
}

func (r *recorder) maxRunning(key string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxByKey[key]
}

func (r *recorder) maxRunningAll() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxTotal
}

// firstAttempts is the list "key/from#1" … "key/to#1": the first attempts of a key's jobs
// from from to to, in order.
func firstAttempts(key string, from, to int) []string {
	var out []string
	for n := from; n <= to; n++ {
		out = append(out, fmt.Sprintf("%s/%d#1", key, n))
	}
	return out
}

// enqueueOrdered enqueues a job of kind on queue in key (keyless for ""), numbered n.
func enqueueOrdered(b *bundle, kind relay.Kind[orderedArgs], queue, key string, n int, opts ...relay.EnqueueOption) int64 {
	b.t.Helper()
	opts = append(opts, relay.Queue(queue))
	if key != "" {
		opts = append(opts, relay.OrderKey(key))
	}
	return enqueue(b, kind, orderedArgs{Key: key, N: n}, opts...)
}

// ---------------------------------------------------------------------------------------

// One queue-wide sequence (jobs without a key in an ordered queue) run by three clients
// with eight workers each: every job starts exactly once, in enqueue order, and no two
// ever run at once. Half the jobs wait before any client starts, so the start-up claims
// of the three clients compete for them; the other half arrive while the sequence runs.
func TestOrderedQueueWideSequenceAcrossThreeClients(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[orderedArgs]("post")
	const queue, n = "ledger", 30
	b := setup(t)
	b.setQueue(queue, relay.QueueSettings{Ordered: true})

	specs := make([]relay.JobSpec, n/2)
	for i := range specs {
		specs[i] = kind.Job(orderedArgs{N: i})
	}
	ids := b.enqueueMany(specs, relay.Queue(queue))

	rec := newRecorder()
	clients := make([]*relay.Client, 3)
	for i := range clients {
		pool := b.Pool
		if i > 0 {
			pool = b.NewPool(t) // each client on connections of its own, like separate processes
		}
		c := b.client(relay.Config{Queues: queues(8, queue)})
		handle(t, c, kind, rec.handler(i, func(ctx context.Context, job *relay.Job[orderedArgs]) error {
			// Not synchronisation: it only widens the window in which an overlapping start
			// would show up in the recorder.
			time.Sleep(2 * time.Millisecond)
			return nil
		}))
		b.startOn(c, pool)
		clients[i] = c
	}
	for i := n / 2; i < n; i++ {
		ids = append(ids, enqueueOrdered(b, kind, queue, "", i))
	}
	for range n {
		recv(t, rec.started, "every job of the sequence to start")
	}
	b.waitState("succeeded", ids...)
	for _, c := range clients {
		b.stop(c) // every handler has returned: the recorder is final
	}

	if got, want := rec.startsOf(""), firstAttempts("", 0, n-1); !slices.Equal(got, want) {
		t.Errorf("jobs started in the order\n%v\nwant enqueue order\n%v", got, want)
	}
	if got := rec.maxRunningAll(); got != 1 {
		t.Errorf("up to %d jobs of the ordered queue ran at once; want 1", got)
	}
	perClient := map[int]int{}
	for _, s := range rec.all() {
		perClient[s.Client]++
	}
	t.Logf("jobs run per client: %v", perClient)
	if len(perClient) < 2 {
		t.Errorf("only client(s) %v ran jobs; the sequence should have passed between clients", perClient)
	}
	for i, id := range ids {
		r := b.record(id)
		if r.OrderKey == nil || *r.OrderKey != "" {
			t.Errorf("job %d (number %d) has order key %s; want the queue-wide sequence \"\"", id, i, keyString(r.OrderKey))
		}
	}
}

// OrderKey per customer: within each key the jobs start in enqueue order, one at a time,
// while different keys run side by side. The first jobs of alice and bob each wait until
// the other has started: if keys were serialised, neither could, and the test fails
// after the barrier's timeout. Jobs without a key form a sequence of their own.
func TestOrderedKeysKeepOrderWithinAndRunConcurrentlyAcross(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[orderedArgs]("bill")
	const queue, perKey = "by-customer", 6
	b := setup(t)
	b.setQueue(queue, relay.QueueSettings{Ordered: true})

	keys := []string{"alice", "bob", "carol", ""}
	started := map[string]*gate{"alice": b.gate(), "bob": b.gate()}
	partner := map[string]string{"alice": "bob", "bob": "alice"}
	rec := newRecorder()
	body := func(ctx context.Context, job *relay.Job[orderedArgs]) error {
		if other, ok := partner[job.Args.Key]; ok && job.Args.N == 0 {
			started[job.Args.Key].open()
			if !started[other].openedWithin(10 * time.Second) {
				t.Errorf("the first job of key %q waited 10s for the first job of key %q to start: different keys do not run concurrently",
					job.Args.Key, other)
			}
		}
		time.Sleep(time.Millisecond) // not synchronisation: widens the window of an overlap
		return nil
	}
	for i := range 2 {
		pool := b.Pool
		if i > 0 {
			pool = b.NewPool(t)
		}
		c := b.client(relay.Config{Queues: queues(4, queue)})
		handle(t, c, kind, rec.handler(i, body))
		b.startOn(c, pool)
	}

	// Interleaved, in one batch: each key's jobs are far apart in id order.
	var specs []relay.JobSpec
	var specKeys []string
	for n := range perKey {
		for _, k := range keys {
			opts := []relay.EnqueueOption{}
			if k != "" {
				opts = append(opts, relay.OrderKey(k))
			}
			specs = append(specs, kind.Job(orderedArgs{Key: k, N: n}, opts...))
			specKeys = append(specKeys, k)
		}
	}
	ids := b.enqueueMany(specs, relay.Queue(queue))
	for range len(specs) {
		recv(t, rec.started, "every job to start")
	}
	b.waitState("succeeded", ids...)

	for _, k := range keys {
		if got, want := rec.startsOf(k), firstAttempts(k, 0, perKey-1); !slices.Equal(got, want) {
			t.Errorf("key %q started in the order %v; want %v", k, got, want)
		}
		if got := rec.maxRunning(k); got != 1 {
			t.Errorf("up to %d jobs of key %q ran at once; want 1", got, k)
		}
	}
	if got := rec.maxRunningAll(); got < 2 {
		t.Errorf("at most %d job of the queue ran at once; different keys should overlap", got)
	}
	for i, id := range ids {
		r := b.record(id)
		if want := specKeys[i]; r.OrderKey == nil || *r.OrderKey != want {
			t.Errorf("job %d has order key %s; want %q", id, keyString(r.OrderKey), want)
		}
	}
}

// The next job of a key is pushed by NOTIFY, across clients: one key alternates between a
// kind only the first client handles and a kind only the second does, so every job is
// claimed by the client that did not just finish one, which sat idle with a one-hour
// fallback poll. A chain that waited for a poll would stop at its second job.
func TestOrderedNextJobIsPushedByNotifyAcrossClients(t *testing.T) {
	t.Parallel()
	const queue, key, n = "handoff", "order-7", 24
	b := setup(t)
	b.setQueue(queue, relay.QueueSettings{Ordered: true})

	rec := newRecorder()
	kinds := []relay.Kind[orderedArgs]{relay.NewKind[orderedArgs]("ping"), relay.NewKind[orderedArgs]("pong")}
	clients := make([]*relay.Client, 2)
	for i, kind := range kinds {
		pool := b.Pool
		if i > 0 {
			pool = b.NewPool(t)
		}
		c := b.client(relay.Config{Queues: queues(4, queue)}) // one-hour poll
		handle(t, c, kind, rec.handler(i, nil))
		b.startOn(c, pool)
		clients[i] = c
	}

	specs := make([]relay.JobSpec, n)
	for i := range specs {
		specs[i] = kinds[i%2].Job(orderedArgs{Key: key, N: i})
	}
	ids := b.enqueueMany(specs, relay.Queue(queue), relay.OrderKey(key))
	for range n {
		recv(t, rec.started, "the next job of the chain to be pushed to its client")
	}
	b.waitState("succeeded", ids...)

	if got, want := rec.startsOf(key), firstAttempts(key, 0, n-1); !slices.Equal(got, want) {
		t.Errorf("the chain ran in the order %v; want %v", got, want)
	}
	if got := rec.maxRunning(key); got != 1 {
		t.Errorf("up to %d jobs of the key ran at once; want 1", got)
	}
	for i, id := range ids {
		if by, want := b.record(id).AttemptedBy, clients[i%2].ID(); by != want {
			t.Errorf("job %d (%s) was run by %q; want %q, the only client handling its kind", id, kinds[i%2], by, want)
		}
	}
}

// While the head of a key waits for its retry, the job behind it does not start: not
// while the head is scheduled (a claim of another key's job happens meanwhile and must
// leave it), not while the head's second attempt runs, only once that attempt succeeded.
func TestOrderedHeadWaitingForRetryHoldsItsKey(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[orderedArgs]("sync")
	const queue = "retrying"
	b := setup(t)
	b.setQueue(queue, relay.QueueSettings{Ordered: true})

	rec := newRecorder()
	secondStarted, release := b.gate(), b.gate()
	c := b.client(relay.Config{Queues: queues(4, queue)})
	handle(t, c, kind, rec.handler(0, func(ctx context.Context, job *relay.Job[orderedArgs]) error {
		if job.Args.Key != "k" || job.Args.N != 0 {
			return nil
		}
		if job.Attempt == 1 {
			return errors.New("upstream unavailable")
		}
		secondStarted.open()
		<-release.ch
		return nil
	}), relay.MaxAttempts(5), relay.Backoff(backoff.Policy{Initial: 400 * time.Millisecond, Multiplier: 1, Max: 400 * time.Millisecond}))
	b.start(c)

	head := enqueueOrdered(b, kind, queue, "k", 0)
	behind := enqueueOrdered(b, kind, queue, "k", 1)

	// The head's first attempt has failed and it waits for its retry.
	if r := b.waitAttempts(head, 1); r.Blocking {
		t.Errorf("a head waiting for a retry is marked blocking")
	}
	// Another key's job runs in the meantime: its claim saw the waiting job and left it.
	other := enqueueOrdered(b, kind, queue, "other", 0)
	b.waitState("succeeded", other)
	b.expectPending("while the head waits for its retry", behind)

	if !secondStarted.openedWithin(waitTimeout) {
		t.Fatal("the head's second attempt never started")
	}
	b.expectPending("while the head's second attempt runs", behind)
	release.open()
	b.waitState("succeeded", head, behind)

	if got, want := rec.startsOf("k"), []string{"k/0#1", "k/0#2", "k/1#1"}; !slices.Equal(got, want) {
		t.Errorf("key k started %v; want %v: the job behind only after the head's retry succeeded", got, want)
	}
	if got := rec.maxRunning("k"); got != 1 {
		t.Errorf("up to %d jobs of key k ran at once; want 1", got)
	}
}

// BlockOnFailure: a head that fails for good (attempts used up, or discarded) keeps its
// key: the jobs behind it stay pending and never start, even after another key of the
// queue has run since, the head reads as blocking and the queue counts one blocked key.
// Retrying the head (which then succeeds) or cancelling it lets the rest run, in order.
func TestOrderedBlockOnFailureHoldsKeyUntilRetryOrCancel(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[orderedArgs]("charge")
	for _, tc := range []struct {
		name    string
		discard bool // the head discards itself instead of using up its attempts
		cancel  bool // the operator cancels the head instead of retrying it
	}{
		{name: "attempts used up, then retried"},
		{name: "attempts used up, then cancelled", cancel: true},
		{name: "discarded, then retried", discard: true},
		{name: "discarded, then cancelled", discard: true, cancel: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const queue = "blocking"
			b := setup(t)
			ctx := context.Background()
			b.setQueue(queue, relay.QueueSettings{Ordered: true, OnFailure: relay.BlockOnFailure})

			rec := newRecorder()
			var fixed atomic.Bool
			c := b.client(relay.Config{Queues: queues(4, queue)})
			handle(t, c, kind, rec.handler(0, func(ctx context.Context, job *relay.Job[orderedArgs]) error {
				if job.Args.Key != "k" || job.Args.N != 0 || fixed.Load() {
					return nil
				}
				if tc.discard {
					return relay.Discard(errors.New("card declined"))
				}
				return errors.New("gateway timeout")
			}), relay.MaxAttempts(2), relay.Backoff(fastBackoff))
			b.start(c)

			head := enqueueOrdered(b, kind, queue, "k", 0)
			behind := []int64{enqueueOrdered(b, kind, queue, "k", 1), enqueueOrdered(b, kind, queue, "k", 2)}
			failed := b.waitRecord(head, relay.StateFailed)
			headStarts := []string{"k/0#1", "k/0#2"}
			if tc.discard {
				headStarts = headStarts[:1]
			}
			if len(failed.Attempts) != len(headStarts) {
				t.Errorf("the head failed after %d attempts %s; want %d", len(failed.Attempts), historyString(failed.Attempts), len(headStarts))
			}
			if !failed.Blocking {
				t.Errorf("the failed head of a BlockOnFailure queue is not blocking")
			}

			// Another key runs after the head failed; by the time it has succeeded, a claim
			// that could have taken the older jobs behind the head has come and gone.
			other := enqueueOrdered(b, kind, queue, "other", 0)
			b.waitState("succeeded", other)
			b.expectPending("behind a blocking head", behind...)
			if got := rec.startsOf("k"); !slices.Equal(got, headStarts) {
				t.Errorf("key k started %v while blocked; want only the head's attempts %v", got, headStarts)
			}
			info := b.queue(queue)
			if !info.Ordered || info.OnFailure != relay.BlockOnFailure || info.Blocked != 1 || info.Running != 0 {
				t.Errorf("GetQueue = %+v; want ordered, BlockOnFailure, 1 blocked, 0 running", info)
			}

			if tc.cancel {
				if err := relay.Cancel(ctx, b, head, relay.Schema(b.Schema)); err != nil {
					t.Fatalf("Cancel of the blocking head: %v", err)
				}
			} else {
				fixed.Store(true)
				if err := relay.Retry(ctx, b, head, relay.Schema(b.Schema)); err != nil {
					t.Fatalf("Retry of the blocking head: %v", err)
				}
			}
			b.waitState("succeeded", behind...)

			want := slices.Clone(headStarts)
			if !tc.cancel {
				want = append(want, fmt.Sprintf("k/0#%d", len(headStarts)+1))
			}
			want = append(want, firstAttempts("k", 1, 2)...)
			if got := rec.startsOf("k"); !slices.Equal(got, want) {
				t.Errorf("key k started %v; want %v", got, want)
			}
			if got := rec.maxRunning("k"); got != 1 {
				t.Errorf("up to %d jobs of key k ran at once; want 1", got)
			}
			r := b.record(head)
			wantState := relay.StateSucceeded
			if tc.cancel {
				wantState = relay.StateCancelled
			}
			if r.State != wantState || r.Blocking {
				t.Errorf("the head ended %s, blocking %v; want %s and not blocking", r.State, r.Blocking, wantState)
			}
			if info := b.queue(queue); info.Blocked != 0 {
				t.Errorf("GetQueue counts %d blocked keys after the head was resolved; want 0", info.Blocked)
			}
			if tc.cancel {
				if err := relay.Cancel(ctx, b, head, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrJobFinished) {
					t.Errorf("a second Cancel of the head: %v; want ErrJobFinished", err)
				}
			}
		})
	}
}

// MoveOnAfterFailure: once the head has failed for good, the next job of its key runs,
// and the rest follow in order. While the head still waits for a retry, they wait too.
// The failed head does not block, so it cannot be cancelled any more.
func TestOrderedMoveOnAfterFailureRunsTheNextJob(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[orderedArgs]("notify")
	for _, tc := range []struct {
		name    string
		discard bool
	}{
		{name: "attempts used up"},
		{name: "discarded", discard: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const queue = "best-effort"
			b := setup(t)
			ctx := context.Background()
			b.setQueue(queue, relay.QueueSettings{Ordered: true, OnFailure: relay.MoveOnAfterFailure})
			if info := b.queue(queue); !info.Ordered || info.OnFailure != relay.MoveOnAfterFailure {
				t.Fatalf("GetQueue = %+v; want ordered with MoveOnAfterFailure", info)
			}

			rec := newRecorder()
			c := b.client(relay.Config{Queues: queues(4, queue)})
			handle(t, c, kind, rec.handler(0, func(ctx context.Context, job *relay.Job[orderedArgs]) error {
				if job.Args.N != 0 {
					return nil
				}
				if tc.discard {
					return relay.Discard(errors.New("recipient gone"))
				}
				return errors.New("smtp 451")
			}), relay.MaxAttempts(3), relay.Backoff(backoff.Policy{Initial: 50 * time.Millisecond, Multiplier: 1, Max: 50 * time.Millisecond}))
			b.start(c)

			head := enqueueOrdered(b, kind, queue, "k", 0)
			behind := []int64{enqueueOrdered(b, kind, queue, "k", 1), enqueueOrdered(b, kind, queue, "k", 2)}
			b.waitState("succeeded", behind...)

			want := []string{"k/0#1", "k/0#2", "k/0#3"}
			if tc.discard {
				want = want[:1]
			}
			want = append(want, firstAttempts("k", 1, 2)...)
			if got := rec.startsOf("k"); !slices.Equal(got, want) {
				t.Errorf("key k started %v; want %v: the head's attempts, then the rest in order", got, want)
			}
			if got := rec.maxRunning("k"); got != 1 {
				t.Errorf("up to %d jobs of key k ran at once; want 1", got)
			}
			r := b.record(head)
			if r.State != relay.StateFailed || r.Blocking {
				t.Errorf("the head is %s, blocking %v; want failed and not blocking", r.State, r.Blocking)
			}
			if info := b.queue(queue); info.Blocked != 0 {
				t.Errorf("GetQueue counts %d blocked keys in a MoveOnAfterFailure queue; want 0", info.Blocked)
			}
			if err := relay.Cancel(ctx, b, head, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrJobFinished) {
				t.Errorf("Cancel of a failed head that does not block: %v; want ErrJobFinished", err)
			}
		})
	}
}

// A blocked key holds up nothing else: after it blocked, another key of the same queue,
// the queue's keyless sequence, and a plain queue all run to the end on the same client,
// while the job behind the blocked head never starts.
func TestOrderedBlockedKeyDoesNotHoldUpOtherKeysOrQueues(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[orderedArgs]("post")
	const queue, plain, n = "accounts", "plain", 5
	b := setup(t)
	b.setQueue(queue, relay.QueueSettings{Ordered: true})

	rec := newRecorder()
	c := b.client(relay.Config{Queues: queues(2, queue, plain)})
	handle(t, c, kind, rec.handler(0, func(ctx context.Context, job *relay.Job[orderedArgs]) error {
		if job.Args.Key == "stuck" && job.Args.N == 0 {
			return relay.Discard(errors.New("ledger mismatch"))
		}
		return nil
	}))
	b.start(c)

	head := enqueueOrdered(b, kind, queue, "stuck", 0)
	behind := enqueueOrdered(b, kind, queue, "stuck", 1)
	if r := b.waitRecord(head, relay.StateFailed); !r.Blocking {
		t.Fatalf("the discarded head does not block its key")
	}

	var others []int64
	for i := range n {
		others = append(others,
			enqueueOrdered(b, kind, queue, "free", i),
			enqueueOrdered(b, kind, queue, "", i),
			enqueue(b, kind, orderedArgs{Key: "plain", N: i}, relay.Queue(plain)))
	}
	b.waitState("succeeded", others...)

	b.expectPending("behind the blocked key, after every other key and queue ran", behind)
	if got, want := rec.startsOf("stuck"), []string{"stuck/0#1"}; !slices.Equal(got, want) {
		t.Errorf("the blocked key started %v; want only its head %v", got, want)
	}
	for _, k := range []string{"free", ""} {
		if got, want := rec.startsOf(k), firstAttempts(k, 0, n-1); !slices.Equal(got, want) {
			t.Errorf("key %q started %v; want %v", k, got, want)
		}
	}
	if got := len(rec.startsOf("plain")); got != n {
		t.Errorf("%d jobs of the plain queue started; want %d", got, n)
	}
	if info := b.queue(queue); info.Blocked != 1 {
		t.Errorf("GetQueue(%q).Blocked = %d; want 1", queue, info.Blocked)
	}
	if info := b.queue(plain); info.Ordered || info.Blocked != 0 {
		t.Errorf("GetQueue(%q) = %+v; want a plain queue with nothing blocked", plain, info)
	}
}

// A head that fails for good because its client lost its lease (rescued with no attempts
// left) ends its key's turn like any other failure: with BlockOnFailure it blocks the key
// until cancelled; with MoveOnAfterFailure the rescue itself pushes the next job, by
// NOTIFY (the clients poll once an hour).
func TestOrderedLostLeaseFailureBlocksOrMovesOn(t *testing.T) {
	t.Parallel()
	exportKind := relay.NewKind[orderedArgs]("export")
	importKind := relay.NewKind[orderedArgs]("import")
	for _, policy := range []relay.FailurePolicy{relay.BlockOnFailure, relay.MoveOnAfterFailure} {
		t.Run(string(policy), func(t *testing.T) {
			t.Parallel()
			const queue = "leased"
			b := setup(t)
			ctx := context.Background()
			b.setQueue(queue, relay.QueueSettings{Ordered: true, OnFailure: policy})

			// The head's kind runs only on c1, which is cut off while running it; the rest
			// run on c2.
			rec := newRecorder()
			c1 := b.client(withShortLeases(relay.Config{Queues: queues(2, queue)}))
			headStarted := b.gate()
			handle(t, c1, exportKind, rec.handler(1, func(ctx context.Context, job *relay.Job[orderedArgs]) error {
				headStarted.open()
				<-ctx.Done()
				return context.Cause(ctx)
			}))
			b.start(c1)
			c2 := b.client(withShortLeases(relay.Config{Queues: queues(2, queue)}))
			handle(t, c2, importKind, rec.handler(2, nil))
			b.startOn(c2, b.NewPool(t))

			head := enqueueOrdered(b, exportKind, queue, "k", 0, relay.MaxAttempts(1))
			behind := enqueueOrdered(b, importKind, queue, "k", 1)
			if !headStarted.openedWithin(waitTimeout) {
				t.Fatal("the head never started")
			}
			relay.PauseLeaseRenewal(c1, true)
			t.Cleanup(func() { relay.PauseLeaseRenewal(c1, false) })

			failed := b.waitRecord(head, relay.StateFailed)
			if len(failed.Attempts) != 1 || failed.Attempts[0].Reason != relay.ReasonLostLease {
				t.Errorf("the head failed with history %s; want one attempt lost with its lease", historyString(failed.Attempts))
			}
			if policy == relay.MoveOnAfterFailure {
				if failed.Blocking {
					t.Errorf("the rescued head of a MoveOnAfterFailure queue is blocking")
				}
				b.waitState("succeeded", behind)
				return
			}

			if !failed.Blocking {
				t.Errorf("the rescued head of a BlockOnFailure queue is not blocking")
			}
			other := enqueueOrdered(b, importKind, queue, "other", 0)
			b.waitState("succeeded", other)
			b.expectPending("behind a head failed by a lost lease", behind)
			if got := rec.startsOf("k"); !slices.Equal(got, []string{"k/0#1"}) {
				t.Errorf("key k started %v while blocked; want only the head", got)
			}
			if info := b.queue(queue); info.Blocked != 1 {
				t.Errorf("GetQueue.Blocked = %d; want 1", info.Blocked)
			}
			if err := relay.Cancel(ctx, b, head, relay.Schema(b.Schema)); err != nil {
				t.Fatalf("Cancel of the blocking head: %v", err)
			}
			b.waitState("succeeded", behind)
		})
	}
}

// An OrderKey for a queue that is not ordered (no settings, or settings without Ordered)
// is refused with ErrQueueNotOrdered and nothing is inserted, alone or in a batch. Once the
// queue is ordered the same job is accepted and keeps its key; a keyless job of an ordered
// queue is in the sequence "", and a job of a plain queue has no key.
func TestOrderedKeyOnQueueThatIsNotOrderedIsRefused(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[orderedArgs]("k")
	b := setup(t)
	ctx := context.Background()
	b.setQueue("limited", relay.QueueSettings{GlobalLimit: 3})
	opts := func(queue string) []relay.EnqueueOption {
		return []relay.EnqueueOption{relay.Queue(queue), relay.OrderKey("cust-1"), relay.Schema(b.Schema)}
	}

	// The error names what was enqueued: the kind of one job, the number of many.
	for _, queue := range []string{"never-set", "limited"} {
		if _, err := relay.Enqueue(ctx, b, kind, orderedArgs{}, opts(queue)...); !errors.Is(err, relay.ErrQueueNotOrdered) ||
			!strings.HasPrefix(err.Error(), `relay: enqueue "k": `) {
			t.Errorf("Enqueue with an OrderKey on queue %q: %v; want ErrQueueNotOrdered, naming the kind", queue, err)
		}
	}
	specs := []relay.JobSpec{
		kind.Job(orderedArgs{N: 1}),
		kind.Job(orderedArgs{N: 2}, relay.Queue("never-set"), relay.OrderKey("cust-1")),
	}
	if _, err := relay.EnqueueMany(ctx, b, specs, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrQueueNotOrdered) ||
		!strings.HasPrefix(err.Error(), "relay: enqueue 2 jobs: ") {
		t.Errorf("EnqueueMany with one OrderKey on a plain queue: %v; want ErrQueueNotOrdered, naming the number of jobs", err)
	}
	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relay.Enqueue(ctx, tx, kind, orderedArgs{}, opts("never-set")...); !errors.Is(err, relay.ErrQueueNotOrdered) {
		t.Errorf("Enqueue in a transaction with an OrderKey on a plain queue: %v; want ErrQueueNotOrdered", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// A unique job's insert goes in a batch between two statements that set how it is
	// planned, in the caller's transaction: the database's refusal comes through all the same.
	tx, err = b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relay.Enqueue(ctx, tx, kind, orderedArgs{}, append(opts("never-set"), relay.Unique("u-1"))...); !errors.Is(err, relay.ErrQueueNotOrdered) {
		t.Errorf("a unique Enqueue in a transaction with an OrderKey on a plain queue: %v; want ErrQueueNotOrdered", err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if got := b.count(""); got != 0 {
		t.Fatalf("%d jobs were inserted by refused enqueues; want none", got)
	}

	b.setQueue("never-set", relay.QueueSettings{Ordered: true})
	keyed, err := relay.Enqueue(ctx, b, kind, orderedArgs{}, opts("never-set")...)
	if err != nil {
		t.Fatalf("Enqueue with an OrderKey once the queue is ordered: %v", err)
	}
	keyless := enqueueOrdered(b, kind, "never-set", "", 0)
	plain := enqueueOrdered(b, kind, "limited", "", 0)
	for id, want := range map[int64]*string{keyed: new("cust-1"), keyless: new(""), plain: nil} {
		got := b.record(id).OrderKey
		if (got == nil) != (want == nil) || (got != nil && *got != *want) {
			t.Errorf("job %d has order key %s; want %s", id, keyString(got), keyString(want))
		}
	}

	if err := relay.SetQueue(ctx, b, "q", relay.QueueSettings{Ordered: true, OnFailure: "retry forever"}, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrInvalidConfig) {
		t.Errorf("SetQueue with an unknown OnFailure: %v; want ErrInvalidConfig", err)
	}
	b.setQueue("defaults", relay.QueueSettings{Ordered: true})
	if info := b.queue("defaults"); info.OnFailure != relay.BlockOnFailure {
		t.Errorf("an ordered queue set without OnFailure has %q; want the default BlockOnFailure", info.OnFailure)
	}
}

func keyString(k *string) string {
	if k == nil {
		return "nil"
	}
	return fmt.Sprintf("%q", *k)
}

// SetQueue making a plain queue with pending jobs ordered puts them in the queue-wide
// sequence in id order: they then start one at a time, in that order, on two clients with
// several workers each. Both when the jobs waited for clients to start, and when a running
// client had them held back by a pause (its dispatcher switches from plain to ordered
// claims on its own).
func TestOrderedSetQueueOrdersPendingJobsOfAPlainQueue(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[orderedArgs]("import")
	for _, paused := range []bool{false, true} {
		name := "before clients start"
		if paused {
			name = "paused with clients running"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const queue, n = "imports", 12
			b := setup(t)
			rec := newRecorder()
			clients := make([]*relay.Client, 2)
			for i := range clients {
				clients[i] = b.client(relay.Config{Queues: queues(4, queue)})
				handle(t, clients[i], kind, rec.handler(i, func(ctx context.Context, job *relay.Job[orderedArgs]) error {
					time.Sleep(time.Millisecond) // not synchronisation: widens the window of an overlap
					return nil
				}))
			}
			startAll := func() {
				b.start(clients[0])
				b.startOn(clients[1], b.NewPool(t))
			}
			if paused {
				b.pauseQueue(queue)
				startAll()
			}

			var ids []int64
			for i := range n {
				ids = append(ids, enqueueOrdered(b, kind, queue, "", i))
			}
			for _, id := range ids {
				if k := b.record(id).OrderKey; k != nil {
					t.Fatalf("job %d of a plain queue has order key %q", id, *k)
				}
			}
			b.setQueue(queue, relay.QueueSettings{Ordered: true})
			for _, id := range ids {
				if k := b.record(id).OrderKey; k == nil || *k != "" {
					t.Errorf("after SetQueue, pending job %d has order key %s; want the queue-wide sequence \"\"", id, keyString(k))
				}
			}
			if paused {
				b.resumeQueue(queue)
			} else {
				startAll()
			}
			for range n {
				recv(t, rec.started, "every job to start")
			}
			b.waitState("succeeded", ids...)

			if got, want := rec.startsOf(""), firstAttempts("", 0, n-1); !slices.Equal(got, want) {
				t.Errorf("jobs started in the order %v; want id order %v", got, want)
			}
			if got := rec.maxRunningAll(); got != 1 {
				t.Errorf("up to %d jobs ran at once; want 1", got)
			}
		})
	}
}

// SetQueue on an ordered queue with a blocked key: switching it to MoveOnAfterFailure, or
// making it plain, releases the key, and the job behind the failed head runs.
func TestOrderedSetQueueReleasesBlockedKey(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[orderedArgs]("step")
	for _, tc := range []struct {
		name string
		to   relay.QueueSettings
	}{
		{"to MoveOnAfterFailure", relay.QueueSettings{Ordered: true, OnFailure: relay.MoveOnAfterFailure}},
		{"to plain", relay.QueueSettings{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			const queue = "switch"
			b := setup(t)
			b.setQueue(queue, relay.QueueSettings{Ordered: true})

			rec := newRecorder()
			c := b.client(relay.Config{Queues: queues(2, queue)})
			handle(t, c, kind, rec.handler(0, func(ctx context.Context, job *relay.Job[orderedArgs]) error {
				if job.Args.Key == "k" && job.Args.N == 0 {
					return relay.Discard(errors.New("bad input"))
				}
				return nil
			}))
			b.start(c)

			head := enqueueOrdered(b, kind, queue, "k", 0)
			behind := enqueueOrdered(b, kind, queue, "k", 1)
			if r := b.waitRecord(head, relay.StateFailed); !r.Blocking {
				t.Fatal("the discarded head does not block its key")
			}
			other := enqueueOrdered(b, kind, queue, "other", 0)
			b.waitState("succeeded", other)
			b.expectPending("before SetQueue", behind)

			b.setQueue(queue, tc.to)
			b.waitState("succeeded", behind)
			if r := b.record(head); r.State != relay.StateFailed || r.Blocking {
				t.Errorf("after SetQueue the head is %s, blocking %v; want failed, not blocking", r.State, r.Blocking)
			}
			if info := b.queue(queue); info.Blocked != 0 || info.Ordered != tc.to.Ordered {
				t.Errorf("GetQueue = %+v; want ordered %v and nothing blocked", info, tc.to.Ordered)
			}
			if got, want := rec.startsOf("k"), []string{"k/0#1", "k/1#1"}; !slices.Equal(got, want) {
				t.Errorf("key k started %v; want %v", got, want)
			}
		})
	}
}

// The order of a key is the order of enqueueing, whatever the jobs' priorities or
// schedules: a later job of higher priority does not overtake an earlier one, and a job
// due now waits behind an earlier one scheduled for later. Priority only decides which
// key's head starts first.
func TestOrderedKeyOrderIgnoresPriorityAndSchedule(t *testing.T) {
	t.Parallel()
	rankKind := relay.NewKind[orderedArgs]("rank")
	remindKind := relay.NewKind[orderedArgs]("remind")

	t.Run("priority", func(t *testing.T) {
		t.Parallel()
		const queue = "prioritised"
		b := setup(t)
		b.setQueue(queue, relay.QueueSettings{Ordered: true})
		// All waiting before the client starts, so its first claim chooses among them.
		var ids []int64
		for n, p := range []int{-5, 0, 5, 100} {
			ids = append(ids, enqueueOrdered(b, rankKind, queue, "k", n, relay.Priority(p)))
		}
		urgent := enqueueOrdered(b, rankKind, queue, "urgent", 0, relay.Priority(10))

		rec := newRecorder()
		c := b.client(relay.Config{Queues: queues(1, queue)}) // one worker: one start at a time
		handle(t, c, rankKind, rec.handler(0, nil))
		b.start(c)
		b.waitState("succeeded", append(ids, urgent)...)

		var got []string
		for _, s := range rec.all() {
			got = append(got, s.String())
		}
		if want := append([]string{"urgent/0#1"}, firstAttempts("k", 0, 3)...); !slices.Equal(got, want) {
			t.Errorf("jobs started in the order %v; want %v: the more urgent key's head first, then k in enqueue order whatever its priorities", got, want)
		}
	})

	t.Run("schedule", func(t *testing.T) {
		t.Parallel()
		const queue = "scheduled"
		b := setup(t)
		b.setQueue(queue, relay.QueueSettings{Ordered: true})
		rec := newRecorder()
		c := b.client(relay.Config{Queues: queues(4, queue)})
		handle(t, c, remindKind, rec.handler(0, nil))
		b.start(c)

		later := enqueueOrdered(b, remindKind, queue, "k", 0, relay.RunIn(time.Second))
		now := enqueueOrdered(b, remindKind, queue, "k", 1)
		other := enqueueOrdered(b, remindKind, queue, "other", 0)
		b.waitState("succeeded", other)
		// The job behind is read first: if the scheduled job has still not started when
		// read after it, the one behind cannot have started before. (On a very slow
		// machine the second may have passed already; the order of starts below decides.)
		behind := b.record(now)
		if r := b.record(later); r.Attempt == 0 {
			if r.State != relay.StateScheduled {
				t.Errorf("the job scheduled for later reads as %s; want scheduled", r.State)
			}
			if behind.State != relay.StatePending || behind.Attempt != 0 {
				t.Errorf("the job due now behind a job scheduled for later is %s at attempt %d; want pending, never attempted",
					behind.State, behind.Attempt)
			}
		} else {
			t.Logf("the scheduled job started before the check; only the order of starts is checked")
		}
		b.waitState("succeeded", later, now)
		if got, want := rec.startsOf("k"), firstAttempts("k", 0, 1); !slices.Equal(got, want) {
			t.Errorf("key k started %v; want %v", got, want)
		}
	})
}
