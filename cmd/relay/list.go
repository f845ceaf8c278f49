package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
)

// jobListCmd lists jobs newest first, one page at a time, through relay.ListJobs.
type jobListCmd struct {
	conn
	State []string      `help:"Only jobs in these states (pending, scheduled, running, held, succeeded, failed, cancelled); repeat or separate with commas." sep:","`
	Queue string        `help:"Only jobs of this queue."`
	Kind  string        `help:"Only jobs of this kind."`
	Since time.Duration `help:"Only jobs created within this long before now (e.g. 1h)."`
	From  time.Time     `help:"Only jobs created at or after this time (RFC 3339)."`
	To    time.Time     `help:"Only jobs created before this time (RFC 3339)."`
	Limit int           `default:"50" help:"Most jobs to print (at most 1000)."`
	After string        `help:"Continue a listing where the previous page ended (its printed --after value)."`
	JSON  bool          `name:"json" help:"Print each job as a line of JSON, with its args and attempt history."`
}

func (j *jobListCmd) Run(ctx context.Context, out io.Writer) error {
	f := relay.ListFilter{Queue: j.Queue, Kind: j.Kind, From: j.From, To: j.To, Limit: j.Limit,
		After: relay.Cursor(j.After), WithArgs: j.JSON}
	if j.Since > 0 {
		f.From = time.Now().Add(-j.Since)
	}
	for _, s := range j.State {
		f.States = append(f.States, relay.JobState(strings.TrimSpace(s)))
	}
	return j.with(ctx, func(ctx context.Context, pool *pgxpool.Pool, schema relay.SchemaOption) error {
		page, err := relay.ListJobs(ctx, pool, f, schema)
		if err != nil {
			return err
		}
		if j.JSON {
			enc := json.NewEncoder(out)
			for _, rec := range page.Jobs {
				if err := enc.Encode(rec); err != nil {
					return err
				}
			}
			return nil
		}
		return printJobTable(out, page)
	})
}

// printJobTable prints one line per job and, if there is more, how to get the next page.
func printJobTable(out io.Writer, page *relay.JobPage) error {
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ID\tSTATE\tQUEUE\tKIND\tATTEMPT\tCREATED\tSCHEDULED\tNOTE")
	for _, r := range page.Jobs {
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%d/%d\t%s\t%s\t%s\n", r.ID, r.State, r.Queue, r.Kind,
			r.Attempt, r.MaxAttempts, r.CreatedAt.Format(time.RFC3339), r.ScheduledAt.Format(time.RFC3339), note(r))
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if page.Next != "" {
		_, err := fmt.Fprintf(out, "more: add --after %s\n", page.Next)
		return err
	}
	return nil
}

// note is the last column of a job's line: a held reservation's deadline, or else the
// first line of the last attempt's error.
func note(r *relay.JobRecord) string {
	if r.State == relay.StateHeld {
		return "reserved, held until " + r.HeldUntil.Format(time.RFC3339) + " unless committed"
	}
	if n := len(r.Attempts); n > 0 {
		return oneLine(r.Attempts[n-1].Error, 60)
	}
	return ""
}

// oneLine keeps the first line of s, cut to at most n runes.
func oneLine(s string, n int) string {
	s, _, _ = strings.Cut(s, "\n")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}
