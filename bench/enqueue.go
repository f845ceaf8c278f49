package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
)

// enqueueProducers are the producer counts of the enqueue workload.
var enqueueProducers = []int{1, 8, 32, 64}

const (
	// enqueueBusyBacklog keeps the busy client's workers busy for the whole of a run.
	enqueueBusyBacklog = 250_000
	enqueueJobTime     = 5 * time.Millisecond // what a busy worker's job takes
	// lateAfter is how long after its commit a job may start before it counts as late: far
	// more than a wakeup takes, far less than any poll.
	lateAfter = 100 * time.Millisecond
	// enqueueSlices is how many turns the baseline and relay each take at a producer count.
	enqueueSlices = 4
)

// runEnqueue: P producers (1, 8, 32, 64) each commit one job per transaction (Begin →
// Enqueue → Commit) for half the -duration, in turns with the baseline, in two settings:
// busy (a client with 100 workers running 5 ms jobs through a standing backlog, so no
// wakeup can wake anything) and
// idle (a client whose workers wait for each job). In the same run, the baseline: the same
// producers committing a plain INSERT of the same columns into a table of the same shape
// and indexes, with no NOTIFY. It reports tx/s and commit p50/p99 for each, the ratio
// relay/baseline, and, when idle, each job's pickup latency and how many started more than
// 100 ms after their commit (a wakeup lost to the poll). With -unique, each job has a key
// of its own (relay.Unique) and the baseline's INSERT the same, with ON CONFLICT DO NOTHING
// on the same partial unique index.
func runEnqueue(ctx context.Context, b *bench) (*RunResult, error) {
	res := &RunResult{}
	dur := b.opts.duration / 2
	if _, err := b.db.admin.Exec(ctx, "CREATE TABLE "+b.db.quotedSchema()+".baseline (LIKE "+b.db.jobsTable()+" INCLUDING ALL)"); err != nil {
		return nil, fmt.Errorf("create the baseline table: %w", err)
	}
	for _, setting := range []string{"busy", "idle"} {
		metrics, notes, err := enqueueSetting(ctx, b, setting, dur)
		if err != nil {
			return nil, err
		}
		res.Metrics = append(res.Metrics, metrics...)
		res.Notes = append(res.Notes, notes...)
	}
	return res, nil
}

