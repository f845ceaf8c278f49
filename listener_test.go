package relay_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// listenerPID returns the pid of c's listener connection, waiting for one other than
// exclude to appear.
func listenerPID(b *bundle, c *relay.Client, exclude uint32) uint32 {
	b.t.Helper()
	return backendPID(b, relay.ListenerApplicationName(c.ID()), exclude)
}

// terminate ends the server process pid.
func terminate(b *bundle, pid uint32) {
	t := b.t
	t.Helper()
	var ok bool
	if err := b.QueryRow(context.Background(), `SELECT pg_terminate_backend($1)`, pid).Scan(&ok); err != nil || !ok {
		t.Fatalf("pg_terminate_backend(%d): %v, %v", pid, ok, err)
	}
}

// After its listener connection is killed, a client reconnects and jobs are again picked
// up at once, although the fallback poll is one hour.
func TestClientListensAgainAfterItsConnectionIsTerminated(t *testing.T) {
	b := setup(t)
	c := b.client(relay.Config{})
	started := make(chan time.Time, 10)
	handle(t, c, testKind, func(ctx context.Context, job *relay.Job[numArgs]) error {
		started <- time.Now()
		return nil
	})
	b.start(c)
	first := enqueue(b, testKind, numArgs{})
	recv(t, started, "a job before the connection is lost")
	b.waitState("succeeded", first)

	old := listenerPID(b, c, 0)
	terminate(b, old)
	relaytest.WaitFor(t, waitTimeout, "the old listener backend to go", func() bool {
		var n int
		_ = b.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, old).Scan(&n)
		return n == 0
	})
	listenerPID(b, c, old)

	// The new backend may not be LISTENing yet; then the catch-up claim after LISTEN finds
	// the job. Either way it runs promptly.
	id, committedAt := enqueueTx(b, testKind, numArgs{N: 1})
	if latency := recv(t, started, "a job after the reconnect").Sub(committedAt); latency > time.Second {
		t.Errorf("job %d started %v after its commit; want promptly (the poll is an hour)", id, latency)
	}
	b.waitState("succeeded", id)
	// Now the new connection is certainly listening: only its NOTIFY can wake the client.
	id, committedAt = enqueueTx(b, testKind, numArgs{N: 2})
	if latency := recv(t, started, "a job woken through the new connection").Sub(committedAt); latency > 100*time.Millisecond {
		t.Errorf("job %d started %v after its commit; want within 100ms", id, latency)
	}
}

