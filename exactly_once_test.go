package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// Crash tests of the exactly-once guarantees of CompleteTx and Checkpoint: worker processes
// (roles "effects" and "steps" of harness_test.go) are SIGKILLed while
// they run handlers whose effects live in the same database, and the tables must show that
// every job's effect happened exactly once and that progress saved with Checkpoint is what
// the next attempt resumes from.

// effectKind and stepsKind are the kinds the worker processes and their tests share.
var (
	effectKind = relay.NewKind[numArgs]("effect")
	stepsKind  = relay.NewKind[stepArgs]("steps")
)

// effectsWorker is the role "effects" of a worker process (see workerRoles): WORKERS
// workers run effectKind jobs with effectHandler, writing to the effects table TABLE.
func effectsWorker(w *workerSide) (*relay.Client, error) {
	c, err := exactlyOnceClient(w)
	if err != nil {
		return nil, err
	}
	return c, relay.Handle(c, effectKind, effectHandler(w.pool, w.setting("TABLE"), w.say), relay.MaxAttempts(100))
}

// stepsWorker is the role "steps": WORKERS workers run stepsKind jobs with stepsHandler,
// writing to the steps table TABLE.
func stepsWorker(w *workerSide) (*relay.Client, error) {
	c, err := exactlyOnceClient(w)
	if err != nil {
		return nil, err
	}
	return c, relay.Handle(c, stepsKind, stepsHandler(w.pool, w.setting("TABLE"), w.say, nil))
}

// exactlyOnceClient is the client of the roles above: short leases and fast retries, so
// that the killed workers' jobs are rescued and run again within a second.
func exactlyOnceClient(w *workerSide) (*relay.Client, error) {
	workers, err := w.intSetting("WORKERS")
	if err != nil {
		return nil, err
	}
	cfg := withShortLeases(w.cfg)
	cfg.Backoff = fastBackoff
	cfg.Queues = queues(workers, relay.DefaultQueue)
	return relay.New(cfg), nil
}

// effectHandler is the handler of effectKind jobs: in one transaction it inserts one row
// for the job into effects (see bundle.effectsTable) and completes the job with
// CompleteTx. It sleeps a random 0–3 ms between the insert and CompleteTx and between
// CompleteTx and Commit, so that kills land inside the transaction, and reports each step
// through say (if not nil) as "<step> <job id> <attempt>".
func effectHandler(pool *pgxpool.Pool, effects string, say func(string, ...any)) relay.HandlerFunc[numArgs] {
	if say == nil {
		say = func(string, ...any) {}
	}
	return func(ctx context.Context, job *relay.Job[numArgs]) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(context.WithoutCancel(ctx))
		if err := insertEffect(ctx, tx, effects, job.ID, job.Attempt, ""); err != nil {
			return err
		}
		say("inserted %d %d", job.ID, job.Attempt)
		time.Sleep(rand.N(3 * time.Millisecond))
		if err := relay.CompleteTx(ctx, tx, job); err != nil {
			return err
		}
		say("completed %d %d", job.ID, job.Attempt)
		time.Sleep(rand.N(3 * time.Millisecond))
		if err := tx.Commit(ctx); err != nil {
			return err
		}
		say("committed %d %d", job.ID, job.Attempt)
		return nil
	}
}

// stepArgs are the args of a "steps" job: it does steps 1..N, each recorded as a row of
// the steps table, and saves the last step done with Checkpoint after each. InTx does each
// step's insert and its Checkpoint in one transaction (with random 0–2 ms pauses inside,
// so that a kill lands there); otherwise both go straight to the pool, one after the
// other. Attempt 1 stops to wait until it is killed, saying "blocked <id> <step>": after
// step BlockAfter if that is positive, or inside step BlockInTx's transaction, after its
// Checkpoint and before its Commit, if that is positive (and InTx is set).
type stepArgs struct {
	N          int
	InTx       bool
	BlockAfter int
	BlockInTx  int
}

// stepProgress is a "steps" job's checkpoint: the last step done.
type stepProgress struct {
	Step int `json:"step"`
}

// resumedStep is what an attempt of a "steps" job found when it started.
type resumedStep struct {
	id      int64
	attempt int
	ok      bool // Resume found a checkpoint
	from    int  // the step it found
}

