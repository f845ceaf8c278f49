package store_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay/internal/lifecycle"
	"github.com/relayq/relay/internal/store"
	"github.com/relayq/relay/internal/testlog"
	"github.com/relayq/relay/relaytest"
)

// onWaitLock runs expr, of the wait lock of queue's keys k[1] and k[2], on conn.
func onWaitLock(t *testing.T, conn interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, schema, queue, expr string) bool {
	t.Helper()
	var got bool
	err := conn.QueryRow(context.Background(), `SELECT `+expr+` FROM `+pgx.Identifier{schema, "wait_lock"}.Sanitize()+`($1, $2) k`,
		"relay:"+schema, queue).Scan(&got)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// waitLockFree reports whether no session holds queue's wait lock: whether an enqueue
// into queue would skip the tables, as wake_needless tries it.
func waitLockFree(t *testing.T, db *relaytest.DB, queue string) bool {
	t.Helper()
	return onWaitLock(t, db, db.Schema, queue, `CASE WHEN pg_try_advisory_lock(k[1], k[2]) THEN pg_advisory_unlock(k[1], k[2]) ELSE false END`)
}

// runWaitLocks runs the wait locks of cfg (Connect filled in) on db until the test ends.
func runWaitLocks(t *testing.T, db *relaytest.DB, cfg store.WaitLocksConfig) *store.WaitLocks {
	t.Helper()
	s := storeOf(t, db)
	cfg.Connect = func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, db.URL) }
	locks := s.WaitLocks(cfg)
	svc := lifecycle.Go(context.Background(), locks.Run)
	t.Cleanup(func() { _ = svc.Stop() })
	return locks
}