// enqueueSetting runs every producer count in one setting, baseline and relay side by side.
func enqueueSetting(ctx context.Context, b *bench, setting string, dur time.Duration) ([]Metric, []string, error) {
	maxP := enqueueProducers[len(enqueueProducers)-1]
	clientPool, prodPool, closePools, err := b.pools(ctx, maxP)
	if err != nil {
		return nil, nil, err
	}
	defer closePools()

	// Each run of relay's producers records its jobs' commits and starts in a recorder of
	// its own; backlog jobs (sequence -1) are not recorded.
	var current atomic.Pointer[recorder]
	handler := func(_ context.Context, job *relay.Job[seqArgs]) error {
		if r := current.Load(); r != nil && job.Args.Seq >= 0 {
			r.beganClaimed(job.Args.Seq, time.Now(), job.AttemptedAt)
		}
		if setting == "busy" {
			time.Sleep(enqueueJobTime)
		}
		return nil
	}
	queue := benchQueue + "-" + setting // the busy setting's backlog stays behind in its own queue
	c, err := b.startClient(ctx, clientPool, map[string]relay.QueueConfig{queue: {Workers: 100}}, handler)
	if err != nil {
		return nil, nil, err
	}
	defer stopClient(ctx, c)
	opts := b.enqueueOpts(queue)
	time.Sleep(200 * time.Millisecond) // start-up claims are done

	var metrics []Metric
	var notes []string
	refill := func() error {
		if setting != "busy" {
			return nil
		}
		return fillBacklog(ctx, b, prodPool, queue, opts)
	}
	for _, p := range enqueueProducers {
		// Far more slots than a run can commit: 20,000 tx/s is beyond this machine.
		rec := newRecorder(b.base, int(20_000*dur.Seconds()))
		current.Store(rec)
		var seq atomic.Int64
		stopCounting, err := countWakeups(ctx, b, queue)
		if err != nil {
			return nil, nil, err
		}
		var plainSeq atomic.Int64
		plain := func(ctx context.Context, tx txRunner, _ int64) error {
			if !b.opts.unique {
				_, err := tx.Exec(ctx, "INSERT INTO "+b.db.quotedSchema()+".baseline (kind, queue, args) VALUES ($1, $2, $3)",
					benchKind.Name(), queue, `{"s":0}`)
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO "+b.db.quotedSchema()+".baseline (kind, queue, args, unique_key) VALUES ($1, $2, $3, $4) "+
				"ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('pending', 'running', 'held') DO NOTHING",
				benchKind.Name(), queue, `{"s":0}`, uniqueKey(setting, p, plainSeq.Add(1)))
			return err
		}
		viaRelay := func(ctx context.Context, tx txRunner, _ int64) error {
			s := seq.Add(1) - 1
			if s >= int64(len(rec.commit)) {
				return fmt.Errorf("more than %d transactions in one run: raise the recorder's size", len(rec.commit))
			}
			jobOpts := opts
			if b.opts.unique {
				jobOpts = append(slices.Clip(opts), relay.Unique(uniqueKey(setting, p, s)))
			}
			if _, err := relay.Enqueue(ctx, tx, benchKind, seqArgs{Seq: s}, jobOpts...); err != nil {
				return err
			}
			tx.onCommit(func(t time.Time) { rec.committed(s, t) })
			return nil
		}
		// The baseline and relay take turns, enqueueSlices each, in alternating order, so
		// that a change in the machine's other load touches both alike.
		base, got := produced{commit: newHist()}, produced{commit: newHist()}
		for i := range enqueueSlices {
			turns := []struct {
				into  *produced
				write func(context.Context, txRunner, int64) error
			}{{&base, plain}, {&got, viaRelay}}
			if i%2 == 1 {
				turns[0], turns[1] = turns[1], turns[0]
			}
			for _, turn := range turns {
				if err := refill(); err != nil {
					return nil, nil, err
				}
				part, err := produce(ctx, b, prodPool, p, dur/enqueueSlices, turn.write)
				if err != nil {
					stopCounting()
					return nil, nil, err
				}
				turn.into.add(part)
			}
		}
		notified := stopCounting()
		n := seq.Load()
		prefix := fmt.Sprintf("%s P=%d ", setting, p)
		if b.opts.unique {
			prefix = fmt.Sprintf("%s unique P=%d ", setting, p)
		}
		ratio := got.rate() / base.rate()
		var target *Target
		if setting == "busy" && p >= 8 {
			target = atLeast(0.9)
		}
		metrics = append(metrics,
			Metric{Name: prefix + "plain INSERT tx/s", Unit: unitFloat, Value: base.rate()},
			Metric{Name: prefix + "relay tx/s", Unit: unitFloat, Value: got.rate()},
			Metric{Name: prefix + "relay / plain INSERT", Unit: unitRatio, Value: ratio, Target: target},
			Metric{Name: prefix + "wakeups sent per enqueue", Unit: unitFloat, Value: float64(notified) / float64(max(n, 1))},
			Metric{Name: prefix + "plain commit p50", Unit: unitMs, Value: ms(base.commit.ValueAtQuantile(50))},
			Metric{Name: prefix + "plain commit p99", Unit: unitMs, Value: ms(base.commit.ValueAtQuantile(99))},
			Metric{Name: prefix + "relay commit p50", Unit: unitMs, Value: ms(got.commit.ValueAtQuantile(50))},
			Metric{Name: prefix + "relay commit p99", Unit: unitMs, Value: ms(got.commit.ValueAtQuantile(99))},
		)
		if setting == "idle" {
			allStarted := waitFor(ctx, 10*time.Second, time.Millisecond, func() bool { return rec.started.Load() >= n })
			byRoute := [2]histogram{newHist(), newHist()} // handed off, claimed
			pk := rec.pickups(0, n, nil, rec.route, byRoute[:])
			late := rec.lateStarts(0, n, lateAfter)
			handedOff, claimed := byRoute[0], byRoute[1]
			metrics = append(metrics,
				Metric{Name: prefix + "pickup p50", Unit: unitMs, Value: ms(pk.hist.ValueAtQuantile(50)), Target: atMost(0.8)},
				Metric{Name: prefix + "pickup p99", Unit: unitMs, Value: ms(pk.hist.ValueAtQuantile(99)), Target: atMost(3)},
				Metric{Name: prefix + "started > 100 ms after commit", Unit: unitCount, Value: float64(late), Target: never()},
				Metric{Name: prefix + "never started", Unit: unitCount, Value: float64(pk.missing), Target: never()},
				Metric{Name: prefix + "handed off (share of jobs)", Unit: unitFloat,
					Value: float64(handedOff.TotalCount()) / float64(max(handedOff.TotalCount()+claimed.TotalCount(), 1))},
				Metric{Name: prefix + "pickup p99, handed off", Unit: unitMs, Value: ms(handedOff.ValueAtQuantile(99))},
				Metric{Name: prefix + "pickup p99, claimed", Unit: unitMs, Value: ms(claimed.ValueAtQuantile(99))},
			)
			if !allStarted {
				notes = append(notes, fmt.Sprintf("%s: %d jobs had not started 10 s after the last commit", prefix, pk.missing))
			}
		}
		b.log.Info("enqueue", "setting", setting, "producers", p, "plain tx/s", int(base.rate()), "relay tx/s", int(got.rate()),
			"ratio", fmt.Sprintf("%.2f", ratio), "wakeups", notified, "jobs", n)
	}
	return metrics, notes, nil
}

// uniqueKey is the key of a producer's n-th job with -unique: never taken before in the run.
func uniqueKey(setting string, producers int, n int64) string {
	return fmt.Sprintf("%s-%d-%d", setting, producers, n)
}

