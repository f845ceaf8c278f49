package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay"
	"github.com/relayq/relay/dispatcher"
	"github.com/relayq/relay/internal/store"
	"github.com/relayq/relay/lease"
	"github.com/relayq/relay/relaytest"
)

// The batch statements on the outcome and keep-alive paths reach the jobs by primary key
// in every plan PostgreSQL may pick for them: custom plans made for a large batch, and
// the generic plan a prepared statement settles on, even with statistics taken while
// nothing ran. Plans that started from the client's running jobs (through the lease
// index) rescanned the batch for each one, and plans that hashed a scan of the whole
// table cost more per job the more jobs the table holds.
func TestBatchStatementsReachJobsByPrimaryKey(t *testing.T) {
	t.Parallel()
	const backlog, batch = 40_000, 2_000
	db, s := newStoreTest(t)
	ctx := context.Background()
	enqueueJobs(t, db, backlog)
	// Statistics of a table in which nothing runs and no client has claimed anything.
	if _, err := db.Exec(ctx, "ANALYZE "+s.Table("jobs")); err != nil {
		t.Fatal(err)
	}
	const client = planClientID
	info := planClient(relay.DefaultQueue)
	c, err := s.Client(db, info).Claim(ctx, dispatcher.ClaimRequest{Queue: relay.DefaultQueue, Limit: batch})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Jobs) != batch {
		t.Fatalf("claimed %d jobs, want %d", len(c.Jobs), batch)
	}
	outcomes := make([]store.Outcome, len(c.Jobs))
	held := make([]lease.Held, len(c.Jobs))
	for i, j := range c.Jobs {
		outcomes[i] = store.Outcome{ID: j.ID, Attempt: j.Attempt, State: "succeeded", EndedAt: time.Now()}
		held[i] = lease.Held{ID: j.ID, Attempt: j.Attempt}
	}
	outcomeSQL, outcomeArgs := s.WriteOutcomesStatement(client, outcomes)
	renewSQL, renewArgs := s.RenewLeasesStatement(info, held, time.Minute)
	ackSQL, ackArgs := s.AckHandOffsStatement(client, held, time.Minute)

	for _, st := range []struct {
		name   string
		before string // as the client sends it
		sql    string
		args   []any
	}{
		{"writeOutcomes", s.GenericPlanStatement(), outcomeSQL, outcomeArgs},
		{"renewLeases", s.GenericPlanStatement(), renewSQL, renewArgs},
		{"writeOutcomes alone", "", outcomeSQL, outcomeArgs},
		{"renewLeases alone", "", renewSQL, renewArgs},
		{"ackHandOffs", s.GenericPlanStatement(), ackSQL, ackArgs},
		{"ackHandOffs alone", "", ackSQL, ackArgs},
	} {
		for _, mode := range planModes {
			t.Run(st.name+"/"+mode, func(t *testing.T) {
				plan := explainAfter(t, db, mode, "FORMAT JSON", st.before, st.sql, st.args)
				checkReachesJobsByPrimaryKey(t, plan, "jobs_pkey")
			})
		}
	}
}

