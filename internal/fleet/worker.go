package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
)

// envSpec carries a worker's Spec, as JSON, from Start to Main.
const envSpec = "RELAY_FLEET_WORKER"

// startPatience is how long a worker keeps trying to start its client: it may be started
// while the database is down.
const startPatience = time.Minute

// Main runs this process as a worker and exits, if [Start] started it as one; otherwise
// it returns at once. Call it first thing in main.
func Main() {
	raw := os.Getenv(envSpec)
	if raw == "" {
		return
	}
	if err := runWorker(raw); err != nil {
		fmt.Fprintln(os.Stderr, "fleet worker:", err)
		os.Exit(2)
	}
	os.Exit(0)
}

// worker is the worker process's side: its pool and what its handler needs.
type worker struct {
	spec Spec
	pool *pgxpool.Pool
}

func runWorker(raw string) error {
	var spec Spec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		return fmt.Errorf("read the spec: %w", err)
	}
	stop := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if sc.Text() == "stop" {
				close(stop)
				break
			}
		}
		for sc.Scan() { // stopping: only the end of stdin matters now
		}
		os.Exit(3) // the parent is gone
	}()

	cfg, err := pgxpool.ParseConfig(spec.URL)
	if err != nil {
		return fmt.Errorf("parse the database URL: %w", err)
	}
	cfg.MaxConns = spec.PoolConns
	cfg.ConnConfig.RuntimeParams["application_name"] = spec.App
	ctx := context.Background()
	pool, err := pgxpool.NewWithConfig(ctx, cfg) // connects lazily
	if err != nil {
		return err
	}
	defer pool.Close()
	w := &worker{spec: spec, pool: pool}

	level := slog.LevelInfo
	if spec.Debug {
		level = slog.LevelDebug
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	clients := make([]*relay.Client, max(spec.Clients, 1))
	for i := range clients {
		id := spec.ID
		if i > 0 {
			id = fmt.Sprintf("%s-%d", spec.ID, i+1)
		}
		if clients[i], err = w.startClient(ctx, id, logger); err != nil {
			return err
		}
	}
	fmt.Println("ready")
	<-stop
	stopCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var errs []error
	for _, c := range clients {
		errs = append(errs, c.Stop(stopCtx))
	}
	return errors.Join(errs...)
}

// startClient starts a client with ID id, trying again for startPatience: the database
// may be down.
func (w *worker) startClient(ctx context.Context, id string, logger *slog.Logger) (*relay.Client, error) {
	spec := w.spec
	c := relay.New(relay.Config{
		Schema: spec.Schema, ID: id, LeaseTTL: spec.LeaseTTL, LeaseRenewal: spec.LeaseRenewal,
		Queues: map[string]relay.QueueConfig{spec.Queue: {Workers: spec.Workers}},
		Logger: logger,
	})
	if err := relay.Handle(c, Kind, w.handle); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(startPatience)
	for {
		startCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.Start(startCtx, w.pool)
		cancel()
		if err == nil {
			return c, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("start: %w", err)
		}
		fmt.Fprintln(os.Stderr, "fleet worker: start failed; trying again:", err)
		time.Sleep(200 * time.Millisecond)
	}
}

// handle is the handler of every fleet job: see Work.
func (w *worker) handle(ctx context.Context, job *relay.Job[Work]) (err error) {
	a := job.Args
	if a.Stubborn {
		ctx = context.WithoutCancel(ctx)
	}
	var tx pgx.Tx
	if a.Hold { // the transaction takes its connection now, for the whole job
		if tx, err = w.pool.Begin(ctx); err != nil {
			return err
		}
		defer tx.Rollback(context.WithoutCancel(ctx))
	}
	if a.Ms > 0 {
		t := time.NewTimer(time.Duration(a.Ms) * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return context.Cause(ctx)
		case <-t.C:
		}
	}
	switch a.Effect {
	case EffectPlain:
		var db relay.DB = w.pool
		if tx != nil {
			db = tx
		}
		if err := w.effect(ctx, db, job); err != nil {
			return err
		}
	case EffectTx:
		if tx == nil {
			if tx, err = w.pool.Begin(ctx); err != nil {
				return err
			}
			defer tx.Rollback(context.WithoutCancel(ctx))
		}
		if err := w.effect(ctx, tx, job); err != nil {
			return err
		}
		if err := relay.CompleteTx(ctx, tx, job); err != nil {
			return err
		}
	}
	if tx != nil {
		return tx.Commit(ctx)
	}
	return nil
}

// effect writes the row that shows this attempt of job did its work.
func (w *worker) effect(ctx context.Context, db relay.DB, job *relay.Job[Work]) error {
	_, err := db.Exec(ctx, `INSERT INTO `+w.spec.Effects+` (job_id, attempt, mode, client) VALUES ($1, $2, $3, $4)`,
		job.ID, job.Attempt, job.Args.Effect, w.spec.ID)
	return err
}
