// Command chaos injects faults into a deployment of relay workers and checks, from the
// database, what became of every job.
//
//	go run ./chaos                        # every scenario, on a throwaway PostgreSQL
//	go run ./chaos -quick                 # every scenario, briefly (CI)
//	go run ./chaos -scenario db-down,terminate -json /tmp/chaos.json
//	go run ./chaos -database-url postgres://…/mydb   # your own server (and its settings)
//
// Workers are separate processes (package fleet) running real relay clients. A producer
// enqueues jobs at a steady rate, each in its own transaction; half of the handlers leave
// their effect with a plain INSERT (at least once), half in the transaction that calls
// relay.CompleteTx (exactly once). Each scenario injects its fault, lets the workers
// drain what is left, and then reads the database: jobs lost, duplicate effects, how long
// the workers took to resume and the backlog to drain, the worst pickup. Scenarios that
// restart or stop PostgreSQL run only on a server the suite started itself, never on one
// given with -database-url. See the README's "Chaos suite".
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/relayq/relay/internal/fleet"
	"github.com/relayq/relay/internal/tool"
)

type options struct {
	databaseURL string
	scenarios   []string
	quick       bool
	jsonPath    string
	logDir      string
	verbose     bool
	keep        bool // keep each scenario's schema afterwards, to look into its jobs

	processes int           // worker processes
	workers   int           // workers (concurrent jobs) per process
	poolConns int           // MaxConns of each worker's pool
	rate      int           // jobs enqueued per second
	leaseTTL  time.Duration // the workers' LeaseTTL; 0: relay's default
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	names := scenarioNames()
	list := fs.String("scenario", "all", "scenarios to run, comma-separated: "+strings.Join(names, ", ")+"; or all")
	fs.BoolVar(&o.quick, "quick", false, "run every scenario briefly (short faults, short leases): for CI")
	fs.StringVar(&o.databaseURL, "database-url", "", "PostgreSQL to run against (default $DATABASE_URL, else a throwaway server); scenarios that restart or stop the server are skipped on it")
	fs.StringVar(&o.jsonPath, "json", "", "write the results as JSON to this file")
	fs.StringVar(&o.logDir, "logs", "", "keep each worker process's relay log in this directory")
	fs.BoolVar(&o.keep, "keep", false, "keep each scenario's schema (relay_chaos_<scenario>) afterwards, to look into its jobs with SQL; it is dropped when the scenario next runs")
	fs.BoolVar(&o.verbose, "v", false, "debug logs, the workers' relay logs included (with -logs)")
	fs.IntVar(&o.processes, "processes", 3, "worker processes")
	fs.IntVar(&o.workers, "workers", 50, "workers per process (jobs each runs at once)")
	fs.IntVar(&o.poolConns, "pool-conns", 16, "MaxConns of each worker's pgxpool, shared by its handlers and its relay client")
	fs.IntVar(&o.rate, "rate", 0, "jobs enqueued per second (default 250; 100 with -quick)")
	fs.DurationVar(&o.leaseTTL, "lease", 0, "the workers' LeaseTTL (default relay's, 15s; 2s with -quick)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *list == "all" {
		o.scenarios = names
	} else {
		for name := range strings.SplitSeq(*list, ",") {
			name = strings.TrimSpace(name)
			if !slices.Contains(names, name) {
				return o, fmt.Errorf("unknown scenario %q (want %s, or all)", name, strings.Join(names, ", "))
			}
			o.scenarios = append(o.scenarios, name)
		}
	}
	if o.rate == 0 {
		o.rate = map[bool]int{true: 100, false: 250}[o.quick]
	}
	if o.leaseTTL == 0 && o.quick {
		o.leaseTTL = 2 * time.Second
	}
	switch {
	case o.processes < 2:
		return o, errors.New("-processes must be at least 2: some scenarios need a worker to take over another's jobs")
	case o.workers < 1 || o.poolConns < 2 || o.rate < 1:
		return o, errors.New("-workers ≥ 1, -pool-conns ≥ 2, -rate ≥ 1")
	case o.leaseTTL != 0 && o.leaseTTL < time.Second:
		return o, errors.New("-lease must be at least 1s")
	}
	if o.databaseURL == "" {
		o.databaseURL = os.Getenv("DATABASE_URL")
	}
	return o, nil
}

func main() {
	fleet.Main() // a worker process started by this program runs here, and exits
	os.Exit(suiteMain())
}

func suiteMain() int {
	opts, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		return 2
	}
	log := tool.Logger(opts.verbose)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := newSuite(ctx, log, opts)
	if err != nil {
		log.Error("database", "error", err)
		return 1
	}
	defer s.close()

	rep := s.report()
	for _, name := range opts.scenarios {
		if ctx.Err() != nil {
			break
		}
		res := s.run(ctx, scenarioNamed(name))
		rep.Scenarios = append(rep.Scenarios, res)
	}
	rep.finish()
	rep.print(os.Stdout)
	failed := false
	if opts.jsonPath != "" {
		if err := rep.writeJSON(opts.jsonPath); err != nil {
			log.Error("json", "error", err)
			failed = true
		} else {
			log.Info("wrote results", "json", opts.jsonPath)
		}
	}
	if rep.Broken > 0 || failed || ctx.Err() != nil {
		return 1
	}
	return 0
}
