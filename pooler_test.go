package relay_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/pgtest"
	"github.com/relayq/relay/relaytest"
)

// Relay behind PgBouncer in transaction mode, started by the tests in front of the test's
// server (pgtest.StartBouncerT: skipped without a pgbouncer binary, failed in CI).

// behindBouncer starts PgBouncer in transaction mode in front of b's server and returns a
// bundle on b's database and schema whose pool goes through it. The pool runs its
// statements unprepared (QueryExecModeExec): PgBouncer before 1.21 cannot keep the
// prepared statements of pgx's default mode from one transaction to the next.
func (b *bundle) behindBouncer() *bundle {
	b.t.Helper()
	return b.behindBouncerIn(pgx.QueryExecModeExec)
}

// behindBouncerIn is behindBouncer with the pool's statements sent in mode.
func (b *bundle) behindBouncerIn(mode pgx.QueryExecMode) *bundle {
	t := b.t
	t.Helper()
	bouncer := pgtest.StartBouncerT(t, b.URL, pgtest.BouncerOptions{})
	via := bouncer.Via(b.URL)
	cfg, err := pgxpool.ParseConfig(via)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 8
	cfg.ConnConfig.DefaultQueryExecMode = mode
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	return newBundle(t, &relaytest.DB{Pool: pool, Schema: b.Schema, URL: via})
}

// deafWarnings returns a logger that keeps relay's warnings as b.keptLogger does, and
// sends those that say the listener hears nothing on the channel.
func (b *bundle) deafWarnings() (*slog.Logger, <-chan string) {
	kept := b.keptLogger().Handler()
	deaf := make(chan string, 10)
	return slog.New(logHook(func(r slog.Record) {
		_ = kept.Handle(context.Background(), r)
		if strings.Contains(r.Message, "listener hears no notifications") {
			select {
			case deaf <- r.Message:
			default:
			}
		}
	})), deaf
}

// With the pool through PgBouncer in transaction mode and the listener connected to
// PostgreSQL itself (Config.ListenerConnString), everything works: enqueues, claims,
// outcomes, CompleteTx, checkpoints, queue settings, listing — and jobs start at once,
// woken through the direct listener (the fallback poll is an hour). Cancelling a running
// job reaches its handler through the listener too. No warning says the listener is deaf.
func TestBehindPgBouncerWithADirectListener(t *testing.T) {
	t.Parallel()
	direct := setup(t)
	b := direct.behindBouncer()
	logger, deaf := b.deafWarnings()
	probe := 300 * time.Millisecond
	started := time.Now()
	exerciseAll(b, relay.Config{ListenerConnString: direct.URL, Logger: logger},
		func(c *relay.Client) { relay.ProbeListenerWithin(c, probe) })

	// With renewals an hour apart, only the listener can bring the cancel in time.
	cancelRunningJob(b, relay.Config{ListenerConnString: direct.URL, LeaseTTL: 3 * time.Hour, LeaseRenewal: time.Hour})
	if wait := time.Until(started.Add(2 * probe)); wait > 0 {
		time.Sleep(wait) // a verdict would have come by then: the warning must not
	}
	select {
	case msg := <-deaf:
		t.Errorf("a listener connected to PostgreSQL itself was reported deaf: %s", msg)
	default:
	}
}

// The other modes that prepare no named statement work through PgBouncer too: the simple
// protocol, and descriptions cached (each Describe its own round trip, each execution
// parsed afresh with its statement). The README names them.
func TestBehindPgBouncerInOtherExecModes(t *testing.T) {
	t.Parallel()
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeSimpleProtocol, pgx.QueryExecModeCacheDescribe} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			direct := setup(t)
			exerciseAll(direct.behindBouncerIn(mode), relay.Config{ListenerConnString: direct.URL})
		})
	}
}

// A poll-only client works through PgBouncer alone: every statement goes through the
// pooler — migrations too — and no job waits longer than about the poll interval.
func TestPollOnlyThroughPgBouncerAlone(t *testing.T) {
	t.Parallel()
	direct := setup(t, relaytest.Unmigrated())
	b := direct.behindBouncer()
	if err := relay.Migrate(context.Background(), b.Pool); err != nil {
		t.Fatalf("Migrate through PgBouncer: %v", err)
	}
	exerciseAll(b, relay.Config{PollOnly: true, PollInterval: 50 * time.Millisecond})
	// Without a listener, the cancellation reaches the handler at the next lease renewal,
	// with the same cause.
	cancelRunningJob(b, relay.Config{PollOnly: true, PollInterval: 50 * time.Millisecond,
		LeaseTTL: time.Second, LeaseRenewal: 200 * time.Millisecond})

	var listeners int
	if err := direct.QueryRow(context.Background(),
		`SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'relay listener %' AND datname = current_database()`).Scan(&listeners); err != nil {
		t.Fatal(err)
	}
	if listeners != 0 {
		t.Errorf("%d listener connections; a poll-only client opens none", listeners)
	}
}

