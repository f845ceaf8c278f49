package relay_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
)

// Tests of queue_ordered (migration 017): relay.Enqueue learns whether its queue is ordered
// from a function whose body lists the ordered queues, rewritten by a trigger on queues.

// orderedEnqueuer enqueues on one connection of its own, whose statements are prepared
// once and then run on their cached plans: the plans a redefinition of queue_ordered must
// reach.
type orderedEnqueuer struct {
	b    *bundle
	conn *pgxpool.Pool
	kind relay.Kind[orderedArgs]
}

func newOrderedEnqueuer(b *bundle) *orderedEnqueuer {
	e := &orderedEnqueuer{b: b, conn: b.pool(func(c *pgxpool.Config) { c.MaxConns = 1 }), kind: relay.NewKind[orderedArgs]("k")}
	// More than the five runs after which PostgreSQL may keep a statement's generic plan,
	// keyed and keyless, unique and not.
	for i := range 8 {
		e.enqueue("warm-up", "", relay.Unique(fmt.Sprint("warm-up-", i)))
		e.enqueue("warm-up", "")
	}
	return e
}

// enqueue enqueues a job with key (none if "") on queue, and returns its id, or 0 if the
// enqueue was refused because the queue is not ordered. Any other error fails the test.
func (e *orderedEnqueuer) enqueue(queue, key string, opts ...relay.EnqueueOption) int64 {
	e.b.t.Helper()
	opts = append(opts, relay.Queue(queue), relay.Schema(e.b.Schema))
	if key != "" {
		opts = append(opts, relay.OrderKey(key))
	}
	id, err := relay.Enqueue(context.Background(), e.conn, e.kind, orderedArgs{Key: key}, opts...)
	if errors.Is(err, relay.ErrQueueNotOrdered) {
		return 0
	}
	if err != nil {
		e.b.t.Fatalf("Enqueue on %q with key %q: %v", queue, key, err)
	}
	return id
}

// check enqueues on queue, plain and unique, and fails the test unless the queue is
// treated as ordered (a keyless job joins the queue-wide sequence "", a key is taken) or as not
// ordered (no key, and a key refused), as ordered says.
func (e *orderedEnqueuer) check(queue string, ordered bool) {
	e.b.t.Helper()
	for _, unique := range []bool{false, true} {
		// a key of its own for each unique job
		opts := func() []relay.EnqueueOption {
			if !unique {
				return nil
			}
			return []relay.EnqueueOption{relay.Unique(queue + "-" + randomHex())}
		}
		keyless := e.b.record(e.enqueue(queue, "", opts()...)).OrderKey
		keyed := e.enqueue(queue, "cust-1", opts()...)
		switch {
		case ordered && (keyless == nil || *keyless != ""):
			e.b.t.Errorf("queue %q (ordered, unique %v): a keyless job got order key %s; want \"\"", queue, unique, keyString(keyless))
		case ordered && keyed == 0:
			e.b.t.Errorf("queue %q (ordered, unique %v): a job with an order key was refused", queue, unique)
		case !ordered && keyless != nil:
			e.b.t.Errorf("queue %q (not ordered, unique %v): a keyless job got order key %q; want none", queue, unique, *keyless)
		case !ordered && keyed != 0:
			e.b.t.Errorf("queue %q (not ordered, unique %v): a job with an order key was enqueued (%d); want ErrQueueNotOrdered", queue, unique, keyed)
		}
	}
}

// language returns the language queue_ordered is written in: sql while it lists the
// ordered queues, plpgsql once it looks them up.
func (e *orderedEnqueuer) language() string {
	e.b.t.Helper()
	var lang string
	err := e.b.QueryRow(context.Background(), `SELECT l.lanname FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang
		WHERE p.oid = $1::regprocedure`, e.b.table("queue_ordered")+"(text)").Scan(&lang)
	if err != nil {
		e.b.t.Fatal(err)
	}
	return lang
}

// A queue set ordered, and then plain again, is treated so by the next enqueue on a
// connection whose insert statements were prepared and planned before each change.
func TestOrderedChangeReachesStatementsPreparedBefore(t *testing.T) {
	t.Parallel()
	b := setup(t)
	e := newOrderedEnqueuer(b)
	e.check("late", false)

	b.setQueue("late", relay.QueueSettings{Ordered: true})
	e.check("late", true)
	e.check("other", false)

	b.setQueue("late", relay.QueueSettings{})
	e.check("late", false)

	// A name that needs quoting in an array literal and in a string literal.
	odd := `it's "odd", {really} \ NULL`
	b.setQueue(odd, relay.QueueSettings{Ordered: true})
	e.check(odd, true)
	e.check("NULL", false)

	// A queue's row deleted (as an operator might), or the table emptied.
	b.setQueue("late", relay.QueueSettings{Ordered: true})
	e.check("late", true)
	if _, err := b.Exec(context.Background(), "DELETE FROM "+b.table("queues")+" WHERE name = 'late'"); err != nil {
		t.Fatal(err)
	}
	e.check("late", false)
	b.setQueue("late", relay.QueueSettings{Ordered: true})
	if _, err := b.Exec(context.Background(), "TRUNCATE "+b.table("queues")); err != nil {
		t.Fatal(err)
	}
	e.check("late", false)
}

