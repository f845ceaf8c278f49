// Command relay administers relay's schema, queues and jobs in a PostgreSQL database.
//
//	relay migrate --database-url URL            # print the SQL that would be applied
//	relay migrate --database-url URL --apply    # apply it
//	relay queue pause|resume|show NAME          # for every client, at once
//	relay queue set NAME --ordered --on-failure block --global-limit 5
//	relay job list [--state failed] [--queue Q] [--kind K] [--since 1h]
//	relay job show|retry|cancel|delete ID
//	relay jobs retry|cancel|delete [--state failed] [--queue Q] [--kind K] [--before 24h] --dry-run|--yes
//	relay schedule list|delete
//	relay ui [--listen 127.0.0.1:8080] [--read-only] [--basic-auth USER:PASSWORD]
//
// Install it with `go install github.com/relayq/relay/cmd/relay@latest`, or as a tool of
// your module with `go get -tool github.com/relayq/relay/cmd/relay` and run `go tool relay`.
//
// Every command takes --database-url (or DATABASE_URL) and --schema.
// Printing reads the database only to learn which migrations it already has, so the
// output can be fed to another migration tool or reviewed before --apply.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/alecthomas/kong"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/lmittmann/tint"
	"golang.org/x/term"

	"github.com/relayq/relay"
)

type cli struct {
	Migrate  migrateCmd  `cmd:"" help:"Print the SQL that brings the schema up to date, or apply it with --apply."`
	Queue    queueCmd    `cmd:"" help:"Show, pause, resume or set up a queue, for every client."`
	Job      jobCmd      `cmd:"" help:"List, show, retry, cancel or delete jobs."`
	Jobs     jobsCmd     `cmd:"" help:"Retry, cancel or delete every job a filter selects, after counting them."`
	Schedule scheduleCmd `cmd:"" help:"List the periodic schedules, or remove an orphaned one."`
	UI       uiCmd       `cmd:"" name:"ui" help:"Serve the web dashboard (on 127.0.0.1:8080 unless --listen says otherwise)."`
}

type migrateCmd struct {
	DatabaseURL string        `name:"database-url" env:"DATABASE_URL" required:"" help:"PostgreSQL connection URL."`
	Schema      string        `default:"relay" help:"Schema relay's tables live in."`
	Apply       bool          `help:"Apply the migrations instead of printing them."`
	Timeout     time.Duration `default:"5m" help:"Give up after this long (the migration lock may be held by another process)."`
}

func (m *migrateCmd) Run(ctx context.Context, out io.Writer, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, m.Timeout)
	defer cancel()

	pool, err := pgxpool.New(ctx, m.DatabaseURL)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer pool.Close()

	if !m.Apply {
		script, err := relay.MigrationSQL(ctx, pool, relay.Schema(m.Schema))
		if err != nil {
			return err
		}
		_, err = io.WriteString(out, script)
		return err
	}
	start := time.Now()
	if err := relay.Migrate(ctx, pool, relay.Schema(m.Schema)); err != nil {
		return err
	}
	logger.Info("schema is up to date", "schema", m.Schema, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	logger := newLogger(os.Stderr)
	if err := run(ctx, os.Args[1:], os.Stdout, logger); err != nil {
		logger.Error(errorMessage(err))
		os.Exit(1)
	}
}

// newLogger logs to w, in colour only when w is a terminal (and NO_COLOR is not set):
// escape codes in a file or a pipe are noise.
func newLogger(w *os.File) *slog.Logger {
	color := term.IsTerminal(int(w.Fd())) && os.Getenv("NO_COLOR") == ""
	return slog.New(tint.NewTextHandler(w, &tint.Options{TimeFormat: time.Kitchen, NoColor: !color}))
}

// errorMessage is err as the CLI prints it: prefixed with "relay: " once, however many of
// the wrapped errors (the library's own) already start with it.
func errorMessage(err error) string {
	return "relay: " + strings.TrimPrefix(err.Error(), "relay: ")
}

// run parses args and runs the chosen command, writing its output to out.
func run(ctx context.Context, args []string, out io.Writer, logger *slog.Logger) error {
	var c cli
	parser, err := kong.New(&c,
		kong.Name("relay"),
		kong.Description("Administer relay's schema, queues and jobs in a PostgreSQL database."),
		kong.UsageOnError(),
		kong.Writers(out, os.Stderr),
		kong.BindTo(ctx, (*context.Context)(nil)),
		kong.BindTo(out, (*io.Writer)(nil)),
		kong.Bind(logger),
	)
	if err != nil {
		return err
	}
	kctx, err := parser.Parse(args)
	if err != nil {
		return err
	}
	return kctx.Run()
}
