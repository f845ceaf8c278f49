package relay

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// conns is what a client's own statements run on — claims, lease renewals, rescues,
// outcomes — when the application may exhaust its pool: the pool given to Start while it
// has a connection to spare, else a small pool of the client's own ([Config].ReservedConns
// connections, opened with the same settings). A handler holding every connection of the
// application's pool then never starves its client: a starved renewal would lose its lease
// and run the job twice. The reserved pool opens connections only when they are used, and
// closes them after reservedIdle without use, so that a client whose application leaves a
// connection free costs no connection more.
type conns struct {
	shared   *pgxpool.Pool
	reserved *pgxpool.Pool // nil: the client shares the pool only
}

// reservedIdle is how long a reserved connection stays open unused.
const reservedIdle = time.Minute

// newConns returns the connections of client id, with up to reserved of its own.
func newConns(ctx context.Context, pool *pgxpool.Pool, reserved int, id string) (*conns, error) {
	c := &conns{shared: pool}
	if reserved <= 0 {
		return c, nil
	}
	cfg := pool.Config() // a copy, with the application's connect hooks and settings
	cfg.MaxConns, cfg.MinConns, cfg.MinIdleConns = int32(reserved), 0, 0
	cfg.MaxConnIdleTime = reservedIdle
	cfg.ConnConfig.RuntimeParams["application_name"] = ReservedApplicationName(id)
	var err error
	c.reserved, err = pgxpool.NewWithConfig(ctx, cfg)
	return c, err
}

// close closes the reserved connections.
func (c *conns) close() {
	if c.reserved != nil {
		c.reserved.Close()
	}
}

// sharedWait bounds how long a statement waits for a connection of the shared pool that
// had none to spare when it came: one may be released soon, but the statement may also be
// queued behind handlers that wait for connections too, for as long as they hold theirs —
// the starvation that reserved connections exist to prevent. It then takes a reserved one.
const sharedWait = 100 * time.Millisecond

// sharedOpenWait bounds how long a statement waits for a connection that the shared pool
// opens for it (it had room for one when the statement came). Opening a reserved
// connection after sharedWait as well, as it once did, only added to the load of a
// database that opens connections slowly — one that has just started, to which every
// client reconnects at once: in the chaos suite, after a restart, every client opened its
// reserved connections besides.
const sharedOpenWait = time.Second

// acquire takes a connection for one statement or transaction, for a client with reserved
// connections: of the shared pool if one comes in time (see sharedWait and sharedOpenWait),
// else a reserved one.
func (c *conns) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	st := c.shared.Stat()
	if st.AcquiredConns() >= st.MaxConns() { // all held: none would come in time
		return c.reserved.Acquire(ctx)
	}
	wait := sharedWait
	if st.AcquiredConns()+st.ConstructingConns() < st.MaxConns() {
		wait = sharedOpenWait // room for one more: it is opened for this statement
	}
	waitCtx, cancel := context.WithTimeout(ctx, wait)
	conn, err := c.shared.Acquire(waitCtx)
	cancel()
	if err != nil && ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		return c.reserved.Acquire(ctx)
	}
	return conn, err
}

func (c *conns) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	if c.reserved == nil {
		return c.shared.Exec(ctx, sql, args...)
	}
	conn, err := c.acquire(ctx)
	if err != nil {
		return pgconn.CommandTag{}, err
	}
	defer conn.Release()
	return conn.Exec(ctx, sql, args...)
}

func (c *conns) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	if c.reserved == nil {
		return c.shared.Query(ctx, sql, args...)
	}
	conn, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	rows, err := conn.Query(ctx, sql, args...)
	if err != nil {
		conn.Release()
		return nil, err
	}
	return &releasingRows{Rows: rows, held: held{conn: conn}}, nil
}

func (c *conns) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	if c.reserved == nil {
		return c.shared.QueryRow(ctx, sql, args...)
	}
	conn, err := c.acquire(ctx)
	if err != nil {
		return errRow{err}
	}
	return &releasingRow{row: conn.QueryRow(ctx, sql, args...), held: held{conn: conn}}
}

func (c *conns) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	if c.reserved == nil {
		return c.shared.SendBatch(ctx, b)
	}
	conn, err := c.acquire(ctx)
	if err != nil {
		return errBatch{err}
	}
	return &releasingBatch{BatchResults: conn.SendBatch(ctx, b), held: held{conn: conn}}
}

func (c *conns) Begin(ctx context.Context) (pgx.Tx, error) {
	if c.reserved == nil {
		return c.shared.Begin(ctx)
	}
	conn, err := c.acquire(ctx)
	if err != nil {
		return nil, err
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		conn.Release()
		return nil, err
	}
	return &releasingTx{Tx: tx, held: held{conn: conn}}, nil
}

// The results of a statement on an acquired connection give it back when they are done
// with, as pgxpool's own do. Each is used by one goroutine, as pgx's are.

// held is an acquired connection, released once.
type held struct{ conn *pgxpool.Conn }

func (h *held) release() {
	if h.conn != nil {
		h.conn.Release()
		h.conn = nil
	}
}

type releasingRows struct {
	pgx.Rows
	held
}

func (r *releasingRows) Next() bool {
	if r.Rows.Next() {
		return true
	}
	r.release() // the rows are closed: the connection is free
	return false
}

func (r *releasingRows) Close() {
	r.Rows.Close()
	r.release()
}

type releasingRow struct {
	row pgx.Row
	held
}

func (r *releasingRow) Scan(dest ...any) error {
	defer r.release()
	return r.row.Scan(dest...)
}

type releasingBatch struct {
	pgx.BatchResults
	held
}

func (b *releasingBatch) Close() error {
	defer b.release()
	return b.BatchResults.Close()
}

type releasingTx struct {
	pgx.Tx
	held
}

func (t *releasingTx) Commit(ctx context.Context) error {
	defer t.release()
	return t.Tx.Commit(ctx)
}

func (t *releasingTx) Rollback(ctx context.Context) error {
	defer t.release()
	return t.Tx.Rollback(ctx)
}

// errRow and errBatch carry an error that came before the statement ran.

type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

type errBatch struct{ err error }

func (b errBatch) Exec() (pgconn.CommandTag, error) { return pgconn.CommandTag{}, b.err }
func (b errBatch) Query() (pgx.Rows, error)         { return nil, b.err }
func (b errBatch) QueryRow() pgx.Row                { return errRow(b) }
func (b errBatch) Close() error                     { return b.err }
func (b errBatch) Tx() pgx.Tx                       { return nil }
