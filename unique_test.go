package relay_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// Tests of unique jobs: relay.Unique, relay.EnqueueJob, relay.EnqueueJobs, and Retry of a
// job whose key another job holds.

// uniqueKind is the kind of most jobs of these tests.
var uniqueKind = relay.NewKind[numArgs]("uq")

// idsWithKey returns the ids of every row (whatever its state) with unique key key.
func idsWithKey(b *bundle, key string) []int64 {
	t := b.t
	t.Helper()
	rows, err := b.Query(context.Background(),
		`SELECT id FROM `+b.table("jobs")+` WHERE unique_key = $1 ORDER BY id`, key)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// argsN returns the N of job id's numArgs.
func argsN(b *bundle, id int64) int {
	t := b.t
	t.Helper()
	var n int
	if err := b.QueryRow(context.Background(),
		`SELECT (args->>'N')::int FROM `+b.table("jobs")+` WHERE id = $1`, id).Scan(&n); err != nil {
		t.Fatalf("args of job %d: %v", id, err)
	}
	return n
}

// ---------------------------------------------------------------------------------------

// 32 producers, each on its own connection, enqueue the same unique key at the same
// moment, in transactions, in autocommit, and through EnqueueJobs: exactly one job is
// inserted, every producer gets its id, and exactly one is told it inserted it. The
// producers that block on the unique index behind the winner's open transaction, and the
// statements whose snapshot predates the winner's commit, still find the winner.
func TestUniqueConcurrentEnqueuesInsertOneJob(t *testing.T) {
	t.Parallel()
	plainKind := relay.NewKind[numArgs]("uq-plain")
	const (
		producers = 32
		rounds    = 4
	)
	b := setup(t)
	url := b.URL
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	conns := make([]*pgx.Conn, producers)
	for i := range conns {
		conn, err := pgx.Connect(ctx, url)
		if err != nil {
			t.Fatalf("connect producer %d: %v", i, err)
		}
		t.Cleanup(func() { conn.Close(context.Background()) })
		conns[i] = conn
	}

	// How each producer enqueues: the modes cover the single and the batch statement, in
	// an explicit transaction and in autocommit.
	const (
		txJob     = iota // Begin, EnqueueJob, Commit
		autoJob          // EnqueueJob on the bare connection
		txJobs           // Begin, EnqueueJobs([unique]), Commit
		autoBatch        // EnqueueJobs([unique, plain]) on the bare connection
		modes
	)
	type result struct {
		e   relay.Enqueued
		err error
	}

	for round := range rounds {
		key := fmt.Sprintf("race-%d", round)
		unique := relay.Unique(key)
		results := make([]result, producers)
		var ready, done sync.WaitGroup
		gate := make(chan struct{})
		for i, conn := range conns {
			ready.Add(1)
			done.Add(1)
			go func() {
				defer done.Done()
				res := &results[i]
				args := numArgs{N: round*producers + i}
				mode := i % modes
				var tx pgx.Tx
				if mode == txJob || mode == txJobs {
					// The transaction is open before anyone enqueues: some block on the
					// winner's uncommitted row until it commits.
					if tx, res.err = conn.Begin(ctx); res.err != nil {
						ready.Done()
						return
					}
					defer tx.Rollback(context.Background())
				}
				ready.Done()
				<-gate
				switch mode {
				case txJob:
					res.e, res.err = relay.EnqueueJob(ctx, tx, uniqueKind, args, unique, relay.Schema(b.Schema))
				case autoJob:
					res.e, res.err = relay.EnqueueJob(ctx, conn, uniqueKind, args, unique, relay.Schema(b.Schema))
				case txJobs:
					var es []relay.Enqueued
					es, res.err = relay.EnqueueJobs(ctx, tx, []relay.JobSpec{uniqueKind.Job(args, unique)}, relay.Schema(b.Schema))
					if res.err == nil {
						if len(es) != 1 {
							res.err = fmt.Errorf("EnqueueJobs returned %d results for 1 job", len(es))
						} else {
							res.e = es[0]
						}
					}
				case autoBatch:
					var es []relay.Enqueued
					es, res.err = relay.EnqueueJobs(ctx, conn, []relay.JobSpec{
						uniqueKind.Job(args, unique),
						plainKind.Job(args),
					}, relay.Schema(b.Schema))
					if res.err == nil {
						switch {
						case len(es) != 2:
							res.err = fmt.Errorf("EnqueueJobs returned %d results for 2 jobs", len(es))
						case es[1].Duplicate || es[1].ID == 0 || es[1].ID == es[0].ID:
							res.err = fmt.Errorf("the plain job of a batch came back as %+v (the unique one: %+v)", es[1], es[0])
						default:
							res.e = es[0]
						}
					}
				}
				if res.err == nil && tx != nil {
					res.err = tx.Commit(ctx)
				}
			}()
		}
		ready.Wait()
		close(gate)
		done.Wait()

		ids := idsWithKey(b, key)
		if len(ids) != 1 {
			t.Fatalf("round %d: %d rows hold key %q (%v), want exactly 1", round, len(ids), key, ids)
		}
		inserted := 0
		for i, r := range results {
			if r.err != nil {
				t.Errorf("round %d: producer %d (mode %d): %v", round, i, i%modes, r.err)
				continue
			}
			if r.e.ID != ids[0] {
				t.Errorf("round %d: producer %d (mode %d) got id %d, want the one job's id %d", round, i, i%modes, r.e.ID, ids[0])
			}
			if !r.e.Duplicate {
				inserted++
			}
		}
		if inserted != 1 {
			t.Errorf("round %d: %d producers were told they inserted the job (Duplicate false), want exactly 1", round, inserted)
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	// The plain jobs of the batches were all inserted, and nothing else was.
	plain := len(relaytest.Jobs(t, b.DB, "uq-plain"))
	if want := rounds * ((producers + modes - 1 - autoBatch) / modes); plain != want {
		t.Errorf("%d plain jobs in the table, want %d (one per autoBatch producer per round)", plain, want)
	}
	if got := b.count(""); got != rounds+plain {
		t.Errorf("table holds %d jobs, want %d unique + %d plain", got, rounds, plain)
	}
}

// With the default states a unique key is held while its job is pending, scheduled or
// running, whatever the kind or queue of the repeat; once the job has ended (succeeded or
// cancelled) the same key enqueues a new job.
func TestUniqueDefaultStatesHoldTheKeyUntilTheJobEnds(t *testing.T) {
	t.Parallel()
	otherKind := relay.NewKind[numArgs]("uq-other")
	b := setup(t)
	const key = "report:1"

	first := enqueueJob(b, uniqueKind, numArgs{N: 1}, relay.Unique(key))
	if first.Duplicate || first.ID == 0 {
		t.Fatalf("first enqueue: %+v, want a new job", first)
	}
	if rec := b.record(first.ID); rec.UniqueKey != key {
		t.Errorf("GetJob: UniqueKey %q, want %q", rec.UniqueKey, key)
	}

	// Pending: a repeat, even of another kind on another queue, gets the job back.
	if e := enqueueJob(b, uniqueKind, numArgs{N: 2}, relay.Unique(key)); e != (relay.Enqueued{ID: first.ID, Duplicate: true}) {
		t.Errorf("repeat while pending: %+v, want duplicate of %d", e, first.ID)
	}
	if e := enqueueJob(b, otherKind, numArgs{N: 3}, relay.Unique(key), relay.Queue("elsewhere")); e != (relay.Enqueued{ID: first.ID, Duplicate: true}) {
		t.Errorf("repeat of another kind and queue while pending: %+v, want duplicate of %d (keys are global)", e, first.ID)
	}
	// Enqueue (the plain form) returns the holder's id too.
	if id := enqueue(b, uniqueKind, numArgs{N: 4}, relay.Unique(key)); id != first.ID {
		t.Errorf("Enqueue of a repeat returned %d, want the holder %d", id, first.ID)
	}

	// Scheduled: held as well; cancelled: no longer.
	const later = "report:later"
	sched := enqueueJob(b, uniqueKind, numArgs{N: 5}, relay.Unique(later), relay.RunIn(time.Hour))
	if rec := b.record(sched.ID); rec.State != relay.StateScheduled {
		t.Fatalf("job enqueued with RunIn(1h) is %s, want scheduled", rec.State)
	}
	if e := enqueueJob(b, uniqueKind, numArgs{N: 6}, relay.Unique(later)); e != (relay.Enqueued{ID: sched.ID, Duplicate: true}) {
		t.Errorf("repeat while scheduled: %+v, want duplicate of %d", e, sched.ID)
	}
	if err := relay.Cancel(context.Background(), b, sched.ID, relay.Schema(b.Schema)); err != nil {
		t.Fatal(err)
	}
	afterCancel := enqueueJob(b, uniqueKind, numArgs{N: 7}, relay.Unique(later), relay.RunIn(time.Hour))
	if afterCancel.Duplicate || afterCancel.ID == sched.ID {
		t.Errorf("repeat after the holder was cancelled: %+v, want a new job", afterCancel)
	}

	// Running: held.
	c := b.client(relay.Config{})
	started, release := make(chan int64, 16), b.gate()
	handle(t, c, uniqueKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started <- job.ID
		release.wait()
		return nil
	})
	b.start(c)
	if got := recv(t, started, "the unique job to start"); got != first.ID {
		t.Fatalf("started job %d, want %d", got, first.ID)
	}
	if e := enqueueJob(b, uniqueKind, numArgs{N: 8}, relay.Unique(key)); e != (relay.Enqueued{ID: first.ID, Duplicate: true}) {
		t.Errorf("repeat while running: %+v, want duplicate of %d", e, first.ID)
	}

	// Succeeded: the key is free again.
	release.one(t)
	b.waitState("succeeded", first.ID)
	second := enqueueJob(b, uniqueKind, numArgs{N: 9}, relay.Unique(key))
	if second.Duplicate || second.ID == first.ID {
		t.Fatalf("repeat after the holder succeeded: %+v, want a new job", second)
	}
	if got := recv(t, started, "the second unique job to start"); got != second.ID {
		t.Fatalf("started job %d, want %d", got, second.ID)
	}
	release.one(t)
	b.waitState("succeeded", second.ID)
	if ids := idsWithKey(b, key); len(ids) != 2 || ids[0] != first.ID || ids[1] != second.ID {
		t.Errorf("rows with key %q: %v, want [%d %d]", key, ids, first.ID, second.ID)
	}
}

// A key enqueued with a finished state keeps being held once its job has ended in it:
// a repeat naming the same states gets the finished job back.
func TestUniqueFinishedStatesHoldTheKeyAfterTheJobEnds(t *testing.T) {
	t.Parallel()
	okKind := relay.NewKind[numArgs]("uq-ok")
	failKind := relay.NewKind[numArgs]("uq-fail")
	b := setup(t)
	ctx := context.Background()

	c := b.client(relay.Config{})
	ok := make(chan int64, 4)
	handle(t, c, okKind, reportIDs(ok))
	failed := make(chan int64, 4)
	handle(t, c, failKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		failed <- job.ID
		return relay.Discard(errors.New("no"))
	})
	b.start(c)

	succeededOnly := relay.Unique("done", relay.StateSucceeded)
	a := enqueueJob(b, okKind, numArgs{N: 1}, succeededOnly)
	recv(t, ok, "the job to run")
	b.waitRecord(a.ID, relay.StateSucceeded)
	if e := enqueueJob(b, okKind, numArgs{N: 2}, succeededOnly); e != (relay.Enqueued{ID: a.ID, Duplicate: true}) {
		t.Errorf("repeat of a succeeded job with Unique(key, StateSucceeded): %+v, want duplicate of %d", e, a.ID)
	}

	failedOnly := relay.Unique("broken", relay.StateFailed)
	f := enqueueJob(b, failKind, numArgs{N: 3}, failedOnly)
	recv(t, failed, "the failing job to run")
	b.waitRecord(f.ID, relay.StateFailed)
	if e := enqueueJob(b, failKind, numArgs{N: 4}, failedOnly); e != (relay.Enqueued{ID: f.ID, Duplicate: true}) {
		t.Errorf("repeat of a failed job with Unique(key, StateFailed): %+v, want duplicate of %d", e, f.ID)
	}

	cancelledOnly := relay.Unique("dropped", relay.StateCancelled, relay.StatePending)
	x := enqueueJob(b, okKind, numArgs{N: 5}, cancelledOnly, relay.RunIn(time.Hour))
	if err := relay.Cancel(ctx, b, x.ID, relay.Schema(b.Schema)); err != nil {
		t.Fatal(err)
	}
	if e := enqueueJob(b, okKind, numArgs{N: 6}, cancelledOnly); e != (relay.Enqueued{ID: x.ID, Duplicate: true}) {
		t.Errorf("repeat of a cancelled job with Unique(key, StateCancelled): %+v, want duplicate of %d", e, x.ID)
	}
	// Duplicates are never inserted: one row per key.
	for _, key := range []string{"done", "broken", "dropped"} {
		if ids := idsWithKey(b, key); len(ids) != 1 {
			t.Errorf("rows with key %q: %v, want exactly one", key, ids)
		}
	}
}

// The states that decide whether an enqueue is a duplicate are the ones the enqueue names
// ("if a job with that key already exists in a state the user names"), not the ones the
// existing job was enqueued with.
func TestUniqueStatesNamedByTheEnqueueDecide(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(relay.Config{})
	ran := make(chan int64, 4)
	handle(t, c, uniqueKind, reportIDs(ran))
	b.start(c)

	// Run one job with the given unique options to success.
	succeeded := func(b *bundle, opts ...relay.EnqueueOption) int64 {
		b.t.Helper()
		e := enqueueJob(b, uniqueKind, numArgs{}, opts...)
		if e.Duplicate {
			b.t.Fatalf("first enqueue: %+v, want a new job", e)
		}
		recv(b.t, ran, "the job to run")
		b.waitRecord(e.ID, relay.StateSucceeded)
		return e.ID
	}

	t.Run("repeat naming succeeded after a default job succeeded", func(t *testing.T) {
		b := b.in(t)
		done := succeeded(b, relay.Unique("k1"))
		e := enqueueJob(b, uniqueKind, numArgs{N: 1}, relay.Unique("k1", relay.StateSucceeded), relay.RunIn(time.Hour))
		if e != (relay.Enqueued{ID: done, Duplicate: true}) {
			t.Errorf("Unique(key, StateSucceeded) while job %d with the key is succeeded: got %+v, want {ID:%d Duplicate:true}", done, e, done)
		}
	})

	t.Run("repeat with default states after a succeeded-holding job succeeded", func(t *testing.T) {
		b := b.in(t)
		done := succeeded(b, relay.Unique("k2", relay.StateSucceeded))
		e := enqueueJob(b, uniqueKind, numArgs{N: 2}, relay.Unique("k2"), relay.RunIn(time.Hour))
		if e.Duplicate || e.ID == done {
			t.Errorf("Unique(key) with the default states (pending, scheduled, running) while the only job with the key (%d) is succeeded: got %+v, want a new job", done, e)
		}
	})
}

// EnqueueJobs lines its results up with its input: a job whose key an existing job holds
// gets that job's id, the first of several jobs sharing a key within the batch is inserted
// and the rest get its id, and jobs without a key get fresh ids in input order.
func TestUniqueEnqueueJobsBatchResultsLineUpWithTheInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	holder := enqueueJob(b, uniqueKind, numArgs{N: -1}, relay.Unique("a"))

	input := []string{"", "a", "b", "", "b", "a", "", "c", "c", "", "b"}
	specs := make([]relay.JobSpec, len(input))
	for i, key := range input {
		var opts []relay.EnqueueOption
		if key != "" {
			opts = append(opts, relay.Unique(key))
		}
		specs[i] = uniqueKind.Job(numArgs{N: i}, opts...)
	}
	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	es, err := relay.EnqueueJobs(ctx, tx, specs, relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if len(es) != len(input) {
		t.Fatalf("EnqueueJobs returned %d results for %d jobs", len(es), len(input))
	}

	firstOf := map[string]int{}
	var lastPlain int64
	seen := map[int64]int{holder.ID: -1}
	for i, key := range input {
		e := es[i]
		switch first, repeat := firstOf[key]; {
		case key == "":
			if e.Duplicate {
				t.Errorf("job %d (no key): Duplicate, want inserted", i)
			}
			if e.ID <= lastPlain {
				t.Errorf("job %d (no key): id %d, want one after the previous plain job's %d", i, e.ID, lastPlain)
			}
			lastPlain = e.ID
		case key == "a":
			if e != (relay.Enqueued{ID: holder.ID, Duplicate: true}) {
				t.Errorf("job %d (key a, held by %d): %+v, want a duplicate of the holder", i, holder.ID, e)
			}
			continue
		case repeat:
			if e != (relay.Enqueued{ID: es[first].ID, Duplicate: true}) {
				t.Errorf("job %d (key %s, first in the batch at %d): %+v, want a duplicate of %d", i, key, first, e, es[first].ID)
			}
			continue
		default:
			firstOf[key] = i
			if e.Duplicate {
				t.Errorf("job %d (key %s, first in the batch): Duplicate, want inserted", i, key)
			}
		}
		// An inserted job: its id is its own and its row holds its own args.
		if prev, dup := seen[e.ID]; dup {
			t.Errorf("job %d got id %d, already returned for job %d", i, e.ID, prev)
		}
		seen[e.ID] = i
		if n := argsN(b, e.ID); n != i {
			t.Errorf("job %d got id %d, whose row holds the args of job %d", i, e.ID, n)
		}
	}
	if got, want := b.count(""), 1+4+2; got != want {
		t.Errorf("table holds %d jobs, want %d (the holder, 4 plain jobs, b and c)", got, want)
	}

	// EnqueueMany of the same batch again: every key is held now, plain jobs are new.
	ids := b.enqueueMany(specs)
	for i, key := range input {
		switch {
		case key == "a" && ids[i] != holder.ID:
			t.Errorf("EnqueueMany again, job %d (key a): id %d, want the holder %d", i, ids[i], holder.ID)
		case key != "" && key != "a" && ids[i] != es[firstOf[key]].ID:
			t.Errorf("EnqueueMany again, job %d (key %s): id %d, want the holder %d", i, key, ids[i], es[firstOf[key]].ID)
		case key == "" && (ids[i] <= lastPlain || argsN(b, ids[i]) != i):
			t.Errorf("EnqueueMany again, job %d (no key): id %d, want a new job after %d holding its args", i, ids[i], lastPlain)
		}
		if key == "" {
			lastPlain = ids[i]
		}
	}
}

// A larger random batch, across queues, with some keys held beforehand: every result
// lines up with its input.
func TestUniqueEnqueueJobsRandomBatch(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))

	held := map[string]int64{}
	for k := range 10 {
		if rng.IntN(2) == 0 {
			key := fmt.Sprintf("k%d", k)
			held[key] = enqueueJob(b, uniqueKind, numArgs{N: -1 - k}, relay.Unique(key)).ID
		}
	}
	const n = 300
	keys := make([]string, n)
	specs := make([]relay.JobSpec, n)
	for i := range specs {
		opts := []relay.EnqueueOption{relay.Queue(fmt.Sprintf("q%d", rng.IntN(3)))}
		if rng.IntN(3) > 0 {
			keys[i] = fmt.Sprintf("k%d", rng.IntN(10))
			opts = append(opts, relay.Unique(keys[i]))
		}
		specs[i] = uniqueKind.Job(numArgs{N: i}, opts...)
	}
	es, err := relay.EnqueueJobs(ctx, b, specs, relay.Schema(b.Schema))
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != n {
		t.Fatalf("EnqueueJobs returned %d results for %d jobs", len(es), n)
	}
	holderOf := maps.Clone(held)
	var lastPlain int64
	inserted := 0
	for i, key := range keys {
		e := es[i]
		if key == "" {
			if e.Duplicate || e.ID <= lastPlain || argsN(b, e.ID) != i {
				t.Fatalf("job %d (no key): %+v, want a new job after %d holding its args", i, e, lastPlain)
			}
			lastPlain = e.ID
			inserted++
			continue
		}
		if h, ok := holderOf[key]; ok {
			if e != (relay.Enqueued{ID: h, Duplicate: true}) {
				t.Fatalf("job %d (key %s, held by %d): %+v", i, key, h, e)
			}
			continue
		}
		if e.Duplicate || argsN(b, e.ID) != i {
			t.Fatalf("job %d (key %s, first in the batch): %+v, want a new job holding its args", i, key, e)
		}
		holderOf[key] = e.ID
		inserted++
	}
	if got := b.count(""); got != len(held)+inserted {
		t.Errorf("table holds %d jobs, want %d", got, len(held)+inserted)
	}
}

