package relay_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// Tests of what a client does when the database, or the way to it, fails: attempts that
// failed only because their connection did (infrastructure faults), recovery once the
// database is back, and connections reserved for the client's own statements. The suite
// of heavier faults is the chaos suite (go run ./chaos).

// Only errors that certainly come from a failed PostgreSQL connection are infrastructure
// faults: SQLSTATE classes 08 and 57 (but a cancelled statement, 57014), failed connects
// and connections pgx found closed. A statement PostgreSQL refused, a cancelled context
// and network errors of anything else are the handler's.
func TestInfrastructureFaultsAreOnlyConnectionFailures(t *testing.T) {
	t.Parallel()
	// A connect to a port where nothing listens fails with pgx's own ConnectError.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, connectErr := pgconn.Connect(context.Background(), "postgres://postgres@"+addr+"/postgres?sslmode=disable&connect_timeout=5")
	if connectErr == nil {
		t.Fatal("a connect to a closed port worked")
	}
	pg := func(code string) error { return &pgconn.PgError{Severity: "FATAL", Code: code} }
	for name, c := range map[string]struct {
		err  error
		want bool
	}{
		"terminated (57P01)":             {fmt.Errorf("insert: %w", pg("57P01")), true},
		"crash of another backend 57P02": {pg("57P02"), true},
		"starting up (57P03)":            {pg("57P03"), true},
		"connection failure (08006)":     {pg("08006"), true},
		"a failed connect":               {fmt.Errorf("acquire: %w", connectErr), true},
		"a closed connection":            {fmt.Errorf("exec: %w", pgconn.ErrConnClosed), true},
		"the commit of CompleteTx":       {errors.Join(errors.New("did not commit"), pg("57P01")), true},
		"a statement timeout (57014)":    {pg("57014"), false},
		"a unique violation (23505)":     {pg("23505"), false},
		"a cancelled context":            {context.Canceled, false},
		"an EOF of another connection":   {io.ErrUnexpectedEOF, false},
		"an HTTP call refused":           {&net.OpError{Op: "dial", Err: errors.New("connection refused")}, false},
		"a plain error":                  {errors.New("no"), false},
	} {
		if got := relay.ConnectionLost(c.err); got != c.want {
			t.Errorf("%s: ConnectionLost = %v, want %v", name, got, c.want)
		}
	}
}

// An attempt whose database connection was terminated under its handler is recorded with
// reason infrastructure, retried at once (not after the backoff delay, a second here) and
// not counted: a job with one attempt still runs again, and succeeds.
func TestAttemptWhoseConnectionDiedIsRetriedAtOnceUncounted(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(relay.Config{}) // relay's default backoff: 1 s ± 25 % after an error
	ran := make(chan time.Time, 4)
	handle(t, c, testKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		ran <- time.Now()
		if job.Attempt > 1 {
			return nil
		}
		conn, err := b.Acquire(ctx)
		if err != nil {
			return err
		}
		defer conn.Release()
		var pid uint32
		if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err != nil {
			return err
		}
		terminate(b, pid)
		_, err = conn.Exec(ctx, "SELECT 1") // on a connection PostgreSQL has ended
		return fmt.Errorf("after the connection was terminated: %w", err)
	})
	b.start(c)
	id := enqueue(b, testKind, numArgs{}, relay.MaxAttempts(1))
	first := recv(t, ran, "the first attempt")
	rec := b.waitRecord(id, relay.StateSucceeded)
	if rec.Attempt != 2 || len(rec.Attempts) != 2 || rec.Attempts[0].Reason != relay.ReasonInfrastructure {
		t.Fatalf("job succeeded on attempt %d with history %s; want attempt 1 lost to an infrastructure fault, then attempt 2",
			rec.Attempt, historyString(rec.Attempts))
	}
	if rec.MaxAttempts != 2 {
		t.Errorf("MaxAttempts = %d, want 2: the uncounted attempt gives the job one more", rec.MaxAttempts)
	}
	if gap := recv(t, ran, "the second attempt").Sub(first); gap > 600*time.Millisecond {
		t.Errorf("the second attempt started %v after the first; want at once, not after the backoff delay", gap)
	}
}

