package store_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay/internal/lifecycle"
	"github.com/relayq/relay/internal/store"
	"github.com/relayq/relay/relaytest"
)

// waitLockFree reports whether no session holds queue's wait lock: whether an enqueue
// into queue would skip the tables, as wake_needless tries it.
func waitLockFree(t *testing.T, db *relaytest.DB, queue string) bool {
	t.Helper()
	var free bool
	err := db.QueryRow(context.Background(), `SELECT CASE WHEN pg_try_advisory_lock(k[1], k[2]) THEN pg_advisory_unlock(k[1], k[2]) ELSE false END
		FROM `+pgx.Identifier{db.Schema, "wait_lock"}.Sanitize()+`($1, $2) k`, "relay:"+db.Schema, queue).Scan(&free)
	if err != nil {
		t.Fatal(err)
	}
	return free
}

// Hold returns only once the lock is held on the server, also when it is called while the
// lock is being released: a dispatcher that went on to wait on a lock on its way out
// would lose the wakeups of the producers that found it free.
func TestWaitLocksHoldReturnsOnlyOnceHeld(t *testing.T) {
	t.Parallel()
	db := relaytest.NewDB(t)
	s, err := store.For(db.Schema)
	if err != nil {
		t.Fatal(err)
	}
	locks := s.WaitLocks(store.WaitLocksConfig{Connect: func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, db.URL) }})
	svc := lifecycle.Go(context.Background(), locks.Run)
	defer svc.Stop()
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
