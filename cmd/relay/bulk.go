package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
)

// jobDeleteCmd deletes one job through relay.DeleteJob.
type jobDeleteCmd struct {
	conn
	ID int64 `arg:"" help:"The job's id."`
}

func (j *jobDeleteCmd) Run(ctx context.Context, logger *slog.Logger) error {
	return j.do(ctx, logger, func(ctx context.Context, pool *pgxpool.Pool, schema relay.SchemaOption) error {
		return relay.DeleteJob(ctx, pool, j.ID, schema)
	}, "job deleted", "job", j.ID)
}

// jobsCmd applies an action to every job a filter selects.
type jobsCmd struct {
	Retry  jobsRetryCmd  `cmd:"" help:"Retry the failed and cancelled jobs a filter selects."`
	Cancel jobsCancelCmd `cmd:"" help:"Cancel the pending, scheduled, running and held jobs a filter selects."`
	Delete jobsDeleteCmd `cmd:"" help:"Delete the jobs a filter selects (never running ones)."`
}

// bulkCmd is what the bulk commands share: the filter, and how to confirm.
type bulkCmd struct {
	conn
	State  []string  `help:"Only jobs in these states; repeat or separate with commas. Default: every state the action applies to." sep:","`
	Queue  string    `help:"Only jobs of this queue."`
	Kind   string    `help:"Only jobs of this kind."`
	Before timeOrAge `help:"Only jobs created before this: an age (24h: created more than 24 hours ago) or a time (RFC 3339)."`
	Limit  int       `help:"At most this many jobs, the newest first (0: all)."`
	DryRun bool      `name:"dry-run" help:"Only print how many jobs the action would change."`
	Yes    bool      `help:"Change them: without it (or --dry-run), the command prints the count and stops."`
}

type bulkFunc func(ctx context.Context, db relay.DB, f relay.ListFilter, opts ...relay.BulkOption) (int64, error)

// run prints how many jobs the filter selects for the action, then, with --yes, applies
// it and prints how many it changed.
func (b *bulkCmd) run(ctx context.Context, out io.Writer, verb string, fn bulkFunc) error {
	f := relay.ListFilter{Queue: b.Queue, Kind: b.Kind, To: b.Before.t, Limit: b.Limit}
	for _, s := range b.State {
		f.States = append(f.States, relay.JobState(strings.TrimSpace(s)))
	}
	return b.with(ctx, func(ctx context.Context, pool *pgxpool.Pool, schema relay.SchemaOption) error {
		n, err := fn(ctx, pool, f, relay.DryRun(), schema)
		if err != nil {
			return err
		}
		switch {
		case b.DryRun:
			_, err := fmt.Fprintf(out, "%s would be %s (dry run)\n", jobCount(n), verb)
			return err
		case !b.Yes:
			fmt.Fprintf(out, "%s would be %s\n", jobCount(n), verb)
			return fmt.Errorf("nothing %s: pass --yes to go ahead, or --dry-run to only count", verb)
		}
		fmt.Fprintf(out, "%s match\n", jobCount(n))
		done, err := fn(ctx, pool, f, schema)
		fmt.Fprintf(out, "%s %s\n", verb, jobCount(done))
		return err
	})
}

func jobCount(n int64) string {
	if n == 1 {
		return "1 job"
	}
	return fmt.Sprintf("%d jobs", n)
}

type jobsRetryCmd struct{ bulkCmd }

func (j *jobsRetryCmd) Run(ctx context.Context, out io.Writer) error {
	return j.run(ctx, out, "retried", relay.RetryJobs)
}

type jobsCancelCmd struct{ bulkCmd }

func (j *jobsCancelCmd) Run(ctx context.Context, out io.Writer) error {
	return j.run(ctx, out, "cancelled", relay.CancelJobs)
}

type jobsDeleteCmd struct{ bulkCmd }

func (j *jobsDeleteCmd) Run(ctx context.Context, out io.Writer) error {
	return j.run(ctx, out, "deleted", relay.DeleteJobs)
}

// timeOrAge is a point in time given as a time (RFC 3339) or as an age: 24h is 24 hours
// before now.
type timeOrAge struct{ t time.Time }

func (a *timeOrAge) UnmarshalText(b []byte) error {
	s := string(b)
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return fmt.Errorf("%q is a negative age", s)
		}
		a.t = time.Now().Add(-d)
		return nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return fmt.Errorf("%q is neither an age (24h) nor a time (RFC 3339)", s)
	}
	a.t = t
	return nil
}
