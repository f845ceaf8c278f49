package relay_test

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// finish makes job id look as if it had ended in state ago: finished (and created a
// minute earlier) that long before now, on the database's clock. Retention counts from
// finished_at, so tests of it need jobs older than any test could wait for.
func (b *bundle) finish(id int64, state relay.JobState, ago time.Duration) {
	b.t.Helper()
	b.finishAll([]int64{id}, state, ago)
}

// finishAll is finish for many jobs, in one statement.
func (b *bundle) finishAll(ids []int64, state relay.JobState, ago time.Duration) {
	b.t.Helper()
	_, err := b.Exec(context.Background(), `UPDATE `+b.table("jobs")+`
		SET state = $2, attempt = 1, finished_at = now() - $3::interval, created_at = now() - $3::interval - interval '1 minute'
		WHERE id = ANY ($1)`, ids, string(state), ago)
	if err != nil {
		b.t.Fatal(err)
	}
}

// jobIDs returns the ids of b's jobs, in order.
func (b *bundle) jobIDs() []int64 {
	b.t.Helper()
	var ids []int64
	for _, j := range relaytest.Jobs(b.t, b.DB) {
		ids = append(ids, j.ID)
	}
	slices.Sort(ids)
	return ids
}

// pruneAll runs c's prune until it was not cut short by another client's.
func pruneAll(t testing.TB, c *relay.Client) {
	t.Helper()
	for {
		busy, err := relay.PruneNow(context.Background(), c)
		if err != nil {
			t.Fatalf("prune: %v", err)
		}
		if !busy {
			return
		}
	}
}

// warnings returns a logger that keeps relay's warnings and errors, and what it kept.
func warnings() (*slog.Logger, func() []string) {
	var (
		mu   sync.Mutex
		kept []string
	)
	logger := slog.New(logHook(func(r slog.Record) {
		mu.Lock()
		defer mu.Unlock()
		kept = append(kept, r.Level.String()+" "+r.Message)
	}))
	return logger, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(kept)
	}
}

