package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
)

type scheduleCmd struct {
	List   scheduleListCmd   `cmd:"" help:"List the periodic schedules with their next and last slot, and the live clients that have each (none: orphaned)."`
	Delete scheduleDeleteCmd `cmd:"" help:"Remove an orphaned schedule (one no live client has)."`
}

type scheduleListCmd struct {
	conn
	JSON bool `name:"json" help:"Print each schedule as a line of JSON."`
}

func (s *scheduleListCmd) Run(ctx context.Context, out io.Writer) error {
	return s.with(ctx, func(ctx context.Context, pool *pgxpool.Pool, schema relay.SchemaOption) error {
		list, err := relay.ListSchedules(ctx, pool, schema)
		if err != nil {
			return err
		}
		if s.JSON {
			enc := json.NewEncoder(out)
			for _, sc := range list {
				if err := enc.Encode(sc); err != nil {
					return err
				}
			}
			return nil
		}
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "NAME\tSPEC\tKIND\tQUEUE\tCATCH-UP\tNEXT SLOT\tLAST SLOT\tLAST JOB\tCLIENTS")
		for _, sc := range list {
			clients := strings.Join(sc.Clients, ",")
			if sc.Orphaned {
				clients = "none: orphaned"
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", sc.Name, sc.Spec, sc.Kind, sc.Queue, sc.CatchUp,
				formatSlot(sc.NextSlot), formatSlot(sc.LastSlot), sc.LastJob, clients)
		}
		return w.Flush()
	})
}

func formatSlot(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Format(time.RFC3339)
}

type scheduleDeleteCmd struct {
	conn
	Name string `arg:"" help:"The schedule."`
}

func (s *scheduleDeleteCmd) Run(ctx context.Context, logger *slog.Logger) error {
	return s.do(ctx, logger, func(ctx context.Context, pool *pgxpool.Pool, schema relay.SchemaOption) error {
		return relay.DeleteSchedule(ctx, pool, s.Name, schema)
	}, "schedule deleted", "schedule", s.Name)
}
