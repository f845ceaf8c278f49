package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/cpustat"
	"github.com/relayq/relay/internal/fleet"
)

// Jobs of the steady load work 50–200 ms, as the independent run that found issue 12 did.
const (
	minJobMs = 50
	maxJobMs = 200
)

// run is one scenario's run: its schema, workers, producer and monitor, and the fault's
// window.
type run struct {
	s      *suite
	sc     *scenario
	res    *Result
	schema string
	queue  string

	slots   []*slot // the worker processes, by slot; a killed one is replaced in its slot
	proxies []*proxy

	began      time.Time // the producer's start: times in the result are relative to it
	faultStart time.Time
	faultEnd   time.Time
	// serverUp is when the server's postmaster started, read after the fault: later than
	// faultStart if the fault restarted the server (see resumeFrom).
	serverUp time.Time

	prod *producer
	mon  *monitor
}

// slot is one worker process and the ones that replaced it.
type slot struct {
	i    int
	gen  int
	proc *fleet.Proc
	log  io.WriteCloser
	ids  []string // the client IDs it ran under, oldest first
}

func (r *run) quoted(table string) string { return pgx.Identifier{r.schema, table}.Sanitize() }
func (r *run) effects() string            { return r.quoted("effects") }
func (r *run) jobs() string               { return r.quoted("jobs") }

// execute runs the scenario's phases: workers, warm-up, fault, recovery, drain, checks.
func (r *run) execute(ctx context.Context) error {
	s := r.s
	if err := r.prepare(ctx); err != nil {
		return err
	}
	workers := s.opts.processes
	if r.sc.partition {
		target, err := s.serverAddr()
		if err != nil {
			return err
		}
		for range workers {
			p, err := newProxy(target)
			if err != nil {
				return err
			}
			r.proxies = append(r.proxies, p)
		}
	}
	for i := range workers {
		r.slots = append(r.slots, &slot{i: i})
	}
	if err := r.startWorkers(ctx, r.slots...); err != nil {
		return err
	}
	pid := s.postmasterPID()
	cpu0 := cpustat.Take(pid)
	r.began = time.Now()
	r.mon = startMonitor(r)
	r.prod = startProducer(r, s.opts.rate)
	sleep(ctx, s.t.warmup)

	cpuBefore := cpustat.Take(pid)
	faultErr := r.sc.fault(ctx, r)
	if r.faultStart.IsZero() {
		r.faultStart = time.Now()
	}
	if r.faultEnd.IsZero() {
		r.faultEnd = time.Now()
	}
	if err := r.readServerUp(ctx); err != nil {
		r.note("could not read when the server started: %v", err)
	}
	newPID := s.postmasterPID()
	cpuAfter := cpustat.Take(newPID)
	sleep(ctx, s.t.after)
	r.prod.stop()
	drained := r.waitFinished(ctx)
	r.mon.stop()
	stopErr := r.stopWorkers()
	cpuEnd := cpustat.Take(newPID)
	cpu, cpuOK := cpustat.Between(cpu0, cpuEnd)
	if newPID != pid {
		// The server restarted: its old processes' time went with them. Count the time
		// before the fault and after it, when one server ran throughout.
		before, ok1 := cpustat.Between(cpu0, cpuBefore)
		after, ok2 := cpustat.Between(cpuAfter, cpuEnd)
		cpu, cpuOK = before.Plus(after), ok1 && ok2
	}
	if err := r.verify(ctx); err != nil {
		return err
	}
	if cpuOK {
		r.res.CPU = &cpu
		if cpu.Other > 0.2 {
			r.note("other processes on this machine used %.2f cores (of 2) during this scenario: its timings are not relay's alone", cpu.Other)
		}
	}
	if !drained {
		r.note("not every job had finished %v after the fault", s.t.drainMax)
	}
	return errors.Join(faultErr, stopErr)
}

// prepare gives the scenario a freshly migrated schema with an effects table.
func (r *run) prepare(ctx context.Context) error {
	p := r.s.pool
	if _, err := p.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{r.schema}.Sanitize()+" CASCADE"); err != nil {
		return err
	}
	if err := relay.Migrate(ctx, p, relay.Schema(r.schema)); err != nil {
		return err
	}
	_, err := p.Exec(ctx, fleet.EffectsTable(r.effects()))
	return err
}