// From attempt FreeInfraAttempts on, infrastructure faults count like errors: a handler
// whose own statement brings its connection down every time is not retried forever.
func TestInfrastructureFaultsCountFromTheirLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(relay.Config{})
	handle(t, c, testKind, func(context.Context, *relay.Job[numArgs]) error {
		return &pgconn.PgError{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"}
	})
	// A job enqueued with as many attempts as that, and all but one already used: the
	// claim below is its attempt FreeInfraAttempts.
	id := enqueue(b, testKind, numArgs{}, relay.MaxAttempts(relay.FreeInfraAttempts))
	if _, err := b.Exec(context.Background(), `UPDATE `+b.table("jobs")+` SET attempt = $1 WHERE id = $2`,
		relay.FreeInfraAttempts-1, id); err != nil {
		t.Fatal(err)
	}
	b.start(c)
	rec := b.waitRecord(id, relay.StateFailed)
	if rec.Attempt != relay.FreeInfraAttempts || rec.MaxAttempts != relay.FreeInfraAttempts ||
		len(rec.Attempts) != 1 || rec.Attempts[0].Reason != relay.ReasonInfrastructure {
		t.Errorf("failed on attempt %d of %d with history %s; want attempt %d, counted, with reason %s",
			rec.Attempt, rec.MaxAttempts, historyString(rec.Attempts), relay.FreeInfraAttempts, relay.ReasonInfrastructure)
	}
}

// PostgreSQL stops while a handler is about to commit the transaction in which it called
// CompleteTx: its commit fails, and the attempt's outcome cannot be written. Once the
// server is back, the outcome is written and the job runs again within a second — not
// once its lease (30 s here) has expired — and its effect exists once. A job enqueued
// right after the server is back starts within a second too.
func TestClientRecoversWithinASecondOfTheDatabaseComingBack(t *testing.T) {
	t.Parallel()
	srv, b := onServerOfItsOwn(t)
	ctx := context.Background()
	effects := b.effectsTable()
	handlers := b.pool(nil)
	c := b.client(relay.Config{LeaseTTL: 30 * time.Second, LeaseRenewal: 10 * time.Second})
	committing, commit := make(chan struct{}, 1), b.gate()
	type start struct {
		n, attempt int
		at         time.Time
	}
	started := make(chan start, 10)
	var attempts atomic.Int64
	handle(t, c, testKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started <- start{job.Args.N, job.Attempt, time.Now()}
		if job.Args.N == 0 { // a plain job
			return nil
		}
		attempts.Add(1)
		tx, err := handlers.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(context.WithoutCancel(ctx))
		if err := insertEffect(ctx, tx, effects, job.ID, job.Attempt, ""); err != nil {
			return err
		}
		if err := relay.CompleteTx(ctx, tx, job); err != nil {
			return err
		}
		if job.Attempt == 1 {
			committing <- struct{}{}
			commit.wait()
		}
		return tx.Commit(ctx)
	})
	b.startOn(c, handlers)

	id := enqueue(b, testKind, numArgs{N: 1})
	recv(t, committing, "the handler about to commit")
	if err := srv.Halt(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	commit.open()           // the commit fails: the server is gone
	time.Sleep(time.Second) // outcome writes, claims and renewals fail meanwhile
	if err := srv.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	// The second attempt may start before Resume returns (the client reconnects as soon as
	// the server accepts connections): then it took no time at all.
	second := recv(t, started, "the first attempt")
	for second.attempt != 2 {
		second = recv(t, started, "the second attempt")
	}
	if took := second.at.Sub(back); took > time.Second {
		t.Errorf("the job ran again %v after the server was back; want within a second", took)
	}
	rec := b.waitRecord(id, relay.StateSucceeded)
	if rec.Attempt != 2 || len(rec.Attempts) != 2 || rec.Attempts[0].Reason != relay.ReasonInfrastructure {
		t.Errorf("succeeded on attempt %d with history %s; want attempt 1 failed (infrastructure), then attempt 2",
			rec.Attempt, historyString(rec.Attempts))
	}
	if got := b.effects(effects); len(got) != 1 {
		t.Errorf("effects %v; want exactly one", got)
	}

	_, committedAt := enqueueTx(b, testKind, numArgs{})
	if took := recv(t, started, "a job enqueued after the recovery").at.Sub(committedAt); took > time.Second {
		t.Errorf("a job enqueued after the recovery started %v after its commit; want within a second", took)
	}
}