// cancelRunningJob starts a client configured by cfg on b.Pool, cancels a job while its
// handler runs, and checks that the handler's context ends with ErrCancelled.
func cancelRunningJob(b *bundle, cfg relay.Config) {
	t := b.t
	t.Helper()
	kind := relay.NewKind[numArgs]("cancel-me")
	c := b.client(cfg)
	running, ended := make(chan struct{}, 1), make(chan error, 1)
	handle(t, c, kind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		running <- struct{}{}
		<-ctx.Done()
		ended <- context.Cause(ctx)
		return ctx.Err()
	})
	b.start(c)
	id := enqueue(b, kind, numArgs{})
	recv(t, running, "the handler to start")
	if err := relay.Cancel(context.Background(), b, id, relay.Schema(b.Schema)); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if got := recv(t, ended, "the cancelled handler's context to end"); !errors.Is(got, relay.ErrCancelled) {
		t.Errorf("the cancelled handler's context ended with %v, want ErrCancelled", got)
	}
	b.waitState(relay.StateCancelled, id)
	b.stop(c)
}

// A listener that connects through PgBouncer in transaction mode LISTENs, but hears
// nothing: the client says so in a warning that names the fix. Its jobs still run, found
// by the poll.
func TestListenerThroughPgBouncerIsReportedDeaf(t *testing.T) {
	t.Parallel()
	b := setup(t).behindBouncer()
	logger, deaf := b.deafWarnings()
	c := b.client(relay.Config{Logger: logger, PollInterval: 100 * time.Millisecond})
	relay.ProbeListenerWithin(c, 300*time.Millisecond)
	ran := make(chan int64, 10)
	handle(t, c, testKind, reportIDs(ran))
	b.start(c)
	msg := recv(t, deaf, "the warning that the listener hears nothing")
	for _, fix := range []string{"ListenerConnString", "PollOnly", "transaction"} {
		if !strings.Contains(msg, fix) {
			t.Errorf("the warning does not name %s: %s", fix, msg)
		}
	}
	id := enqueue(b, testKind, numArgs{})
	if got := recv(t, ran, "the job, found by the poll"); got != id {
		t.Fatalf("ran job %d, want %d", got, id)
	}
}

// Enqueues NOTIFY only for a dispatcher that waits for a wakeup. A poll-only client hears
// none, so none of its dispatchers waits for one — neither those of the queues it names,
// from its start, nor those of its groups' queues, from their first claim — and enqueues
// into its queues do not notify, but for a listening client that waits there. Its jobs
// all run.
func TestPollOnlyClientsAreNotNotified(t *testing.T) {
	t.Parallel()
	b := setup(t)
	poll := b.client(relay.Config{PollOnly: true, PollInterval: 50 * time.Millisecond,
		Queues: map[string]relay.QueueConfig{relay.DefaultQueue: {Workers: 4}, "t-*": {Workers: 2}}})
	ran := make(chan int64, 100)
	handle(t, poll, testKind, reportIDs(ran))
	b.start(poll)
	if b.wakes(b, relay.DefaultQueue) {
		t.Error("an enqueue into a queue only a poll-only client works would notify")
	}

	id := enqueue(b, testKind, numArgs{}, relay.Queue("t-1"))
	b.waitState(relay.StateSucceeded, id)
	if b.wakes(b, "t-1") {
		t.Error("an enqueue into a poll-only client's queue of a group, once worked, would notify")
	}
	ids := b.enqueueN(testKind, 50)
	b.waitState(relay.StateSucceeded, ids...)

	listening := b.client(relay.Config{})
	handle(t, listening, testKind, reportIDs(ran))
	b.start(listening)
	if !b.wakes(b, relay.DefaultQueue) {
		t.Error("an enqueue would not notify a listening client that waits for work")
	}
	b.stop(listening)
	if b.wakes(b, relay.DefaultQueue) {
		t.Error("once the listening client stopped, an enqueue would notify the poll-only one")
	}
}

// A poll-only client hears no wakeup when a job of an ordered key ends, but wakes its own
// queue once the outcome commits: the next job of the key starts then, not at the next
// poll (an hour here).
func TestPollOnlyClientRunsAnOrderedKeyWithoutWaitingForThePoll(t *testing.T) {
	t.Parallel()
	b := setup(t)
	b.setQueue("ordered", relay.QueueSettings{Ordered: true})
	var ids []int64
	for i := range 3 {
		ids = append(ids, enqueue(b, testKind, numArgs{N: i}, relay.Queue("ordered"), relay.OrderKey("k")))
	}
	c := b.client(relay.Config{PollOnly: true, PollInterval: time.Hour, Queues: queues(4, "ordered")})
	ran := make(chan int64, 10)
	handle(t, c, testKind, reportIDs(ran))
	b.start(c) // its first claim finds the head of the key
	for _, want := range ids {
		if got := recv(t, ran, "the next job of the key"); got != want {
			t.Fatalf("ran job %d, want %d (in order)", got, want)
		}
	}
}