// Retrying a cancelled unique job while another job holds its key fails with
// ErrUniqueKeyHeld and leaves it cancelled; once the key is free the retry works, and the
// retried job holds the key again.
func TestUniqueRetryWhileTheKeyIsHeldFails(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const key = "sync:42"

	old := enqueueJob(b, uniqueKind, numArgs{N: 1}, relay.Unique(key))
	if err := relay.Cancel(ctx, b, old.ID, relay.Schema(b.Schema)); err != nil {
		t.Fatal(err)
	}
	holder := enqueueJob(b, uniqueKind, numArgs{N: 2}, relay.Unique(key))
	if holder.Duplicate || holder.ID == old.ID {
		t.Fatalf("enqueue after the first was cancelled: %+v, want a new job", holder)
	}

	err := relay.Retry(ctx, b, old.ID, relay.Schema(b.Schema))
	if !errors.Is(err, relay.ErrUniqueKeyHeld) {
		t.Fatalf("Retry of job %d while job %d holds its key: %v, want ErrUniqueKeyHeld", old.ID, holder.ID, err)
	}
	if rec := b.record(old.ID); rec.State != relay.StateCancelled {
		t.Errorf("after the refused Retry, job %d is %s, want still cancelled", old.ID, rec.State)
	}
	if rec := b.record(holder.ID); rec.State != relay.StatePending {
		t.Errorf("after the refused Retry, the holder %d is %s, want still pending", holder.ID, rec.State)
	}

	// Inside a transaction the refusal is the same error.
	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := relay.Retry(ctx, tx, old.ID, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrUniqueKeyHeld) {
		t.Errorf("Retry in a transaction while the key is held: %v, want ErrUniqueKeyHeld", err)
	}
	tx.Rollback(ctx)

	// Free the key: the retry works and the retried job holds the key.
	if err := relay.Cancel(ctx, b, holder.ID, relay.Schema(b.Schema)); err != nil {
		t.Fatal(err)
	}
	if err := relay.Retry(ctx, b, old.ID, relay.Schema(b.Schema)); err != nil {
		t.Fatalf("Retry once the key is free: %v", err)
	}
	if rec := b.record(old.ID); rec.State != relay.StatePending {
		t.Errorf("retried job %d is %s, want pending", old.ID, rec.State)
	}
	if e := enqueueJob(b, uniqueKind, numArgs{N: 3}, relay.Unique(key)); e != (relay.Enqueued{ID: old.ID, Duplicate: true}) {
		t.Errorf("enqueue after the retry: %+v, want a duplicate of the retried job %d", e, old.ID)
	}
	// Retrying the cancelled holder now collides with the retried job.
	if err := relay.Retry(ctx, b, holder.ID, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrUniqueKeyHeld) {
		t.Errorf("Retry of %d while the retried %d holds the key: %v, want ErrUniqueKeyHeld", holder.ID, old.ID, err)
	}
}

