package store

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

//go:embed delete.sql
var deleteSQL string

// deleteStatements are delete.sql's sections, its bulk ones assembled per call.
var deleteStatements = parseNamed(deleteSQL)

// deleteQueries are delete.sql's statements that take fixed parameters.
type deleteQueries struct {
	deleteJob statement[jobParams]
}

func buildDeleteQueries(names *strings.Replacer) deleteQueries {
	var q deleteQueries
	bindAll(deleteSQL, "delete.sql", names, []named{{"deleteJob", &q.deleteJob}})
	checkBuilt(q)
	return q
}

// DeleteJob deletes job id unless it is running, and returns its state before.
func (s *Store) DeleteJob(ctx context.Context, db DB, id int64) (was string, err error) {
	err = s.d.deleteJob.queryRow(ctx, db, jobParams{ID: id}).Scan(&was)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", ErrNoJob
	}
	return was, err
}

// BulkAction is what [Store.Bulk] does to each job: the name of its statement in
// delete.sql.
type BulkAction string

// The bulk actions.
const (
	BulkDelete BulkAction = "bulkDelete" // every job but running ones
	BulkRetry  BulkAction = "bulkRetry"  // failed and cancelled jobs
	BulkCancel BulkAction = "bulkCancel" // pending and running jobs
)

// bulkPage is how many jobs one statement of a bulk action lists and changes: its
// locks last as long as that statement.
const bulkPage = 1000

// bulkRetries bounds how often a page is tried again after a deadlock (with a writer
// that locks the same rows in another order) or, for a retry, a unique key taken by an
// enqueue between the page's check and its update.
const bulkRetries = 5

// bulkParams are the parameters of a bulk action's page: the listing's, and those of
// the action.
type bulkParams struct {
	listParams
	Stored []string `db:"stored"` // the stored states the action applies to
}

// CountJobsOf counts the jobs that f selects, at most max (0: no bound): what a bulk
// action with the same filter would list.
func (s *Store) CountJobsOf(ctx context.Context, db DB, f ListFilter, max int64) (int64, error) {
	f.Limit = limitOf(max)
	sql, p := bulkStatement[listParams](s, "bulkCount", f)
	var n int64
	if err := db.QueryRow(ctx, sql.sql, sql.args(p)...).Scan(&n); err != nil {
		return 0, fmt.Errorf("count jobs: %w", err)
	}
	return n, nil
}

// Bulk applies action to the jobs that f selects, newest first, at most max of them (0:
// all), whose stored state is one of stored. It works one page of bulkPage jobs at a
// time, one statement each, and returns how many jobs it changed. Jobs that change state
// meanwhile are left as they are.
func (s *Store) Bulk(ctx context.Context, db DB, action BulkAction, f ListFilter, stored []string, max int64) (int64, error) {
	var changed, listed int64
	for max == 0 || listed < max {
		f.Limit = bulkPage
		if max > 0 {
			f.Limit = int(min(max-listed, bulkPage))
		}
		st, lp := bulkStatement[bulkParams](s, string(action), f)
		p := bulkParams{listParams: lp, Stored: stored}
		var (
			n, inPage int64
			lowest    pgtype.Int8 // NULL for an empty page
			err       error
		)
		for try := 1; ; try++ {
			err = st.queryRow(ctx, db, p).Scan(&n, &lowest, &inPage)
			if err == nil || try == bulkRetries || !retryablePage(err) {
				break
			}
		}
		if err != nil {
			return changed, fmt.Errorf("%s after %d jobs: %w", action, changed, err)
		}
		changed += n
		listed += inPage
		if inPage < int64(f.Limit) {
			break
		}
		f.After = lowest.Int64
	}
	return changed, nil
}

// retryablePage reports whether a page failed for a reason that trying it again removes:
// a deadlock, or a unique key taken by an enqueue after the page's check.
func retryablePage(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40P01" || isUniqueViolation(err, "jobs_unique_idx"))
}

// bulkStatement assembles delete.sql's section name around the listing of f's ids, with
// its parameters bound to the fields of P, and returns it with the listing's parameters.
func bulkStatement[P any](s *Store, name string, f ListFilter) (statement[P], listParams) {
	section, ok := deleteStatements[name]
	if !ok {
		panic(fmt.Sprintf("store: delete.sql has no statement named %q", name))
	}
	list, p := listing(f, "id")
	sql := strings.ReplaceAll(fragments.Replace(section), "{listing}", list)
	st, err := prepare[P](sql, true)
	if err != nil {
		// delete.sql and list.sql are embedded: a bug caught by every test of a bulk action.
		panic(fmt.Sprintf("store: %s: %v", name, err))
	}
	st.sql = s.names.Replace(st.sql)
	st.each = true // a listing's best plan depends on its filters' values
	return st, p
}

// limitOf is the listing limit that stands for at most max jobs, 0 meaning no bound.
func limitOf(max int64) int {
	if max <= 0 || max > math.MaxInt32 {
		return math.MaxInt32
	}
	return int(max)
}