// A prune deletes exactly the finished jobs older than the retention of their state (in
// their queue, if it has its own), and nothing else: not younger ones, not pending,
// scheduled or running ones, not a failed job that blocks its ordered key. It also
// deletes the rows of clients gone for longer than ClientRetention, but not those of a
// client whose job still runs.
func TestPruneDeletesExactlyTheExpiredJobs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	b.setQueue("ordered", relay.QueueSettings{Ordered: true, OnFailure: relay.BlockOnFailure})
	const day = 24 * time.Hour
	type fixture struct {
		queue string
		state relay.JobState
		ago   time.Duration
		gone  bool
	}
	fixtures := []fixture{
		{"default", relay.StateSucceeded, 25 * time.Hour, true}, // default: 24 h
		{"default", relay.StateSucceeded, 23 * time.Hour, false},
		{"default", relay.StateCancelled, 25 * time.Hour, true}, // default: 24 h
		{"default", relay.StateCancelled, 23 * time.Hour, false},
		{"default", relay.StateFailed, 49 * time.Hour, true}, // Retention.Failed: 48 h
		{"default", relay.StateFailed, 47 * time.Hour, false},
		{"audit", relay.StateSucceeded, 300 * day, false},  // audit: succeeded kept forever
		{"audit", relay.StateFailed, 49 * time.Hour, true}, // audit: failed as Retention says
		{"audit", relay.StateCancelled, 23 * time.Hour, false},
		{"fast", relay.StateSucceeded, 2 * time.Hour, true}, // fast: succeeded 1 h
		{"fast", relay.StateSucceeded, 30 * time.Minute, false},
		{"fast", relay.StateCancelled, 23 * time.Hour, false}, // fast: cancelled as the default
		{"ordered", relay.StateFailed, 30 * day, true},
	}
	var kept []int64
	for _, f := range fixtures {
		id := enqueue(b, testKind, numArgs{}, relay.Queue(f.queue))
		b.finish(id, f.state, f.ago)
		if !f.gone {
			kept = append(kept, id)
		}
	}
	// A failed head that blocks its key stays, however old: deleting it would let the jobs
	// behind it run without anyone having decided so.
	blocking := enqueue(b, testKind, numArgs{}, relay.Queue("ordered"), relay.OrderKey("k"))
	b.finish(blocking, relay.StateFailed, 30*day)
	if _, err := b.Exec(ctx, `UPDATE `+b.table("jobs")+` SET blocking = true WHERE id = $1`, blocking); err != nil {
		t.Fatal(err)
	}
	// Unfinished jobs, however old, in a queue no client serves.
	pending := enqueue(b, testKind, numArgs{}, relay.Queue("idle"), relay.RunAt(time.Now().Add(-30*day)))
	scheduled := enqueue(b, testKind, numArgs{}, relay.Queue("idle"), relay.RunIn(time.Hour))
	running := enqueue(b, testKind, numArgs{}, relay.Queue("idle"))
	_, err := b.Exec(ctx, `UPDATE `+b.table("jobs")+`
		SET state = 'running', attempt = 1, attempted_at = now() - interval '30 days', attempted_by = 'dead-with-job',
		    lease_expires_at = now() + interval '1 hour', created_at = now() - interval '30 days'
		WHERE id = $1`, running)
	if err != nil {
		t.Fatal(err)
	}
	kept = append(kept, blocking, pending, scheduled, running)

	// Clients: gone for more than a day (stopped, or its heartbeat expired), recently
	// stopped, and gone long ago but still named by a running job.
	_, err = b.Exec(ctx, `INSERT INTO `+b.table("clients")+` (id, started_at, heartbeat_at, lease_ttl, queues, kinds, stopped_at) VALUES
		('gone-stopped', now() - interval '30 hours', now() - interval '25 hours', '15s', '{}', '{}', now() - interval '25 hours'),
		('gone-dead', now() - interval '30 hours', now() - interval '25 hours', '15s', '{}', '{}', NULL),
		('recent-stopped', now() - interval '2 hours', now() - interval '1 hour', '15s', '{}', '{}', now() - interval '1 hour'),
		('dead-with-job', now() - interval '30 hours', now() - interval '25 hours', '15s', '{}', '{}', NULL)`)
	if err != nil {
		t.Fatal(err)
	}
	// Dispatchers' rows: of a client gone, of one pruned long ago (killed: it deleted none),
	// and of one recently stopped, which stay until it is pruned.
	if _, err = b.Exec(ctx, `INSERT INTO `+b.table("dispatchers")+` (queue, client_id, waiting) VALUES
		('default', 'gone-dead', false), ('default', 'pruned-long-ago', false), ('default', 'recent-stopped', true)`); err != nil {
		t.Fatal(err)
	}

	c := b.client(relay.Config{
		Queues:    queues(1, "unused"),
		Retention: relay.Retention{Failed: 48 * time.Hour},
		QueueRetention: map[string]relay.Retention{
			"audit": {Succeeded: relay.KeepForever},
			"fast":  {Succeeded: time.Hour},
		},
	})
	handle(t, c, testKind, func(context.Context, *relay.Job[numArgs]) error { return nil })
	b.start(c)
	pruneAll(t, c) // the client's own prune may have run already: the outcome is the same

	slices.Sort(kept)
	if got := b.jobIDs(); !slices.Equal(got, kept) {
		t.Errorf("jobs left after pruning: %v, want %v", got, kept)
	}
	rows, err := b.Query(ctx, `SELECT id FROM `+b.table("clients")+` ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var clients []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		clients = append(clients, id)
	}
	clients = slices.DeleteFunc(clients, func(id string) bool { return id == c.ID() })
	if want := []string{"dead-with-job", "recent-stopped"}; !slices.Equal(clients, want) {
		t.Errorf("clients left after pruning: %v (and the test's own), want %v", clients, want)
	}
	var dispatchers []string
	if err := b.QueryRow(ctx, `SELECT coalesce(array_agg(client_id ORDER BY client_id), '{}') FROM `+b.table("dispatchers")+
		` WHERE client_id <> $1`, c.ID()).Scan(&dispatchers); err != nil {
		t.Fatal(err)
	}
	if want := []string{"recent-stopped"}; !slices.Equal(dispatchers, want) {
		t.Errorf("dispatchers' rows left after pruning: %v (and the test's own), want %v", dispatchers, want)
	}
}

// KeepForever in every state keeps every job, and a client with such a retention still
// starts and works.
func TestRetentionForeverKeepsEverything(t *testing.T) {
	t.Parallel()
	b := setup(t)
	old := enqueue(b, testKind, numArgs{}, relay.Queue("idle"))
	b.finish(old, relay.StateSucceeded, 1000*24*time.Hour)
	forever := relay.Retention{Succeeded: relay.KeepForever, Failed: relay.KeepForever, Cancelled: relay.KeepForever}
	c := b.client(relay.Config{Retention: forever, ClientRetention: relay.KeepForever})
	done := make(chan int64, 1)
	handle(t, c, testKind, reportIDs(done))
	b.start(c)
	pruneAll(t, c)
	id := enqueue(b, testKind, numArgs{})
	if got := recv(t, done, "the job"); got != id {
		t.Fatalf("ran job %d, want %d", got, id)
	}
	if got := b.record(old).State; got != relay.StateSucceeded {
		t.Errorf("a job kept forever is %s", got)
	}
}

// Pruning takes turns: while another client prunes (holds the advisory lock), a prune
// deletes nothing and says so; once it is done, the next prune deletes.
func TestPruneWaitsItsTurn(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	id := enqueue(b, testKind, numArgs{}, relay.Queue("idle"))
	b.finish(id, relay.StateSucceeded, 48*time.Hour)

	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	// The lock a prune takes (see retention.sql), as another client's prune holds it.
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('relay.prune'), hashtext($1))`, b.Schema); err != nil {
		t.Fatal(err)
	}
	c := b.client(relay.Config{Queues: queues(1, "unused")})
	handle(t, c, testKind, func(context.Context, *relay.Job[numArgs]) error { return nil })
	b.start(c)
	busy, err := relay.PruneNow(ctx, c)
	if err != nil || !busy {
		t.Fatalf("prune while another holds the lock = busy %v, %v; want busy", busy, err)
	}
	if n := b.count(""); n != 1 {
		t.Fatalf("%d jobs after a prune that was not its turn, want 1", n)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	pruneAll(t, c)
	if n := b.count(""); n != 0 {
		t.Fatalf("%d jobs after the prune's turn came, want 0", n)
	}
}

