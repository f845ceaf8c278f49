package store_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay/internal/store"
)

// recordingConn is a real connection that keeps the statements of every batch sent on it.
type recordingConn struct {
	*pgx.Conn
	batches [][]pgx.QueuedQuery
}

func (c *recordingConn) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	queued := make([]pgx.QueuedQuery, len(b.QueuedQueries))
	for i, q := range b.QueuedQueries {
		queued[i] = *q
	}
	c.batches = append(c.batches, queued)
	return c.Conn.SendBatch(ctx, b)
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
	conn := &recordingConn{Conn: session(t, db)}
	calls := map[string]func() error{
		"CountJobs":   func() error { _, err := s.CountJobs(ctx, conn); return err },
		"QueueDepths": func() error { _, err := s.QueueDepths(ctx, conn); return err },
		"ListJobs": func() error {
			_, err := s.ListJobs(ctx, conn, store.ListFilter{Queue: "q", States: []string{"pending"}, Limit: 10})
			return err
		},
		"DashboardQueues": func() error { _, err := s.DashboardQueues(ctx, conn, "", time.Hour, 10); return err },
		"Throughput":      func() error { _, err := s.Throughput(ctx, conn, "q", time.Hour, time.Minute, 100); return err },
	}
	var jit bool
	if err := conn.QueryRow(ctx, "SELECT pg_jit_available()").Scan(&jit); err != nil {
		t.Fatal(err)
	}
	for name, call := range calls {
		conn.batches = nil
		if err := call(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(conn.batches) != 1 || len(conn.batches[0]) != 3 {
			t.Errorf("%s sent %d batches (%v); want one of three statements: JIT off, the statement, JIT back", name, len(conn.batches), conn.batches)
			continue
		}
		before, q, after := conn.batches[0][0], conn.batches[0][1], conn.batches[0][2]
		if !jit {
			continue // this server cannot compile: nothing more to see
		}
		if compiled := compiledByJIT(t, conn.Conn, "", q); !compiled {
			t.Fatalf("%s: with jit_above_cost 0 its plan is not compiled even on its own: the test shows nothing", name)
		}
		if compiledByJIT(t, conn.Conn, before.SQL, q) {
			t.Errorf("%s: compiled by JIT after %q; want JIT off", name, before.SQL)
		}
		// The caller's setting is back after the batch.
		var setting string
		if err := conn.QueryRow(ctx, "SELECT current_setting('jit')").Scan(&setting); err != nil || setting != "on" {
			t.Errorf("%s: jit is %q (%v) after the batch ending %q; want on, as it was", name, setting, err, after.SQL)
		}
	}
}

// compiledByJIT reports whether q, run after before (if any) in one transaction with
// jit_above_cost 0, would be compiled by JIT.
func compiledByJIT(t *testing.T, conn *pgx.Conn, before string, q pgx.QueuedQuery) bool {
	t.Helper()
	ctx := context.Background()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SET LOCAL jit_above_cost = 0"); err != nil {
		t.Fatal(err)
	}
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