// stepsHandler is the handler of "steps" jobs. It reports through say (if not nil)
// "inserted <id> <step>" once a step's row is inserted in its transaction (InTx), and
// "blocked <id> <step>" when it stops to be killed; resumed, if not nil, is told what each
// attempt resumed from.
func stepsHandler(pool *pgxpool.Pool, steps string, say func(string, ...any), resumed func(resumedStep)) relay.HandlerFunc[stepArgs] {
	insert := `INSERT INTO ` + steps + ` (job_id, step, attempt) VALUES ($1, $2, $3)`
	if say == nil {
		say = func(string, ...any) {}
	}
	return func(ctx context.Context, job *relay.Job[stepArgs]) error {
		var p stepProgress
		ok, err := job.Resume(&p)
		if err != nil {
			return err
		}
		if resumed != nil {
			resumed(resumedStep{id: job.ID, attempt: job.Attempt, ok: ok, from: p.Step})
		}
		block := func(s int) error {
			say("blocked %d %d", job.ID, s)
			<-ctx.Done() // until killed
			return context.Cause(ctx)
		}
		for s := p.Step + 1; s <= job.Args.N; s++ {
			if job.Args.InTx {
				err := func() error {
					tx, err := pool.Begin(ctx)
					if err != nil {
						return err
					}
					defer tx.Rollback(context.WithoutCancel(ctx))
					if _, err := tx.Exec(ctx, insert, job.ID, s, job.Attempt); err != nil {
						return err
					}
					say("inserted %d %d", job.ID, s)
					time.Sleep(rand.N(2 * time.Millisecond))
					if err := relay.Checkpoint(ctx, tx, job, stepProgress{Step: s}); err != nil {
						return err
					}
					if job.Attempt == 1 && s == job.Args.BlockInTx {
						return block(s)
					}
					time.Sleep(rand.N(2 * time.Millisecond))
					return tx.Commit(ctx)
				}()
				if err != nil {
					return err
				}
			} else {
				if _, err := pool.Exec(ctx, insert, job.ID, s, job.Attempt); err != nil {
					return err
				}
				if err := relay.Checkpoint(ctx, pool, job, stepProgress{Step: s}); err != nil {
					return err
				}
			}
			if job.Attempt == 1 && s == job.Args.BlockAfter {
				return block(s)
			}
		}
		return nil
	}
}

// attemptKey is one attempt of one job.
type attemptKey struct {
	id      int64
	attempt int
}

// ---------------------------------------------------------------------------------------

