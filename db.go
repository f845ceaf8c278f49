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
// enqueue) in a batch between two that keep it on its generic plan, made on the jobs
// table's indexes, and then give your transaction its settings back. A wrapper of your own
// should have SendBatch too: without it, the statement goes alone, and PostgreSQL may plan
// it afresh at every call (a unique enqueue was, at 1–2.5 ms a plan, which halved the
// enqueues a second) or keep a plan, made on a table of a few jobs, that reads the whole
// table once it has grown (see the README's Performance section).
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
