package relay_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/loadavg"
	"github.com/relayq/relay/relaytest"
)

// Enqueues send a NOTIFY only when it can wake something (migration 006's wake function):
// these tests hold the protocol that keeps every wakeup that matters.

// wakes asks the schema's wake function, as an enqueue would, whether a job of kinds
// enqueued into queue now would send its wakeup (and sends it, if so).
func (b *bundle) wakes(db relay.DB, queue string, kinds ...string) bool {
	b.t.Helper()
	var k []string
	if len(kinds) > 0 {
		k = kinds
	}
	var sent bool
	err := db.QueryRow(context.Background(), "SELECT "+pgx.Identifier{b.Schema, "wake"}.Sanitize()+"($1, $2, now(), 0, $3)",
		"relay:"+b.Schema, queue, k).Scan(&sent)
	if err != nil {
		b.t.Fatal(err)
	}
	return sent
}

// holdWaitLock takes the wait lock of queue ("*": of every queue) on conn, as a client
// whose dispatcher of it may wait does (migration 012), and returns its release.
func (b *bundle) holdWaitLock(conn *pgx.Conn, queue string) (release func()) {
	b.t.Helper()
	return b.holdLock(conn, "wait_lock", queue, true)
}

// holdLock takes, on conn and for the session, the advisory lock whose key the schema's
// function keyOf (wait_lock, client_lock, listening_lock) gives for arg, shared or not, as
// a client's connection holds it, and returns its release.
func (b *bundle) holdLock(conn *pgx.Conn, keyOf, arg string, shared bool) (release func()) {
	b.t.Helper()
	ctx := context.Background()
	mode := ""
	if shared {
		mode = "_shared"
	}
	from := " FROM " + pgx.Identifier{b.Schema, keyOf}.Sanitize() + "($1, $2) k"
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock"+mode+"(k[1], k[2])"+from, "relay:"+b.Schema, arg); err != nil {
		b.t.Fatal(err)
	}
	return func() {
		b.t.Helper()
		if _, err := conn.Exec(ctx, "SELECT pg_advisory_unlock"+mode+"(k[1], k[2])"+from, "relay:"+b.Schema, arg); err != nil {
			b.t.Fatal(err)
		}
	}
}

// lockHeld reports whether the advisory lock whose key the schema's function keyOf gives
// for arg is held (granted, in any mode), by a session whose application_name is holder,
// or by any if holder is "".
func (b *bundle) lockHeld(keyOf, arg, holder string) bool {
	b.t.Helper()
	var held bool
	err := b.QueryRow(context.Background(), `SELECT EXISTS (
		SELECT FROM pg_locks l JOIN pg_stat_activity a USING (pid), `+pgx.Identifier{b.Schema, keyOf}.Sanitize()+`($1, $2) k
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
		  AND l.classid = k[1]::oid AND l.objid = k[2]::oid AND ($3 = '' OR a.application_name = $3))`,
		"relay:"+b.Schema, arg, holder).Scan(&held)
	return err == nil && held
}