// The exactly-once property of CompleteTx under crashes: 1,000 jobs whose handler inserts a
// row and completes the job in one transaction (with pauses inside it) are run by worker
// processes that are SIGKILLed at random moments, round after round, with retries (short
// leases, so the killed workers' jobs are rescued within a second), until all are done.
// The effects table has no unique constraint, yet it ends with exactly 1,000 rows, one per
// job, each written by the attempt that succeeded; every job is succeeded. The kills
// demonstrably interrupted work: jobs have attempts lost to the kills, among them attempts
// that had inserted their row (and so were killed inside the transaction) — rows that must
// have been rolled back for the count to hold.
func TestExactlyOnceAcrossSIGKILLs(t *testing.T) {
	t.Parallel()
	const (
		jobs        = 1000
		workers     = 4                    // per worker process
		killPhase   = 15 * time.Second     // then the test's own client finishes what is left
		minKillWait = 5 * time.Millisecond // after the worker said it is ready
		maxKillWait = 150 * time.Millisecond
	)
	b := setup(t)
	ctx := context.Background()
	effects := b.effectsTable()
	ids := b.enqueueN(effectKind, jobs, relay.MaxAttempts(100))

	began := time.Now()
	said := map[string]map[attemptKey]bool{"inserted": {}, "completed": {}, "committed": {}}
	rounds := 0
	for done := 0; done < jobs && time.Since(began) < killPhase; done = b.count("succeeded") {
		worker := b.startWorker("effects", map[string]string{"WORKERS": strconv.Itoa(workers), "TABLE": effects})
		worker.waitReady()
		time.Sleep(minKillWait + rand.N(maxKillWait-minKillWait)) // a random moment: the point of the test
		for _, line := range worker.kill() {
			var (
				what string
				k    attemptKey
			)
			if _, err := fmt.Sscanf(line, "%s %d %d", &what, &k.id, &k.attempt); err != nil || said[what] == nil {
				t.Fatalf("worker process said %q", line)
			}
			said[what][k] = true
		}
		rounds++
	}
	killedAfter := b.count("succeeded")
	t.Logf("%d worker processes killed in %v; %d of %d jobs succeeded by then", rounds, time.Since(began).Round(time.Millisecond), killedAfter, jobs)

	// The rest (jobs the last workers held are rescued when their leases run out) is
	// finished here, by a client that is not killed.
	c := b.client(withShortLeases(relay.Config{Backoff: fastBackoff, Queues: queues(workers, relay.DefaultQueue)}))
	handle(t, c, effectKind, effectHandler(b.Pool, effects, nil), relay.MaxAttempts(100))
	b.start(c)
	relaytest.WaitFor(t, 30*time.Second, "every job to succeed", func() bool { return b.count("succeeded") == jobs })
	b.stop(c)
	t.Logf("all %d jobs succeeded %v after the first worker started", jobs, time.Since(began).Round(time.Millisecond))

	// Exactly one row per job, written by the attempt that succeeded.
	var rows, distinct, foreign, notWinner int
	err := b.QueryRow(ctx, `SELECT count(*), count(DISTINCT job_id),
			count(*) FILTER (WHERE NOT job_id = ANY($1)),
			count(*) FILTER (WHERE attempt IS DISTINCT FROM (SELECT j.attempt FROM `+b.table("jobs")+` j WHERE j.id = e.job_id))
		FROM `+effects+` e`, ids).Scan(&rows, &distinct, &foreign, &notWinner)
	if err != nil {
		t.Fatal(err)
	}
	if rows != jobs || distinct != jobs || foreign != 0 {
		dup, err := b.Query(ctx, `SELECT job_id, array_agg(attempt ORDER BY attempt) FROM `+effects+` GROUP BY job_id HAVING count(*) > 1 ORDER BY job_id LIMIT 10`)
		if err != nil {
			t.Fatal(err)
		}
		type dupRow struct {
			id       int64
			attempts []int32
		}
		dups, err := pgx.CollectRows(dup, func(r pgx.CollectableRow) (dupRow, error) {
			var d dupRow
			return d, r.Scan(&d.id, &d.attempts)
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Errorf("effects has %d rows for %d distinct jobs (%d of other jobs); want exactly %d, one per job. Jobs with several rows (by the attempts that wrote them): %v",
			rows, distinct, foreign, jobs, dups)
		for _, d := range dups[:min(3, len(dups))] {
			t.Logf("job %d: history %s", d.id, historyString(b.record(d.id).Attempts))
		}
	}
	if notWinner != 0 {
		t.Errorf("%d rows of effects were written by an attempt other than the one that completed their job", notWinner)
	}
	if n := b.count("succeeded"); n != jobs {
		t.Errorf("%d of %d jobs succeeded", n, jobs)
	}

	// The kills interrupted work: attempts were lost to them, among them attempts killed
	// inside their transaction, after their insert.
	lost := map[attemptKey]bool{}
	reasons := map[string]int{}
	hist, err := b.Query(ctx, `SELECT j.id, (a->>'attempt')::int, coalesce(a->>'reason', '')
		FROM `+b.table("jobs")+` j, jsonb_array_elements(j.attempts) a`)
	if err != nil {
		t.Fatal(err)
	}
	var (
		id      int64
		attempt int
		reason  string
	)
	if _, err := pgx.ForEachRow(hist, []any{&id, &attempt, &reason}, func() error {
		reasons[reason]++
		if reason == relay.ReasonLostLease {
			lost[attemptKey{id, attempt}] = true
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var insertedThenLost, completedThenLost int
	for k := range lost {
		if said["inserted"][k] {
			insertedThenLost++
		}
		if said["completed"][k] {
			completedThenLost++
		}
	}
	t.Logf("failed attempts by reason: %v; of the %d attempts lost to kills, %d were killed after their insert and %d of those after CompleteTx too, inside their transaction",
		reasons, len(lost), insertedThenLost, completedThenLost)
	if len(lost) == 0 {
		t.Errorf("no attempt was lost to a kill (reason %q): the kills did not interrupt any job, so the test proves nothing", relay.ReasonLostLease)
	}
	if insertedThenLost == 0 {
		t.Errorf("no attempt was killed inside its transaction (after its insert): the test did not exercise the rollback of an interrupted handler")
	}
	for k := range said["committed"] {
		if lost[k] {
			t.Errorf("attempt %d of job %d committed its transaction, yet was then rescued as lost", k.attempt, k.id)
		}
	}
}

// CompleteTx of an attempt that lost its lease is refused with ErrJobNotHeld, writing
// nothing, both while the job's next attempt runs on another client and once that attempt
// has completed it: the stale handler's transaction (which had inserted its row) is rolled
// back, the job stays as the other attempt made it, and its effect exists once, from the
// attempt that holds the job. A stale Checkpoint is refused the same way.
func TestCompleteTxAfterLostLeaseIsRefused(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("refuse")
	b := setup(t)
	ctx := context.Background()
	effects := b.effectsTable()
	jobs := b.table("jobs")

	// The stale side: a handler on c1 that, each time it is told to, tries to complete its
	// (lost) attempt in a transaction of its own and reports what happened.
	type staleTry struct {
		err        error // anything that went wrong other than the refusal under test
		complete   error // CompleteTx's result
		checkpoint error // Checkpoint's result
		ownRows    int   // its own effects rows its transaction saw after its insert
		state      string
		attempt    int
		holder     string // the job as seen in its transaction after CompleteTx
	}
	c1 := b.client(withShortLeases(relay.Config{Queues: queues(1, relay.DefaultQueue)}))
	started1 := make(chan *relay.Job[numArgs], 1)
	try1 := make(chan struct{})
	tried1 := make(chan staleTry, 2)
	testDone := b.gate()
	handle(t, c1, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started1 <- job
		// The handler's context is cancelled once the lease is lost; a handler that carries
		// on regardless (or has not looked yet) is what CompleteTx must stop.
		bg := context.WithoutCancel(ctx)
		for range 2 {
			select {
			case <-try1:
			case <-testDone.ch:
				return nil
			}
			var r staleTry
			func() {
				tx, err := b.Begin(bg)
				if err != nil {
					r.err = err
					return
				}
				defer tx.Rollback(bg)
				if err := insertEffect(bg, tx, effects, job.ID, job.Attempt, ""); err != nil {
					r.err = err
					return
				}
				if err := tx.QueryRow(bg, `SELECT count(*) FROM `+effects+` WHERE job_id = $1 AND attempt = $2`, job.ID, job.Attempt).Scan(&r.ownRows); err != nil {
					r.err = err
					return
				}
				r.complete = relay.CompleteTx(bg, tx, job)
				if err := tx.QueryRow(bg, `SELECT state, attempt, attempted_by FROM `+jobs+` WHERE id = $1`, job.ID).Scan(&r.state, &r.attempt, &r.holder); err != nil {
					r.err = err
					return
				}
				// Rolled back, as a handler does when CompleteTx refuses.
			}()
			r.checkpoint = relay.Checkpoint(bg, b.Pool, job, stepProgress{Step: 1})
			tried1 <- r
		}
		return nil
	})
	b.start(c1)

	id := enqueue(b, kind, numArgs{N: 1})
	if job := recv(t, started1, "the job to start on the first client"); job.ID != id || job.Attempt != 1 {
		t.Fatalf("first client ran attempt %d of job %d; want attempt 1 of %d", job.Attempt, job.ID, id)
	}

	// The other side: c2, started only now so that c1 certainly holds the job, does the
	// job properly (insert and CompleteTx in one transaction) when told to.
	c2 := b.client(withShortLeases(relay.Config{}))
	ran2 := make(chan int, 10)
	finish2 := b.gate()
	finished2 := make(chan error, 1)
	handle(t, c2, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		ran2 <- job.Attempt
		select {
		case <-finish2.ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		err := func() error {
			tx, err := b.Begin(ctx)
			if err != nil {
				return err
			}
			defer tx.Rollback(ctx)
			if err := insertEffect(ctx, tx, effects, job.ID, job.Attempt, ""); err != nil {
				return err
			}
			if err := relay.CompleteTx(ctx, tx, job); err != nil {
				return err
			}
			return tx.Commit(ctx)
		}()
		finished2 <- err
		return err
	})
	b.start(c2)

	// c1 is cut off: its lease runs out, the job is rescued and runs as attempt 2 on c2.
	relay.PauseLeaseRenewal(c1, true)
	if a := relaytest.Receive(t, ran2, shortTTL+5*time.Second, "the second client to rescue and run the job"); a != 2 {
		t.Fatalf("second client ran attempt %d, want 2", a)
	}

	check := func(when string, r staleTry, wantState relay.JobState) {
		t.Helper()
		if r.err != nil {
			t.Fatalf("%s: the stale handler failed: %v", when, r.err)
		}
		if !errors.Is(r.complete, relay.ErrJobNotHeld) {
			t.Errorf("%s: the stale attempt's CompleteTx returned %v, want ErrJobNotHeld", when, r.complete)
		}
		if r.ownRows != 1 {
			t.Errorf("%s: the stale transaction saw %d rows of its own after its insert, want 1", when, r.ownRows)
		}
		if r.state != string(wantState) || r.attempt != 2 || r.holder != c2.ID() {
			t.Errorf("%s: after the refused CompleteTx, the stale transaction sees the job %s at attempt %d by %q; want %s at attempt 2 by %s (nothing written)",
				when, r.state, r.attempt, r.holder, wantState, c2.ID())
		}
		if !errors.Is(r.checkpoint, relay.ErrJobNotHeld) {
			t.Errorf("%s: the stale attempt's Checkpoint returned %v, want ErrJobNotHeld", when, r.checkpoint)
		}
		rec := b.record(id)
		if rec.State != wantState || rec.Attempt != 2 || rec.AttemptedBy != c2.ID() || rec.Checkpoint != nil {
			t.Errorf("%s: after the stale attempt rolled back, the job is %s at attempt %d by %q with checkpoint %s; want %s at attempt 2 by %s, no checkpoint",
				when, rec.State, rec.Attempt, rec.AttemptedBy, rec.Checkpoint, wantState, c2.ID())
		}
	}
	effectRows := func() []int {
		t.Helper()
		rows, err := b.Query(ctx, `SELECT attempt FROM `+effects+` WHERE job_id = $1 ORDER BY attempt`, id)
		if err != nil {
			t.Fatal(err)
		}
		ns, err := pgx.CollectRows(rows, pgx.RowTo[int])
		if err != nil {
			t.Fatal(err)
		}
		return ns
	}

	// While attempt 2 runs on c2.
	try1 <- struct{}{}
	check("while attempt 2 runs elsewhere", recv(t, tried1, "the stale attempt's first try"), relay.StateRunning)
	if ns := effectRows(); len(ns) != 0 {
		t.Errorf("while attempt 2 runs, effects holds rows by attempts %v of the job; want none (the stale insert rolled back)", ns)
	}

	// Attempt 2 completes the job properly.
	finish2.open()
	if err := recv(t, finished2, "attempt 2 to complete the job"); err != nil {
		t.Fatalf("attempt 2's insert and CompleteTx: %v", err)
	}
	rec := b.waitRecord(id, relay.StateSucceeded)

	// Once the job is succeeded.
	try1 <- struct{}{}
	check("after attempt 2 completed the job", recv(t, tried1, "the stale attempt's second try"), relay.StateSucceeded)
	if after := b.record(id); !after.FinishedAt.Equal(rec.FinishedAt) {
		t.Errorf("the stale attempt changed the succeeded job's finished_at from %v to %v", rec.FinishedAt, after.FinishedAt)
	}
	if ns := effectRows(); len(ns) != 1 || ns[0] != 2 {
		t.Errorf("effects holds rows by attempts %v of the job; want exactly one, by attempt 2", ns)
	}
	rec = b.record(id)
	if len(rec.Attempts) != 2 || rec.Attempts[0].Number != 1 || rec.Attempts[0].Client != c1.ID() || rec.Attempts[0].Reason != relay.ReasonLostLease ||
		rec.Attempts[1].Number != 2 || rec.Attempts[1].Client != c2.ID() || rec.Attempts[1].Outcome != string(relay.StateSucceeded) {
		t.Errorf("history %s; want attempt 1 by %s lost (lost lease), then attempt 2 by %s succeeded", historyString(rec.Attempts), c1.ID(), c2.ID())
	}
}

// Progress saved with Checkpoint survives the SIGKILL of the worker process running the
// job, and the retry resumes from it without redoing earlier steps. Three jobs run in the
// killed worker at once:
//
//   - "pooled" saves its checkpoint straight to the pool after each step's insert and is
//     killed while it waits after step 3: the retry resumes from exactly step 3.
//   - "in-tx" does each step's insert and Checkpoint in one transaction and is killed
//     inside step 4's, after its insert and Checkpoint, before its Commit: both are lost
//     together, so its checkpoint is step 3, its rows are steps 1..3, and the retry
//     resumes from step 3.
//   - "random" does the same but is killed at a random moment mid-run (often inside a
//     step's transaction): after the kill its step rows are exactly steps 1..checkpoint,
//     whatever that is, and the retry resumes from exactly that checkpoint.
//
// In the end each job's steps were each done once: those up to the checkpoint by attempt
// 1, the rest by attempt 2.
func TestCheckpointSurvivesKillAndRetryResumes(t *testing.T) {
	t.Parallel()
	const (
		blockSteps, blockAt    = 6, 3 // the pooled job waits after step 3; the in-tx job inside step 4
		randomSteps, killAfter = 100, 20
	)
	b := setup(t)
	ctx := context.Background()
	steps := b.table("steps")
	if _, err := b.Exec(ctx, `CREATE TABLE `+steps+` (job_id bigint NOT NULL, step integer NOT NULL, attempt integer NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	checkpointOf := func(id int64) (stepProgress, bool) {
		t.Helper()
		rec := b.record(id)
		var p stepProgress
		if rec.Checkpoint == nil {
			return p, false
		}
		if err := json.Unmarshal(rec.Checkpoint, &p); err != nil {
			t.Fatalf("checkpoint of job %d: %s: %v", id, rec.Checkpoint, err)
		}
		return p, true
	}
	stepRows := func(id int64) (stepsDone []int, attempts []int) {
		t.Helper()
		rows, err := b.Query(ctx, `SELECT step, attempt FROM `+steps+` WHERE job_id = $1 ORDER BY step, attempt`, id)
		if err != nil {
			t.Fatal(err)
		}
		var s, a int
		if _, err := pgx.ForEachRow(rows, []any{&s, &a}, func() error {
			stepsDone, attempts = append(stepsDone, s), append(attempts, a)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return stepsDone, attempts
	}
	// isRun reports whether got is exactly from..to.
	isRun := func(got []int, from, to int) bool {
		if len(got) != max(0, to-from+1) {
			return false
		}
		for i, s := range got {
			if s != from+i {
				return false
			}
		}
		return true
	}

	worker := b.startWorker("steps", map[string]string{"WORKERS": "3", "TABLE": steps})
	worker.waitReady()
	pooled := enqueue(b, stepsKind, stepArgs{N: blockSteps, BlockAfter: blockAt})
	inTx := enqueue(b, stepsKind, stepArgs{N: blockSteps, InTx: true, BlockInTx: blockAt + 1})
	random := enqueue(b, stepsKind, stepArgs{N: randomSteps, InTx: true})
	names := map[int64]string{pooled: "pooled", inTx: "in-tx", random: "random"}

	// The worker signals where the blocked jobs wait on stdout, and the random job's
	// progress through its checkpoint.
	worker.waitSaid(fmt.Sprintf("blocked %d %d", pooled, blockAt))
	worker.waitSaid(fmt.Sprintf("blocked %d %d", inTx, blockAt+1))
	relaytest.WaitFor(t, waitTimeout, fmt.Sprintf("the random job to save step %d", killAfter), func() bool {
		p, _ := checkpointOf(random)
		return p.Step >= killAfter
	})
	time.Sleep(rand.N(3 * time.Millisecond)) // a random moment in the random job's run
	said := worker.kill()

	// What the dead worker left: for each job a checkpoint k and exactly steps 1..k.
	want := map[int64]int{pooled: blockAt, inTx: blockAt}
	saved, ok := checkpointOf(random)
	if !ok || saved.Step < killAfter || saved.Step >= randomSteps {
		t.Fatalf("after the kill, the random job's checkpoint is %+v (saved: %v); want a step in %d..%d", saved, ok, killAfter, randomSteps-1)
	}
	want[random] = saved.Step
	for id, k := range want {
		if p, ok := checkpointOf(id); !ok || p.Step != k {
			t.Errorf("after the kill, the %s job's checkpoint is %+v (saved: %v); want step %d", names[id], p, ok, k)
		}
		if got, _ := stepRows(id); !isRun(got, 1, k) {
			t.Errorf("after the kill, the %s job's step rows are %v; want exactly steps 1..%d, its checkpoint (a step's work and its checkpoint are saved together or not at all)",
				names[id], got, k)
		}
		if rec := b.record(id); rec.State != relay.StateRunning || rec.Attempt != 1 {
			t.Errorf("after the kill, the %s job is %s at attempt %d; want still running attempt 1, until its lease runs out", names[id], rec.State, rec.Attempt)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	where := "between two steps' transactions"
	if slices.Contains(said, fmt.Sprintf("inserted %d %d", random, saved.Step+1)) {
		where = fmt.Sprintf("inside step %d's transaction, after its insert (rolled back with it)", saved.Step+1)
	}
	t.Logf("worker killed with the random job at step %d of %d, %s", saved.Step, randomSteps, where)

	// The retry, on a client of this process once the dead worker's leases run out.
	resumed := make(chan resumedStep, 10)
	c := b.client(withShortLeases(relay.Config{Backoff: fastBackoff}))
	handle(t, c, stepsKind, stepsHandler(b.Pool, steps, nil, func(r resumedStep) { resumed <- r }))
	b.start(c)
	from := map[int64]resumedStep{}
	for range want {
		r := relaytest.Receive(t, resumed, shortTTL+5*time.Second, "the killed jobs to be retried")
		from[r.id] = r
	}
	for id, k := range want {
		if r := from[id]; r.attempt != 2 || !r.ok || r.from != k {
			t.Errorf("the %s job's retry: %+v; want attempt 2 resuming from its checkpoint, step %d", names[id], r, k)
		}
	}
	b.waitState("succeeded", pooled, inTx, random)
	b.stop(c)
	select {
	case r := <-resumed:
		t.Errorf("a job ran again: %+v", r)
	default:
	}

	for id, n := range map[int64]int{pooled: blockSteps, inTx: blockSteps, random: randomSteps} {
		got, attempts := stepRows(id)
		if !isRun(got, 1, n) {
			t.Errorf("the %s job did steps %v (%d rows); want each of 1..%d exactly once", names[id], got, len(got), n)
			continue
		}
		k := want[id]
		for i, a := range attempts {
			wantAttempt := 2
			if got[i] <= k {
				wantAttempt = 1
			}
			if a != wantAttempt {
				t.Errorf("the %s job's step %d was done by attempt %d; want %d (resumed from step %d)", names[id], got[i], a, wantAttempt, k)
				break
			}
		}
		rec := b.record(id)
		if len(rec.Attempts) != 2 || rec.Attempts[0].Reason != relay.ReasonLostLease || rec.Attempts[1].Outcome != string(relay.StateSucceeded) {
			t.Errorf("the %s job's history %s; want attempt 1 lost (lost lease), attempt 2 succeeded", names[id], historyString(rec.Attempts))
		}
		if p, _ := checkpointOf(id); p.Step != n {
			t.Errorf("the %s job ended with checkpoint %+v, want step %d", names[id], p, n)
		}
	}
}

// A handler that works in a series of short transactions, each saving its progress with
// Checkpoint together with its work (as Checkpoint's documentation suggests), keeps its
// job's lease while it runs: its client is alive and renews every LeaseRenewal, and each
// transaction lasts 50 ms, a twentieth of the lease. The lease in the table must never
// run out, since a job whose lease ran out is up for rescue by any client, and the attempt
// must end succeeded, never rescued.
//
// The job's row is locked by the handler's transaction (Checkpoint updates it) nearly all
// the time, so this guards against renewals that skip locked rows (renewLeases' FOR
// UPDATE SKIP LOCKED) while the Keeper counts the job as renewed. Found by
// TestCheckpointSurvivesKillAndRetryResumes, whose retried "random" job, checkpointing in
// transactions on a healthy client, was now and then rescued and run a third time when
// the whole package ran at once.
func TestLeaseIsKeptWhileCheckpointingInTransactions(t *testing.T) {
	t.Parallel()
	kind := relay.NewKind[numArgs]("checkpointing")
	const (
		stepTx = 50 * time.Millisecond // each transaction's work
		window = 3 * shortTTL          // how long the lease is watched
	)
	b := setup(t)
	ctx := context.Background()
	c := b.client(withShortLeases(relay.Config{Queues: queues(1, relay.DefaultQueue)}))
	type result struct {
		steps int
		err   error
	}
	stopWork := b.gate()
	done := make(chan result, 10) // one per attempt
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		var r result
		for r.err == nil {
			select {
			case <-stopWork.ch:
				done <- r
				return nil
			default:
			}
			r.err = func() error {
				tx, err := b.Begin(ctx)
				if err != nil {
					return err
				}
				defer tx.Rollback(context.WithoutCancel(ctx))
				if err := relay.Checkpoint(ctx, tx, job, stepProgress{Step: r.steps + 1}); err != nil {
					return err
				}
				time.Sleep(stepTx) // the step's work, inside its transaction
				return tx.Commit(ctx)
			}()
			if r.err == nil {
				r.steps++
			}
		}
		done <- r
		return r.err
	})
	b.start(c)

	id := enqueue(b, kind, numArgs{})
	relaytest.WaitFor(t, waitTimeout, "the first step to commit", func() bool { return b.record(id).Checkpoint != nil })

	// Watch the lease in the table, as committed (the handler's transactions do not touch
	// it), for the whole window: record the longest it was seen run out, and stop early if
	// the job is rescued.
	began := time.Now()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var (
		state          string
		attempt, steps int
		lapsed         time.Duration // the longest the lease was seen run out
		firstLapse     time.Duration // into the watch
	)
	for time.Since(began) < window {
		var ago float64
		err := b.QueryRow(ctx, `SELECT state, attempt, coalesce(extract(epoch FROM clock_timestamp() - lease_expires_at), 0),
				coalesce((checkpoint->>'step')::int, 0)
			FROM `+b.table("jobs")+` WHERE id = $1`, id).Scan(&state, &attempt, &ago, &steps)
		if err != nil {
			t.Fatal(err)
		}
		if state != string(relay.StateRunning) || attempt != 1 {
			break
		}
		if d := time.Duration(ago * float64(time.Second)); d > lapsed {
			if lapsed == 0 {
				firstLapse = time.Since(began)
			}
			lapsed = d
		}
		<-tick.C
	}
	watched := time.Since(began)
	stopWork.open()
	r := recv(t, done, "the handler to stop working")
	if lapsed > 0 {
		t.Errorf("the lease of the running job (its client alive, renewing every %v; its handler committing a %v transaction after another) ran out in the table %v into the watch, and was seen run out by up to %v: the job was up for rescue while its handler worked",
			shortRenewal, stepTx, firstLapse.Round(time.Millisecond), lapsed.Round(time.Millisecond))
	}
	if state != string(relay.StateRunning) || attempt != 1 {
		t.Errorf("%v into the watch (%d steps committed), the job was %s at attempt %d; want running attempt 1: the healthy attempt lost its job",
			watched.Round(time.Millisecond), steps, state, attempt)
	}
	if r.err != nil {
		t.Errorf("the handler's step %d failed: %v", r.steps+1, r.err)
	}
	rec := b.waitRecord(id, relay.StateSucceeded)
	if rec.Attempt != 1 || len(rec.Attempts) != 1 {
		t.Errorf("the job succeeded after attempt %d with history %s; want attempt 1 alone", rec.Attempt, historyString(rec.Attempts))
	}
}