// Handlers that hold every connection of the pool, for longer than the lease, do not
// starve their client: its renewals, claims and outcomes run on connections it reserves
// for itself (named by ReservedApplicationName), so no lease is lost, no job runs twice,
// and jobs that need no connection run meanwhile.
func TestHandlersHoldingEveryConnectionDoNotStarveTheClient(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	pool := b.pool(func(cfg *pgxpool.Config) { cfg.MaxConns = 2 })
	hogKind, freeKind := relay.NewKind[numArgs]("hog"), relay.NewKind[numArgs]("free")
	c := b.client(withShortLeases(relay.Config{}))
	holding, release := make(chan struct{}, 10), b.gate() // room for reruns: a handler must not block
	runs := make(chan int64, 10)
	handle(t, c, hogKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		runs <- job.ID
		tx, err := pool.Begin(ctx) // takes one of the pool's two connections
		if err != nil {
			return err
		}
		defer tx.Rollback(context.WithoutCancel(ctx))
		holding <- struct{}{}
		select {
		case <-release.ch:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		return tx.Commit(ctx)
	})
	freeRan := make(chan int64, 1)
	handle(t, c, freeKind, reportIDs(freeRan))
	b.startOn(c, pool)

	hogs := []int64{enqueue(b, hogKind, numArgs{}), enqueue(b, hogKind, numArgs{})}
	recv(t, holding, "a handler holding a connection")
	recv(t, holding, "both handlers holding a connection")
	free := enqueue(b, freeKind, numArgs{})
	if got := recv(t, freeRan, "a job enqueued while the pool is exhausted"); got != free {
		t.Fatalf("ran job %d, want %d", got, free)
	}
	b.waitState(relay.StateSucceeded, free) // its outcome too
	var reserved int
	if err := b.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`,
		relay.ReservedApplicationName(c.ID())).Scan(&reserved); err != nil {
		t.Fatal(err)
	}
	if reserved == 0 {
		t.Error("no reserved connection is open while handlers hold every connection of the pool")
	}
	time.Sleep(3 * shortTTL) // renewals through three leases' time
	release.open()
	b.waitState(relay.StateSucceeded, hogs...)
	for _, id := range hogs {
		if rec := b.record(id); rec.Attempt != 1 || len(rec.Attempts) != 1 {
			t.Errorf("job %d succeeded on attempt %d with history %s; want its first attempt, its lease kept",
				id, rec.Attempt, historyString(rec.Attempts))
		}
	}
	close(runs)
	if n := len(runs); n != 2 {
		t.Errorf("the holding handlers ran %d times, want 2", n)
	}
}

// An outage of the database longer than the lease reruns no job that its client finished
// or gave up: the client is alive, only cut off, and once the database answers it writes
// what it has (its rescuer waits LeaseRenewal first, so that it does not take its own or
// another live client's jobs for lost). A job whose handler returned before the outage's
// end succeeds on its one attempt, whether it returned before its lease expired or after
// the client cancelled it with ErrLeaseExpired; a job whose handler gave up is retried at
// once, on the owner's word rather than a rescuer's.
func TestAnOutageLongerThanTheLeaseRerunsNoFinishedJob(t *testing.T) {
	t.Parallel()
	srv, b := onServerOfItsOwn(t)
	ctx := context.Background()
	const ttl, renewal = 3 * time.Second, time.Second
	c := b.client(relay.Config{LeaseTTL: ttl, LeaseRenewal: renewal, Queues: queues(5, relay.DefaultQueue)})
	const (
		finishes = iota + 1 // returns during the outage, before its lease expires
		succeeds            // returns nil once its context ends
		givesUp             // returns its context's cause
	)
	type start struct{ n, attempt int }
	started := make(chan start, 10)
	causes := make(chan error, 2)
	halted, retried := b.gate(), b.gate()
	handle(t, c, testKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started <- start{job.Args.N, job.Attempt}
		switch {
		case job.Attempt > 1:
			retried.wait()
			return nil
		case job.Args.N == finishes:
			halted.wait()
			return nil
		}
		<-ctx.Done()
		causes <- context.Cause(ctx)
		if job.Args.N == succeeds {
			return nil
		}
		return context.Cause(ctx)
	})
	b.start(c)
	ids := map[int]int64{}
	for _, n := range []int{finishes, succeeds, givesUp} {
		ids[n] = enqueue(b, testKind, numArgs{N: n})
	}
	for range 3 {
		if s := recv(t, started, "the three jobs to start"); s.attempt != 1 {
			t.Fatalf("job %d started attempt %d; want 1", s.n, s.attempt)
		}
	}

	if err := srv.Halt(ctx, "fast"); err != nil {
		t.Fatal(err)
	}
	halted.open()
	for range 2 {
		if cause := relaytest.Receive(t, causes, ttl+waitTimeout, "the client to give up the leases it could not renew"); !errors.Is(cause, relay.ErrLeaseExpired) {
			t.Fatalf("a handler's context ended with %v; want ErrLeaseExpired", cause)
		}
	}
	if err := srv.Resume(ctx); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	if s := recv(t, started, "the retry of the job that gave up"); s.n != givesUp || s.attempt != 2 {
		t.Fatalf("job %d started attempt %d after the outage; want only job %d's attempt 2", s.n, s.attempt, givesUp)
	} else if took := time.Since(back); took >= 2*time.Second {
		t.Errorf("the job that gave up ran again %v after the database was back; want within 2 s", took)
	}
	retried.open()
	for _, n := range []int{finishes, succeeds} {
		rec := b.waitRecord(ids[n], relay.StateSucceeded)
		if rec.Attempt != 1 || len(rec.Attempts) != 1 {
			t.Errorf("job %d succeeded on attempt %d with history %s; want its one attempt, never rescued", n, rec.Attempt, historyString(rec.Attempts))
		}
	}
	rec := b.waitRecord(ids[givesUp], relay.StateSucceeded)
	// Written by its client (its error is the cause it gave up with), not rescued (which
	// says whose lease expired when).
	if rec.Attempt != 2 || len(rec.Attempts) != 2 || rec.Attempts[0].Reason != relay.ReasonLostLease ||
		rec.Attempts[0].Error != relay.ErrLeaseExpired.Error() {
		t.Errorf("the job that gave up succeeded on attempt %d with history %s; want attempt 1 lost (lost lease) as its own client wrote it (error %q), then attempt 2",
			rec.Attempt, historyString(rec.Attempts), relay.ErrLeaseExpired)
	}
	b.stop(c)
	noMore(t, started, "attempt")
}

// An infrastructure fault of a job that already has the most attempts an integer holds
// gives it no more (one more would not fit): its outcome is written, and the job runs again.
// One outcome that cannot be written would fail every batch it is in, for good.
func TestInfrastructureFaultOfAJobWithTheMostAttempts(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(relay.Config{})
	handle(t, c, testKind, func(_ context.Context, job *relay.Job[numArgs]) error {
		if job.Attempt > 1 {
			return nil
		}
		return &pgconn.PgError{Severity: "FATAL", Code: "57P01", Message: "terminating connection due to administrator command"}
	})
	id := enqueue(b, testKind, numArgs{}, relay.MaxAttempts(math.MaxInt32))
	b.start(c)
	rec := b.waitRecord(id, relay.StateSucceeded)
	if rec.Attempt != 2 || rec.MaxAttempts != math.MaxInt32 || len(rec.Attempts) != 2 || rec.Attempts[0].Reason != relay.ReasonInfrastructure {
		t.Errorf("succeeded on attempt %d of %d with history %s; want attempt 2 of %d, after one lost to %s",
			rec.Attempt, rec.MaxAttempts, historyString(rec.Attempts), math.MaxInt32, relay.ReasonInfrastructure)
	}
}
