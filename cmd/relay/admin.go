package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
)

// conn is what every command that talks to the database takes.
type conn struct {
	DatabaseURL string        `name:"database-url" env:"DATABASE_URL" required:"" help:"PostgreSQL connection URL."`
	Schema      string        `default:"relay" help:"Schema relay's tables live in."`
	Timeout     time.Duration `default:"30s" help:"Give up after this long."`
}

// with connects, runs fn within the command's timeout, and closes the connection.
func (c conn) with(ctx context.Context, fn func(ctx context.Context, pool *pgxpool.Pool, schema relay.SchemaOption) error) error {
	ctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	pool, err := pgxpool.New(ctx, c.DatabaseURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer pool.Close()
	return fn(ctx, pool, relay.Schema(c.Schema))
}

// do runs a command that changes something, and logs done with attrs once it has.
func (c conn) do(ctx context.Context, logger *slog.Logger, fn func(ctx context.Context, pool *pgxpool.Pool, schema relay.SchemaOption) error, done string, attrs ...any) error {
	return c.with(ctx, func(ctx context.Context, pool *pgxpool.Pool, schema relay.SchemaOption) error {
		if err := fn(ctx, pool, schema); err != nil {
			return err
		}
		logger.Info(done, attrs...)
		return nil
	})
}

type queueCmd struct {
	Show   queueShowCmd   `cmd:"" help:"Print a queue's settings and state as JSON."`
	Pause  queuePauseCmd  `cmd:"" help:"Pause a queue on every client: running jobs finish, no new ones start."`
	Resume queueResumeCmd `cmd:"" help:"Resume a paused queue."`
	Set    queueSetCmd    `cmd:"" help:"Set a queue's settings (ordering, blocking on failure, cluster-wide limit)."`
}

type queueShowCmd struct {
	conn
	Queue string `arg:"" help:"The queue."`
}

func (q *queueShowCmd) Run(ctx context.Context, out io.Writer) error {
	return q.with(ctx, func(ctx context.Context, pool *pgxpool.Pool, schema relay.SchemaOption) error {
		info, err := relay.GetQueue(ctx, pool, q.Queue, schema)
		if err != nil {
			return err
		}
		return printJSON(out, info)
	})
}

type queuePauseCmd struct {
	conn
	Queue string `arg:"" help:"The queue."`
}

func (q *queuePauseCmd) Run(ctx context.Context, logger *slog.Logger) error {
	return q.do(ctx, logger, func(ctx context.Context, pool *pgxpool.Pool, schema relay.SchemaOption) error {
		return relay.PauseQueue(ctx, pool, q.Queue, schema)
	}, "queue paused", "queue", q.Queue)
}

type queueResumeCmd struct {
	conn
	Queue string `arg:"" help:"The queue."`
}

func (q *queueResumeCmd) Run(ctx context.Context, logger *slog.Logger) error {
	return q.do(ctx, logger, func(ctx context.Context, pool *pgxpool.Pool, schema relay.SchemaOption) error {
		return relay.ResumeQueue(ctx, pool, q.Queue, schema)
	}, "queue resumed", "queue", q.Queue)
}

// queueSetCmd changes only the settings it is given: the others keep their values.
type queueSetCmd struct {
	conn
	Queue       string  `arg:"" help:"The queue."`
	Ordered     *bool   `help:"Start jobs one at a time per order key, in enqueue order (--no-ordered to stop; that drops the order keys of its pending jobs)." negatable:""`
	OnFailure   *string `name:"on-failure" enum:"block,move-on," help:"What an ordered key does when its head fails for good: block or move-on."`
	GlobalLimit *int    `name:"global-limit" help:"Most running jobs of the queue across all clients; 0 for none."`
}

func (q *queueSetCmd) Run(ctx context.Context, logger *slog.Logger) error {
	return q.with(ctx, func(ctx context.Context, pool *pgxpool.Pool, schema relay.SchemaOption) error {
		info, err := relay.GetQueue(ctx, pool, q.Queue, schema)
		if err != nil {
			return err
		}
		settings := info.QueueSettings
		if q.Ordered != nil {
			settings.Ordered = *q.Ordered
		}
		if q.OnFailure != nil {
			settings.OnFailure = relay.BlockOnFailure
			if *q.OnFailure == "move-on" {
				settings.OnFailure = relay.MoveOnAfterFailure
			}
		}
		if q.GlobalLimit != nil {
			settings.GlobalLimit = *q.GlobalLimit
		}
		if err := relay.SetQueue(ctx, pool, q.Queue, settings, schema); err != nil {
			return err
		}
		logger.Info("queue set", "queue", q.Queue, "ordered", settings.Ordered, "on_failure", settings.OnFailure, "global_limit", settings.GlobalLimit)
		return nil
	})
}

type jobCmd struct {
	List   jobListCmd   `cmd:"" help:"List jobs, newest first, filtered by state, queue, kind and creation time."`
	Show   jobShowCmd   `cmd:"" help:"Print a job with its attempt history as JSON."`
	Retry  jobRetryCmd  `cmd:"" help:"Run a failed or cancelled job again now."`
	Cancel jobCancelCmd `cmd:"" help:"Cancel a job (also gives up a failed job that blocks its ordered key)."`
	Delete jobDeleteCmd `cmd:"" help:"Delete a job; a running one is refused: cancel it first."`
}

type jobShowCmd struct {
	conn
	ID int64 `arg:"" help:"The job's id."`
}

func (j *jobShowCmd) Run(ctx context.Context, out io.Writer) error {
	return j.with(ctx, func(ctx context.Context, pool *pgxpool.Pool, schema relay.SchemaOption) error {
		rec, err := relay.GetJob(ctx, pool, j.ID, schema)
		if err != nil {
			return err
		}
		return printJSON(out, rec)
	})
}

type jobRetryCmd struct {
	conn
	ID int64 `arg:"" help:"The job's id."`
}

func (j *jobRetryCmd) Run(ctx context.Context, logger *slog.Logger) error {
	return j.do(ctx, logger, func(ctx context.Context, pool *pgxpool.Pool, schema relay.SchemaOption) error {
		return relay.Retry(ctx, pool, j.ID, schema)
	}, "job retried", "job", j.ID)
}

type jobCancelCmd struct {
	conn
	ID int64 `arg:"" help:"The job's id."`
}

func (j *jobCancelCmd) Run(ctx context.Context, logger *slog.Logger) error {
	return j.do(ctx, logger, func(ctx context.Context, pool *pgxpool.Pool, schema relay.SchemaOption) error {
		return relay.Cancel(ctx, pool, j.ID, schema)
	}, "job cancelled", "job", j.ID)
}

func printJSON(out io.Writer, v any) error {
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
