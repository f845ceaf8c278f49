package store_test

import (
	"context"
	"fmt"
	"testing"
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
		fmt.Sprintf("INSERT INTO %s (kind, queue, args) SELECT 'job', 'q', '{}' FROM generate_series(1, %d)", s.Table("jobs"), recent),
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
	check("no job in the look-back", 1, probes)
}
