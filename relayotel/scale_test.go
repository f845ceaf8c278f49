package relayotel_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// TestQueueDepthsAtScale measures what the depth gauges cost the database with many
// finished jobs: RELAY_SCALE_JOBS=10000000 go test ./relayotel -run TestQueueDepthsAtScale
// -v -timeout 60m generates that many finished jobs over 50 queues (and 20,000 pending,
// 200 running), reads relay.QueueDepths five times, and runs its statement under EXPLAIN
// (ANALYZE): it fails if the statement reads jobs sequentially or visits finished jobs.
func TestQueueDepthsAtScale(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("RELAY_SCALE_JOBS"))
	if n <= 0 {
		t.Skip("set RELAY_SCALE_JOBS to the number of finished jobs to generate")
	}
	db := relaytest.NewDB(t)
	ctx := context.Background()
	for _, sql := range []string{
		fmt.Sprintf(`INSERT INTO relay.jobs (kind, queue, args, state, attempt, max_attempts, created_at, run_at, attempted_at, finished_at)
		SELECT 'k' || (i %% 20), 'q' || (i %% 50), '{}', CASE WHEN i %% 10 = 0 THEN 'failed' ELSE 'succeeded' END, 1, 20, c, c, c, c
		FROM generate_series(1, %d) i, LATERAL (SELECT now() - interval '30 days' * random() AS c) t`, n),
		`INSERT INTO relay.jobs (kind, queue, args, run_at)
		SELECT 'k' || (i % 20), 'q' || (i % 50), '{}', now() + CASE WHEN i % 4 = 0 THEN interval '1 hour' ELSE -interval '1 minute' END
		FROM generate_series(1, 20000) i`,
		`INSERT INTO relay.jobs (kind, queue, args, state, attempt, attempted_at, attempted_by, lease_expires_at)
		SELECT 'k1', 'q' || (i % 50), '{}', 'running', 1, now(), 'worker', now() + interval '15 s' FROM generate_series(1, 200) i`,
		`VACUUM ANALYZE relay.jobs`,
	} {
		t0 := time.Now()
		if _, err := db.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
		t.Logf("%v: %.60s", time.Since(t0).Round(time.Millisecond), strings.Join(strings.Fields(sql), " "))
	}

	cfg, err := pgxpool.ParseConfig(db.URL)
	if err != nil {
		t.Fatal(err)
	}
	rec := &sqlRecorder{}
	cfg.ConnConfig.Tracer = rec
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var times []time.Duration
	var depths map[string]relay.QueueDepth
	for range 5 {
		t0 := time.Now()
		if depths, err = relay.QueueDepths(ctx, pool); err != nil {
			t.Fatal(err)
		}
		times = append(times, time.Since(t0))
	}
	slices.Sort(times)
	var pending, scheduled, running int64
	for _, d := range depths {
		pending, scheduled, running = pending+d.Pending, scheduled+d.Scheduled, running+d.Running
	}
	if len(depths) != 50 || pending != 15000 || scheduled != 5000 || running != 200 {
		t.Errorf("depths of %d queues: %d pending, %d scheduled, %d running; want 50, 15000, 5000, 200", len(depths), pending, scheduled, running)
	}

	var plan []map[string]any
	if err := db.QueryRow(ctx, "EXPLAIN (ANALYZE, FORMAT JSON) "+rec.last()).Scan(&plan); err != nil {
		t.Fatal(err)
	}
	root := plan[0]["Plan"].(map[string]any)
	var nodes []string
	walk(root, func(node map[string]any) {
		desc := fmt.Sprint(node["Node Type"], " ", node["Index Name"], " rows=", node["Actual Rows"])
		nodes = append(nodes, desc)
		if node["Node Type"] == "Seq Scan" && node["Relation Name"] == "jobs" {
			t.Errorf("the depth statement reads jobs sequentially: %s", desc)
		}
	})
	text, _ := json.Marshal(nodes)
	t.Logf("%d finished jobs: relay.QueueDepths %v (median of 5, from the client); server %.2f ms (EXPLAIN ANALYZE); plan %s",
		n, times[2].Round(10*time.Microsecond), plan[0]["Execution Time"], text)
}

func walk(node map[string]any, fn func(map[string]any)) {
	fn(node)
	children, _ := node["Plans"].([]any)
	for _, c := range children {
		walk(c.(map[string]any), fn)
	}
}

// sqlRecorder is a pgx tracer that remembers the last statement sent.
type sqlRecorder struct {
	mu  sync.Mutex
	sql string
}

func (r *sqlRecorder) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sql = data.SQL
	return ctx
}

func (r *sqlRecorder) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

// QueueDepths is sent in a batch, between two statements that only set how it is planned.
func (r *sqlRecorder) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

func (r *sqlRecorder) TraceBatchQuery(ctx context.Context, conn *pgx.Conn, d pgx.TraceBatchQueryData) {
	if !strings.HasPrefix(d.SQL, "SELECT set_config(") {
		r.TraceQueryStart(ctx, conn, pgx.TraceQueryStartData{SQL: d.SQL})
	}
}

func (r *sqlRecorder) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}

func (r *sqlRecorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sql
}
