package relay

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DB is anything relay can run a statement on: a [pgx.Tx], a *pgxpool.Pool, a
// *pgxpool.Conn or a *pgx.Conn. Pass your transaction to enqueue as part of it.
//
// All of those also send batches (SendBatch, as [pgx.Tx] does). relay sends a statement that
// finds a job by its id or unique key ([CompleteTx], [Checkpoint], [GetJob], a unique
// enqueue) in a batch between two that keep its plan on the jobs table's indexes and then
// give your transaction its settings back; a wrapper without SendBatch gets the statement
// alone, whose plan, made on a table of a few jobs, may read the whole table once it has
// grown (see the README's Performance section).
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
