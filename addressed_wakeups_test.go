package relay_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/loadavg"
	"github.com/relayq/relay/internal/store"
	"github.com/relayq/relay/relaytest"
)

// Wakeups addressed to as few waiting clients as the jobs need (migration 015): these tests
// hold who hears each wakeup, and that a job whose woken client cannot take it still
// starts at once.

// heard is a notification an observer received.
type heard struct{ channel, payload string }

// wakeupObserver LISTENs on the schema's channel and on the channels of clients ids, and
// returns what each enqueue made heard.
type wakeupObserver struct {
	b        *bundle
	conn     *pgx.Conn
	names    map[string]string // channel → "main" or a client's ID
	sentinel int
}

func (b *bundle) observeWakeups(ids ...string) *wakeupObserver {
	b.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, b.URL)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { conn.Close(context.Background()) })
	o := &wakeupObserver{b: b, conn: conn, names: map[string]string{"relay:" + b.Schema: "main"}}
	for _, id := range ids {
		var ch string
		err := b.QueryRow(ctx, "SELECT "+pgx.Identifier{b.Schema, "client_channel"}.Sanitize()+"($1, $2)", "relay:"+b.Schema, id).Scan(&ch)
		if err != nil {
			b.t.Fatal(err)
		}
		o.names[ch] = id
	}
	for ch := range o.names {
		if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
			b.t.Fatal(err)
		}
	}
	return o
}

// after runs enqueue and returns the wakeups it sent, by who heard them ("main", or a
// client's ID), in order. Sentinels notified before enqueue and after it returned mark
// the start and the end: notifications arrive in commit order. What came before the first
// is dropped: a client that gives back a hand-off it cannot take in time (as one busy with
// a backup's claim may, on a loaded machine) wakes the queue for the job, after the step
// that handed it off has ended but before the job runs, which the test waits for.
func (o *wakeupObserver) after(enqueue func()) []heard {
	o.b.t.Helper()
	o.untilSentinel()
	enqueue()
	return o.untilSentinel()
}

// untilSentinel notifies a sentinel and returns the wakeups heard before it.
func (o *wakeupObserver) untilSentinel() []heard {
	o.b.t.Helper()
	ctx := context.Background()
	o.sentinel++
	sentinel := "sentinel:" + strings.Repeat("x", o.sentinel)
	if _, err := o.b.Exec(ctx, "SELECT pg_notify($1, $2)", "relay:"+o.b.Schema, sentinel); err != nil {
		o.b.t.Fatal(err)
	}
	var got []heard
	for {
		waitCtx, cancel := context.WithTimeout(ctx, waitTimeout)
		n, err := o.conn.WaitForNotification(waitCtx)
		cancel()
		if err != nil {
			o.b.t.Fatalf("waiting for the observer's sentinel: %v", err)
		}
		if n.Payload == sentinel {
			return got
		}
		// Listeners' probes (store.ProbePrefix) come at any time, and are no wakeups.
		if !strings.HasPrefix(n.Payload, "sentinel:") && !strings.HasPrefix(n.Payload, store.ProbePrefix) {
			got = append(got, heard{o.names[n.Channel], n.Payload[:2]})
		}
	}
}

// awaitAlive waits until clients ids hold their client locks: producers may address them.
func (b *bundle) awaitAlive(ids ...string) {
	b.t.Helper()
	relaytest.WaitFor(b.t, waitTimeout, "the clients to hold their client locks", func() bool {
		var alive bool
		err := b.QueryRow(context.Background(), "SELECT bool_and("+pgx.Identifier{b.Schema, "client_alive"}.Sanitize()+"($1, id)) FROM unnest($2::text[]) id",
			"relay:"+b.Schema, ids).Scan(&alive)
		return err == nil && alive
	})
}