// A claim takes the jobs it picked through their primary key, in every plan, behind a
// large analyzed backlog: the planner cannot know how few jobs a claim picks (its LIMIT is
// an expression) and guesses a tenth of those due, so a join of the picked jobs with the
// table was planned as a merge join that reads the whole primary key (8-12 ms per claim of
// 100 behind 50,000 jobs), or a hash of a scan of the table (about 100 ms behind 300,000,
// in a drain of the bench). The old join fails three of the four plans here.
func TestClaimsReachJobsByPrimaryKeyBehindAHugeBacklog(t *testing.T) {
	t.Parallel()
	const backlog = 300_000
	db, s := newStoreTest(t)
	ctx := context.Background()
	// Inserted in one statement, the quick way: the claims' plans depend on the table's
	// statistics, not on how its rows came.
	if _, err := db.Exec(ctx, "INSERT INTO "+s.Table("jobs")+" (kind, queue, args, max_attempts) "+
		"SELECT 'job', $1, '{}', 1 FROM generate_series(1, $2::integer)", relay.DefaultQueue, backlog); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, "ANALYZE "+s.Table("jobs")); err != nil {
		t.Fatal(err)
	}
	info := planClient(relay.DefaultQueue)
	c := s.Client(db, info)
	for _, gated := range []bool{false, true} {
		sql, args := c.ClaimStatement(dispatcher.ClaimRequest{Queue: relay.DefaultQueue, Limit: 100, Gated: gated})
		for _, mode := range planModes {
			t.Run(fmt.Sprintf("gated=%v/%s", gated, mode), func(t *testing.T) {
				plan := explainClaim(t, db, s, mode, sql, args)
				// The claims find the due jobs through the claim index (and an ordered
				// queue's through the key index), and take them by their row's address.
				// The gated claim's pass for strays, made only for a while after a change of
				// the queue's settings and then once a second, scans the queue's unfinished
				// jobs however it is planned (see claimGated): it is left out.
				var paid []map[string]any
				for _, n := range plan {
					if n[withinKey] != "CTE strays" {
						paid = append(paid, n)
					}
				}
				checkTakesJobsByAddress(t, paid)
			})
		}
	}

	// A prepared claim keeps its generic plan behind an analyzed backlog: planned afresh,
	// each claim paid 0.6–0.8 ms of planning. Each claim here is rolled back, so
	// that the next finds the same backlog.
	conn := session(t, db)
	sql, args := c.ClaimStatement(dispatcher.ClaimRequest{Queue: relay.DefaultQueue, Limit: 100})
	for range 8 {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rows, err := tx.Query(ctx, sql, args...)
		if err == nil {
			rows.Close()
			err = rows.Err()
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
	generic, custom := mustPreparedPlans(t, conn, sql)
	if generic == 0 {
		t.Errorf("8 claims were planned %d times for their values and never used the generic plan", custom)
	}
}

// A client that starts on an empty table plans its claims there, and a prepared statement
// keeps the generic plan it made then: with a sequential scan to take the claimed jobs,
// which a burst of jobs then made 22 ms a claim of 100 behind 50,000 jobs (1.5 ms planned
// on the backlog), until autovacuum next analyzed the table. The claims are planned without
// sequential scans (genericPlan, lockQueue): this counts the scans of jobs that a claim made
// after a burst, with plans made before it.
func TestClaimsPlannedOnAnEmptyTableStayCheapAfterABurst(t *testing.T) {
	t.Parallel()
	db, s := newStoreTest(t)
	ctx := context.Background()
	if _, err := db.Exec(ctx, "INSERT INTO "+s.Table("queues")+" (name, global_limit) VALUES ('limited', 1000)"); err != nil {
		t.Fatal(err)
	}
	conn := session(t, db)
	info := planClient(relay.DefaultQueue, "limited")
	requests := []dispatcher.ClaimRequest{{Queue: relay.DefaultQueue, Limit: 100}, {Queue: "limited", Limit: 100, Gated: true}}
	for _, r := range requests {
		for range 8 { // the generic plan, made on the empty table
			if _, err := s.Client(conn, info).Claim(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, queue := range info.Queues {
		if _, err := db.Exec(ctx, "INSERT INTO "+s.Table("jobs")+" (kind, queue, args, max_attempts) "+
			"SELECT 'job', $1, '{}', 1 FROM generate_series(1, 20000)", queue); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range requests {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		claimed, err := s.Client(tx, info).Claim(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		var scans, read int64
		if err := tx.QueryRow(ctx, "SELECT seq_scan, seq_tup_read FROM pg_stat_xact_user_tables WHERE relid = $1::regclass",
			s.Table("jobs")).Scan(&scans, &read); err != nil {
			t.Fatal(err)
		}
		if len(claimed.Jobs) != r.Limit || scans != 0 {
			t.Errorf("a claim of %q after the burst took %d jobs and scanned the whole table %d times (%d rows read); want %d jobs, no scan",
				r.Queue, len(claimed.Jobs), scans, read, r.Limit)
		}
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

// Claims, outcome batches and lease renewals keep the generic plan they make at their first
// run on a connection, on whatever table there is then: made on a table of a few jobs,
// none must read the whole table once it holds thousands.
func TestBatchStatementsPlannedOnASmallTableStayCheapAfterABurst(t *testing.T) {
	t.Parallel()
	db, s := newStoreTest(t)
	ctx := context.Background()
	conn := session(t, db)
	info := planClient(relay.DefaultQueue)
	// work claims n jobs, renews their leases ticks times, and writes their outcomes.
	work := func(db store.ClientDB, n, ticks int) {
		t.Helper()
		c := s.Client(db, info)
		claimed, err := c.Claim(ctx, dispatcher.ClaimRequest{Queue: relay.DefaultQueue, Limit: n})
		if err != nil {
			t.Fatal(err)
		}
		outcomes := make([]store.Outcome, len(claimed.Jobs))
		held := make([]lease.Held, len(claimed.Jobs))
		for k, j := range claimed.Jobs {
			outcomes[k] = store.Outcome{ID: j.ID, Attempt: j.Attempt, State: "succeeded", EndedAt: time.Now()}
			held[k] = lease.Held{ID: j.ID, Attempt: j.Attempt}
		}
		for range ticks {
			if _, err := c.Renew(ctx, held, time.Minute); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := s.WriteOutcomes(ctx, db, planClientID, outcomes); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := relay.Enqueue(ctx, db, relay.NewKind[int]("job"), 1, relay.Schema(db.Schema)); err != nil {
		t.Fatal(err)
	}
	work(conn, 1, 10) // the plans are made with one job in the table
	if _, err := db.Exec(ctx, "INSERT INTO "+s.Table("jobs")+" (kind, queue, args, max_attempts) "+
		"SELECT 'job', $1, '{}', 1 FROM generate_series(1, 20000)", relay.DefaultQueue); err != nil {
		t.Fatal(err)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	work(tx, 10, 1)
	var scans, read int64
	if err := tx.QueryRow(ctx, "SELECT seq_scan, seq_tup_read FROM pg_stat_xact_user_tables WHERE relid = $1::regclass",
		s.Table("jobs")).Scan(&scans, &read); err != nil {
		t.Fatal(err)
	}
	if scans != 0 {
		t.Errorf("a claim, a renewal and an outcome batch after the burst scanned the whole table %d times (%d rows read); want none", scans, read)
	}
}

// The statements that find jobs by key, some in the caller's transaction (CompleteTx, a
// checkpoint, an output, the read of how an attempt ended, GetJob, Cancel, Retry,
// DeleteJob, unique enqueues, a reservation's extension and commit) run with their generic
// plan from the first run on a connection, made from the table's size then: made on a
// table of a few jobs, they must still reach their jobs by an index once it holds
// thousands, and leave the caller's transaction with its own settings.
func TestPerJobStatementsPlannedOnASmallTableStayCheapAfterABurst(t *testing.T) {
	t.Parallel()
	const runs = 8 // more than the five custom plans PostgreSQL makes before it weighs the generic one
	db, s := newStoreTest(t)
	ctx := context.Background()
	conn := session(t, db)
	info := planClient(relay.DefaultQueue)
	keys := 0
	unique := func() store.NewJob {
		keys++
		return store.NewJob{Kind: "job", Queue: "other", Args: []byte("{}"), UniqueKey: fmt.Sprint("key-", keys),
			UniqueIn: []string{"pending", "running"}}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// each claims n jobs, and runs the per-job statements once for each, on on.
	each := func(on store.DB, n int) {
		t.Helper()
		claimed, err := s.Client(db, info).Claim(ctx, dispatcher.ClaimRequest{Queue: relay.DefaultQueue, Limit: n})
		must(err)
		if len(claimed.Jobs) != n {
			t.Fatalf("claimed %d jobs, want %d", len(claimed.Jobs), n)
		}
		for _, j := range claimed.Jobs {
			h := store.Holder{ID: j.ID, Client: planClientID, Attempt: j.Attempt, Lease: time.Minute}
			must(s.Checkpoint(ctx, on, h, []byte(`{"step":1}`)))
			must(s.CompleteTx(ctx, on, h, nil))
			must(s.SetOutput(ctx, on, h, []byte(`{"done":true}`)))
			if state, err := s.EndedBy(ctx, on, h); err != nil || state != "succeeded" {
				t.Fatalf("EndedBy = %q, %v; want succeeded", state, err)
			}
			_, err := s.GetJob(ctx, on, j.ID)
			must(err)
			in, err := s.Insert(ctx, on, unique())
			must(err)
			_, _, err = s.Cancel(ctx, on, in.ID)
			must(err)
			_, _, err = s.Retry(ctx, on, in.ID)
			must(err)
			_, err = s.DeleteJob(ctx, on, in.ID)
			must(err)
			_, err = s.InsertMany(ctx, on, []store.NewJob{unique(), unique()})
			must(err)
			held, err := s.Insert(ctx, on, store.NewJob{Kind: "job", Queue: "other", Args: []byte("{}"), Hold: time.Minute})
			must(err)
			_, _, err = s.ExtendReservations(ctx, on, []int64{held.ID}, 2*time.Minute)
			must(err)
			_, _, err = s.CommitJobs(ctx, on, []int64{held.ID})
			must(err)
		}
	}
	// Autovacuum would analyze the table after the burst, and every plan would be made
	// again: the test would show nothing.
	must2 := func(_ any, err error) { t.Helper(); must(err) }
	must2(db.Exec(ctx, "ALTER TABLE "+s.Table("jobs")+" SET (autovacuum_enabled = false)"))
	specs := make([]relay.JobSpec, runs+1)
	for i := range specs {
		specs[i] = relay.NewKind[int]("job").Job(i)
	}
	must2(relay.EnqueueMany(ctx, db, specs, relay.Schema(db.Schema)))
	must2(db.Exec(ctx, "VACUUM ANALYZE "+s.Table("jobs")))
	each(conn, runs) // the plans are made with a few jobs in the table
	must2(db.Exec(ctx, "INSERT INTO "+s.Table("jobs")+" (kind, queue, args, max_attempts, unique_key) "+
		"SELECT 'job', $1, '{}', 1, 'burst-' || i FROM generate_series(1, 20000) i", relay.DefaultQueue))
	tx, err := conn.Begin(ctx)
	must(err)
	defer tx.Rollback(ctx)
	// The view counts this backend's scans that are not yet reported, earlier transactions'
	// included: what this one adds is the difference.
	scansNow := func() (scans, read int64) {
		t.Helper()
		must(tx.QueryRow(ctx, "SELECT seq_scan, seq_tup_read FROM pg_stat_xact_user_tables WHERE relid = $1::regclass",
			s.Table("jobs")).Scan(&scans, &read))
		return scans, read
	}
	// settings fails t unless the caller's transaction has seqscan, jit and plan_cache_mode
	// as it set them.
	settings := func(want ...string) {
		t.Helper()
		names := []string{"enable_seqscan", "jit", "plan_cache_mode"}
		if got := currentSettings(t, tx, names...); !slices.Equal(got, want) {
			t.Errorf("after the statements, the caller's transaction has %v = %v; want %v, as it had them", names, got, want)
		}
	}
	must2(tx.Exec(ctx, "SET LOCAL jit = off")) // the caller's own, which the statements must give back
	scans0, read0 := scansNow()
	each(tx, 1)
	if scans, read := scansNow(); scans != scans0 {
		t.Errorf("the per-job statements of one job, after the burst, scanned the whole table %d times (%d rows read); want none",
			scans-scans0, read-read0)
	}
	settings("on", "off", "auto")
	// And the other way round, so that neither a setting left as the statements made it nor
	// one restored to a fixed value passes.
	must2(tx.Exec(ctx, "SET LOCAL enable_seqscan = off; SET LOCAL jit = on; SET LOCAL plan_cache_mode = force_custom_plan"))
	_, err = s.GetJob(ctx, tx, 1)
	if err != nil && !errors.Is(err, store.ErrNoJob) {
		t.Fatal(err)
	}
	settings("off", "on", "force_custom_plan")

	// Each ran with its generic plan from the first run: PostgreSQL's own choice planned some
	// of them (a unique enqueue) afresh at every call, which cost more than running them.
	seen := 0
	for _, sql := range s.ByIndexStatements() {
		generic, custom, ok := preparedPlans(t, tx, sql)
		if !ok {
			continue // not run here (the renewal of a lease held by a handler's transaction)
		}
		seen++
		if custom != 0 {
			t.Errorf("a statement sent between planByIndex and restorePlan was planned for its values %d times (generic plan %d times); want its generic plan every time:\n%s",
				custom, generic, sql)
		}
	}
	if want := len(s.ByIndexStatements()) - 1; seen < want {
		t.Errorf("found %d of the statements sent between planByIndex and restorePlan prepared on the connection; want %d", seen, want)
	}
}

// checkTakesJobsByAddress fails t if a claim's plan scans the whole jobs table or one of
// its indexes, or if it does not take the jobs it claims by their row's address (ctid).
func checkTakesJobsByAddress(t *testing.T, plan []map[string]any) {
	t.Helper()
	checkReachesJobs(t, plan, byAddress, "")
}

// checkReachesJobsByPrimaryKey fails t if plan scans the whole jobs table or one of its
// indexes, or if it does not use jobs_pkey; with only set, jobs_pkey is the one index of
// jobs it may read.
func checkReachesJobsByPrimaryKey(t *testing.T, plan []map[string]any, only string) {
	t.Helper()
	checkReachesJobs(t, plan, "jobs_pkey", only)
}

// byAddress, for checkReachesJobs: the plan reaches jobs by their rows' addresses.
const byAddress = "Tid Scan"

// checkReachesJobs fails t if plan scans the whole jobs table or one of its indexes, or if
// it never reaches jobs by way of by: an index's name, or byAddress. With only set, only is
// the one index of jobs it may read.
func checkReachesJobs(t *testing.T, plan []map[string]any, by, only string) {
	t.Helper()
	var reached bool
	for _, n := range plan {
		switch {
		case n["Relation Name"] == "jobs" && n["Node Type"] == "Seq Scan":
			t.Errorf("the plan scans the whole jobs table:\n%s", describe(plan))
		case n["Relation Name"] == "jobs" && strings.HasPrefix(fmt.Sprint(n["Node Type"]), "Index") && n["Index Cond"] == nil &&
			n["Index Name"] != "jobs_lease_idx": // running jobs only: as many as run at once
			// A merge join, say, reads an index from its start instead of probing it.
			t.Errorf("the plan reads the whole of %v:\n%s", n["Index Name"], describe(plan))
		case only != "" && strings.HasPrefix(fmt.Sprint(n["Index Name"]), "jobs_") && n["Index Name"] != only:
			t.Errorf("the plan reads jobs through %v, not %v:\n%s", n["Index Name"], only, describe(plan))
		case n["Index Name"] == by || (by == byAddress && n["Relation Name"] == "jobs" && n["Node Type"] == byAddress):
			reached = true
		}
	}
	if !reached {
		t.Errorf("the plan does not reach jobs by %s:\n%s", by, describe(plan))
	}
}

// enqueueJobs commits n jobs of kind "job" to db's default queue, in batches of at most
// 5,000 (one EnqueueMany each).
func enqueueJobs(t *testing.T, db *relaytest.DB, n int) {
	t.Helper()
	for n > 0 {
		specs := make([]relay.JobSpec, min(n, 5_000))
		for i := range specs {
			specs[i] = relay.NewKind[int]("job").Job(i)
		}
		if _, err := relay.EnqueueMany(context.Background(), db, specs, relay.Schema(db.Schema)); err != nil {
			t.Fatal(err)
		}
		n -= len(specs)
	}
}

// planClientID is the client the plan tests claim and write outcomes as.
const planClientID = "plans-test"

// planClient is the client the plan tests claim as: it runs jobs of kind "job" of queues.
func planClient(queues ...string) store.ClientInfo {
	return store.ClientInfo{ID: planClientID, Lease: time.Minute, Queues: queues, Kinds: []string{"job"}, Attempts: []int32{1}}
}

// session is a connection of its own on db, closed when t ends: the statements prepared on
// it, and the plans they keep, are its own.
func session(t *testing.T, db *relaytest.DB) *pgx.Conn {
	t.Helper()
	conn, err := pgx.ConnectConfig(context.Background(), db.Config().ConnConfig.Copy())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// planModes are the plans each check looks at: a plan made for the values at hand, and the
// generic one that a prepared statement may keep (and that statements the store plans for
// their values on every call, planEachTime, get too where the server or role sets
// plan_cache_mode = force_generic_plan).
var planModes = []string{"force_custom_plan", "force_generic_plan"}

// withinKey is the key under which explainPrepared notes, in each node of a plan, the name
// of the subplan (CTE, InitPlan) it belongs to.
const withinKey = "(within)"

// explainPrepared prepares sql on a connection of its own whose plan_cache_mode is mode,
// and returns the nodes of the plan chosen for executing it with args, flattened.
func explainPrepared(t *testing.T, db *relaytest.DB, mode, sql string, args []any) []map[string]any {
	t.Helper()
	return explain(t, db, mode, "FORMAT JSON", sql, args)
}

// explainAnalyzed is explainPrepared with the statement run (EXPLAIN ANALYZE) in a
// transaction that is rolled back: each node then holds what it actually read.
func explainAnalyzed(t *testing.T, db *relaytest.DB, mode, sql string, args []any) []map[string]any {
	t.Helper()
	return explain(t, db, mode, "ANALYZE, FORMAT JSON", sql, args)
}

func explain(t *testing.T, db *relaytest.DB, mode, options, sql string, args []any) []map[string]any {
	t.Helper()
	return explainAfter(t, db, mode, options, "", sql, args)
}

// explainClaim is explainPrepared for a claim, planned as the client plans it: after the
// statement sent before it in the same transaction (genericPlan; lockQueue for a gated
// claim, which sets the same).
func explainClaim(t *testing.T, db *relaytest.DB, s *store.Store, mode, sql string, args []any) []map[string]any {
	t.Helper()
	return explainAfter(t, db, mode, "FORMAT JSON", s.GenericPlanStatement(), sql, args)
}

// explainAfter is explain with the statement before, if any, run first in its transaction.
func explainAfter(t *testing.T, db *relaytest.DB, mode, options, before, sql string, args []any) []map[string]any {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.ConnectConfig(ctx, db.Config().ConnConfig.Copy()) // closed at once: explains come many to a test
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, "SET LOCAL plan_cache_mode = "+mode); err != nil {
		t.Fatal(err)
	}
	if before != "" {
		if _, err := tx.Exec(ctx, before); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tx.Exec(ctx, "PREPARE batch_plan AS "+sql); err != nil {
		t.Fatal(err)
	}
	// EXECUTE takes no bind parameters: each argument goes in as a literal of its type.
	var types []string
	if err := tx.QueryRow(ctx, `SELECT array_agg(format_type(t, NULL) ORDER BY n)
		FROM pg_prepared_statements, unnest(parameter_types::oid[]) WITH ORDINALITY AS p(t, n)
		WHERE name = 'batch_plan'`).Scan(&types); err != nil {
		t.Fatal(err)
	}
	if len(types) != len(args) {
		t.Fatalf("the statement takes %d parameters, given %d", len(types), len(args))
	}
	literals := make([]string, len(args))
	for i, arg := range args {
		if err := tx.QueryRow(ctx, "SELECT quote_nullable($1::"+types[i]+")", arg).Scan(&literals[i]); err != nil {
			t.Fatalf("argument %d (%s): %v", i+1, types[i], err)
		}
		literals[i] += "::" + types[i]
	}
	var out []byte
	if err := tx.QueryRow(ctx, "EXPLAIN ("+options+") EXECUTE batch_plan("+strings.Join(literals, ", ")+")").Scan(&out); err != nil {
		t.Fatal(err)
	}
	var doc []struct{ Plan, JIT map[string]any }
	if err := json.Unmarshal(out, &doc); err != nil || len(doc) != 1 {
		t.Fatalf("EXPLAIN returned %s (%v)", out, err)
	}
	// A plan made without sequential scans where a table offers no index costs 10^10 more:
	// compiled by JIT, each run took about 0.5 s.
	if doc[0].JIT != nil && before != "" {
		t.Errorf("after %q, the statement is compiled by JIT at every run (%v); want JIT off", before, doc[0].JIT)
	}
	var nodes []map[string]any
	var walk func(n map[string]any, within any)
	walk = func(n map[string]any, within any) {
		if name, ok := n["Subplan Name"]; ok {
			within = name
		}
		n[withinKey] = within
		nodes = append(nodes, n)
		children, _ := n["Plans"].([]any)
		for _, c := range children {
			walk(c.(map[string]any), within)
		}
	}
	walk(doc[0].Plan, nil)
	return nodes
}

// describe lists a plan's nodes, with the conditions that say how much of an index each
// reads.
func describe(plan []map[string]any) string {
	var b strings.Builder
	for _, n := range plan {
		fmt.Fprintf(&b, "  %v", n["Node Type"])
		for _, k := range []string{"Relation Name", "Index Name", "CTE Name", "Subplan Name", "Index Cond", "Filter", "Merge Cond"} {
			if v, ok := n[k]; ok {
				fmt.Fprintf(&b, " %s=%v", k, v)
			}
		}
		b.WriteString("\n")
	}
	return b.String()
}

// Gated claims (an ordered queue's, a limited one's) keep their generic plan behind an
// analyzed backlog, where PostgreSQL would plan each afresh (1.4–2.2 ms of planning, most
// of a claim): lockQueue, before each, sets plan_cache_mode for it. A claim that looks for
// strays is planned for its values: for a small queue, it then reads the queue's jobs
// through an index, where the generic plan scans the whole table.
func TestGatedClaimsKeepTheirGenericPlanBehindAnAnalyzedBacklog(t *testing.T) {
	t.Parallel()
	db, s := newStoreTest(t)
	ctx := context.Background()
	for _, sql := range []string{
		"INSERT INTO " + s.Table("queues") + " (name, ordered, global_limit) VALUES ('ordered', true, NULL), ('limited', false, 1000)",
		"INSERT INTO " + s.Table("jobs") + " (kind, queue, args, max_attempts, order_key) " +
			"SELECT 'job', 'ordered', '{}', 1, 'key ' || (g % 100) FROM generate_series(1, 100000) g",
		"INSERT INTO " + s.Table("jobs") + " (kind, queue, args, max_attempts) SELECT 'job', 'limited', '{}', 1 FROM generate_series(1, 100000)",
		"INSERT INTO " + s.Table("jobs") + " (kind, queue, args, max_attempts, state, finished_at) " +
			"SELECT 'job', 'done', '{}', 1, 'succeeded', now() FROM generate_series(1, 100000)",
		"ANALYZE " + s.Table("jobs"),
	} {
		if _, err := db.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	conn := session(t, db)
	info := planClient("ordered", "limited")
	c := s.Client(conn, info) // one session: its prepared statement counts its plans
	for _, queue := range info.Queues {
		// The first claim of each queue looks for strays, the next ones (within a second)
		// do not.
		for range 8 {
			claimed, err := c.Claim(ctx, dispatcher.ClaimRequest{Queue: queue, Limit: 5, Gated: true})
			if err != nil {
				t.Fatal(err)
			}
			if len(claimed.Jobs) == 0 {
				t.Fatalf("a claim of %s found no job", queue)
			}
		}
	}
	sql, _ := c.ClaimStatement(dispatcher.ClaimRequest{Gated: true})
	generic, custom := mustPreparedPlans(t, conn, sql)
	if generic < 12 {
		t.Errorf("16 gated claims used the generic plan %d times, and were planned for their values %d times; want at least 12 generic", generic, custom)
	}

	// A small ordered queue among the large ones: a generic plan would look for its
	// strays through every job of the table.
	if _, err := db.Exec(ctx, "INSERT INTO "+s.Table("queues")+" (name, ordered) VALUES ('small', true)"); err != nil {
		t.Fatal(err)
	}
	sql, args := c.StraysClaimStatement(dispatcher.ClaimRequest{Queue: "small", Limit: 5})
	for _, n := range explainPrepared(t, db, "force_custom_plan", sql, args) {
		if n["Relation Name"] == "jobs" && n["Node Type"] == "Seq Scan" {
			t.Errorf("a claim of a small queue that looks for strays scans the whole jobs table (in %v)", n[withinKey])
		}
	}
}

// Outcome batches run with their generic plan, whatever their size: PostgreSQL's own
// choice planned a batch of one outcome afresh every time (its generic plan's estimate is
// the higher), which doubled what each cost the database, and a client whose jobs take a
// while writes its outcomes one or two at a time.
func TestOutcomeBatchesKeepTheirGenericPlan(t *testing.T) {
	t.Parallel()
	db, s := newStoreTest(t)
	ctx := context.Background()
	enqueueJobs(t, db, 2_000)
	conn := session(t, db)
	const client = planClientID
	info := planClient(relay.DefaultQueue)
	c := s.Client(conn, info) // one session: its prepared statement counts its plans
	const batches = 12
	for i := range batches {
		size := 1 + i%3*100 // batches of 1, 101 and 201 outcomes
		claimed, err := c.Claim(ctx, dispatcher.ClaimRequest{Queue: relay.DefaultQueue, Limit: size})
		if err != nil {
			t.Fatal(err)
		}
		outcomes := make([]store.Outcome, len(claimed.Jobs))
		for k, j := range claimed.Jobs {
			outcomes[k] = store.Outcome{ID: j.ID, Attempt: j.Attempt, State: "succeeded", EndedAt: time.Now()}
		}
		skipped, err := s.WriteOutcomes(ctx, conn, client, outcomes)
		if err != nil || len(skipped) > 0 {
			t.Fatalf("writing %d outcomes: %d left out, %v", len(outcomes), len(skipped), err)
		}
	}
	sql, _ := s.WriteOutcomesStatement(client, nil)
	generic, custom := mustPreparedPlans(t, conn, sql)
	if generic != batches || custom != 0 {
		t.Errorf("%d outcome batches used the generic plan %d times, and were planned for their values %d times; want the generic plan each time",
			batches, generic, custom)
	}
	// Nothing of the setting outlives the batch.
	var mode string
	if err := conn.QueryRow(ctx, "SHOW plan_cache_mode").Scan(&mode); err != nil || mode != "auto" {
		t.Errorf("after the batches plan_cache_mode is %q (%v); want auto", mode, err)
	}
}

// Claims, lease renewals and acknowledgements of hand-offs run their generic plan from
// their first run on a connection. PostgreSQL's own choice planned every renewal afresh,
// and the first five claims on every connection: 3.1, 1.1, 1.0, 0.9 and 0.9 ms for the
// second to sixth claim on a fresh one, against 0.2–0.4 ms, paid on every connection at
// once when a database comes back after an outage and the pools connect again. It planned
// a quarter of the acknowledgements afresh (0.24 ms each) in the latency workload.
func TestClaimsRenewalsAndAcknowledgementsRunTheirGenericPlanFromTheFirst(t *testing.T) {
	t.Parallel()
	db, s := newStoreTest(t)
	ctx := context.Background()
	enqueueJobs(t, db, 1_000)
	if _, err := db.Exec(ctx, "ANALYZE "+s.Table("jobs")); err != nil {
		t.Fatal(err)
	}
	conn := session(t, db)
	info := planClient(relay.DefaultQueue)
	c := s.Client(conn, info) // one session: its prepared statements count their plans
	const runs = 3
	var held []lease.Held
	for range runs {
		claimed, err := c.Claim(ctx, dispatcher.ClaimRequest{Queue: relay.DefaultQueue, Limit: 10})
		if err != nil || len(claimed.Jobs) != 10 {
			t.Fatalf("a claim took %d jobs (%v); want 10", len(claimed.Jobs), err)
		}
		for _, j := range claimed.Jobs {
			held = append(held, lease.Held{ID: j.ID, Attempt: j.Attempt})
		}
		if _, err := c.Renew(ctx, held, time.Minute); err != nil {
			t.Fatal(err)
		}
		// Jobs a claim leased are no hand-offs, and are left as they are: the statement
		// runs all the same.
		if err := c.AckHandOffs(ctx, claimed.Jobs, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	claimSQL, _ := c.ClaimStatement(dispatcher.ClaimRequest{Queue: relay.DefaultQueue})
	renewSQL, _ := s.RenewLeasesStatement(info, held, time.Minute)
	ackSQL, _ := s.AckHandOffsStatement(info.ID, held, time.Minute)
	for name, sql := range map[string]string{"claims": claimSQL, "renewals": renewSQL, "acknowledgements": ackSQL} {
		if generic, custom := mustPreparedPlans(t, conn, sql); generic != runs || custom != 0 {
			t.Errorf("%d %s used the generic plan %d times, and were planned for their values %d times; want the generic plan each time",
				runs, name, generic, custom)
		}
	}
	// Nothing of the setting outlives the batch.
	if got := currentSettings(t, conn, "plan_cache_mode", "enable_seqscan", "jit"); !slices.Equal(got, []string{"auto", "on", "on"}) {
		t.Errorf("after the claims, renewals and acknowledgements plan_cache_mode, enable_seqscan and jit are %q; want auto, on, on", got)
	}
}

// An ordered queue's claim reads only its keys' own entries: per key, the head, and a probe
// each for a running job and for a blocker before the head. Written as NOT EXISTS, those
// probes became anti-joins that read every failed job the queue had kept (its failures
// before retention prunes them: 28 ms a claim behind 200,000) and, on a table never
// analyzed, the whole of the queue's backlog (32 ms behind 300,000), in every plan. The
// first fails this test.
func TestOrderedClaimsReadOnlyTheirKeysEntries(t *testing.T) {
	t.Parallel()
	const keys, perKey, failed = 100, 1_000, 100_000
	db, s := newStoreTest(t)
	ctx := context.Background()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := db.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	exec("INSERT INTO " + s.Table("queues") + " (name, ordered, updated_at) VALUES ('ordered', true, now() - interval '1 hour')")
	exec("INSERT INTO "+s.Table("jobs")+" (kind, queue, args, max_attempts, order_key) "+
		"SELECT 'job', 'ordered', '{}', 1, 'key ' || (g % $1) FROM generate_series(1, $2::integer) g", keys, keys*perKey)
	c := s.Client(db, planClient("ordered"))
	sql, args := c.ClaimStatement(dispatcher.ClaimRequest{Queue: "ordered", Limit: 5, Gated: true})
	check := func(table string) {
		t.Helper()
		for _, mode := range planModes {
			plan := explainAnalyzed(t, db, mode, sql, args)
			if read := rowsReadFromJobs(plan); read > 50*keys {
				t.Errorf("%s, %s: a claim of %d keys read %.0f rows of jobs, more than 50 a key:\n%s", table, mode, keys, read, describe(plan))
			}
		}
	}
	check("never analyzed")

	// Failures the queue keeps until retention prunes them: not blocking (the queue moved
	// on, or they were retried), and so not the claim's business.
	exec("INSERT INTO "+s.Table("jobs")+" (kind, queue, args, max_attempts, order_key, state, attempt, finished_at) "+
		"SELECT 'job', 'ordered', '{}', 1, 'key ' || (g % $1), 'failed', 1, now() FROM generate_series(1, $2::integer) g", keys, failed)
	exec("ANALYZE " + s.Table("jobs"))
	check("analyzed, with failed jobs kept")
}

// rowsReadFromJobs is how many rows the nodes of an analyzed plan read from the jobs table
// (or its indexes): those they returned and those their filters removed, over all loops.
func rowsReadFromJobs(plan []map[string]any) float64 {
	var read float64
	for _, n := range plan {
		if n["Relation Name"] != "jobs" || !strings.Contains(fmt.Sprint(n["Node Type"]), "Scan") {
			continue
		}
		num := func(k string) float64 { f, _ := n[k].(float64); return f }
		read += (num("Actual Rows") + num("Rows Removed by Filter") + num("Rows Removed by Index Recheck")) * num("Actual Loops")
	}
	return read
}

// Blocked keys are counted and listed from their own small index (jobs_blocked_idx),
// behind an ordered backlog of any depth: the dashboard's queues (which every open
// overview reads every few seconds), GetQueue and BlockedKeys. Through jobs_order_idx,
// which holds every unfinished job with a key, each walked the queue's whole backlog.
// (The dashboard's other parts read the due jobs and those of the last hour, which here
// are the backlog: only its CTE "blocked" is looked at.)
func TestBlockedKeysAreReadFromTheirOwnIndex(t *testing.T) {
	t.Parallel()
	const backlog, keys, blocked = 100_000, 100, 5
	db, s := newStoreTest(t)
	ctx := context.Background()
	for _, sql := range []string{
		"INSERT INTO " + s.Table("queues") + " (name, ordered) VALUES ('ordered', true)",
		fmt.Sprintf("INSERT INTO %s (kind, queue, args, order_key) SELECT 'job', 'ordered', '{}', 'key ' || (g %% %d) FROM generate_series(1, %d) g",
			s.Table("jobs"), keys, backlog),
		fmt.Sprintf("INSERT INTO %s (kind, queue, args, order_key, state, attempt, finished_at, blocking) "+
			"SELECT 'job', 'ordered', '{}', 'key ' || g, 'failed', 1, now(), true FROM generate_series(1, %d) g", s.Table("jobs"), blocked),
		"ANALYZE " + s.Table("jobs"),
	} {
		if _, err := db.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name   string
		within string // the part of the plan looked at; "": all of it
		call   func(ctx context.Context, rec *recorder) (blocked int, err error)
	}{
		{"DashboardQueues, every queue", "CTE blocked", func(ctx context.Context, rec *recorder) (int, error) {
			qs, err := s.DashboardQueues(ctx, rec, "", time.Hour, 1000)
			if len(qs) != 1 {
				return 0, err
			}
			return int(qs[0].Blocked), err
		}},
		{"DashboardQueues, one queue", "CTE blocked", func(ctx context.Context, rec *recorder) (int, error) {
			qs, err := s.DashboardQueues(ctx, rec, "ordered", time.Hour, 1000)
			if len(qs) != 1 {
				return 0, err
			}
			return int(qs[0].Blocked), err
		}},
		{"GetQueue", "", func(ctx context.Context, rec *recorder) (int, error) {
			q, err := s.GetQueue(ctx, rec, "ordered")
			return int(q.Blocked), err
		}},
		{"BlockedKeys", "", func(ctx context.Context, rec *recorder) (int, error) {
			ks, err := s.BlockedKeys(ctx, rec, "ordered", 100)
			return len(ks), err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var n int
			st, _ := runRecorded(t, db, func(ctx context.Context, rec *recorder) error {
				var err error
				n, err = c.call(ctx, rec)
				return err
			})
			if n != blocked {
				t.Errorf("found %d blocked, want %d", n, blocked)
			}
			for _, mode := range planModes {
				plan := explainAnalyzed(t, db, mode, st.sql, st.args)
				if c.within != "" {
					plan = slices.DeleteFunc(plan, func(n map[string]any) bool { return n[withinKey] != c.within })
					if len(plan) == 0 {
						t.Fatalf("the plan has no %s", c.within)
					}
				}
				// BlockedKeys also counts the jobs waiting behind each key: a probe of the
				// key's pending jobs each, which it returns, up to 1,000 a key here.
				if read := rowsReadFromJobs(plan); read > blocked*(backlog/keys+10) {
					t.Errorf("%s: read %.0f rows of jobs to find %d blocked jobs:\n%s", mode, read, blocked, describe(plan))
				}
			}
		})
	}
}

// preparedPlans reads how many times the statement sql, prepared on q's session, ran with
// its generic plan and how many times it was planned for its values; ok is false if it is
// not prepared there.
func preparedPlans(t *testing.T, q store.DB, sql string) (generic, custom int64, ok bool) {
	t.Helper()
	err := q.QueryRow(context.Background(), "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1", sql).
		Scan(&generic, &custom)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, false
	}
	if err != nil {
		t.Fatal(err)
	}
	return generic, custom, true
}

// mustPreparedPlans is preparedPlans of a statement that must be prepared on q's session.
func mustPreparedPlans(t *testing.T, q store.DB, sql string) (generic, custom int64) {
	t.Helper()
	generic, custom, ok := preparedPlans(t, q, sql)
	if !ok {
		t.Fatalf("the statement is not prepared on the session:\n%s", sql)
	}
	return generic, custom
}

// currentSettings are the values of the named settings in q's session, or in its
// transaction if q is one.
func currentSettings(t *testing.T, q store.DB, names ...string) []string {
	t.Helper()
	var values []string
	if err := q.QueryRow(context.Background(),
		"SELECT array_agg(current_setting(n) ORDER BY i) FROM unnest($1::text[]) WITH ORDINALITY AS s(n, i)", names).
		Scan(&values); err != nil {
		t.Fatal(err)
	}
	return values
}
