package store_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/relayq/relay/internal/store"
	"github.com/relayq/relay/relaytest"
)

// The jobs table behind the tests of this file: what a busy installation keeps, most of
// it finished jobs that none of the statements tested here should walk through.
const (
	hugeFinished = 300_000 // finished one every 10 s over the past ~35 days, in 4 queues
	hugePending  = 5_000   // a fifth of them scheduled an hour ahead
	hugeRunning  = 100
	hugeHeld     = 400 // half of them past their deadline
	hugeClient   = "plans-test"
)

// newHugeJobsTable is a store whose jobs table holds the jobs above, inserted in one
// statement and analyzed: the plans depend on the table's statistics, not on how its
// rows came. Among the finished jobs are a sparse range (three cancelled jobs of
// queue2, the only ones) and ten pending jobs enqueued long ago for a month ahead: the
// cases where a plan that walks the table in id order, hoping to meet its rows early,
// meets them late or never.
func newHugeJobsTable(t *testing.T) (*relaytest.DB, *store.Store) {
	t.Helper()
	db, s := newStoreTest(t)
	ctx := context.Background()
	for _, sql := range []string{
		fmt.Sprintf(`INSERT INTO %s (kind, queue, args, state, attempt, max_attempts, created_at, run_at,
				attempted_at, attempted_by, finished_at, lease_expires_at, unique_key, held_until)
			SELECT 'kind' || (g %% 5), 'queue' || (g %% 4), '{}', x.state, x.attempt, 3, x.created_at,
				CASE WHEN x.state <> 'pending' THEN x.created_at
					WHEN g <= @finished::integer THEN now() + interval '30 days'
					WHEN g %% 5 = 0 THEN now() + interval '1 hour'
					ELSE x.created_at END,
				CASE WHEN x.attempt > 0 THEN x.created_at END,
				CASE WHEN x.state = 'running' THEN @client::text WHEN x.attempt > 0 THEN 'gone' END,
				CASE WHEN x.state IN ('succeeded', 'failed', 'cancelled') THEN x.created_at + interval '1 minute' END,
				CASE WHEN x.state = 'running' THEN now() + interval '1 minute' END,
				CASE WHEN g %% 7 = 0 THEN 'key ' || g END,
				CASE WHEN x.state = 'held' THEN now() + CASE WHEN g %% 2 = 0 THEN interval '-1 minute' ELSE interval '1 minute' END END
			FROM generate_series(1, @finished::integer + @pending::integer + @running::integer + @held::integer) g
			CROSS JOIN LATERAL (SELECT CASE
					WHEN g > @finished::integer + @pending::integer + @running::integer THEN 'held'
					WHEN g > @finished::integer + @pending::integer THEN 'running'
					WHEN g > @finished::integer THEN 'pending'
					WHEN g %% 30000 = 15 THEN 'pending'
					WHEN g %% 100000 = 2 THEN 'cancelled'
					WHEN g %% 23 = 0 THEN 'failed'
					WHEN g %% 50 = 1 THEN 'cancelled'
					ELSE 'succeeded' END AS state,
				now() - (@finished::integer - least(g, @finished::integer)) * interval '10 seconds' - interval '1 minute' AS created_at) s
			CROSS JOIN LATERAL (SELECT s.*, CASE WHEN s.state IN ('pending', 'held') THEN 0 ELSE 1 END AS attempt) x`,
			s.Table("jobs")),
		// Clients long gone, for PruneClients.
		"INSERT INTO " + s.Table("clients") + " (id, heartbeat_at, lease_ttl, queues, kinds) " +
			"SELECT 'gone ' || g, now() - interval '30 days', interval '1 minute', '{}', '{}' FROM generate_series(1, 50) g",
		"ANALYZE " + s.Table("jobs"),
		"ANALYZE " + s.Table("clients"),
	} {
		if _, err := db.Exec(ctx, sql, pgx.NamedArgs{
			"finished": hugeFinished, "pending": hugePending, "running": hugeRunning, "held": hugeHeld, "client": hugeClient,
		}); err != nil {
			t.Fatal(err)
		}
	}
	return db, s
}

