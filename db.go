package relay

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DB is anything relay can run a statement on: a [pgx.Tx], a *pgxpool.Pool, a
// *pgxpool.Conn or a *pgx.Conn. Pass your transaction to enqueue as part of it.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Beginner is anything that can begin a transaction: a *pgxpool.Pool, a *pgx.Conn or a
// [pgx.Tx] (which begins a savepoint). [Migrate] needs one.
type Beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}
