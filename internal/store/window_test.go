package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// The dashboard's charts and its queues' recent figures start from the newest job created
// before their window ({windowStart}), found by halving the range of ids. Walking the
// primary key back from the newest job read every job of the window instead: at 1,000
// jobs a second, millions at every refresh of an open dashboard. It must find the same id
// as that walk, reading a few dozen rows whatever the window holds.
func TestDashboardWindowStartHalvesTheIds(t *testing.T) {
	t.Parallel()
	const recent, older = 50_000, 1_000
	db, s := newStoreTest(t)
	ctx := context.Background()
	st := s.WindowStartStatement()
	walk := "SELECT coalesce((SELECT id FROM " + s.Table("jobs") +
		" WHERE created_at < now() - $1::float8 * interval '1 second' ORDER BY id DESC LIMIT 1), 0)"
	check := func(when string, lookBack float64, maxRead float64) {
		t.Helper()
		var got, want int64
		if err := db.QueryRow(ctx, st, lookBack).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow(ctx, walk, lookBack).Scan(&want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s, look-back %.0f s: window starts at id %d, want %d", when, lookBack, got, want)
		}
		for _, mode := range planModes {
			plan := explainAnalyzed(t, db, mode, st, []any{lookBack})
			if read := rowsReadFromJobs(plan); read > maxRead {
				t.Errorf("%s, %s: read %.0f rows of jobs to find where the window starts; want at most %.0f:\n%s",
					when, mode, read, maxRead, describe(plan))
			}
		}
	}
	check("no jobs", 3600, 0)
	for _, sql := range []string{
		fmt.Sprintf("INSERT INTO %s (kind, queue, args, created_at) SELECT 'job', 'q', '{}', now() - interval '3 hours' "+
			"FROM generate_series(1, %d)", s.Table("jobs"), older),
		// Ten minutes old, not now: a look-back of a minute must find none of them however
		// slowly the test runs.
		fmt.Sprintf("INSERT INTO %s (kind, queue, args, created_at) SELECT 'job', 'q', '{}', now() - interval '10 minutes' "+
			"FROM generate_series(1, %d)", s.Table("jobs"), recent),
		// Some gaps, as deletions and pruning leave them.
		fmt.Sprintf("DELETE FROM %s WHERE id %% 7 = 0 OR id BETWEEN %d AND %d", s.Table("jobs"), older-100, older+100),
		"VACUUM ANALYZE " + s.Table("jobs"),
	} {
		if _, err := db.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	const probes = 100 // about two rows read per halving of 51,000 ids, and the newest id
	check("an hour's look-back", 3600, probes)
	check("every job in the look-back", 4*3600, probes)
	check("no job in the look-back", 60, probes)
}

// A chart reads, for each finished state, the newest of the queue's jobs in its window
// from jobs_finished_idx, at most its cap of them. Behind a window of 50,000 jobs that
// all succeeded (so that failed and cancelled ones are not in the statistics at all), the
// ranges of failed and cancelled jobs are empty, and must be found so: looked for by
// walking the primary key through the window, each read all 50,000.
func TestThroughputChartReadsEachStateFromItsOwnRange(t *testing.T) {
	t.Parallel()
	const recent, perState = 50_000, 100
	db, s := newStoreTest(t)
	ctx := context.Background()
	for _, sql := range []string{
		fmt.Sprintf("INSERT INTO %s (kind, queue, args, state, attempt, max_attempts, attempted_at, finished_at, created_at) "+
			"SELECT 'job', 'q', '{}', 'succeeded', 1, 1, now() - interval '3 hours', now() - interval '3 hours', now() - interval '3 hours' "+
			"FROM generate_series(1, 1000)", s.Table("jobs")),
		fmt.Sprintf("INSERT INTO %s (kind, queue, args, state, attempt, max_attempts, attempted_at, finished_at) "+
			"SELECT 'job', 'q', '{}', 'succeeded', 1, 1, now(), now() FROM generate_series(1, %d)", s.Table("jobs"), recent),
		"ANALYZE " + s.Table("jobs"),
	} {
		if _, err := db.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	var succeeded int64
	st, _ := runRecorded(t, db, func(ctx context.Context, rec *recorder) error {
		buckets, err := s.Throughput(ctx, rec, "q", time.Hour, time.Minute, perState)
		for _, b := range buckets {
			succeeded += b.Succeeded
		}
		return err
	})
	if succeeded != perState {
		t.Errorf("the chart counted %d succeeded jobs; want %d, its cap", succeeded, perState)
	}
	for _, mode := range planModes {
		plan := explainAnalyzed(t, db, mode, st.sql, st.args)
		if read := rowsReadFromJobs(plan); read > 3*perState {
			t.Errorf("%s: read %.0f rows of jobs for a chart of at most %d a state:\n%s", mode, read, perState, describe(plan))
		}
	}
}

// The overview shows each queue's oldest due job. It is found from the first entry of each
// (queue, priority) group of the claim index, not from a pass over every due job: behind
// 100,000 due jobs, the statement must read a few rows per group, and find the same
// oldest job per queue as that pass, a queue whose most urgent jobs are not yet due and
// one with only scheduled jobs (none due) among them.
func TestOverviewFindsOldestDueJobsWithoutReadingTheBacklog(t *testing.T) {
	t.Parallel()
	db, s := newStoreTest(t)
	ctx := context.Background()
	for _, sql := range []string{
		// a: due jobs at priority 0; its priority 5 jobs are scheduled.
		"INSERT INTO %[1]s (kind, queue, args, priority, run_at) SELECT 'job', 'a', '{}', 0, now() - g * interval '1 second' FROM generate_series(1, 40000) g",
		"INSERT INTO %[1]s (kind, queue, args, priority, run_at) SELECT 'job', 'a', '{}', 5, now() + interval '1 hour' FROM generate_series(1, 100) g",
		// b: only scheduled jobs.
		"INSERT INTO %[1]s (kind, queue, args, run_at) SELECT 'job', 'b', '{}', now() + g * interval '1 minute' FROM generate_series(1, 100) g",
		// c: due jobs at three priorities, the oldest at the lowest.
		"INSERT INTO %[1]s (kind, queue, args, priority, run_at) SELECT 'job', 'c', '{}', g %% 3, now() - (g %% 3) * interval '1 hour' - g * interval '1 ms' FROM generate_series(1, 60000) g",
		"ANALYZE %[1]s",
	} {
		if _, err := db.Exec(ctx, fmt.Sprintf(sql, s.Table("jobs"))); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]time.Time{}
	rows, err := db.Query(ctx, "SELECT queue, min(run_at) FROM "+s.Table("jobs")+" WHERE state = 'pending' AND run_at <= now() GROUP BY queue")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var q string
		var at time.Time
		if err := rows.Scan(&q, &at); err != nil {
			t.Fatal(err)
		}
		want[q] = at
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	st, _ := runRecorded(t, db, func(ctx context.Context, rec *recorder) error {
		qs, err := s.DashboardQueues(ctx, rec, "", time.Hour, 10)
		got := map[string]time.Time{}
		for _, q := range qs {
			got[q.Name] = q.OldestDue
		}
		for _, q := range []string{"a", "b", "c"} {
			if !got[q].Equal(want[q]) {
				t.Errorf("queue %s: oldest due job at %v, want %v", q, got[q], want[q])
			}
		}
		return err
	})
	for _, mode := range planModes {
		plan := explainAnalyzed(t, db, mode, st.sql, st.args)
		if read := rowsReadFromJobs(plan); read > 200 {
			t.Errorf("%s: read %.0f rows of jobs for the overview of 3 queues behind 100,000 due jobs:\n%s", mode, read, describe(plan))
		}
	}
}