// The decision, case by case: a job wakes its queue when a live client that serves the
// queue and handles the kind has no dispatcher of it working through a backlog; a
// transaction that cannot take a fresh snapshot always notifies. The tables are asked
// only while some client holds the wait lock of the queue or of every queue: with
// neither held, whatever the tables say, nothing waits.
func TestWakeNotifiesOnlyWhenItCanWakeSomething(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := b.Exec(ctx, sql, args...); err != nil {
			t.Fatal(err)
		}
	}
	locker, err := pgx.Connect(ctx, b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer locker.Close(ctx)
	// client a serves a group: it holds the wait lock of every queue
	releaseAll := b.holdWaitLock(locker, "*")
	clients, dispatchers := b.table("clients"), b.table("dispatchers")
	exec("INSERT INTO " + clients + " (id, lease_ttl, queues, kinds) VALUES ('a', '15 s', '{q,tenant-*}', '{k}')")
	busy := func(queue, client string, yes bool) {
		t.Helper()
		exec("INSERT INTO "+dispatchers+" (queue, client_id, waiting) VALUES ($1, $2, $3) ON CONFLICT (queue, client_id) DO UPDATE SET waiting = EXCLUDED.waiting",
			queue, client, !yes)
	}
	check := func(what string, got, want bool) {
		t.Helper()
		if got != want {
			t.Errorf("%s: wake = %v, want %v", what, got, want)
		}
	}

	check("a queue no client serves", b.wakes(b, "other", "k"), false)
	check("a served queue with no dispatcher yet", b.wakes(b, "q", "k"), true)
	check("a kind no client handles", b.wakes(b, "q", "x"), false)
	busy("q", "a", true)
	check("the only dispatcher is busy", b.wakes(b, "q", "k"), false)
	check("any kind, the only dispatcher busy", b.wakes(b, "q"), false)
	busy("q", "a", false)
	check("the dispatcher waits", b.wakes(b, "q", "k"), true)
	check("any kind, the dispatcher waits", b.wakes(b, "q"), true)
	check("a queue of a group, with no dispatcher yet", b.wakes(b, "tenant-1", "k"), true)
	busy("tenant-1", "a", true)
	check("a queue of a group whose dispatcher is busy", b.wakes(b, "tenant-1", "k"), false)

	busy("q", "a", true)
	exec("INSERT INTO " + clients + " (id, lease_ttl, queues, kinds) VALUES ('b', '15 s', '{q}', '{k,x}')")
	check("a second client with no busy dispatcher", b.wakes(b, "q", "k"), true)
	check("only the second client handles the kind", b.wakes(b, "q", "x"), true)
	exec("UPDATE " + clients + " SET heartbeat_at = now() - interval '20 s' WHERE id = 'b'")
	check("the second client's heartbeat is older than its lease, but not twice", b.wakes(b, "q", "k"), true)
	exec("UPDATE " + clients + " SET heartbeat_at = now() - interval '31 s' WHERE id = 'b'")
	check("the second client is dead", b.wakes(b, "q", "k"), false)
	exec("UPDATE " + clients + " SET heartbeat_at = now(), stopped_at = now() WHERE id = 'b'")
	check("the second client stopped", b.wakes(b, "q", "k"), false)

	for _, iso := range []pgx.TxIsoLevel{pgx.RepeatableRead, pgx.Serializable} {
		tx, err := b.BeginTx(ctx, pgx.TxOptions{IsoLevel: iso})
		if err != nil {
			t.Fatal(err)
		}
		check(string(iso)+", the only dispatcher busy", b.wakes(tx, "q", "k"), true)
		tx.Rollback(ctx)
	}
	tx, err := b.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		t.Fatal(err)
	}
	check("read committed, the only dispatcher busy", b.wakes(tx, "q", "k"), false)
	tx.Rollback(ctx)

	// The tables say the dispatcher of q waits; the locks decide whether to ask them.
	busy("q", "a", false)
	check("the tables say it waits, the lock of every queue held", b.wakes(b, "q", "k"), true)
	releaseAll()
	check("the tables say it waits, no wait lock held", b.wakes(b, "q", "k"), false)
	releaseOther := b.holdWaitLock(locker, "other")
	check("only another queue's wait lock held", b.wakes(b, "q", "k"), false)
	releaseOther()
	releaseQ := b.holdWaitLock(locker, "q")
	check("the queue's own wait lock held", b.wakes(b, "q", "k"), true)
	releaseQ()
	tx, err = b.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	check("repeatable read, no wait lock held", b.wakes(tx, "q", "k"), true)
	tx.Rollback(ctx)
}