// Two clients started together prune 20 batches of expired jobs at once: every expired
// job is deleted, by exactly one of them (the counts add up), and neither logs an error.
func TestTwoClientsPruneConcurrently(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const n = 20_000
	b.enqueueN(testKind, n, relay.Queue("old"))
	// In three queues, finished at different times: each prune resumes where the last
	// stopped, in each queue.
	_, err := b.Exec(ctx, `UPDATE `+b.table("jobs")+`
		SET state = 'succeeded', attempt = 1, queue = 'old-' || id % 3, finished_at = now() - interval '2 days' - (id % 7000) * interval '1 second'`)
	if err != nil {
		t.Fatal(err)
	}
	logger, logged := warnings()
	clients := make([]*relay.Client, 2)
	for i := range clients {
		clients[i] = b.client(relay.Config{Queues: queues(1, "unused"), Logger: logger})
		handle(t, clients[i], testKind, func(context.Context, *relay.Job[numArgs]) error { return nil })
	}
	var wg sync.WaitGroup
	for _, c := range clients {
		wg.Go(func() { b.start(c) })
	}
	wg.Wait()
	var prunes atomic.Int64
	for _, c := range clients {
		wg.Go(func() {
			for b.count("") > 0 {
				if _, err := relay.PruneNow(ctx, c); err != nil {
					t.Errorf("prune: %v", err)
					return
				}
				prunes.Add(1)
			}
		})
	}
	wg.Wait()
	if left := b.count(""); left != 0 {
		t.Fatalf("%d jobs left", left)
	}
	total := relay.PrunedJobs(clients[0]) + relay.PrunedJobs(clients[1])
	if total != n {
		t.Errorf("the clients deleted %d + %d = %d jobs, want %d", relay.PrunedJobs(clients[0]), relay.PrunedJobs(clients[1]), total, n)
	}
	if l := logged(); len(l) > 0 {
		t.Errorf("the clients logged %v", l)
	}
	t.Logf("deleted %d and %d jobs, %d prunes besides the clients' own", relay.PrunedJobs(clients[0]), relay.PrunedJobs(clients[1]), prunes.Load())
}

// Retention settings that cannot be used make Start fail with ErrInvalidConfig.
func TestRetentionConfigRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	for name, cfg := range map[string]relay.Config{
		"a negative retention":           {Retention: relay.Retention{Failed: -time.Hour}},
		"a negative queue retention":     {QueueRetention: map[string]relay.Retention{"q": {Cancelled: -2}}},
		"a queue retention without name": {QueueRetention: map[string]relay.Retention{"": {Succeeded: time.Hour}}},
		"a negative client retention":    {ClientRetention: -time.Minute},
	} {
		t.Run(name, func(t *testing.T) {
			c := b.in(t).client(cfg)
			handle(t, c, testKind, func(context.Context, *relay.Job[numArgs]) error { return nil })
			err := c.Start(context.Background(), b.Pool)
			if !errors.Is(err, relay.ErrInvalidConfig) {
				c.Stop(context.Background())
				t.Fatalf("Start = %v, want ErrInvalidConfig", err)
			}
		})
	}
}