// A job enqueued while the listener is reconnecting, whose NOTIFY nobody heard, runs as
// soon as the listener is back, not at the next poll an hour later.
func TestJobEnqueuedWhileListenerIsDownRunsAfterReconnect(t *testing.T) {
	b := setup(t)

	// The client's pool holds the listener's reconnect on request, after the server
	// accepted the connection but before it can LISTEN. The listener copies the pool's
	// connection config, hook included.
	c, started, gate := b.startGated("relay listener ")
	gate.cut(b, relay.ListenerApplicationName(c.ID()))

	// Nobody listens now: this job's NOTIFY is lost.
	id := enqueue(b, testKind, numArgs{N: 1})
	select {
	case got := <-started:
		t.Fatalf("job %d ran while no connection was listening", got)
	default:
	}
	if j := b.stored(id); j.State != "pending" {
		t.Fatalf("job is %s while no connection was listening, want pending (not handed off)", j.State)
	}

	// A session of the earlier listener's that lingers on the server (a connection cut off
	// by the network, say) still holds the listening lock: a job is then handed off to the
	// client (migration 016), running under it though it cannot hear.
	lingering, err := pgx.Connect(context.Background(), b.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer lingering.Close(context.Background())
	b.holdLock(lingering, "listening_lock", c.ID(), true)
	handed := enqueue(b, testKind, numArgs{N: 2})
	if j := b.stored(handed); j.State != "running" || j.AttemptedBy != c.ID() {
		t.Fatalf("job is %s under %q while a lingering session held the listening lock, want handed off to %q", j.State, j.AttemptedBy, c.ID())
	}

	// Once it LISTENs again, it claims the first and takes the hand-off it did not hear.
	released := time.Now()
	gate.open()
	ran := map[int64]bool{}
	for range 2 {
		ran[recv(t, started, "a job enqueued before the listener could reconnect")] = true
	}
	if took := time.Since(released); !ran[id] || !ran[handed] || took > time.Second {
		t.Fatalf("ran jobs %v, %v after the listener could reconnect; want %d and %d, promptly (the poll is an hour)", ran, took, id, handed)
	}
	b.waitState("succeeded", id, handed)
}

// connGate holds, while closed, the connections a pool opens whose application_name starts
// with a prefix, after the server accepted them and before they are used.
type connGate struct {
	gate atomic.Pointer[chan struct{}]
	held chan struct{} // receives when a connection is held
}

// gatedPool returns a pool whose connections named with prefix (which a client's
// dedicated connections, made from the pool's config, are) pass g, open at first.
func (b *bundle) gatedPool(prefix string) (*pgxpool.Pool, *connGate) {
	g := &connGate{held: make(chan struct{}, 1)}
	pool := b.pool(func(cfg *pgxpool.Config) {
		cfg.ConnConfig.AfterConnect = func(ctx context.Context, pc *pgconn.PgConn) error {
			if !strings.HasPrefix(pc.ParameterStatus("application_name"), prefix) {
				return nil
			}
			if gate := g.gate.Load(); gate != nil {
				select {
				case g.held <- struct{}{}:
				default:
				}
				select {
				case <-*gate:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			return nil
		}
	})
	return pool, g
}

// startGated starts a client on a pool gated for the connections named with prefix (see
// gatedPool), and runs one job on it. started receives the id of every job it runs.
func (b *bundle) startGated(prefix string) (c *relay.Client, started chan int64, gate *connGate) {
	b.t.Helper()
	pool, gate := b.gatedPool(prefix)
	c = b.client(relay.Config{})
	started = make(chan int64, 10)
	handle(b.t, c, testKind, reportIDs(started))
	b.startOn(c, pool)
	warm := enqueue(b, testKind, numArgs{})
	recv(b.t, started, "a job before the connection is lost")
	b.waitState("succeeded", warm)
	return c, started, gate
}

// cut closes the gate, ends the connection named application, and returns once its
// client tries to make it again, held at the gate.
func (g *connGate) cut(b *bundle, application string) {
	b.t.Helper()
	g.close()
	terminate(b, backendPID(b, application, 0))
	recv(b.t, g.held, "a reconnect of "+application)
}

// reopenRuns opens the gate and fails the test unless job id is the next to start, within
// a second (the clients of these tests poll every hour): after what the gate held back,
// named by what.
func (g *connGate) reopenRuns(b *bundle, started <-chan int64, id int64, what string) {
	t := b.t
	t.Helper()
	released := time.Now()
	g.open()
	if got := recv(t, started, "the job enqueued before "+what); got != id {
		t.Fatalf("ran job %d, want %d", got, id)
	}
	took := time.Since(released)
	t.Logf("job ran %v after %s", took, what)
	if took > time.Second {
		t.Errorf("job ran %v after %s; want promptly (the poll is an hour)", took, what)
	}
}

func (g *connGate) close() {
	gate := make(chan struct{})
	g.gate.Store(&gate)
}

func (g *connGate) open() {
	if gate := g.gate.Swap(nil); gate != nil {
		close(*gate)
	}
}

// ListenerApplicationName is documented as the application_name pg_stat_activity shows
// for the client's listener. PostgreSQL truncates application_name to 63 bytes, so for an
// ID longer than 48 bytes (which a long host name gives by default) the documented name
// matches no backend.
func TestListenerApplicationNameMatchesPgStatActivityForLongIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id := "worker-" + strings.Repeat("x", 50) // 57 bytes; e.g. a long cloud host name
	c := b.client(relay.Config{ID: id})
	handle(t, c, testKind, func(ctx context.Context, job *relay.Job[numArgs]) error { return nil })
	b.start(c)
	var n int
	if err := b.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE application_name = $1`,
		relay.ListenerApplicationName(c.ID())).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		var shown string
		_ = b.QueryRow(context.Background(), `SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'relay listener worker-%'`).Scan(&shown)
		t.Errorf("%d backends have application_name %q (%d bytes); pg_stat_activity shows %q (%d bytes)",
			n, relay.ListenerApplicationName(c.ID()), len(relay.ListenerApplicationName(c.ID())), shown, len(shown))
	}
}