// fillBacklog tops the busy queue's backlog up to enqueueBusyBacklog pending jobs (with
// negative sequence numbers, which the recorder ignores).
func fillBacklog(ctx context.Context, b *bench, pool *pgxpool.Pool, queue string, opts []relay.EnqueueOption) error {
	var pending int
	if err := b.db.admin.QueryRow(ctx, "SELECT count(*) FROM "+b.db.jobsTable()+" WHERE queue = $1 AND state = 'pending'", queue).Scan(&pending); err != nil {
		return err
	}
	specs := make([]relay.JobSpec, 0, 5000)
	for missing := enqueueBusyBacklog - pending; missing > 0; missing -= len(specs) {
		specs = specs[:0]
		for range min(missing, cap(specs)) {
			specs = append(specs, benchKind.Job(seqArgs{Seq: -1}))
		}
		if _, err := relay.EnqueueMany(ctx, pool, specs, opts...); err != nil {
			return fmt.Errorf("fill the backlog: %w", err)
		}
	}
	return nil
}

// produced is what a set of producers committed.
type produced struct {
	txs    int64
	took   time.Duration
	commit histogram // Begin → Commit returned
}

func (p produced) rate() float64 {
	if p.txs < 2 || p.took <= 0 {
		return 0
	}
	return float64(p.txs) / p.took.Seconds()
}

// add counts q's transactions, time and commits into p.
func (p *produced) add(q produced) {
	p.txs += q.txs
	p.took += q.took
	p.commit.Merge(q.commit)
}

// txRunner is a producer's open transaction. It is the pgx.Tx itself, not only the
// relay.DB it satisfies, so that relay sees what it sees in an application's transaction
// (SendBatch among it: a unique enqueue goes out in one batch where it can).
type txRunner struct {
	pgx.Tx
	commits *[]func(time.Time)
}

// onCommit runs fn with the time Commit returned, if it succeeds.
func (t txRunner) onCommit(fn func(time.Time)) { *t.commits = append(*t.commits, fn) }

// produce runs p producers for dur, each committing one transaction after another with
// write (the transaction's one statement) in it.
func produce(ctx context.Context, b *bench, pool *pgxpool.Pool, p int, dur time.Duration, write func(ctx context.Context, tx txRunner, producer int64) error) (produced, error) {
	var (
		mu    sync.Mutex
		out   = produced{commit: newHist()}
		first error
		wg    sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(dur)
	for i := range p {
		wg.Go(func() {
			hist := newHist()
			var n int64
			var commits []func(time.Time)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				tx, err := pool.Begin(ctx)
				if err == nil {
					commits = commits[:0]
					if err = write(ctx, txRunner{Tx: tx, commits: &commits}, int64(i)); err == nil {
						err = tx.Commit(ctx)
					} else {
						tx.Rollback(ctx)
					}
				}
				if err != nil {
					mu.Lock()
					first = cmpOr(first, err)
					mu.Unlock()
					return
				}
				done := time.Now()
				for _, fn := range commits {
					fn(done)
				}
				record(hist, done.Sub(t0))
				n++
			}
			mu.Lock()
			out.txs += n
			out.commit.Merge(hist)
			mu.Unlock()
		})
	}
	wg.Wait()
	out.took = time.Since(start)
	return out, first
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// lateStarts counts the jobs in [lo, hi) that started more than after after their commit.
func (r *recorder) lateStarts(lo, hi int64, after time.Duration) (late int64) {
	for s := lo; s < hi; s++ {
		c, st := r.commit[s].Load(), r.start[s].Load()
		if c != 0 && st != 0 && time.Duration(st-c) > after {
			late++
		}
	}
	return late
}

// countWakeups counts the wakeups of queue sent from now until stop is called, which
// returns how many.
func countWakeups(ctx context.Context, b *bench, queue string) (stop func() int64, err error) {
	conn, err := pgx.Connect(ctx, b.db.url)
	if err != nil {
		return nil, err
	}
	// The end marker goes on a channel of its own, which relay's listeners do not hear: a
	// session receives the notifications of all its channels in commit order.
	const endChannel = "relay_bench_wakeups_end"
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{"relay:" + b.opts.schema}.Sanitize()+"; LISTEN "+endChannel); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	n := new(atomic.Int64)
	listenCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			msg, err := conn.WaitForNotification(listenCtx)
			if err != nil {
				return
			}
			if msg.Channel == endChannel {
				return
			}
			if strings.HasPrefix(msg.Payload, "w:") && strings.HasSuffix(msg.Payload, ":"+queue) {
				n.Add(1)
			}
		}
	}()
	return func() int64 {
		// Notifications of the last commits may still be on their way: the listener gets
		// them in commit order, so once a NOTIFY of our own, sent now, arrives, they have.
		_, _ = b.db.admin.Exec(ctx, "SELECT pg_notify($1, '')", endChannel)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
		}
		cancel()
		<-done
		conn.Close(context.WithoutCancel(ctx))
		return n.Load()
	}, nil
}
