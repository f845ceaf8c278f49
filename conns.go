package relay

import (
	"context"
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

// pick is the pool the next statement runs on: the shared one unless every connection it
// may have is taken.
func (c *conns) pick() *pgxpool.Pool {
	if c.reserved == nil {
		return c.shared
	}
	st := c.shared.Stat()
	if st.AcquiredConns()+st.ConstructingConns() < st.MaxConns() {
		return c.shared
	}
	return c.reserved
}

func (c *conns) Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	return c.pick().Exec(ctx, sql, args...)
}

func (c *conns) Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error) {
	return c.pick().Query(ctx, sql, args...)
}

func (c *conns) QueryRow(ctx context.Context, sql string, args ...any) pgx.Row {
	return c.pick().QueryRow(ctx, sql, args...)
}

func (c *conns) SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults {
	return c.pick().SendBatch(ctx, b)
}

func (c *conns) Begin(ctx context.Context) (pgx.Tx, error) { return c.pick().Begin(ctx) }