// recorder is a ClientDB on a transaction that keeps the text and arguments of every
// statement run on it: the store assembles some statements per call (a bulk action's
// around its filter), and this is how a test outside the package sees them as sent.
type recorder struct {
	pgx.Tx
	statements []recorded
}

type recorded struct {
	sql  string
	args []any // without the exec mode that some statements pass first
}

func (r *recorder) note(sql string, args []any) {
	var kept []any
	for _, a := range args {
		if _, ok := a.(pgx.QueryExecMode); !ok {
			kept = append(kept, a)
		}
	}
	r.statements = append(r.statements, recorded{sql: sql, args: kept})
}

func (r *recorder) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	r.note(sql, args)
	return r.Tx.Exec(ctx, sql, args...)
}

func (r *recorder) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	r.note(sql, args)
	return r.Tx.Query(ctx, sql, args...)
}

func (r *recorder) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	r.note(sql, args)
	return r.Tx.QueryRow(ctx, sql, args...)
}

// SendBatch keeps the statements of the batch but those that only set how the others are
// planned (planByIndex, planWithoutJIT and the statements that restore their settings).
func (r *recorder) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	for _, q := range b.QueuedQueries {
		if !strings.HasPrefix(q.SQL, "SELECT set_config(") {
			r.note(q.SQL, q.Arguments)
		}
	}
	return r.Tx.SendBatch(ctx, b)
}

// runRecorded runs call in a transaction that it rolls back, so that the next call finds
// the table as it was, and returns the one statement call ran and how long call took.
func runRecorded(t *testing.T, db *relaytest.DB, call func(ctx context.Context, rec *recorder) error) (recorded, time.Duration) {
	t.Helper()
	ctx := context.Background()
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	rec := &recorder{Tx: tx}
	began := time.Now()
	err = call(ctx, rec)
	took := time.Since(began)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.statements) != 1 {
		t.Fatalf("the call ran %d statements, want 1", len(rec.statements))
	}
	return rec.statements[0], took
}

// boundedIndexes are the indexes of jobs that a plan may read whole: they hold only jobs
// that cannot pile up.
var boundedIndexes = map[string]bool{
	"jobs_lease_idx": true, // running jobs: as many as the clients run at once
	"jobs_held_idx":  true, // reservations: each is committed or expires by its deadline
}

// checkReadsNoWholeJobs fails t if plan scans the whole jobs table, reads one of its
// indexes (but boundedIndexes) from end to end, as a merge join does, or walks a range of
// ids through the primary key, filtering the jobs it meets: such a range is bounded by a
// page's cursor or the newest job found, not by the state and queue looked for, so it
// spans the table when they are sparse.
func checkReadsNoWholeJobs(t *testing.T, plan []map[string]any) {
	t.Helper()
	var bad []string
	for _, n := range plan {
		index, _ := n["Index Name"].(string)
		cond, _ := n["Index Cond"].(string)
		switch {
		case n["Relation Name"] == "jobs" && n["Node Type"] == "Seq Scan":
			bad = append(bad, "scans the whole jobs table")
		case strings.HasPrefix(index, "jobs_") && cond == "" && !boundedIndexes[index]:
			bad = append(bad, "reads the whole of "+index)
		case index == "jobs_pkey" && cond != "" && !strings.Contains(cond, "id = "):
			bad = append(bad, fmt.Sprintf("walks jobs_pkey over %s, filtering on %v", cond, n["Filter"]))
		}
	}
	if bad != nil {
		t.Errorf("the plan %s:\n%s", strings.Join(bad, "; "), describe(plan))
	}
}

// checkPlansReadNoWholeJobs runs checkReadsNoWholeJobs on each plan of st, a subtest per
// plan mode.
func checkPlansReadNoWholeJobs(t *testing.T, db *relaytest.DB, st recorded) {
	t.Helper()
	for _, mode := range planModes {
		t.Run(mode, func(t *testing.T) {
			checkReadsNoWholeJobs(t, explainPrepared(t, db, mode, st.sql, st.args))
		})
	}
}

