package store_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay/internal/store"
)

// recordingTx is a real transaction that keeps the statements of every batch sent in it.
type recordingTx struct {
	pgx.Tx
	batches [][]pgx.QueuedQuery
}

func (r *recordingTx) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	queued := make([]pgx.QueuedQuery, len(b.QueuedQueries))
	for i, q := range b.QueuedQueries {
		queued[i] = *q
	}
	r.batches = append(r.batches, queued)
	return r.Tx.SendBatch(ctx, b)
}

// The statements that count or list over many jobs have cost estimates far above
// jit_above_cost once the table is large, and PostgreSQL compiled them with LLVM at every
// call (CountJobs behind 2,000,000 finished jobs: 350 ms of its 640). Each must be sent
// after the setting that turns JIT off, in the same batch. With jit_above_cost at 0, every
// plan would be compiled, so a small table shows it.
func TestCountsAndListingsAreNotCompiledByJIT(t *testing.T) {
	t.Parallel()
	db, s := newStoreTest(t)
	ctx := context.Background()
	conn := session(t, db)
	calls := map[string]func(on store.DB) error{
		"CountJobs":   func(on store.DB) error { _, err := s.CountJobs(ctx, on); return err },
		"QueueDepths": func(on store.DB) error { _, err := s.QueueDepths(ctx, on); return err },
		"ListJobs": func(on store.DB) error {
			_, err := s.ListJobs(ctx, on, store.ListFilter{Queue: "q", States: []string{"pending"}, Limit: 10})
			return err
		},
		"DashboardQueues": func(on store.DB) error { _, err := s.DashboardQueues(ctx, on, "", time.Hour, 10); return err },
		"Throughput": func(on store.DB) error {
			_, err := s.Throughput(ctx, on, "q", time.Hour, time.Minute, 100)
			return err
		},
	}
	var jit bool
	if err := conn.QueryRow(ctx, "SELECT pg_jit_available()").Scan(&jit); err != nil {
		t.Fatal(err)
	}
	for name, call := range calls {
		batch := run(t, conn, name, call)
		if len(batch) != 3 {
			continue
		}
		if !jit {
			continue // this server cannot compile: nothing more to see
		}
		before, q := batch[0], batch[1]
		if compiled := compiledByJIT(t, conn, "", q); !compiled {
			t.Fatalf("%s: with jit_above_cost 0 its plan is not compiled even on its own: the test shows nothing", name)
		}
		if compiledByJIT(t, conn, before.SQL, q) {
			t.Errorf("%s: compiled by JIT after %q; want JIT off", name, before.SQL)
		}
	}
}

// run makes call in a transaction of conn whose own settings differ from what the batch
// sets (jit on, plan_cache_mode force_generic_plan), checks that they are the same after
// it, and returns the one batch call sent (nil, and t fails, if it sent another number).
func run(t *testing.T, conn *pgx.Conn, name string, call func(on store.DB) error) []pgx.QueuedQuery {
	t.Helper()
	ctx := context.Background()
	tx := beginWith(t, conn, "SET LOCAL jit = on; SET LOCAL plan_cache_mode = force_generic_plan")
	defer tx.Rollback(ctx)
	rec := &recordingTx{Tx: tx}
	if err := call(rec); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if got, want := currentSettings(t, tx, "jit", "plan_cache_mode"), []string{"on", "force_generic_plan"}; !slices.Equal(got, want) {
		t.Errorf("%s: after it the caller's transaction has jit and plan_cache_mode %v; want %v, as it had them", name, got, want)
	}
	if len(rec.batches) != 1 || len(rec.batches[0]) != 3 {
		t.Errorf("%s sent %d batches (%v); want one of three statements: JIT off, the statement, the settings back",
			name, len(rec.batches), rec.batches)
		return nil
	}
	return rec.batches[0]
}

// compiledByJIT reports whether q, run after before (if any) in one transaction with
// jit_above_cost 0, would be compiled by JIT.
func compiledByJIT(t *testing.T, conn *pgx.Conn, before string, q pgx.QueuedQuery) bool {
	t.Helper()
	ctx := context.Background()
	tx := beginWith(t, conn, "SET LOCAL jit_above_cost = 0")
	defer tx.Rollback(ctx)
	if before != "" {
		if _, err := tx.Exec(ctx, before); err != nil {
			t.Fatal(err)
		}
	}
	var out []byte
	if err := tx.QueryRow(ctx, "EXPLAIN (FORMAT JSON) "+q.SQL, q.Arguments...).Scan(&out); err != nil {
		t.Fatalf("EXPLAIN %s: %v", q.SQL, err)
	}
	var doc []struct{ JIT map[string]any }
	if err := json.Unmarshal(out, &doc); err != nil || len(doc) != 1 {
		t.Fatalf("EXPLAIN returned %s (%v)", out, err)
	}
	return doc[0].JIT != nil
}

// beginWith begins a transaction on conn and runs settings in it; the caller rolls it back.
func beginWith(t *testing.T, conn *pgx.Conn, settings string) pgx.Tx {
	t.Helper()
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, settings); err != nil {
		_ = tx.Rollback(ctx)
		t.Fatal(err)
	}
	return tx
}

// noBatches is a DB that cannot send batches, as a caller's own wrapper may be.
type noBatches struct{ store.DB }

// On a DB that cannot send batches, the statements that go between settings where it can
// run alone, as they did before, with their arguments as they are.
func TestStatementsRunAloneOnADBWithoutBatches(t *testing.T) {
	t.Parallel()
	db, s := newStoreTest(t)
	ctx := context.Background()
	on := noBatches{db}
	in, err := s.Insert(ctx, on, store.NewJob{Kind: "job", Queue: "q", Args: []byte("{}"), UniqueKey: "k",
		UniqueIn: []string{"pending", "running"}})
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := s.GetJob(ctx, on, in.ID); err != nil || rec.ID != in.ID {
		t.Fatalf("GetJob = %v, %v; want job %d", rec, err, in.ID)
	}
	if recs, err := s.ListJobs(ctx, on, store.ListFilter{Queue: "q", Limit: 10}); err != nil || len(recs) != 1 {
		t.Fatalf("ListJobs = %d jobs, %v; want 1", len(recs), err)
	}
	if counts, err := s.CountJobs(ctx, on); err != nil || len(counts) == 0 {
		t.Fatalf("CountJobs = %v, %v; want the pending job counted", counts, err)
	}
	if _, err := s.QueueDepths(ctx, on); err != nil {
		t.Fatal(err)
	}
	if qs, err := s.DashboardQueues(ctx, on, "", time.Hour, 10); err != nil || len(qs) != 1 {
		t.Fatalf("DashboardQueues = %v, %v; want queue q", qs, err)
	}
	if _, err := s.Throughput(ctx, on, "q", time.Hour, time.Minute, 10); err != nil {
		t.Fatal(err)
	}
}
