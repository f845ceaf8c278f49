package relay_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// Crash tests of the exactly-once guarantees of CompleteTx and Checkpoint: worker processes
// (this test binary run again as TestHelperExactlyOnceWorkerProcess) are SIGKILLed while
// they run handlers whose effects live in the same database, and the tables must show that
// every job's effect happened exactly once and that progress saved with Checkpoint is what
// the next attempt resumes from.

// The worker process of the tests below is configured by these variables.
const (
	eoModeEnv    = "RELAY_TEST_EO_MODE" // "effects" or "steps"; unset: not a worker
	eoSchemaEnv  = "RELAY_TEST_EO_SCHEMA"
	eoWorkersEnv = "RELAY_TEST_EO_WORKERS"
	eoAppEnv     = "RELAY_TEST_EO_APP" // the application_name of its connections
)

// TestHelperExactlyOnceWorkerProcess is not a test: it is the worker process that
// TestExactlyOnceAcrossSIGKILLs and TestCheckpointSurvivesKillAndRetryResumes start and
// kill. It runs a client on the schema it is given with the handlers of its mode, says
// "ready" on stdout once started, and reports what its handlers do on stdout (one line per
// event, so that the parent knows what a killed worker had done). It exits when its stdin
// closes, so that it cannot outlive the test.
func TestHelperExactlyOnceWorkerProcess(t *testing.T) {
	mode := os.Getenv(eoModeEnv)
	if mode == "" {
		t.Skip("the worker process of TestExactlyOnceAcrossSIGKILLs and TestCheckpointSurvivesKillAndRetryResumes; runs only as their child")
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(3) // the parent is gone
	}()
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "worker: %s: %v\n", what, err)
		os.Exit(2)
	}
	ctx := context.Background()
	cfg, err := pgxpool.ParseConfig(relaytest.URL(t)) // DATABASE_URL, from the parent
	if err != nil {
		fail("parse the database URL", err)
	}
	cfg.MaxConns = 8
	cfg.ConnConfig.RuntimeParams["application_name"] = os.Getenv(eoAppEnv)
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		fail("connect", err)
	}
	schema := os.Getenv(eoSchemaEnv)
	workers, err := strconv.Atoi(os.Getenv(eoWorkersEnv))
	if err != nil {
		fail("workers", err)
	}
	c := relay.New(withShortLeases(relay.Config{
		Schema: schema, PollInterval: time.Hour, Backoff: fastBackoff,
		Queues: map[string]relay.QueueConfig{relay.DefaultQueue: {Workers: workers}},
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}))
	var out sync.Mutex
	say := func(format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Fprintf(os.Stdout, format+"\n", args...) // one write: a kill cannot split a line
	}
	switch mode {
	case "effects":
		err = relay.Handle(c, eoEffectKind, eoEffectHandler(pool, schema, say), relay.MaxAttempts(100))
	case "steps":
		err = relay.Handle(c, eoStepsKind, eoStepsHandler(pool, schema, say, nil))
	default:
		err = fmt.Errorf("unknown mode %q", mode)
	}
	if err == nil {
		err = c.Start(ctx, pool)
	}
	if err != nil {
		fail("start", err)
	}
	say("ready")
	select {} // until SIGKILL
}

// eoEffectKind and eoStepsKind are the kinds the worker processes and their parent tests
// share.
var (
	eoEffectKind = relay.NewKind[numArgs]("effect")
	eoStepsKind  = relay.NewKind[eoStepArgs]("steps")
)