// Above 100 ordered queues the function looks the queue up in queues instead of listing
// them, and lists them again once there are 100.
func TestOrderedManyQueuesAreLookedUp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	e := newOrderedEnqueuer(b)
	for i := range 101 {
		b.setQueue(fmt.Sprintf("tenant-%03d", i), relay.QueueSettings{Ordered: true})
	}
	if got := e.language(); got != "plpgsql" {
		t.Errorf("with 101 ordered queues queue_ordered is written in %s; want plpgsql (a lookup)", got)
	}
	e.check("tenant-100", true)
	e.check("tenant-000", true)
	e.check("plain", false)

	b.setQueue("tenant-000", relay.QueueSettings{})
	if got := e.language(); got != "sql" {
		t.Errorf("with 100 ordered queues queue_ordered is written in %s; want sql (a list)", got)
	}
	e.check("tenant-100", true)
	e.check("tenant-000", false)
	e.check("plain", false)
}

// Two transactions that each make a queue ordered, the second while the first has not
// committed: the second waits for the first, and then lists both. A pause meanwhile, which
// leaves the ordered queues as they are, waits for neither.
func TestOrderedConcurrentChangesAreBothListed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	e := newOrderedEnqueuer(b)

	first, err := b.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Rollback(ctx)
	if err := relay.SetQueue(ctx, first, "first", relay.QueueSettings{Ordered: true}, relay.Schema(b.Schema)); err != nil {
		t.Fatal(err)
	}
	paused, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	if err := relay.PauseQueue(paused, b, "other", relay.Schema(b.Schema)); err != nil {
		t.Fatalf("a pause while an ordered change is not committed: %v; want it done without waiting", err)
	}
	second := make(chan error, 1)
	go func() {
		second <- relay.SetQueue(ctx, b, "second", relay.QueueSettings{Ordered: true}, relay.Schema(b.Schema))
	}()
	b.waitForALockWait("the second SetQueue to wait for the first", "queues")
	if err := first.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := recv(t, second, "the second SetQueue"); err != nil {
		t.Fatalf("the second SetQueue: %v", err)
	}
	e.check("first", true)
	e.check("second", true)
}

// At REPEATABLE READ a change of the ordered queues is refused with an error that says what
// to do (its snapshot could drop a change that another transaction committed since, as it
// did before the refusal); a pause, which leaves them as they are, is not.
func TestOrderedChangeAtRepeatableReadIsRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	e := newOrderedEnqueuer(b)
	in := func(fn func(tx pgx.Tx) error) error {
		return pgx.BeginTxFunc(ctx, b, pgx.TxOptions{IsoLevel: pgx.RepeatableRead}, fn)
	}
	err := in(func(tx pgx.Tx) error {
		return relay.SetQueue(ctx, tx, "orders", relay.QueueSettings{Ordered: true}, relay.Schema(b.Schema))
	})
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); !ok || pgErr.Code != "0A000" || !strings.Contains(pgErr.Message, "READ COMMITTED") {
		t.Fatalf("SetQueue ordered at REPEATABLE READ: %v; want a refusal (0A000) that names READ COMMITTED", err)
	}
	e.check("orders", false)
	if err := in(func(tx pgx.Tx) error { return relay.PauseQueue(ctx, tx, "orders", relay.Schema(b.Schema)) }); err != nil {
		t.Fatalf("PauseQueue at REPEATABLE READ: %v", err)
	}
	if !b.queue("orders").Paused {
		t.Error("the queue paused at REPEATABLE READ is not paused")
	}
}

// A role that may change the schema's tables but owns none of its functions may set a
// queue ordered: the function is rewritten as its owner.
func TestOrderedQueueSetByARoleThatDoesNotOwnTheSchema(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	role := "relay_app_" + randomHex()
	schema := pgx.Identifier{b.Schema}.Sanitize()
	if _, err := b.Exec(ctx, fmt.Sprintf(`CREATE ROLE %[1]s;
		GRANT USAGE ON SCHEMA %[2]s TO %[1]s;
		GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %[2]s TO %[1]s;
		GRANT USAGE ON ALL SEQUENCES IN SCHEMA %[2]s TO %[1]s`, role, schema)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Exec(context.Background(), fmt.Sprintf("DROP OWNED BY %[1]s; DROP ROLE %[1]s", role))
	})
	app := b.pool(func(c *pgxpool.Config) {
		c.AfterConnect = func(ctx context.Context, conn *pgx.Conn) error {
			_, err := conn.Exec(ctx, "SET ROLE "+role)
			return err
		}
	})
	if err := relay.SetQueue(ctx, app, "orders", relay.QueueSettings{Ordered: true}, relay.Schema(b.Schema)); err != nil {
		t.Fatalf("SetQueue as role %s: %v", role, err)
	}
	newOrderedEnqueuer(b).check("orders", true)
}
