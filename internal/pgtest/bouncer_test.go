package pgtest

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A bouncer in transaction mode lends a server connection to one transaction at a time:
// the backend a client's statement just ran on is the next one another client's
// transaction gets (pgbouncer reuses the most recently freed), and the first client then
// runs on another. In session mode each client would keep its own. Stop ends the bouncer
// and frees its port.
func TestBouncerPoolsTransactions(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	url, err := SharedURL(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := StartBouncerT(t, url, BouncerOptions{PoolSize: 2})
	via := b.Via(url)
	a, c := connect(t, ctx, via), connect(t, ctx, via)
	pid := func(q interface {
		QueryRow(context.Context, string, ...any) pgx.Row
	}) int {
		t.Helper()
		var pid int
		if err := q.QueryRow(ctx, "SELECT pg_backend_pid()", pgx.QueryExecModeSimpleProtocol).Scan(&pid); err != nil {
			t.Fatal(err)
		}
		return pid
	}
	first := pid(a)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if got := pid(tx); got != first {
		t.Fatalf("c's transaction runs on backend %d, not on %d that a just freed: not pooled per transaction", got, first)
	}
	if got := pid(a); got == first {
		t.Fatalf("a runs on backend %d, which c's transaction holds", got)
	}

	// RECONNECT closes the server connections once released: their backends exit.
	_ = tx.Rollback(ctx)
	if err := b.Reconnect(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range []int{pid(a), pid(c)} { // each opens the server connection afresh
		if p == first {
			t.Errorf("a statement after RECONNECT ran on backend %d, which it should have closed", p)
		}
	}

	port := b.Port()
	b.Stop()
	d := net.Dialer{Timeout: time.Second}
	if conn, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
		conn.Close()
		t.Errorf("port %d still accepts connections after Stop", port)
	}
}