// Every client's expirer runs expire whenever a reservation's deadline passes, and its
// statement stays prepared, so its generic plan is the one it keeps: it must find the
// lapsed reservations, and the next deadline, among the held jobs only, however many
// finished jobs the table keeps.
func TestExpireReadsOnlyHeldJobsBehindAHugeTable(t *testing.T) {
	t.Parallel()
	db, s := newHugeJobsTable(t)
	info := store.ClientInfo{ID: hugeClient, Lease: time.Minute}
	var expired int
	st, took := runRecorded(t, db, func(ctx context.Context, rec *recorder) error {
		e, err := s.Client(rec, info).Expire(ctx, 1000) // lease.sweepBatch
		expired = len(e.Jobs)
		return err
	})
	t.Logf("expire: %d reservations in %v", expired, took)
	if expired != hugeHeld/2 {
		t.Errorf("expired %d reservations, want %d", expired, hugeHeld/2)
	}
	checkPlansReadNoWholeJobs(t, db, st)
}

// A page of a bulk action (relay.DeleteJobs, RetryJobs, CancelJobs, and the count of a
// DryRun) must cost what its jobs do: the actions run a page of 1,000 jobs at a time so
// that an operator may clear millions, and a page that walked the finished jobs the
// table keeps would make such an action quadratic. The filters are those relay's bulk
// functions pass: always the states asked for, or all those the action applies to.
func TestBulkActionPagesReadOnlyTheirJobsBehindAHugeTable(t *testing.T) {
	t.Parallel()
	db, s := newHugeJobsTable(t)
	var (
		deletable  = []string{store.StatePending, store.StateScheduled, store.StateHeld, store.StateSucceeded, store.StateFailed, store.StateCancelled}
		retryable  = []string{store.StateFailed, store.StateCancelled}
		cancelable = []string{store.StatePending, store.StateScheduled, store.StateRunning, store.StateHeld}
		from, to   = time.Now().Add(-20 * 24 * time.Hour), time.Now().Add(-10 * 24 * time.Hour)
	)
	// stored is what states are in the state column, as relay's bulk functions pass them.
	stored := func(states []string) []string {
		var out []string
		for _, st := range states {
			if st == store.StateScheduled {
				st = store.StatePending
			}
			if !slices.Contains(out, st) {
				out = append(out, st)
			}
		}
		return out
	}
	for _, c := range []struct {
		name   string
		action store.BulkAction // "": a dry run, which counts
		f      store.ListFilter
		max    int64 // 1,000: one page, one statement
	}{
		{"delete every job", store.BulkDelete, store.ListFilter{States: deletable}, 1000},
		{"delete every job, a page deep in the table", store.BulkDelete, store.ListFilter{States: deletable, After: hugeFinished / 2}, 1000},
		{"delete the succeeded jobs of a queue", store.BulkDelete, store.ListFilter{States: []string{store.StateSucceeded}, Queue: "queue1"}, 1000},
		{"delete the failed jobs of a kind in a window", store.BulkDelete, store.ListFilter{States: []string{store.StateFailed}, Kind: "kind0", From: from, To: to}, 1000},
		{"retry every job", store.BulkRetry, store.ListFilter{States: retryable}, 1000},
		{"retry the failed jobs of a queue", store.BulkRetry, store.ListFilter{States: []string{store.StateFailed}, Queue: "queue2"}, 1000},
		{"retry the cancelled jobs of a sparse queue", store.BulkRetry, store.ListFilter{States: []string{store.StateCancelled}, Queue: "queue2"}, 1000},
		{"cancel every job", store.BulkCancel, store.ListFilter{States: cancelable}, 1000},
		{"cancel the pending jobs of a queue and kind", store.BulkCancel, store.ListFilter{States: []string{store.StatePending}, Queue: "queue1", Kind: "kind1"}, 1000},
		{"count the jobs a page of a delete would", "", store.ListFilter{States: deletable}, 1000},
		{"count the jobs a retry would", "", store.ListFilter{States: retryable}, 0},
		{"count the jobs a cancel would", "", store.ListFilter{States: cancelable}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			var n int64
			st, took := runRecorded(t, db, func(ctx context.Context, rec *recorder) error {
				var err error
				if c.action == "" {
					n, err = s.CountJobsOf(ctx, rec, c.f, c.max)
				} else {
					n, err = s.Bulk(ctx, rec, c.action, c.f, stored(c.f.States), c.max)
				}
				return err
			})
			t.Logf("%s: %d jobs in %v", c.name, n, took)
			if n == 0 {
				t.Errorf("the filter selects no job: the plan of an empty page tells nothing")
			}
			checkPlansReadNoWholeJobs(t, db, st)
		})
	}
}

