package relay_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// relay works on a pool in any of pgx's query exec modes, not only the default one that
// prepares and caches statements: the simple protocol (as behind PgBouncer in transaction
// mode, where prepared statements do not survive) and the modes that never prepare. Each
// path that sends typed arrays or JSON is exercised: batch enqueue, a unique enqueue,
// claims, outcomes of failures and successes with outputs, binary payloads, checkpoints,
// CompleteTx, queue settings, listing and counting.
func TestEveryQueryExecMode(t *testing.T) {
	t.Parallel()
	for _, mode := range []pgx.QueryExecMode{
		pgx.QueryExecModeCacheStatement,
		pgx.QueryExecModeCacheDescribe,
		pgx.QueryExecModeDescribeExec,
		pgx.QueryExecModeExec,
		pgx.QueryExecModeSimpleProtocol,
	} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			testExecMode(t, mode)
		})
	}
}

type execModeOut struct {
	Sum  int
	Note string
}

func testExecMode(t *testing.T, mode pgx.QueryExecMode) {
	base := setup(t)
	pool := base.pool(func(cfg *pgxpool.Config) { cfg.ConnConfig.DefaultQueryExecMode = mode })
	exerciseAll(newBundle(t, &relaytest.DB{Pool: pool, Schema: base.Schema, URL: base.URL}), relay.Config{})
}

// exerciseAll runs a client configured by cfg on b.Pool, and goes through every path
// that sends typed arrays or JSON, and every kind of statement relay runs, on b.Pool, in
// a schema of its own (so that Store.Insert's choice starts afresh): batch, unique and
// single enqueues (through both of Store.Insert's statements) in a transaction, claims
// (of a plain and an ordered queue),
// outcomes of failures and of successes with outputs, binary payloads, checkpoints and
// CompleteTx in the handler's transaction, queue settings, listing and counting.
// prepare, if given, is called with the client before it starts.
func exerciseAll(b *bundle, cfg relay.Config, prepare ...func(*relay.Client)) {
	b = b.inSchemaOfItsOwn()
	t := b.t
	sumKind := relay.NewKind[[]int]("sum")
	bytesKind := relay.NewKind[[]byte]("bytes")
	txKind := relay.NewKind[string]("tx")
	ctx := context.Background()
	pool := b.Pool
	schema := relay.Schema(b.Schema)

	if err := relay.SetQueue(ctx, b, "ordered", relay.QueueSettings{Ordered: true}, schema); err != nil {
		t.Fatalf("SetQueue: %v", err)
	}
	cfg.Queues = map[string]relay.QueueConfig{relay.DefaultQueue: {Workers: 4}, "ordered": {Workers: 4}}
	c := b.client(cfg)
	for _, p := range prepare {
		p(c)
	}
	err := relay.HandleWithOutput(c, sumKind, func(ctx context.Context, job *relay.Job[[]int]) (execModeOut, error) {
		if job.Attempt == 1 {
			return execModeOut{}, errors.New("first attempt fails, with a 'quoted' error")
		}
		s := 0
		for _, v := range job.Args {
			s += v
		}
		return execModeOut{Sum: s, Note: `"ok" — ünïcode`}, nil
	}, retryFast...)
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte{0, 1, 2, 0xfe, 0xff, '\\', '\''}
	badPayload := make(chan []byte, 1)
	if err := relay.Handle(c, bytesKind, func(ctx context.Context, job *relay.Job[[]byte]) error {
		if !bytes.Equal(job.Args, payload) {
			badPayload <- job.Args
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := relay.Handle(c, txKind, func(ctx context.Context, job *relay.Job[string]) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		if err := relay.Checkpoint(ctx, tx, job, map[string]string{"seen": job.Args}); err != nil {
			return err
		}
		if err := relay.CompleteTx(ctx, tx, job); err != nil {
			return err
		}
		return tx.Commit(ctx)
	}); err != nil {
		t.Fatal(err)
	}
	b.start(c)

	ids, err := relay.EnqueueMany(ctx, b, []relay.JobSpec{
		sumKind.Job([]int{1, 2, 3}),
		bytesKind.Job(payload),
		txKind.Job("it's"),
	}, schema, relay.Priority(3))
	if err != nil {
		t.Fatalf("EnqueueMany: %v", err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first, err := relay.EnqueueJob(ctx, tx, sumKind, []int{4, 5}, schema, relay.Unique("u-1"), relay.Queue("ordered"), relay.OrderKey("k"))
	if err != nil {
		t.Fatalf("EnqueueJob: %v", err)
	}
	again, err := relay.EnqueueJob(ctx, tx, sumKind, []int{4, 5}, schema, relay.Unique("u-1"), relay.Queue("ordered"), relay.OrderKey("k"))
	if err != nil {
		t.Fatalf("EnqueueJob again: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if !again.Duplicate || again.ID != first.ID {
		t.Errorf("the second unique enqueue gave %+v, want the first's id %d as a duplicate", again, first.ID)
	}
	// Single enqueues: the first through insert, as nothing of this schema has notified
	// yet; at REPEATABLE READ it notifies, so the second goes through insertHandedOff.
	for _, iso := range []pgx.TxIsoLevel{pgx.RepeatableRead, pgx.ReadCommitted} {
		id, _ := enqueueIn(b, iso, nil, bytesKind, payload)
		ids = append(ids, id)
	}
	b.waitState("succeeded", append(ids, first.ID)...)
	select {
	case got := <-badPayload:
		t.Errorf("the []byte handler got %x, want %x", got, payload)
	default:
	}

	for id, want := range map[int64]int{ids[0]: 6, first.ID: 9} {
		rec, err := relay.GetJobOf[[]int, execModeOut](ctx, b, id, schema)
		if err != nil {
			t.Fatalf("GetJobOf(%d): %v", id, err)
		}
		if rec.Output == nil || rec.Output.Sum != want || rec.Output.Note != `"ok" — ünïcode` {
			t.Errorf("job %d output %+v, want sum %d", id, rec.Output, want)
		}
		if len(rec.Attempts) != 2 || rec.Attempts[0].Error != "first attempt fails, with a 'quoted' error" || rec.Attempts[1].Outcome != string(relay.StateSucceeded) {
			t.Errorf("job %d attempts %+v, want the first attempt's error, then a success", id, rec.Attempts)
		}
	}
	rec, err := relay.GetJob(ctx, b, ids[2], schema)
	if err != nil {
		t.Fatal(err)
	}
	if !jsonEqual(rec.Checkpoint, `{"seen": "it's"}`) {
		t.Errorf("checkpoint %s, want the one saved in the handler's transaction", rec.Checkpoint)
	}
	page, err := relay.ListJobs(ctx, b, relay.ListFilter{States: []relay.JobState{relay.StateSucceeded}}, schema)
	if err != nil {
		t.Fatalf("ListJobs: %v", err)
	}
	if len(page.Jobs) != 6 {
		t.Errorf("ListJobs found %d succeeded jobs, want 6", len(page.Jobs))
	}
	counts, err := relay.CountJobs(ctx, b, schema)
	if err != nil {
		t.Fatalf("CountJobs: %v", err)
	}
	if counts.All.Succeeded != 6 {
		t.Errorf("CountJobs: %+v, want 6 succeeded", counts.All)
	}
	if err := relay.PauseQueue(ctx, b, "ordered", schema); err != nil {
		t.Fatalf("PauseQueue: %v", err)
	}
	if q, err := relay.GetQueue(ctx, b, "ordered", schema); err != nil || !q.Paused {
		t.Errorf("GetQueue after PauseQueue: %+v, %v", q, err)
	}
}
