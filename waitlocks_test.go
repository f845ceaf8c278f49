package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// backendPID returns the pid of the connection named application, waiting for one other
// than exclude to appear.
func backendPID(b *bundle, application string, exclude uint32) uint32 {
	b.t.Helper()
	var pid uint32
	relaytest.WaitFor(b.t, waitTimeout, "a backend named "+application+" in pg_stat_activity", func() bool {
		err := b.QueryRow(context.Background(),
			`SELECT pid FROM pg_stat_activity WHERE application_name = $1 AND pid <> $2`, application, exclude).Scan(&pid)
		return err == nil
	})
	return pid
}

// A waiting client's wait locks tell enqueues to wake it. While the connection that holds
// them is lost, enqueues find them free and do not notify: the client's dispatchers look
// for work every 100 ms meanwhile, so a job enqueued then starts within moments, although
// the poll is an hour away and the connection cannot be made again. Once the client holds
// the locks again, enqueues wake it again.
func TestJobEnqueuedWhileTheWaitLocksWereLostRuns(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c, started, gate := b.startGated("relay wait locks ")
	if !b.wakes(b, relay.DefaultQueue, testKind.Name()) {
		t.Fatal("an enqueue would not wake the waiting client")
	}

	gate.cut(b, relay.WaitLocksApplicationName(c.ID()))
	if b.wakes(b, relay.DefaultQueue, testKind.Name()) {
		t.Fatal("an enqueue would wake the client while no connection holds its wait locks")
	}
	id, committed := enqueueTx(b, testKind, numArgs{N: 1})
	if got := recv(t, started, "the job enqueued while the wait locks were lost"); got != id {
		t.Fatalf("ran job %d, want %d", got, id)
	}
	if took := time.Since(committed); took > time.Second {
		t.Errorf("the job enqueued while the wait locks were lost started %v after its commit; want within moments", took)
	}

	gate.open()
	relaytest.WaitFor(t, waitTimeout, "enqueues to wake the client again", func() bool {
		return b.wakes(b, relay.DefaultQueue, testKind.Name())
	})
	again, _ := enqueueTx(b, testKind, numArgs{N: 2})
	if got := recv(t, started, "a job once the wait locks are held again"); got != again {
		t.Fatalf("ran job %d, want %d", got, again)
	}
}