// Every client runs retention, a pass of prunes at a time: it finds the (state, queue)
// ranges that hold expired jobs and deletes them a batch at a time, while the table
// keeps the jobs the rules keep. Each statement must go through the finished jobs'
// indexes a range at a time, and read a range only from where its expired jobs begin.
func TestRetentionReadsOnlyExpiredRangesBehindAHugeTable(t *testing.T) {
	t.Parallel()
	db, s := newHugeJobsTable(t)
	rules := []store.KeepRule{
		{State: store.StateSucceeded, Keep: 7 * 24 * time.Hour},
		{State: store.StateFailed, Keep: 30 * 24 * time.Hour},
		{State: store.StateCancelled, Queue: "queue3", Keep: -1},
		{State: store.StateCancelled, Keep: 14 * 24 * time.Hour},
	}
	var ranges []*store.Range
	expired, took := runRecorded(t, db, func(ctx context.Context, rec *recorder) error {
		var err error
		ranges, err = s.Expired(ctx, rec, rules)
		return err
	})
	t.Logf("expired: %d ranges in %v", len(ranges), took)
	if len(ranges) == 0 {
		t.Fatal("no range holds expired jobs")
	}
	prune := func(name string) recorded {
		var pruned store.Pruned
		st, took := runRecorded(t, db, func(ctx context.Context, rec *recorder) error {
			var err error
			pruned, err = s.Prune(ctx, rec, rules, 1000, ranges) // relay's pruneBatch
			return err
		})
		t.Logf("%s: %d jobs in %v", name, pruned.Total(), took)
		if pruned.Total() != 1000 {
			t.Errorf("%s deleted %d jobs, want 1000", name, pruned.Total())
		}
		return st
	}
	first := prune("prune")
	// A prune later in the pass resumes each range where the one before it stopped.
	for _, r := range ranges {
		r.From = time.Now().Add(-25 * 24 * time.Hour)
	}
	resumed := prune("prune, resumed")
	var clients int64
	pruneClients, took := runRecorded(t, db, func(ctx context.Context, rec *recorder) error {
		var err error
		clients, err = s.PruneClients(ctx, rec, time.Hour)
		return err
	})
	t.Logf("pruneClients: %d clients in %v", clients, took)

	for _, st := range []struct {
		name string
		recorded
		prune bool
	}{
		{"expired", expired, false}, {"prune", first, true}, {"prune resumed", resumed, true}, {"pruneClients", pruneClients, false},
	} {
		for _, mode := range planModes {
			t.Run(st.name+"/"+mode, func(t *testing.T) {
				plan := explainPrepared(t, db, mode, st.sql, st.args)
				checkReadsNoWholeJobs(t, plan)
				if st.prune && !readsFromWhereThePassStopped(plan) {
					// Through another index of finished jobs, each prune of a pass would walk
					// again past every job the prunes before it deleted (until VACUUM) and
					// every one the rules keep.
					t.Errorf("the prune does not read its ranges from where the pass stopped, through jobs_expiry_idx:\n%s", describe(plan))
				}
			})
		}
	}
}

// readsFromWhereThePassStopped reports whether plan reads jobs_expiry_idx between a
// lower and an upper bound of finished_at.
func readsFromWhereThePassStopped(plan []map[string]any) bool {
	for _, n := range plan {
		cond, _ := n["Index Cond"].(string)
		if n["Index Name"] == "jobs_expiry_idx" && strings.Contains(cond, "finished_at >=") && strings.Contains(cond, "finished_at <") {
			return true
		}
	}
	return false
}
