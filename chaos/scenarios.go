package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/relayq/relay/internal/fleet"
)

// scenario is one fault and what it proves.
type scenario struct {
	name   string
	proves string
	// ownServer: it restarts or stops PostgreSQL, so it runs only on a server the suite
	// started itself.
	ownServer bool
	// partition: the workers connect through proxies that can cut them off.
	partition bool
	// resumes: the time until the workers started jobs again after the fault is judged
	// (target: within a second); victim: of worker 0, the one the fault cut off, only.
	resumes, victim bool
	// workerBound: the drain is judged by how busy it kept the workers.
	workerBound bool
	configure   func(s *suite, spec *fleet.Spec)
	fault       func(ctx context.Context, r *run) error
}

var scenarios = []*scenario{{
	name:   "kill",
	proves: "a worker SIGKILLed while it runs jobs loses none: once their leases expire another worker runs them again; CompleteTx effects stay exactly once",
	fault: func(ctx context.Context, r *run) error {
		return r.window(func() error { return r.kill(ctx, r.slots[0]) })
	},
}, {
	name:   "kill-repeated",
	proves: "SIGKILLs of random workers, one every few seconds (each replaced at once), lose no job and duplicate no CompleteTx effect",
	fault: func(ctx context.Context, r *run) error {
		return r.window(func() error {
			for end := time.Now().Add(r.s.t.kills); time.Now().Before(end) && ctx.Err() == nil; {
				if err := r.kill(ctx, r.slots[rand.IntN(len(r.slots))]); err != nil {
					return err
				}
				sleep(ctx, r.s.t.killGap)
			}
			return nil
		})
	},
}, {
	name:      "restart-immediate",
	proves:    "a crash of PostgreSQL (pg_ctl restart -m immediate) loses no committed job, and the workers resume within a second of the server accepting connections",
	ownServer: true, resumes: true, workerBound: true,
	fault: func(ctx context.Context, r *run) error {
		return r.window(func() error { return r.s.srv.Restart(ctx, "immediate") })
	},
}, {
	name:      "restart-fast",
	proves:    "a clean restart of PostgreSQL (pg_ctl restart -m fast) likewise",
	ownServer: true, resumes: true, workerBound: true,
	fault: func(ctx context.Context, r *run) error {
		return r.window(func() error { return r.s.srv.Restart(ctx, "fast") })
	},
}, {
	name:      "db-down",
	proves:    "PostgreSQL stopped for a while: nothing is lost, the outcomes of attempts that ended meanwhile (CompleteTx commits that failed included) are written once it is back, and the workers resume within a second and drain the backlog at full speed",
	ownServer: true, resumes: true, workerBound: true,
	fault: func(ctx context.Context, r *run) error {
		return r.window(func() error {
			if err := r.s.srv.Halt(ctx, "fast"); err != nil {
				return err
			}
			sleep(ctx, r.s.t.outage)
			return r.s.srv.Resume(ctx)
		})
	},
}, {
	name:    "terminate",
	proves:  "every connection of every worker killed (pg_terminate_backend) ten times a second: jobs whose handlers lost their connection are retried at once, and the workers resume within a second of the last kill",
	resumes: true, workerBound: true,
	fault: func(ctx context.Context, r *run) error {
		killed := 0
		err := r.window(func() error {
			for end := time.Now().Add(r.s.t.outage); time.Now().Before(end) && ctx.Err() == nil; {
				var n int
				if err := r.s.pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE `+workerBackends).Scan(&n); err != nil {
					return err
				}
				killed += n
				sleep(ctx, 100*time.Millisecond)
			}
			return nil
		})
		r.note("terminated %d worker connections", killed)
		return err
	},
}, {
	name:        "pool-exhaustion",
	proves:      "50 workers sharing a pool of 4 connections with their handlers, and a burst of jobs: relay's own statements (claims, lease renewals, outcomes) are not starved, and the burst drains at the workers' full speed",
	workerBound: true,
	configure:   func(_ *suite, spec *fleet.Spec) { spec.Workers, spec.PoolConns = 50, 4 },
	fault: func(ctx context.Context, r *run) error {
		works := make([]fleet.Work, r.s.t.burst)
		for i := range works {
			works[i] = workMix(int64(i))
		}
		return r.window(func() error { return r.prod.enqueueMany(ctx, works) })
	},
}, {
	name:   "idle-in-tx",
	proves: "a session idle in a transaction that pins the xmin horizon (VACUUM can remove nothing) slows nothing down noticeably and loses nothing",
	fault: func(ctx context.Context, r *run) error {
		conn, err := r.s.pool.Acquire(ctx)
		if err != nil {
			return err
		}
		defer conn.Release()
		return r.window(func() error {
			if _, err := conn.Exec(ctx, "BEGIN ISOLATION LEVEL REPEATABLE READ"); err != nil {
				return err
			}
			if _, err := conn.Exec(ctx, "SELECT txid_current()"); err != nil {
				return err
			}
			sleep(ctx, r.s.t.idleTx)
			_, err := conn.Exec(ctx, "ROLLBACK")
			return err
		})
	},
}, {
	name: "stuck",
	proves: "handlers that hold every connection of their pool, in open transactions, for twice the lease and ignore their context: " +
		"the clients' lease renewals still go through, so no lease is lost and no job runs twice",
	fault: func(ctx context.Context, r *run) error {
		stuck := fleet.Work{Ms: int(2 * r.s.t.lease() / time.Millisecond), Effect: fleet.EffectPlain, Hold: true, Stubborn: true}
		works := make([]fleet.Work, 2*len(r.slots)*r.s.opts.poolConns)
		for i := range works {
			works[i] = stuck
		}
		return r.window(func() error {
			if err := r.prod.enqueueMany(ctx, works); err != nil {
				return err
			}
			sleep(ctx, 2*r.s.t.lease()+time.Second)
			return nil
		})
	},
}, {
	name: "partition",
	proves: "a worker cut off from the database (its packets dropped) for longer than the lease: the others run its jobs once their leases expire, " +
		"it cancels its own handlers, CompleteTx effects stay exactly once, and it resumes within a second of the network healing",
	partition: true, resumes: true, victim: true,
	fault: func(ctx context.Context, r *run) error {
		return r.window(func() error {
			r.proxies[0].partition()
			sleep(ctx, r.s.t.lease()+3*time.Second)
			r.proxies[0].heal()
			return nil
		})
	},
}, {
	name:   "backlog",
	proves: "a large backlog of short jobs, enqueued at once, drains without loss; the drain rate is reported",
	fault: func(ctx context.Context, r *run) error {
		works := make([]fleet.Work, r.s.t.backlog)
		for i := range works {
			w := workMix(int64(i))
			w.Ms = 0
			works[i] = w
		}
		return r.window(func() error { return r.prod.enqueueMany(ctx, works) })
	},
}, {
	name: "bad-input",
	proves: "values PostgreSQL would refuse or store as something else (integers cut to 32 bits, NUL bytes, invalid UTF-8, \\u0000 in JSON, " +
		"a year 300000, nil handles) are refused at every entry point before they reach the database, and the caller's transaction stays usable",
	fault: func(ctx context.Context, r *run) error {
		return r.window(func() error { return badInput(ctx, r) })
	},
}}

func scenarioNames() []string {
	names := make([]string, len(scenarios))
	for i, s := range scenarios {
		names[i] = s.name
	}
	return names
}

func scenarioNamed(name string) *scenario {
	for _, s := range scenarios {
		if s.name == name {
			return s
		}
	}
	panic(fmt.Sprintf("no scenario %q", name))
}
