package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
)

// connsBundle is a client's connections over a pool of their own whose connections open
// only when the test lets them (gate), and say when they start to open (connecting).
type connsBundle struct {
	*bundle
	pool       *pgxpool.Pool
	conns      relay.ClientConns
	connecting chan struct{}
	gate       chan struct{}
	id         string
}

func newConnsBundle(t *testing.T, maxConns int32) *connsBundle {
	t.Helper()
	b := &connsBundle{bundle: setup(t), connecting: make(chan struct{}, 8), gate: make(chan struct{}), id: "starved"}
	b.pool = b.bundle.pool(func(cfg *pgxpool.Config) {
		cfg.MaxConns = maxConns
		cfg.BeforeConnect = func(ctx context.Context, cc *pgx.ConnConfig) error {
			if cc.RuntimeParams["application_name"] == relay.ReservedApplicationName(b.id) {
				return nil
			}
			select { // said, not waited for: a test reads only the first it needs
			case b.connecting <- struct{}{}:
			default:
			}
			select {
			case <-b.gate:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	t.Cleanup(b.open) // before the pool closes: cleanups run last-in first
	b.conns = relay.NewClientConns(t, b.pool, 2, b.id)
	return b
}

// open lets the shared pool's connections open, once.
func (b *connsBundle) open() {
	select {
	case <-b.gate:
	default:
		close(b.gate)
	}
}

// hold takes a connection of the shared pool for the rest of the test, as a handler that
// keeps its transaction open would.
func (b *connsBundle) hold(ctx context.Context) {
	conn, err := b.pool.Acquire(ctx)
	if err != nil {
		b.t.Errorf("acquire: %v", err)
		return
	}
	b.t.Cleanup(conn.Release)
}

// runsOn runs a statement on the client's connections and returns the application name
// of the connection it ran on.
func (b *connsBundle) runsOn(ctx context.Context) <-chan string {
	ran := make(chan string, 1)
	go func() {
		var app string
		if err := b.conns.QueryRow(ctx, "SELECT current_setting('application_name')").Scan(&app); err != nil {
			b.t.Errorf("the statement did not run: %v", err)
		}
		ran <- app
	}()
	return ran
}

// wantReserved fails the test unless app names a reserved connection of the client.
func (b *connsBundle) wantReserved(app string) {
	b.t.Helper()
	if app != relay.ReservedApplicationName(b.id) {
		b.t.Errorf("ran on a connection named %q, want a reserved one", app)
	}
}

// reservedOpen counts the client's reserved connections open on the server.
func (b *connsBundle) reservedOpen(ctx context.Context) int {
	var n int
	if err := b.Pool.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
		relay.ReservedApplicationName(b.id)).Scan(&n); err != nil {
		b.t.Fatal(err)
	}
	return n
}

// A client's statement runs on a reserved connection when the application holds every
// connection of its pool (handlers in long transactions), or has none to spare and none
// comes within sharedWait, rather than queueing behind the handlers for as long as they
// like.
func TestClientStatementsTakeAReservedConnectionWhenThePoolHasNoneToSpare(t *testing.T) {
	t.Parallel()
	t.Run("held before", func(t *testing.T) {
		t.Parallel()
		b := newConnsBundle(t, 2)
		b.open()
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		b.hold(ctx)
		b.hold(ctx)
		b.wantReserved(<-b.runsOn(ctx))
	})
	t.Run("queued behind others", func(t *testing.T) {
		t.Parallel()
		b := newConnsBundle(t, 1)
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		other, stopOther := context.WithCancel(ctx)
		defer stopOther()
		go func() { // a handler's connection, which opens only once the test ends
			if conn, err := b.pool.Acquire(other); err == nil {
				conn.Release()
			}
		}()
		<-b.connecting
		b.wantReserved(<-b.runsOn(ctx))
	})
}

// A client's statement that finds the pool with room waits for the connection the pool
// opens for it (up to sharedOpenWait), and opens no reserved connection meanwhile: after
// a restart of the database, every client reconnects at once, and each connection it opens
// costs the server a process and some milliseconds of CPU.
func TestClientStatementsWaitForASlowSharedConnection(t *testing.T) {
	t.Parallel()
	b := newConnsBundle(t, 2)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ran := b.runsOn(ctx)
	<-b.connecting
	// An observation window, not synchronisation: nothing marks "no reserved connection
	// will open"; a client that gave up on the shared pool did so after a sharedWait.
	time.Sleep(3 * relay.SharedWait)
	if n := b.reservedOpen(ctx); n != 0 {
		t.Errorf("%d reserved connections opened while the shared one was opening, want none", n)
	}
	b.open()
	if app := <-ran; app == relay.ReservedApplicationName(b.id) {
		t.Errorf("ran on a reserved connection, want the shared pool's")
	}
	if _, err := b.conns.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatalf("a second statement did not run: %v", err)
	}
}