// readServerUp reads when the server's postmaster started, on a connection of its own:
// right after a restart the suite's pool may still hold connections of the old server.
func (r *run) readServerUp(ctx context.Context) error {
	conn, err := pgx.Connect(ctx, r.s.url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.QueryRow(ctx, "SELECT pg_postmaster_start_time()").Scan(&r.serverUp)
}

// cleanup stops whatever is left and drops the schema, unless asked to keep it.
func (r *run) cleanup() {
	if r.prod != nil {
		r.prod.stop()
	}
	if r.mon != nil {
		r.mon.stop()
	}
	for _, sl := range r.slots {
		if sl.proc != nil {
			_ = sl.proc.Kill()
			sl.log.Close()
		}
	}
	for _, p := range r.proxies {
		p.close()
	}
	if r.s.opts.keep {
		r.s.log.Info("kept the scenario's schema", "schema", r.schema)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := r.s.pool.Exec(ctx, "DROP SCHEMA IF EXISTS "+pgx.Identifier{r.schema}.Sanitize()+" CASCADE"); err != nil {
		r.s.log.Warn("drop the scenario's schema", "error", err)
	}
}

// startWorkers starts a new worker process in each slot, all at once, and waits until
// they are ready.
func (r *run) startWorkers(ctx context.Context, slots ...*slot) error {
	for _, sl := range slots {
		sl.gen++
		id := fmt.Sprintf("%d-%d", sl.i, sl.gen)
		addr := ""
		if r.proxies != nil {
			addr = r.proxies[sl.i].addr()
		}
		dbURL, err := r.s.workerURL(addr)
		if err != nil {
			return err
		}
		spec := r.s.spec(r, id, dbURL)
		if r.sc.configure != nil {
			r.sc.configure(r.s, &spec)
		}
		if sl.log, err = r.s.workerLog(r.sc.name, id); err != nil {
			return err
		}
		if sl.proc, err = fleet.Start(spec, sl.log); err != nil {
			return err
		}
		sl.ids = append(sl.ids, spec.ID)
	}
	ctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	for _, sl := range slots {
		if err := sl.proc.WaitReady(ctx); err != nil {
			return err
		}
	}
	return nil
}

// kill SIGKILLs the worker of a slot and starts another in its place, as a supervisor
// would.
func (r *run) kill(ctx context.Context, sl *slot) error {
	if err := sl.proc.Kill(); err != nil {
		return err
	}
	sl.log.Close()
	return r.startWorkers(ctx, sl)
}

// stopWorkers stops every worker gracefully.
func (r *run) stopWorkers() error {
	var errs []error
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, sl := range r.slots {
		wg.Go(func() {
			err := sl.proc.Stop(45 * time.Second)
			if sl.proc.Unexpected() {
				err = errors.Join(err, fmt.Errorf("worker %s had exited by itself", sl.proc.Spec.ID))
			}
			sl.log.Close()
			sl.proc = nil
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitFinished waits until no job is pending or running, or drainMax has passed since the
// fault ended.
func (r *run) waitFinished(ctx context.Context) bool {
	deadline := r.faultEnd.Add(r.s.t.drainMax)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var left int
		err := r.s.pool.QueryRow(ctx, `SELECT count(*) FROM `+r.jobs()+` WHERE state IN ('pending', 'running')`).Scan(&left)
		if err == nil && left == 0 {
			return true
		}
		sleep(ctx, 200*time.Millisecond)
	}
	return false
}

// window marks the fault as lasting while fn runs.
func (r *run) window(fn func() error) error {
	r.faultStart = time.Now()
	err := fn()
	r.faultEnd = time.Now()
	return err
}

// workerBackends is the condition that selects the workers' connections in
// pg_stat_activity, their pools', their listeners' and their wait locks', and no one
// else's.
const workerBackends = `datname = current_database() AND (application_name LIKE '` + workerApp + `%'
	OR application_name LIKE 'relay listener ` + workerApp + `%' OR application_name LIKE 'relay reserved ` + workerApp + `%'
	OR application_name LIKE 'relay wait locks ` + workerApp + `%')`

// reservedBackends selects the connections the workers' clients reserved for themselves
// (relay.Config.ReservedConns): opened only while handlers hold every connection of a pool.
const reservedBackends = `datname = current_database() AND application_name LIKE 'relay reserved ` + workerApp + `%'`

func (r *run) note(format string, args ...any) {
	r.res.Notes = append(r.res.Notes, fmt.Sprintf(format, args...))
}

// workMix is the args of the steady load's n-th job: 50–200 ms, plain and tx in turn.
func workMix(n int64) fleet.Work {
	effect := fleet.EffectPlain
	if n%2 == 1 {
		effect = fleet.EffectTx
	}
	return fleet.Work{Ms: minJobMs + rand.IntN(maxJobMs-minJobMs+1), Effect: effect}
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