// One job is handed off to one waiting client (migration 016), and a second job of the same
// transaction wakes one waiting client and a backup, each on its own channel, never a
// client that is not alive (whose row still looks live); a batch wakes as many clients as
// it has jobs, plus the backup, and so does one job enqueued from SQL. A batch with more
// jobs than that many live clients, a wakeup with no kinds, and a job with one live client
// waiting wake every client on the schema's channel.
func TestWakeupIsAddressedToOneWaitingClientAndABackup(t *testing.T) {
	t.Parallel()
	b := setup(t)
	kind := relay.NewKind[numArgs]("addressed")
	ran := make(chan int64, 10)
	clients := map[string]*relay.Client{}
	for _, id := range []string{"a", "b", "c"} {
		c := b.client(relay.Config{ID: id, Queues: queues(4, relay.DefaultQueue)})
		handle(t, c, kind, reportIDs(ran))
		b.start(c)
		clients[id] = c
	}
	// A client that died: its row looks live for twice its lease, but it holds no client lock.
	if _, err := b.Exec(context.Background(), "INSERT INTO "+b.table("clients")+" (id, lease_ttl, queues, kinds) VALUES ('ghost', '1 h', $1, $2)",
		[]string{relay.DefaultQueue}, []string{kind.Name()}); err != nil {
		t.Fatal(err)
	}
	b.awaitTakingHandOffs(relay.DefaultQueue, "a", "b", "c")
	o := b.observeWakeups("a", "b", "c", "ghost")
	// addressed checks that got is jobs wakeups (w:) and then a backup's (b:), each for
	// another live client.
	addressed := func(what string, got []heard, jobs int) {
		t.Helper()
		seen := map[string]bool{}
		ok := len(got) == jobs+1
		for i, h := range got {
			want := "w:"
			if i == jobs {
				want = "b:"
			}
			ok = ok && h.payload == want && h.channel != "main" && h.channel != "ghost" && !seen[h.channel]
			seen[h.channel] = true
		}
		if !ok {
			t.Fatalf("%s was heard as %v; want %d wakeups (w:) and a backup's (b:), each for another of a, b and c", what, got, jobs)
		}
	}
	toAll := func(what string, got []heard) {
		t.Helper()
		if len(got) != 1 || got[0] != (heard{"main", "w:"}) {
			t.Errorf("%s was heard as %v; want one wakeup on the schema's channel, for every client", what, got)
		}
	}
	runs := func(n int) {
		t.Helper()
		for range n {
			recv(t, ran, "a job")
		}
	}

	// handedOff checks that got is one hand-off (h:, migration 016), to a live client.
	handedOff := func(what string, got []heard) {
		t.Helper()
		if len(got) != 1 || got[0].payload != "h:" || got[0].channel == "main" || got[0].channel == "ghost" {
			t.Fatalf("%s was heard as %v; want one hand-off (h:) to one of a, b and c", what, got)
		}
	}
	for i := range 20 {
		handedOff("a job", o.after(func() { enqueue(b, kind, numArgs{N: i}) }))
		runs(1)
	}
	// A transaction hands off one job at most: the next wake clients as before.
	got := o.after(func() {
		tx, err := b.Begin(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(context.Background())
		for n := range 2 {
			if _, err := relay.Enqueue(context.Background(), tx, kind, numArgs{N: 200 + n}, relay.Schema(b.Schema)); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
	if len(got) == 0 {
		t.Fatal("two jobs of one transaction were heard as nothing")
	}
	handedOff("the first job of a transaction", got[:1])
	addressed("the second job of the transaction", got[1:], 1)
	runs(2)
	addressed("a batch of two jobs", o.after(func() {
		b.enqueueMany([]relay.JobSpec{kind.Job(numArgs{N: 100}), kind.Job(numArgs{N: 101})})
	}), 2)
	runs(2)
	addressed("a job enqueued from SQL", o.after(func() {
		if _, err := b.Exec(context.Background(), "SELECT "+pgx.Identifier{b.Schema, "enqueue"}.Sanitize()+"($1, '{}')", kind.Name()); err != nil {
			t.Fatal(err)
		}
	}), 1)
	runs(1)
	toAll("a batch of three jobs, with three live clients waiting", o.after(func() {
		b.enqueueMany([]relay.JobSpec{kind.Job(numArgs{N: 102}), kind.Job(numArgs{N: 103}), kind.Job(numArgs{N: 104})})
	}))
	runs(3)

	// A job that ended and freed an ordered key or a limited slot wakes with no kinds: the
	// job it lets start may be of a kind the addressed clients do not handle.
	toAll("a wakeup with no kinds", o.after(func() {
		if _, err := b.Exec(context.Background(), "SELECT "+pgx.Identifier{b.Schema, "wake"}.Sanitize()+"($1, $2, now(), 0, NULL, 1)",
			"relay:"+b.Schema, relay.DefaultQueue); err != nil {
			t.Fatal(err)
		}
	}))

	b.stop(clients["b"])
	b.stop(clients["c"])
	toAll("with one live client waiting (and a dead one), a batch of a job", o.after(func() {
		b.enqueueMany([]relay.JobSpec{kind.Job(numArgs{N: 300})})
	}))
	runs(1)
	handedOff("with one live client waiting (and a dead one), a job", o.after(func() { enqueue(b, kind, numArgs{N: 301}) }))
	runs(1)
}

// A woken client whose workers are all taken cannot claim its job: the backup's client
// starts it a moment later. Without the backup, the jobs addressed to the full client
// would wait for one of its workers, here for the whole test (the poll is one hour).
func TestBackupStartsAJobItsWokenClientCannotTake(t *testing.T) {
	t.Parallel()
	b := setup(t)
	blocker, quick := relay.NewKind[numArgs]("blocker"), relay.NewKind[numArgs]("quick")
	hold := b.gate()
	blocked := make(chan int64, 1)
	full := b.client(relay.Config{ID: "full", Queues: queues(1, relay.DefaultQueue)})
	handle(t, full, blocker, func(_ context.Context, job *relay.Job[numArgs]) error {
		blocked <- job.ID
		hold.wait()
		return nil
	})
	type start struct {
		id int64
		at time.Time
		by string
	}
	starts := make(chan start, 1)
	handle(t, full, quick, func(_ context.Context, job *relay.Job[numArgs]) error {
		starts <- start{job.ID, time.Now(), "full"}
		return nil
	})
	b.start(full)
	enqueue(b, blocker, numArgs{})
	recv(t, blocked, "the job that takes the full client's only worker")

	free := b.client(relay.Config{ID: "free", Queues: queues(4, relay.DefaultQueue)})
	handle(t, free, blocker, func(context.Context, *relay.Job[numArgs]) error { return nil })
	handle(t, free, quick, func(_ context.Context, job *relay.Job[numArgs]) error {
		starts <- start{job.ID, time.Now(), "free"}
		return nil
	})
	b.start(free)
	b.awaitAlive("full", "free")

	bound := loadavg.Scaled(250 * time.Millisecond)
	late := 0 // started after the backup's delay: addressed to the full client first
	for i := range 20 {
		id, committed := enqueueTx(b, quick, numArgs{N: i})
		s := recv(t, starts, "the quick job")
		took := s.at.Sub(committed)
		if s.id != id || s.by != "free" || took > bound {
			t.Fatalf("job %d started %v after its commit on client %q; want job %d on client free, within %v", s.id, took, s.by, id, bound)
		}
		if took >= 25*time.Millisecond {
			late++
		}
	}
	t.Logf("%d of 20 jobs started after the backup's delay", late)
}

// A retry wakes by its job's kind: with clients of one queue that handle different kinds,
// it is never addressed to clients that cannot run it. Each retry starts at once; one
// addressed to the two clients of the other kind would wait for the poll (one hour).
func TestRetryIsAddressedByItsKind(t *testing.T) {
	t.Parallel()
	b := setup(t)
	flaky, other := relay.NewKind[numArgs]("flaky"), relay.NewKind[numArgs]("other")
	for _, id := range []string{"a", "b"} {
		c := b.client(relay.Config{ID: id, Queues: queues(2, relay.DefaultQueue)})
		handle(t, c, other, func(context.Context, *relay.Job[numArgs]) error { return nil })
		b.start(c)
	}
	type attempt struct {
		id int64
		n  int
		at time.Time
	}
	attempts := make(chan attempt, 10)
	c := b.client(relay.Config{ID: "c", Queues: queues(2, relay.DefaultQueue)})
	handle(t, c, flaky, func(_ context.Context, job *relay.Job[numArgs]) error {
		attempts <- attempt{job.ID, job.Attempt, time.Now()}
		if job.Attempt == 1 {
			return relay.RetryAfter(time.Millisecond, errors.New("not yet"))
		}
		return nil
	})
	b.start(c)
	b.awaitAlive("a", "b", "c")

	bound := loadavg.Scaled(250 * time.Millisecond)
	for i := range 10 {
		id := enqueue(b, flaky, numArgs{N: i})
		first := recv(t, attempts, "the first attempt")
		second := recv(t, attempts, "the retry")
		if first.id != id || second.id != id || second.n != 2 || second.at.Sub(first.at) > bound {
			t.Fatalf("job %d: attempt %d of job %d started %v after attempt %d of job %d; want its retry within %v",
				id, second.n, second.id, second.at.Sub(first.at), first.n, first.id, bound)
		}
	}
}

// A client whose wait-lock connection is lost takes its client lock again with the
// connection, and is addressed again.
func TestClientLockIsTakenAgainAfterItsConnectionIsLost(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.client(relay.Config{ID: "relocked", Queues: queues(1, relay.DefaultQueue)})
	handle(t, c, relay.NewKind[numArgs]("any"), func(context.Context, *relay.Job[numArgs]) error { return nil })
	b.start(c)
	b.awaitAlive("relocked")
	var pid uint32
	err := b.QueryRow(context.Background(), "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
		relay.WaitLocksApplicationName("relocked")).Scan(&pid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Exec(context.Background(), "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	relaytest.WaitFor(t, waitTimeout, "the wait-lock connection to be made again", func() bool {
		var again uint32
		err := b.QueryRow(context.Background(), "SELECT pid FROM pg_stat_activity WHERE application_name = $1",
			relay.WaitLocksApplicationName("relocked")).Scan(&again)
		return err == nil && again != pid
	})
	b.awaitAlive("relocked")
}

// A client whose client lock another session holds (an earlier connection of its own that
// lingers on the server, or a client of the same ID) takes it once that session lets go,
// though nothing else makes its wait-lock connection do anything.
func TestClientLockIsTakenOnceAnotherSessionLetsGo(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	lingering, err := pgx.Connect(ctx, b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer lingering.Close(ctx)
	release := b.holdLock(lingering, "client_lock", "taken", false)
	c := b.client(relay.Config{ID: "taken", Queues: queues(1, relay.DefaultQueue)})
	handle(t, c, relay.NewKind[numArgs]("any"), func(context.Context, *relay.Job[numArgs]) error { return nil })
	b.start(c)
	// Its wait-lock connection has tried the client lock, and been refused: the same sync
	// takes the wait locks next.
	relaytest.WaitFor(t, waitTimeout, "the client's wait-lock connection to take its wait locks", func() bool {
		var n int
		err := b.QueryRow(ctx, `SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
			WHERE a.application_name = $1 AND l.locktype = 'advisory' AND l.granted`, relay.WaitLocksApplicationName("taken")).Scan(&n)
		return err == nil && n > 0
	})
	release()
	b.awaitAlive("taken")
}
