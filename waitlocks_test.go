package relay_test

import (
	"context"
	"testing"

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
// them is lost, enqueues find them free and do not notify; once the client holds them
// again, its dispatchers look for the jobs committed meanwhile, although the poll is an
// hour away, and enqueues wake it again.
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
	id := enqueue(b, testKind, numArgs{N: 1})
	if j := b.stored(id); j.State != "pending" {
		t.Fatalf("job is %s while the wait locks were lost, want pending", j.State)
	}

	gate.reopenRuns(b, started, id, "the wait locks could be taken again")
	relaytest.WaitFor(t, waitTimeout, "enqueues to wake the client again", func() bool {
		return b.wakes(b, relay.DefaultQueue, testKind.Name())
	})
}
