package fleet_test

import (
	"context"
	"io"
	"os"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/fleet"
	"github.com/relayq/relay/relaytest"
)

func TestMain(m *testing.M) {
	fleet.Main() // this binary is also the worker process
	relaytest.Main(m)
}

// A worker process runs jobs of each effect, leaving one effect row per job, and stops
// gracefully when told; a killed one is gone at once.
func TestWorkerProcessRunsJobsAndStops(t *testing.T) {
	db := relaytest.NewDB(t)
	ctx := context.Background()
	effects := pgx.Identifier{db.Schema, "effects"}.Sanitize()
	if _, err := db.Exec(ctx, fleet.EffectsTable(effects)); err != nil {
		t.Fatal(err)
	}
	spec := fleet.Spec{URL: db.URL, Schema: db.Schema, ID: "fleet-test", App: "fleet-test", PoolConns: 4,
		Queue: "q", Workers: 4, Effects: effects}
	var stderr io.Writer = io.Discard
	if testing.Verbose() {
		stderr = os.Stderr
	}
	p, err := fleet.Start(spec, stderr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.WaitReady(readyCtx); err != nil {
		t.Fatal(err)
	}
	specs := []relay.JobSpec{
		fleet.Kind.Job(fleet.Work{Ms: 1, Effect: fleet.EffectPlain}),
		fleet.Kind.Job(fleet.Work{Ms: 1, Effect: fleet.EffectTx}),
		fleet.Kind.Job(fleet.Work{Ms: 1, Effect: fleet.EffectTx, Hold: true}),
		fleet.Kind.Job(fleet.Work{Ms: 1, Effect: fleet.EffectPlain, Hold: true, Stubborn: true}),
		fleet.Kind.Job(fleet.Work{}),
	}
	ids, err := relay.EnqueueMany(ctx, db, specs, relay.Queue("q"), relay.Schema(db.Schema))
	if err != nil {
		t.Fatal(err)
	}
	relaytest.WaitFor(t, 30*time.Second, "every job to succeed", func() bool {
		var n int
		err := db.QueryRow(ctx, `SELECT count(*) FROM `+pgx.Identifier{db.Schema, "jobs"}.Sanitize()+
			` WHERE id = ANY($1) AND state = 'succeeded'`, ids).Scan(&n)
		return err == nil && n == len(ids)
	})
	rows, err := db.Query(ctx, `SELECT mode, count(*) FROM `+effects+` WHERE client = 'fleet-test' GROUP BY mode`)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	var (
		mode string
		n    int
	)
	if _, err := pgx.ForEachRow(rows, []any{&mode, &n}, func() error { got[mode] = n; return nil }); err != nil {
		t.Fatal(err)
	}
	if got[fleet.EffectPlain] != 2 || got[fleet.EffectTx] != 2 || len(got) != 2 {
		t.Errorf("effects by mode: %v; want 2 plain and 2 tx", got)
	}
	if err := p.Stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	if p.Unexpected() {
		t.Error("a worker told to stop says its exit was unexpected")
	}

	p2, err := fleet.Start(spec, stderr)
	if err != nil {
		t.Fatal(err)
	}
	if err := p2.WaitReady(readyCtx); err != nil {
		t.Fatal(err)
	}
	if err := p2.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p2.Exited():
	default:
		t.Fatal("Kill returned before the worker exited")
	}
}