// Hold returns only once the lock is held on the server, also when it is called while the
// lock is being released: a dispatcher that went on to wait on a lock on its way out
// would lose the wakeups of the producers that found it free.
func TestWaitLocksHoldReturnsOnlyOnceHeld(t *testing.T) {
	t.Parallel()
	db := relaytest.NewDB(t)
	locks := runWaitLocks(t, db, store.WaitLocksConfig{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	const queue = "q"
	if !waitLockFree(t, db, queue) {
		t.Fatal("the wait lock is held before anyone took it")
	}
	for i := range 300 {
		if err := locks.Hold(ctx, queue); err != nil {
			t.Fatal(err)
		}
		if waitLockFree(t, db, queue) {
			t.Fatalf("round %d: Hold returned while the wait lock was free", i)
		}
		locks.Release(queue)
		// Hold again at some point of the release: before it starts, while it runs, or after.
		time.Sleep(time.Duration(rand.IntN(400)) * time.Microsecond)
	}
	locks.Release(queue)
	relaytest.WaitFor(t, 5*time.Second, "the released wait lock to be free", func() bool { return waitLockFree(t, db, queue) })
}

// A session that holds a wait lock exclusively (one that failed to let go of it after a
// try) makes Hold wait, never return early; taking the lock gives up after LockTimeout,
// says so, and tries again on a new connection, and Hold returns once the lock is free.
func TestWaitLocksHoldWaitsOutAnExclusiveHolder(t *testing.T) {
	t.Parallel()
	db := relaytest.NewDB(t)
	ctx := context.Background()
	const queue = "q"
	holder, err := pgx.Connect(ctx, db.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close(ctx)
	onWaitLock(t, holder, db.Schema, queue, `pg_advisory_lock(k[1], k[2]) IS NOT NULL`)

	failures := make(chan string, 100)
	locks := runWaitLocks(t, db, store.WaitLocksConfig{
		LockTimeout: 100 * time.Millisecond,
		Logger: slog.New(testlog.Func(func(r slog.Record) {
			if err, ok := testlog.Attr(r, "error"); ok {
				select {
				case failures <- err.String():
				default:
				}
			}
		})),
	})

	short, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	err = locks.Hold(short, queue)
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Hold while another session holds the lock exclusively: %v, want the deadline", err)
	}
	select {
	case msg := <-failures:
		if !strings.Contains(msg, "another session may hold one exclusively") {
			t.Errorf("logged %q, want it to say another session may hold the lock", msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("taking the lock did not give up and say so")
	}

	if !onWaitLock(t, holder, db.Schema, queue, `pg_advisory_unlock(k[1], k[2])`) {
		t.Fatal("the holder did not hold the wait lock")
	}
	held, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := locks.Hold(held, queue); err != nil {
		t.Fatalf("Hold once the lock is free: %v", err)
	}
	if waitLockFree(t, db, queue) {
		t.Fatal("Hold returned while the wait lock was free")
	}
}

// Recover ends the pause between attempts to reconnect at once. After an outage that pause
// has grown to seconds, and until the locks are held again producers skip the client's
// waiting dispatchers: the client calls Recover as soon as the database answers it again.
// The backoff starts again from its first pause.
func TestWaitLocksRecoverReconnectsAtOnce(t *testing.T) {
	t.Parallel()
	db := relaytest.NewDB(t)
	attempts := make(chan time.Time, 16)
	var tries atomic.Int32
	locks := storeOf(t, db).WaitLocks(store.WaitLocksConfig{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			attempts <- time.Now()
			if tries.Add(1) <= 6 { // the database is back for the seventh
				return nil, errors.New("the database is down")
			}
			return pgx.Connect(ctx, db.URL)
		},
	})
	svc := lifecycle.Go(context.Background(), locks.Run)
	t.Cleanup(func() { _ = svc.Stop() })
	next := func(what string) time.Time {
		t.Helper()
		select {
		case at := <-attempts:
			return at
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s", what)
			return time.Time{}
		}
	}
	for i := range 5 { // then the pause before the sixth attempt is 800 ms ± 20 %
		next(fmt.Sprintf("attempt %d to connect", i+1))
	}
	recovered := time.Now()
	locks.Recover()
	sixth := next("attempt after Recover")
	if d := sixth.Sub(recovered); d > 300*time.Millisecond {
		t.Errorf("reconnected %v after Recover; want at once, not after the pause of 640-960 ms", d)
	}
	// That attempt failed too (the database was not quite back): the backoff starts again
	// from its first pause, 50 ms, not from 1.6 s.
	if d := next("attempt after the one Recover made").Sub(sixth); d > 300*time.Millisecond {
		t.Errorf("tried again %v after the attempt Recover made; want the backoff reset", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := locks.Hold(ctx, "q"); err != nil {
		t.Fatal(err)
	}
	if waitLockFree(t, db, "q") {
		t.Error("Hold returned, but the wait lock of q is free")
	}
}

// Lost and Retaken come in pairs: a client polls while its locks are lost, and stops when
// they are held again. A first connection that fails before any lock was held is no loss,
// since no Retaken follows it; a connection that held the locks and is killed is, and
// Retaken follows once they are held again.
func TestWaitLocksLostIsFollowedByRetaken(t *testing.T) {
	t.Parallel()
	db := relaytest.NewDB(t)
	var (
		tries   atomic.Int32
		pid     atomic.Uint32
		lost    atomic.Bool // Lost's, until Retaken
		losses  atomic.Int32
		retaken = make(chan struct{}, 4)
	)
	locks := storeOf(t, db).WaitLocks(store.WaitLocksConfig{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			if tries.Add(1) == 1 {
				return nil, errors.New("the database is not there yet")
			}
			conn, err := pgx.Connect(ctx, db.URL)
			if err == nil {
				pid.Store(conn.PgConn().PID())
			}
			return conn, err
		},
		Lost:    func() { lost.Store(true); losses.Add(1) },
		Retaken: func() { lost.Store(false); retaken <- struct{}{} },
	})
	svc := lifecycle.Go(context.Background(), locks.Run)
	t.Cleanup(func() { _ = svc.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := locks.Hold(ctx, "q"); err != nil {
		t.Fatal(err)
	}
	if lost.Load() {
		t.Fatal("the locks are held, after a first connection failed, but Lost was not followed by Retaken")
	}

	if _, err := db.Exec(ctx, "SELECT pg_terminate_backend($1)", pid.Load()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-retaken:
	case <-ctx.Done():
		t.Fatal("the locks were not taken again after their connection was killed")
	}
	if losses.Load() == 0 || lost.Load() || waitLockFree(t, db, "q") {
		t.Errorf("after Retaken: %d losses, lost = %v, the lock free = %v; want a loss, then held", losses.Load(), lost.Load(), waitLockFree(t, db, "q"))
	}
}
