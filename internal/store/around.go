package store

import (
	"context"

	"github.com/jackc/pgx/v5"
)

// queryAround sends sql between around's two statements, in one batch and so one round
// trip, and returns sql's rows. Closing them reads the last statement's result and closes
// the batch; an error of either is the rows' Err. A db that does not send batches (a
// wrapper of the caller's) runs sql alone, with args as they are. A batch runs in the
// connection's exec mode, so a leading planEachTime is dropped from args there: around is
// then planWithoutJIT, which has sql planned for its values as planEachTime would.
func queryAround(ctx context.Context, db DB, around *[2]string, sql string, args []any) (pgx.Rows, error) {
	bdb, ok := db.(BatchDB)
	if !ok {
		return db.Query(ctx, sql, args...)
	}
	if len(args) > 0 && args[0] == planEachTime {
		args = args[1:]
	}
	b := &pgx.Batch{}
	b.Queue(around[0])
	b.Queue(sql, args...)
	b.Queue(around[1])
	br := bdb.SendBatch(ctx, b)
	if _, err := br.Exec(); err != nil {
		_ = br.Close()
		return nil, err
	}
	rows, err := br.Query()
	if err != nil {
		_ = br.Close()
		return nil, err
	}
	return &rowsBetween{Rows: rows, batch: br}, nil
}

// rowsBetween are the rows of the statement in the middle of a batch of three.
type rowsBetween struct {
	pgx.Rows
	batch  pgx.BatchResults
	closed bool
	err    error
}

// Next closes the rows after the last one, as pgx's own do, so that a caller that reads
// them to the end and then checks Err sees the whole batch's error.
func (r *rowsBetween) Next() bool {
	if r.closed {
		return false
	}
	if r.Rows.Next() {
		return true
	}
	r.Close()
	return false
}

func (r *rowsBetween) Close() {
	if r.closed {
		return
	}
	r.closed = true
	r.Rows.Close()
	r.err = r.Rows.Err()
	if _, err := r.batch.Exec(); r.err == nil {
		r.err = err
	}
	if err := r.batch.Close(); r.err == nil {
		r.err = err
	}
}

func (r *rowsBetween) Err() error {
	if r.closed {
		return r.err
	}
	return r.Rows.Err()
}

// firstRow is the first of rows, as pgx.Row: Scan reads it and closes the rows, and with
// no row at all returns pgx.ErrNoRows.
type firstRow struct {
	rows pgx.Rows
	err  error
}

func (r firstRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}