// Invalid unique options are refused with ErrInvalidJob before anything is inserted, for
// one job and for a batch.
func TestUniqueInvalidOptionsAreRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()

	for name, opt := range map[string]relay.EnqueueOption{
		"empty key":                   relay.Unique(""),
		"empty key with a state":      relay.Unique("", relay.StateSucceeded),
		"bogus state":                 relay.Unique("k", relay.JobState("bogus")),
		"empty state":                 relay.Unique("k", relay.JobState("")),
		"bogus among valid states":    relay.Unique("k", relay.StateFailed, relay.JobState("done")),
		"key longer than 256 bytes":   relay.Unique(strings.Repeat("k", 257)),
		"state with different casing": relay.Unique("k", relay.JobState("Succeeded")),
	} {
		if _, err := relay.EnqueueJob(ctx, b, uniqueKind, numArgs{}, opt, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrInvalidJob) {
			t.Errorf("EnqueueJob with %s: %v, want ErrInvalidJob", name, err)
		}
		if _, err := relay.Enqueue(ctx, b, uniqueKind, numArgs{}, opt, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrInvalidJob) {
			t.Errorf("Enqueue with %s: %v, want ErrInvalidJob", name, err)
		}
		batch := []relay.JobSpec{
			uniqueKind.Job(numArgs{N: 1}, relay.Unique("fine")),
			uniqueKind.Job(numArgs{N: 2}),
			uniqueKind.Job(numArgs{N: 3}, opt),
		}
		if _, err := relay.EnqueueJobs(ctx, b, batch, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrInvalidJob) {
			t.Errorf("EnqueueJobs with %s: %v, want ErrInvalidJob", name, err)
		}
		if _, err := relay.EnqueueMany(ctx, b, batch, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrInvalidJob) {
			t.Errorf("EnqueueMany with %s: %v, want ErrInvalidJob", name, err)
		}
		if _, err := relay.EnqueueJobs(ctx, b, batch[:2], opt, relay.Schema(b.Schema)); !errors.Is(err, relay.ErrInvalidJob) {
			t.Errorf("EnqueueJobs with %s for the whole batch: %v, want ErrInvalidJob", name, err)
		}
	}
	if got := b.count(""); got != 0 {
		t.Errorf("%d jobs were inserted by refused enqueues", got)
	}

	// The limits themselves are fine: a 256-byte key, and every state name.
	long := strings.Repeat("k", 256)
	if e := enqueueJob(b, uniqueKind, numArgs{}, relay.Unique(long)); e.Duplicate {
		t.Errorf("256-byte key: %+v, want a new job", e)
	}
	all := relay.Unique("all", relay.StatePending, relay.StateScheduled, relay.StateRunning,
		relay.StateSucceeded, relay.StateFailed, relay.StateCancelled, relay.StateSucceeded)
	if e := enqueueJob(b, uniqueKind, numArgs{}, all); e.Duplicate {
		t.Errorf("every state named: %+v, want a new job", e)
	}
}
