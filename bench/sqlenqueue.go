package main

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/cpustat"
)

const (
	sqlEnqueueOne   = 2000 // jobs enqueued one per statement, per round
	sqlEnqueueBatch = 1000 // jobs per batch
	sqlEnqueueRuns  = 20   // batches per round
	sqlEnqueueRound = 3
)

// runSQLEnqueue: what one enqueue costs the database, from Go and from SQL (the functions
// enqueue and enqueue_many that other languages call), as the CPU time of the server
// process that runs the statements: other processes of a shared machine do not count, as
// they do in a rate. One job per statement (2,000), then batches of 1,000 (20), each
// variant in turn, three rounds, on a table emptied before each; no client runs, so no
// wakeup is sent. It reports the median of the rounds, per job.
func runSQLEnqueue(ctx context.Context, b *bench) (*RunResult, error) {
	conn, err := pgx.Connect(ctx, b.db.url)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var pid int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
		return nil, err
	}
	if _, ok := cpustat.Process(pid); !ok {
		return &RunResult{Notes: []string{"sql-enqueue: the server's processes cannot be read from here (another machine?): nothing measured"}}, nil
	}
	opts := b.enqueueOpts(benchQueue)
	fn := pgx.Identifier{b.opts.schema}.Sanitize()
	args, _ := json.Marshal(seqArgs{Seq: 1})
	batch := make([]relay.JobSpec, sqlEnqueueBatch)
	for i := range batch {
		batch[i] = benchKind.Job(seqArgs{Seq: 1})
	}
	kinds, argsArr := make([]string, sqlEnqueueBatch), make([]string, sqlEnqueueBatch)
	for i := range kinds {
		kinds[i], argsArr[i] = benchKind.Name(), string(args)
	}
	variants := []struct {
		name string
		jobs int
		run  func() error
	}{
		{"Go Enqueue", sqlEnqueueOne, func() error {
			for range sqlEnqueueOne {
				if _, err := relay.Enqueue(ctx, conn, benchKind, seqArgs{Seq: 1}, opts...); err != nil {
					return err
				}
			}
			return nil
		}},
		{"SQL enqueue()", sqlEnqueueOne, func() error {
			for range sqlEnqueueOne {
				if _, err := conn.Exec(ctx, "SELECT * FROM "+fn+".enqueue($1, $2, queue => $3)", benchKind.Name(), args, benchQueue); err != nil {
					return err
				}
			}
			return nil
		}},
		{"Go EnqueueMany", sqlEnqueueBatch * sqlEnqueueRuns, func() error {
			for range sqlEnqueueRuns {
				if _, err := relay.EnqueueMany(ctx, conn, batch, opts...); err != nil {
					return err
				}
			}
			return nil
		}},
		{"SQL enqueue_many(arrays)", sqlEnqueueBatch * sqlEnqueueRuns, func() error {
			for range sqlEnqueueRuns {
				if _, err := conn.Exec(ctx, "SELECT * FROM "+fn+".enqueue_many($1::text[], $2::jsonb[], queues => array_fill($3::text, ARRAY[$4::int]))",
					kinds, argsArr, benchQueue, sqlEnqueueBatch); err != nil {
					return err
				}
			}
			return nil
		}},
	}
	perJob := make([][]float64, len(variants)) // µs of server CPU per job, per round
	for range sqlEnqueueRound {
		for i, v := range variants {
			if _, err := b.db.admin.Exec(ctx, "TRUNCATE "+b.db.jobsTable()); err != nil {
				return nil, err
			}
			before, _ := cpustat.Process(pid)
			if err := v.run(); err != nil {
				return nil, fmt.Errorf("%s: %w", v.name, err)
			}
			after, _ := cpustat.Process(pid)
			perJob[i] = append(perJob[i], float64((after-before)/time.Nanosecond)/1e3/float64(v.jobs))
		}
	}
	res := &RunResult{}
	for i, v := range variants {
		res.Metrics = append(res.Metrics, Metric{Name: v.name + ": server CPU per job", Unit: unitMicros, Value: median(perJob[i])})
	}
	b.log.Info("sql-enqueue", "µs per job, each round", fmt.Sprint(perJob))
	return res, nil
}