// A dispatcher working through a backlog is not woken by the jobs enqueued meanwhile (it
// finds them with its next claims), and once it runs out of work it is woken again: no
// NOTIFY from the enqueues into its queue until then, and the next job after it starts
// at once.
func TestBusyDispatcherIsNotWokenAndWaitsAgainWhenIdle(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	kind := relay.NewKind[numArgs]("backlog")
	c := b.client(relay.Config{Queues: queues(1, "busy", "probe")})
	started := make(chan int64, 100)
	release := make(chan struct{}, 100)
	quit := b.gate()
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started <- job.ID
		select {
		case <-release:
		case <-quit.ch:
		}
		return nil
	})
	probed := make(chan int64, 10)
	handle(t, c, probeKind, reportIDs(probed))

	backlog := b.enqueueN(kind, 4, relay.Queue("busy"))
	b.start(c)
	// One worker: each claim takes one job and fills the dispatcher's only slot, so from
	// its second claim on it works through the backlog unwoken.
	for i := range 2 {
		if got := recv(t, started, "a backlog job"); got != backlog[i] {
			t.Fatalf("started job %d, want %d", got, backlog[i])
		}
		if i == 0 {
			release <- struct{}{}
		}
	}
	var waiting bool
	if err := b.QueryRow(ctx, "SELECT waiting FROM "+b.table("dispatchers")+" WHERE queue = 'busy'").Scan(&waiting); err != nil || waiting {
		t.Fatalf("the busy dispatcher's row says waiting = %v (%v), want false", waiting, err)
	}

	listen, err := pgx.Connect(ctx, b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer listen.Close(ctx)
	if _, err := listen.Exec(ctx, "LISTEN "+pgx.Identifier{"relay:" + b.Schema}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	more := enqueue(b, kind, numArgs{N: 100}, relay.Queue("busy"))
	// A batch, which is not handed off (migration 016): its wakeup goes to the schema's
	// channel, after the one an enqueue into the busy queue would have sent.
	probe := b.enqueueMany([]relay.JobSpec{probeKind.Job(numArgs{})}, relay.Queue("probe"))[0]
	if got := recv(t, probed, "the probe"); got != probe {
		t.Fatalf("probe ran job %d, want %d", got, probe)
	}
	// Notifications arrive in commit order: every one before the probe's is read by now.
	for {
		n, err := listen.WaitForNotification(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(n.Payload, ":busy") {
			t.Fatalf("an enqueue into the busy queue sent a wakeup: %q", n.Payload)
		}
		if strings.HasSuffix(n.Payload, ":probe") {
			break
		}
	}

	// The backlog, the job enqueued meanwhile included, runs out; then a new job wakes the
	// dispatcher again.
	for _, id := range append(backlog[2:], more) {
		release <- struct{}{}
		if got := recv(t, started, "the rest of the backlog"); got != id {
			t.Fatalf("started job %d, want %d", got, id)
		}
	}
	release <- struct{}{}
	relaytest.WaitFor(t, waitTimeout, "the dispatcher to wait for wakeups again", func() bool {
		var waiting bool
		err := b.QueryRow(ctx, "SELECT waiting FROM "+b.table("dispatchers")+" WHERE queue = 'busy'").Scan(&waiting)
		return err == nil && waiting
	})
	next, committed := enqueueTx(b, kind, numArgs{N: 200}, relay.Queue("busy"))
	if got := recv(t, started, "a job after the backlog"); got != next {
		t.Fatalf("started job %d, want %d", got, next)
	}
	if late := time.Since(committed); late > time.Second {
		t.Errorf("the job after the backlog started %v after its commit", late)
	}
	release <- struct{}{}
}

// wakeRace is one producer mode of TestNoWakeupIsLost.
type wakeRace struct {
	name  string
	jobs  int
	batch int // most jobs per transaction
	iso   pgx.TxIsoLevel
	// clients run the jobs, 2 unless set: with 3, a job's wakeup is addressed to two of
	// them (migration 015), and the third hears nothing.
	clients int
}

// The lost-wakeup race, in rounds: in each, 16 producers commit 1 to 48 jobs at once, one
// transaction after another with short random pauses, so that the dispatchers of two
// clients go from busy (unwoken) to waiting while producers still decide whether to
// notify; then nothing is enqueued until every job of the round has started. A lost wakeup
// cannot be covered up by a later one: its job waits for the poll, set to one hour, and the
// round fails after 250 ms. Not parallel: the bound is about wakeups, and the other tests'
// load on a small machine would make it one about CPU.
func TestNoWakeupIsLost(t *testing.T) {
	for _, mode := range []wakeRace{
		{name: "one job per transaction", jobs: 20_000, batch: 1},
		{name: "EnqueueMany", jobs: 6_000, batch: 5},
		{name: "repeatable read", jobs: 4_000, batch: 1, iso: pgx.RepeatableRead},
		{name: "three clients", jobs: 6_000, batch: 1, clients: 3},
	} {
		t.Run(mode.name, func(t *testing.T) { testNoWakeupIsLost(t, mode) })
	}
}

func testNoWakeupIsLost(t *testing.T, mode wakeRace) {
	const (
		producers = 16
		maxRound  = 48
	)
	b := setup(t)
	kind := relay.NewKind[numArgs]("race")
	started := make(chan int, mode.jobs) // each job once, as it first starts
	once := make([]atomic.Bool, mode.jobs)
	for range max(mode.clients, 2) {
		c := b.client(relay.Config{Queues: queues(8, relay.DefaultQueue)})
		handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
			if once[job.Args.N].CompareAndSwap(false, true) {
				started <- job.Args.N
			}
			if rand.IntN(4) == 0 {
				busyFor(time.Duration(rand.IntN(1000)) * time.Microsecond) // some work, now and then
			}
			return nil
		})
		b.startOn(c, b.pool(nil))
	}
	// 250 ms on a machine that has a core for each runnable process; a machine loaded
	// beyond its cores delays every wakeup in proportion, which is not a lost one.
	bound := loadavg.Scaled(250 * time.Millisecond)

	ctx := context.Background()
	rounds, worst := 0, time.Duration(0)
	for first := 0; first < mode.jobs; rounds++ {
		end := min(first+1+rand.IntN(maxRound), mode.jobs)
		var (
			next       atomic.Int64
			lastCommit atomic.Int64 // UnixNano
			wg         sync.WaitGroup
		)
		next.Store(int64(first))
		errs := make(chan error, producers)
		for range min(producers, end-first) {
			wg.Go(func() {
				for {
					n := 1 + rand.IntN(mode.batch)
					from := int(next.Add(int64(n))) - n
					if from >= end {
						return
					}
					seqs := make([]int, 0, n)
					for s := from; s < min(from+n, end); s++ {
						seqs = append(seqs, s)
					}
					// Half the transactions do something else for a while before they commit,
					// as applications do: a dispatcher may go from busy to waiting meanwhile.
					hold := time.Duration(0)
					if rand.IntN(2) == 0 {
						hold = time.Duration(rand.IntN(3000)) * time.Microsecond
					}
					done, err := commitJobs(ctx, b, pgx.TxOptions{IsoLevel: mode.iso}, kind, seqs, hold)
					if err != nil {
						errs <- err
						return
					}
					for c := lastCommit.Load(); c < done.UnixNano() && !lastCommit.CompareAndSwap(c, done.UnixNano()); c = lastCommit.Load() {
					}
					time.Sleep(time.Duration(rand.IntN(2000)) * time.Microsecond)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		// Quiet until the round's jobs have started: nothing else can wake a dispatcher.
		committed := time.Unix(0, lastCommit.Load())
		deadline := time.NewTimer(time.Until(committed.Add(bound)))
		for got := first; got < end; got++ {
			select {
			case <-started:
			case <-deadline.C:
				var missing []int
				for s := first; s < end; s++ {
					if !once[s].Load() {
						missing = append(missing, s)
					}
				}
				t.Fatalf("round %d: jobs %v had not started %v after the round's last commit, with nothing else enqueued: a lost wakeup (the poll is one hour)",
					rounds, missing, bound)
			}
		}
		deadline.Stop()
		worst = max(worst, time.Since(committed))
		first = end
	}
	t.Logf("%d jobs in %d rounds; the slowest round's last job started %v after its last commit", mode.jobs, rounds, worst)
}

// commitJobs enqueues a job per seq in one transaction with opts, waits for hold, commits,
// and returns when Commit returned.
func commitJobs(ctx context.Context, b *bundle, opts pgx.TxOptions, kind relay.Kind[numArgs], seqs []int, hold time.Duration) (time.Time, error) {
	tx, err := b.BeginTx(ctx, opts)
	if err != nil {
		return time.Time{}, err
	}
	defer tx.Rollback(ctx)
	if len(seqs) == 1 {
		_, err = relay.Enqueue(ctx, tx, kind, numArgs{N: seqs[0]}, relay.Schema(b.Schema))
	} else {
		specs := make([]relay.JobSpec, len(seqs))
		for i, s := range seqs {
			specs[i] = kind.Job(numArgs{N: s})
		}
		_, err = relay.EnqueueMany(ctx, tx, specs, relay.Schema(b.Schema))
	}
	if err != nil {
		return time.Time{}, err
	}
	time.Sleep(hold)
	if err := tx.Commit(ctx); err != nil {
		return time.Time{}, err
	}
	return time.Now(), nil
}

// busyFor spins for d: a handler's work that holds its worker, unlike a sleep.
func busyFor(d time.Duration) {
	for end := time.Now().Add(d); time.Now().Before(end); {
	}
}

// Jobs that sort before a busy dispatcher's cursor, which no NOTIFY moves back for them:
// a scheduled job of a higher priority than the backlog's that falls due (a job of the
// backlog's own priority due later than the backlog waits its turn behind it, in run_at
// order), and a job whose producer's transaction began (its now(), its run_at) before
// jobs the dispatcher has already claimed. Each starts promptly.
func TestJobsBehindABusyDispatchersCursorStartPromptly(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	work, marked := relay.NewKind[numArgs]("work"), relay.NewKind[numArgs]("marked")
	c := b.client(relay.Config{Queues: queues(2, relay.DefaultQueue)})
	handle(t, c, work, func(ctx context.Context, job *relay.Job[numArgs]) error {
		time.Sleep(2 * time.Millisecond) // a job's work, keeping the backlog worked
		return nil
	})
	type run struct {
		id int64
		at time.Time
	}
	runs := make(chan run, 10)
	handle(t, c, marked, func(ctx context.Context, job *relay.Job[numArgs]) error {
		runs <- run{job.ID, time.Now()}
		return nil
	})
	b.enqueueN(work, 1000, relay.Priority(-1))
	b.start(c)
	relaytest.WaitFor(t, waitTimeout, "the dispatcher to work through the backlog unwoken", func() bool {
		var n int
		err := b.QueryRow(ctx, "SELECT count(*) FROM "+b.table("dispatchers")+" WHERE NOT waiting").Scan(&n)
		return err == nil && n == 1
	})

	// Due in 50 ms, on the busy queue.
	due := time.Now().Add(50 * time.Millisecond)
	scheduled := enqueue(b, marked, numArgs{}, relay.RunAt(due))
	r := recv(t, runs, "the scheduled job")
	if r.id != scheduled || r.at.Before(due) || r.at.Sub(due) > 250*time.Millisecond {
		t.Errorf("scheduled job %d started %v after its time; want job %d, within 250 ms", r.id, r.at.Sub(due), scheduled)
	}

	// A transaction that began before the dispatcher claimed past its now(): jobs enqueued
	// after it began, and committed first, are claimed while it is open.
	tx, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	old, err := relay.Enqueue(ctx, tx, marked, numArgs{}, relay.Schema(b.Schema), relay.Priority(-1))
	if err != nil {
		t.Fatal(err)
	}
	later := b.enqueueN(work, 200, relay.Priority(-1))
	relaytest.WaitFor(t, waitTimeout, "a job enqueued after the open transaction began to be claimed", func() bool {
		return b.record(later[0]).State != relay.StatePending
	})
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	committed := time.Now()
	r = recv(t, runs, "the job of the old transaction")
	if r.id != old || r.at.Sub(committed) > 250*time.Millisecond {
		t.Errorf("job %d of an old transaction started %v after its commit; want job %d, within 250 ms", r.id, r.at.Sub(committed), old)
	}
	if rec := b.record(later[len(later)-1]); rec.State != relay.StatePending {
		t.Errorf("the backlog ran out (its last job is %s) before the old transaction's job started: the dispatcher was not busy", rec.State)
	}
}

// A client killed while its dispatchers wait: enqueues stop waking it as soon as its
// wait locks go with its connection, long before its heartbeat could lapse; and its jobs
// are not lost: the next client to start runs them.
func TestKilledWaitingClientStopsCostingWakeups(t *testing.T) {
	t.Parallel()
	b := setup(t)
	worker := b.startWorker("crash", nil)
	worker.waitReady()
	if !b.wakes(b, relay.DefaultQueue, crashKind.Name()) {
		t.Fatal("an enqueue would not wake the waiting worker")
	}
	worker.kill()
	killed := time.Now()
	id := enqueue(b, crashKind, numArgs{})
	relaytest.WaitFor(t, 10*shortTTL, "enqueues to stop waking the dead worker", func() bool {
		return !b.wakes(b, relay.DefaultQueue, crashKind.Name())
	})
	if d := time.Since(killed); d >= shortTTL {
		t.Errorf("enqueues stopped waking the killed worker %v after its kill, when its lease had expired; want at once, when its wait locks went with its connection", d)
	}
	c := b.client(relay.Config{})
	ran := make(chan int64, 1)
	handle(t, c, crashKind, reportIDs(ran))
	b.start(c)
	if got := recv(t, ran, "the job enqueued while the worker was dead"); got != id {
		t.Fatalf("ran job %d, want %d", got, id)
	}
	if !b.wakes(b, relay.DefaultQueue, crashKind.Name()) {
		t.Error("enqueues do not wake the new client")
	}
}

// The channel is written into the statements as a string literal (its hashes are the wait
// locks' keys): for a schema whose name holds a quote, a backslash and what looks like
// parameters, an enqueue still finds the wait lock of a waiting dispatcher and wakes it,
// and a reservation's deadline still reaches the expirer. With the poll at one hour, a
// wrong literal would leave the job to wait for it.
func TestWakeupsReachAClientOfASchemaWithAnOddName(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := relaytest.NewDB(t, relaytest.Unmigrated())
	schema := `odd 'name' \n @q $1 ` + randomHex()
	if err := relay.Migrate(ctx, db.Pool, relay.Schema(schema)); err != nil {
		t.Fatal(err)
	}
	b := newBundle(t, &relaytest.DB{Pool: db.Pool, Schema: schema, URL: db.URL})
	c := b.client(relay.Config{Queues: queues(1, "q")})
	started := make(chan int64, 10)
	handle(t, c, probeKind, reportIDs(started))
	b.start(c)
	relaytest.WaitFor(t, waitTimeout, "the client to hold the wait lock of q", func() bool {
		return b.lockHeld("wait_lock", "q", relay.WaitLocksApplicationName(c.ID()))
	})

	id, committed := enqueueTx(b, probeKind, numArgs{}, relay.Queue("q"))
	if got := recv(t, started, "the job"); got != id {
		t.Fatalf("started job %d, want %d", got, id)
	}
	if late := time.Since(committed); late > time.Second {
		t.Errorf("the job started %v after its commit", late)
	}

	held, _ := enqueueTx(b, probeKind, numArgs{}, relay.Queue("q"), relay.Reserved(100*time.Millisecond))
	if rec := b.waitRecord(held, relay.StateCancelled); len(rec.Attempts) != 1 || rec.Attempts[0].Reason != relay.ReasonExpired {
		t.Errorf("the reservation ended with attempts %+v, want one that expired", rec.Attempts)
	}
}