// eoEffectHandler is the handler of eoEffectKind jobs: in one transaction it inserts one row
// for the job into effects and completes the job with CompleteTx. It sleeps a random 0–3 ms
// between the insert and CompleteTx and between CompleteTx and Commit, so that kills land
// inside the transaction, and reports each step through say (if not nil) as
// "<step> <job id> <attempt>".
func eoEffectHandler(pool *pgxpool.Pool, schema string, say func(string, ...any)) relay.HandlerFunc[numArgs] {
	effects := pgx.Identifier{schema, "effects"}.Sanitize()
	if say == nil {
		say = func(string, ...any) {}
	}
	return func(ctx context.Context, job *relay.Job[numArgs]) error {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(context.WithoutCancel(ctx))
		if _, err := tx.Exec(ctx, `INSERT INTO `+effects+` (job_id, n) VALUES ($1, $2)`, job.ID, job.Attempt); err != nil {
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

// eoStepArgs are the args of a "steps" job: it does steps 1..N, each recorded as a row of
// the steps table, and saves the last step done with Checkpoint after each. InTx does each
// step's insert and its Checkpoint in one transaction (with random 0–2 ms pauses inside,
// so that a kill lands there); otherwise both go straight to the pool, one after the
// other. Attempt 1 stops to wait until it is killed, saying "blocked <id> <step>": after
// step BlockAfter if that is positive, or inside step BlockInTx's transaction, after its
// Checkpoint and before its Commit, if that is positive (and InTx is set).
type eoStepArgs struct {
	N          int
	InTx       bool
	BlockAfter int
	BlockInTx  int
}

// eoProgress is a "steps" job's checkpoint: the last step done.
type eoProgress struct {
	Step int `json:"step"`
}

// eoResumed is what an attempt of a "steps" job found when it started.
type eoResumed struct {
	id      int64
	attempt int
	ok      bool // Resume found a checkpoint
	from    int  // the step it found
}

// eoStepsHandler is the handler of "steps" jobs. It reports through say (if not nil)
// "inserted <id> <step>" once a step's row is inserted in its transaction (InTx), and
// "blocked <id> <step>" when it stops to be killed; resumed, if not nil, is told what each
// attempt resumed from.
func eoStepsHandler(pool *pgxpool.Pool, schema string, say func(string, ...any), resumed func(eoResumed)) relay.HandlerFunc[eoStepArgs] {
	steps := pgx.Identifier{schema, "steps"}.Sanitize()
	insert := `INSERT INTO ` + steps + ` (job_id, step, attempt) VALUES ($1, $2, $3)`
	if say == nil {
		say = func(string, ...any) {}
	}
	return func(ctx context.Context, job *relay.Job[eoStepArgs]) error {
		var p eoProgress
		ok, err := job.Resume(&p)
		if err != nil {
			return err
		}
		if resumed != nil {
			resumed(eoResumed{id: job.ID, attempt: job.Attempt, ok: ok, from: p.Step})
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
					if err := relay.Checkpoint(ctx, tx, job, eoProgress{Step: s}); err != nil {
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
				if err := relay.Checkpoint(ctx, pool, job, eoProgress{Step: s}); err != nil {
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

// eoChild is a running worker process.
type eoChild struct {
	db     *relaytest.DB
	app    string // the application_name of its pool's connections
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	ready  chan struct{} // closed when it said "ready"
	exited chan struct{} // closed once its stdout is drained and it has been waited for
	stderr strings.Builder
	killed bool // by the test

	mu    sync.Mutex
	lines []string // what it said, but "ready"
}

// eoStartChild starts a worker process in mode on db's schema with workers workers.
func eoStartChild(t *testing.T, db *relaytest.DB, mode string, workers int) *eoChild {
	t.Helper()
	ch := &eoChild{db: db, app: "relaytest-eo-" + randomHex(), ready: make(chan struct{}), exited: make(chan struct{})}
	ch.cmd = exec.Command(os.Args[0], "-test.run=^TestHelperExactlyOnceWorkerProcess$", "-test.timeout=2m")
	ch.cmd.Env = append(os.Environ(), eoModeEnv+"="+mode, eoSchemaEnv+"="+db.Schema,
		eoWorkersEnv+"="+strconv.Itoa(workers), eoAppEnv+"="+ch.app, "DATABASE_URL="+db.URL)
	var err error
	if ch.stdin, err = ch.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := ch.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	ch.cmd.Stderr = &stderrWriter{b: &ch.stderr}
	if err := ch.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(ch.exited)
		sc := bufio.NewScanner(stdout)
		said := false
		for sc.Scan() {
			if line := sc.Text(); line == "ready" && !said {
				said = true
				close(ch.ready)
			} else {
				ch.mu.Lock()
				ch.lines = append(ch.lines, line)
				ch.mu.Unlock()
			}
		}
		_ = ch.cmd.Wait() // only once stdout is drained: Wait closes it
	}()
	t.Cleanup(func() {
		ch.stdin.Close()
		_ = ch.cmd.Process.Kill()
		<-ch.exited
		if !t.Failed() {
			return
		}
		w := ch.cmd.Stderr.(*stderrWriter)
		w.mu.Lock()
		s := ch.stderr.String()
		w.mu.Unlock()
		// A worker the test killed logs lost attempts as warnings: only its errors matter.
		if ch.killed && !strings.Contains(s, "level=ERROR") {
			return
		}
		if len(s) > 4000 {
			s = "…" + s[len(s)-4000:]
		}
		t.Logf("stderr of worker process %d (%v):\n%s", ch.cmd.Process.Pid, ch.cmd.ProcessState, s)
	})
	return ch
}

// waitReady waits until the worker is started.
func (ch *eoChild) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-ch.ready:
	case <-ch.exited:
		t.Fatalf("worker process exited before it was ready: %v", ch.cmd.ProcessState)
	case <-time.After(30 * time.Second):
		t.Fatal("timed out waiting for the worker process to start")
	}
}

// waitSaid waits until the worker has said line.
func (ch *eoChild) waitSaid(t *testing.T, line string) {
	t.Helper()
	relaytest.WaitFor(t, waitTimeout, fmt.Sprintf("the worker process to say %q", line), func() bool {
		ch.mu.Lock()
		defer ch.mu.Unlock()
		return slices.Contains(ch.lines, line)
	})
}

// kill SIGKILLs the worker and waits until it is gone, with its database connections; it
// returns all the worker said.
func (ch *eoChild) kill(t *testing.T) []string {
	t.Helper()
	ch.killed = true
	if err := ch.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("kill the worker process: %v", err)
	}
	select {
	case <-ch.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("the killed worker process did not exit")
	}
	if ws, ok := ch.cmd.ProcessState.Sys().(interface{ Signaled() bool }); ok && !ws.Signaled() {
		t.Fatalf("the worker process was not killed but exited by itself: %v", ch.cmd.ProcessState)
	}
	// A statement the worker sent just before it died (a COMMIT, say) may still be carried
	// out by its server process: what it did is settled only once those are gone too.
	relaytest.WaitFor(t, waitTimeout, "the killed worker's database connections to end", func() bool {
		var n int
		err := ch.db.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`, ch.app).Scan(&n)
		if err != nil {
			t.Fatal(err)
		}
		return n == 0
	})
	ch.mu.Lock()
	defer ch.mu.Unlock()
	return ch.lines
}

// eoAttemptKey is one attempt of one job.
type eoAttemptKey struct {
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
	db := relaytest.NewDB(t)
	ctx := context.Background()
	effects := relayTable(db, "effects")
	if _, err := db.Exec(ctx, `CREATE TABLE `+effects+` (job_id bigint NOT NULL, n integer NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	specs := make([]relay.JobSpec, jobs)
	for i := range specs {
		specs[i] = eoEffectKind.Job(numArgs{N: i})
	}
	ids, err := relay.EnqueueMany(ctx, db, specs, relay.Schema(db.Schema), relay.MaxAttempts(100))
	if err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	said := map[string]map[eoAttemptKey]bool{"inserted": {}, "completed": {}, "committed": {}}
	rounds := 0
	for done := 0; done < jobs && time.Since(began) < killPhase; done = countJobs(t, db, "succeeded") {
		child := eoStartChild(t, db, "effects", workers)
		child.waitReady(t)
		time.Sleep(minKillWait + rand.N(maxKillWait-minKillWait)) // a random moment: the point of the test
		for _, line := range child.kill(t) {
			var (
				what string
				k    eoAttemptKey
			)
			if _, err := fmt.Sscanf(line, "%s %d %d", &what, &k.id, &k.attempt); err != nil || said[what] == nil {
				t.Fatalf("worker process said %q", line)
			}
			said[what][k] = true
		}
		rounds++
	}
	killedAfter := countJobs(t, db, "succeeded")
	t.Logf("%d worker processes killed in %v; %d of %d jobs succeeded by then", rounds, time.Since(began).Round(time.Millisecond), killedAfter, jobs)

	// The rest (jobs the last workers held are rescued when their leases run out) is
	// finished here, by a client that is not killed.
	c := newClient(db, withShortLeases(relay.Config{Backoff: fastBackoff,
		Queues: map[string]relay.QueueConfig{relay.DefaultQueue: {Workers: workers}}}))
	handle(t, c, eoEffectKind, eoEffectHandler(db.Pool, db.Schema, nil), relay.MaxAttempts(100))
	start(t, c, db.Pool)
	relaytest.WaitFor(t, 30*time.Second, "every job to succeed", func() bool { return countJobs(t, db, "succeeded") == jobs })
	stop(t, c)
	t.Logf("all %d jobs succeeded %v after the first worker started", jobs, time.Since(began).Round(time.Millisecond))

	// Exactly one row per job, written by the attempt that succeeded.
	var rows, distinct, foreign, notWinner int
	err = db.QueryRow(ctx, `SELECT count(*), count(DISTINCT job_id),
			count(*) FILTER (WHERE NOT job_id = ANY($1)),
			count(*) FILTER (WHERE n IS DISTINCT FROM (SELECT j.attempt FROM `+relayTable(db, "jobs")+` j WHERE j.id = e.job_id))
		FROM `+effects+` e`, ids).Scan(&rows, &distinct, &foreign, &notWinner)
	if err != nil {
		t.Fatal(err)
	}
	if rows != jobs || distinct != jobs || foreign != 0 {
		dup, err := db.Query(ctx, `SELECT job_id, array_agg(n ORDER BY n) FROM `+effects+` GROUP BY job_id HAVING count(*) > 1 ORDER BY job_id LIMIT 10`)
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
			t.Logf("job %d: history %s", d.id, historyString(jobRecord(t, db, d.id).Attempts))
		}
	}
	if notWinner != 0 {
		t.Errorf("%d rows of effects were written by an attempt other than the one that completed their job", notWinner)
	}
	if n := countJobs(t, db, "succeeded"); n != jobs {
		t.Errorf("%d of %d jobs succeeded", n, jobs)
	}

	// The kills interrupted work: attempts were lost to them, among them attempts killed
	// inside their transaction, after their insert.
	lost := map[eoAttemptKey]bool{}
	reasons := map[string]int{}
	hist, err := db.Query(ctx, `SELECT j.id, (a->>'attempt')::int, coalesce(a->>'reason', '')
		FROM `+relayTable(db, "jobs")+` j, jsonb_array_elements(j.attempts) a`)
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
			lost[eoAttemptKey{id, attempt}] = true
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
	db := relaytest.NewDB(t)
	ctx := context.Background()
	effects := relayTable(db, "effects")
	if _, err := db.Exec(ctx, `CREATE TABLE `+effects+` (job_id bigint NOT NULL, n integer NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	jobs := relayTable(db, "jobs")

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
	c1 := newClient(db, withShortLeases(relay.Config{Queues: map[string]relay.QueueConfig{relay.DefaultQueue: {Workers: 1}}}))
	started1 := make(chan *relay.Job[numArgs], 1)
	try1 := make(chan struct{})
	tried1 := make(chan staleTry, 2)
	testDone := make(chan struct{})
	handle(t, c1, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started1 <- job
		// The handler's context is cancelled once the lease is lost; a handler that carries
		// on regardless (or has not looked yet) is what CompleteTx must stop.
		bg := context.WithoutCancel(ctx)
		for range 2 {
			select {
			case <-try1:
			case <-testDone:
				return nil
			}
			var r staleTry
			func() {
				tx, err := db.Begin(bg)
				if err != nil {
					r.err = err
					return
				}
				defer tx.Rollback(bg)
				if _, err := tx.Exec(bg, `INSERT INTO `+effects+` (job_id, n) VALUES ($1, $2)`, job.ID, job.Attempt); err != nil {
					r.err = err
					return
				}
				if err := tx.QueryRow(bg, `SELECT count(*) FROM `+effects+` WHERE job_id = $1 AND n = $2`, job.ID, job.Attempt).Scan(&r.ownRows); err != nil {
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
			r.checkpoint = relay.Checkpoint(bg, db.Pool, job, eoProgress{Step: 1})
			tried1 <- r
		}
		return nil
	})
	start(t, c1, db.Pool)
	t.Cleanup(func() { close(testDone) }) // before c1's Stop

	id := enqueue(t, db, kind, numArgs{N: 1})
	if job := recv(t, started1, "the job to start on the first client"); job.ID != id || job.Attempt != 1 {
		t.Fatalf("first client ran attempt %d of job %d; want attempt 1 of %d", job.Attempt, job.ID, id)
	}

	// The other side: c2, started only now so that c1 certainly holds the job, does the
	// job properly (insert and CompleteTx in one transaction) when told to.
	c2 := newClient(db, withShortLeases(relay.Config{}))
	ran2 := make(chan int, 10)
	finish2 := make(chan struct{})
	finished2 := make(chan error, 1)
	handle(t, c2, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		ran2 <- job.Attempt
		select {
		case <-finish2:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		err := func() error {
			tx, err := db.Begin(ctx)
			if err != nil {
				return err
			}
			defer tx.Rollback(ctx)
			if _, err := tx.Exec(ctx, `INSERT INTO `+effects+` (job_id, n) VALUES ($1, $2)`, job.ID, job.Attempt); err != nil {
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
	start(t, c2, db.Pool)
	t.Cleanup(func() { closeOnce(finish2) }) // before c2's Stop

	// c1 is cut off: its lease runs out, the job is rescued and runs as attempt 2 on c2.
	relay.PauseLeaseRenewal(c1, true)
	if a := recvWithin(t, ran2, shortTTL+5*time.Second, "the second client to rescue and run the job"); a != 2 {
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
		rec := jobRecord(t, db, id)
		if rec.State != wantState || rec.Attempt != 2 || rec.AttemptedBy != c2.ID() || rec.Checkpoint != nil {
			t.Errorf("%s: after the stale attempt rolled back, the job is %s at attempt %d by %q with checkpoint %s; want %s at attempt 2 by %s, no checkpoint",
				when, rec.State, rec.Attempt, rec.AttemptedBy, rec.Checkpoint, wantState, c2.ID())
		}
	}
	effectRows := func() []int {
		t.Helper()
		rows, err := db.Query(ctx, `SELECT n FROM `+effects+` WHERE job_id = $1 ORDER BY n`, id)
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
	close(finish2)
	if err := recv(t, finished2, "attempt 2 to complete the job"); err != nil {
		t.Fatalf("attempt 2's insert and CompleteTx: %v", err)
	}
	rec := waitRecord(t, db, id, relay.StateSucceeded)

	// Once the job is succeeded.
	try1 <- struct{}{}
	check("after attempt 2 completed the job", recv(t, tried1, "the stale attempt's second try"), relay.StateSucceeded)
	if after := jobRecord(t, db, id); !after.FinishedAt.Equal(rec.FinishedAt) {
		t.Errorf("the stale attempt changed the succeeded job's finished_at from %v to %v", rec.FinishedAt, after.FinishedAt)
	}
	if ns := effectRows(); len(ns) != 1 || ns[0] != 2 {
		t.Errorf("effects holds rows by attempts %v of the job; want exactly one, by attempt 2", ns)
	}
	rec = jobRecord(t, db, id)
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
	db := relaytest.NewDB(t)
	ctx := context.Background()
	steps := relayTable(db, "steps")
	if _, err := db.Exec(ctx, `CREATE TABLE `+steps+` (job_id bigint NOT NULL, step integer NOT NULL, attempt integer NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	checkpointOf := func(id int64) (eoProgress, bool) {
		t.Helper()
		rec := jobRecord(t, db, id)
		var p eoProgress
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
		rows, err := db.Query(ctx, `SELECT step, attempt FROM `+steps+` WHERE job_id = $1 ORDER BY step, attempt`, id)
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

	child := eoStartChild(t, db, "steps", 3)
	child.waitReady(t)
	pooled := enqueue(t, db, eoStepsKind, eoStepArgs{N: blockSteps, BlockAfter: blockAt})
	inTx := enqueue(t, db, eoStepsKind, eoStepArgs{N: blockSteps, InTx: true, BlockInTx: blockAt + 1})
	random := enqueue(t, db, eoStepsKind, eoStepArgs{N: randomSteps, InTx: true})
	names := map[int64]string{pooled: "pooled", inTx: "in-tx", random: "random"}

	// The worker signals where the blocked jobs wait on stdout, and the random job's
	// progress through its checkpoint.
	child.waitSaid(t, fmt.Sprintf("blocked %d %d", pooled, blockAt))
	child.waitSaid(t, fmt.Sprintf("blocked %d %d", inTx, blockAt+1))
	relaytest.WaitFor(t, waitTimeout, fmt.Sprintf("the random job to save step %d", killAfter), func() bool {
		p, _ := checkpointOf(random)
		return p.Step >= killAfter
	})
	time.Sleep(rand.N(3 * time.Millisecond)) // a random moment in the random job's run
	said := child.kill(t)

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
		if rec := jobRecord(t, db, id); rec.State != relay.StateRunning || rec.Attempt != 1 {
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
	resumed := make(chan eoResumed, 10)
	c := newClient(db, withShortLeases(relay.Config{Backoff: fastBackoff}))
	handle(t, c, eoStepsKind, eoStepsHandler(db.Pool, db.Schema, nil, func(r eoResumed) { resumed <- r }))
	start(t, c, db.Pool)
	from := map[int64]eoResumed{}
	for range want {
		r := recvWithin(t, resumed, shortTTL+5*time.Second, "the killed jobs to be retried")
		from[r.id] = r
	}
	for id, k := range want {
		if r := from[id]; r.attempt != 2 || !r.ok || r.from != k {
			t.Errorf("the %s job's retry: %+v; want attempt 2 resuming from its checkpoint, step %d", names[id], r, k)
		}
	}
	waitState(t, db, "succeeded", pooled, inTx, random)
	stop(t, c)
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
		rec := jobRecord(t, db, id)
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
	db := relaytest.NewDB(t)
	ctx := context.Background()
	c := newClient(db, withShortLeases(relay.Config{Queues: map[string]relay.QueueConfig{relay.DefaultQueue: {Workers: 1}}}))
	type result struct {
		steps int
		err   error
	}
	stopWork := make(chan struct{})
	done := make(chan result, 10) // one per attempt
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		var r result
		for r.err == nil {
			select {
			case <-stopWork:
				done <- r
				return nil
			default:
			}
			r.err = func() error {
				tx, err := db.Begin(ctx)
				if err != nil {
					return err
				}
				defer tx.Rollback(context.WithoutCancel(ctx))
				if err := relay.Checkpoint(ctx, tx, job, eoProgress{Step: r.steps + 1}); err != nil {
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
	start(t, c, db.Pool)
	t.Cleanup(func() { closeOnce(stopWork) }) // before Stop

	id := enqueue(t, db, kind, numArgs{})
	relaytest.WaitFor(t, waitTimeout, "the first step to commit", func() bool { return jobRecord(t, db, id).Checkpoint != nil })

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
		err := db.QueryRow(ctx, `SELECT state, attempt, coalesce(extract(epoch FROM clock_timestamp() - lease_expires_at), 0),
				coalesce((checkpoint->>'step')::int, 0)
			FROM `+relayTable(db, "jobs")+` WHERE id = $1`, id).Scan(&state, &attempt, &ago, &steps)
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
	closeOnce(stopWork)
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
	rec := waitRecord(t, db, id, relay.StateSucceeded)
	if rec.Attempt != 1 || len(rec.Attempts) != 1 {
		t.Errorf("the job succeeded after attempt %d with history %s; want attempt 1 alone", rec.Attempt, historyString(rec.Attempts))
	}
}
