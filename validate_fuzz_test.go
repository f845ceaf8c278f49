package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/relayq/relay"
	"github.com/relayq/relay/relaytest"
)

// Fuzz targets of the checks at relay's entry points, with PostgreSQL as the judge: every
// value is either refused before the database, with the entry point's sentinel and the
// transaction still usable, or stored exactly as given. Run from their seed corpus by go
// test; fuzz with e.g. go test -run '^$' -fuzz FuzzNames -fuzztime 1m.

// valFuzzDB is a database with an ordered queue, for the fuzz targets.
func valFuzzDB(f *testing.F) *relaytest.DB {
	db := relaytest.NewDB(f)
	if err := relay.SetQueue(context.Background(), db, "ordered", relay.QueueSettings{Ordered: true}); err != nil {
		f.Fatal(err)
	}
	return db
}

// valInTx runs fn in a transaction it rolls back, so that each input starts afresh.
func valInTx(t *testing.T, db *relaytest.DB, fn func(ctx context.Context, tx pgx.Tx)) {
	ctx := context.Background()
	tx, err := db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	fn(ctx, tx)
}

// valStored fails the test unless the column of job id holds want.
func valStored(t *testing.T, tx pgx.Tx, id int64, column string, want any) {
	t.Helper()
	var match bool
	err := tx.QueryRow(context.Background(), "SELECT "+column+" IS NOT DISTINCT FROM $2 FROM relay.jobs WHERE id = $1", id, want).Scan(&match)
	if err != nil || !match {
		var got any
		_ = tx.QueryRow(context.Background(), "SELECT "+column+" FROM relay.jobs WHERE id = $1", id).Scan(&got)
		t.Errorf("%s of job %d is %v (%v); want %v", column, id, got, err, want)
	}
}

// valValidName is what the documentation promises a kind or queue name may be.
func valValidName(s string) bool {
	return s != "" && len(s) <= relay.MaxNameLen && valValidText(s)
}

// valValidText is text PostgreSQL stores: UTF-8 without NUL bytes.
func valValidText(s string) bool { return utf8.ValidString(s) && !strings.ContainsRune(s, 0) }

// A kind, queue, unique key or order key: refused iff the documentation says so, else
// stored as given; the same for queue settings and listing filters.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"q", "", "a\x00b", "\xff", "é", strings.Repeat("x", 128), strings.Repeat("x", 129),
		strings.Repeat("é", 64), strings.Repeat("x", 257), "\xed\xa0\x80", "\U0010FFFF", "\uFFFE", "tenant-*", "q:1", `"\`} {
		f.Add(s)
	}
	db := valFuzzDB(f)
	f.Fuzz(func(t *testing.T, s string) {
		valInTx(t, db, func(ctx context.Context, tx pgx.Tx) {
			text := valValidText(s)
			key := text && len(s) <= 256
			for _, c := range []struct {
				column string
				valid  bool
				value  any
				call   func() (int64, error)
			}{
				{"kind", valValidName(s), s, func() (int64, error) { return relay.Enqueue(ctx, tx, relay.NewKind[valArgs](s), valArgs{}) }},
				{"queue", valValidName(s), s, func() (int64, error) { return relay.Enqueue(ctx, tx, valKind, valArgs{}, relay.Queue(s)) }},
				{"unique_key", key && s != "", s, func() (int64, error) { return relay.Enqueue(ctx, tx, valKind, valArgs{}, relay.Unique(s)) }},
				{"order_key", key, s, func() (int64, error) {
					return relay.Enqueue(ctx, tx, valKind, valArgs{}, relay.Queue("ordered"), relay.OrderKey(s))
				}},
				{"kind", valValidName(s), s, func() (int64, error) {
					ids, err := relay.EnqueueMany(ctx, tx, []relay.JobSpec{relay.NewKind[valArgs](s).Job(valArgs{}, relay.Unique(s+"-many"))})
					if err != nil {
						return 0, err
					}
					return ids[0], nil
				}},
			} {
				id, err := c.call()
				switch {
				case c.valid && err != nil:
					t.Fatalf("%s %q refused: %v", c.column, s, err)
				case c.valid:
					valStored(t, tx, id, c.column, c.value)
				default:
					valRefused(t, tx, c.column+" "+s, err, relay.ErrInvalidJob)
				}
			}

			err := relay.SetQueue(ctx, tx, s, relay.QueueSettings{GlobalLimit: 1})
			if valValidName(s) {
				var limit int
				if err != nil || tx.QueryRow(ctx, "SELECT global_limit FROM relay.queues WHERE name = $1", s).Scan(&limit) != nil || limit != 1 {
					t.Fatalf("SetQueue(%q): %v; the queue is not stored with its limit", s, err)
				}
			} else {
				valRefused(t, tx, "SetQueue "+s, err, relay.ErrInvalidConfig)
			}
			_, err = relay.ListJobs(ctx, tx, relay.ListFilter{Queue: s, Kind: s})
			if s == "" || valValidName(s) {
				if err != nil {
					t.Fatalf("ListJobs(%q): %v", s, err)
				}
			} else {
				valRefused(t, tx, "ListJobs "+s, err, relay.ErrInvalidFilter)
			}
		})
	})
}

// valMaxJobTimeout is the longest per-job Timeout (stored in milliseconds as an integer).
const valMaxJobTimeout = 24 * 24 * time.Hour

// A job's options: refused iff out of their documented ranges, else stored exactly (no
// count cut to 32 bits, no time moved).
func FuzzEnqueueOptions(f *testing.F) {
	for _, c := range []struct {
		attempts, priority int
		timeout            int64
		sec, nsec          int64
	}{
		{1, 0, 0, 0, 0},
		{1<<32 + 3, 0, 0, 0, 0},
		{math.MaxInt32, relay.MaxPriority, int64(valMaxJobTimeout), valPGMax.Unix(), int64(valPGMax.Nanosecond())},
		{math.MaxInt32 + 1, relay.MinPriority - 1, int64(valMaxJobTimeout) + 1, valPGMax.Unix(), int64(valPGMax.Nanosecond()) + 1000},
		{0, 1 << 16, -1, valPGMin.Unix(), -1},
		{-1, math.MinInt, 1, time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), 0},
		{5, 7, int64(time.Millisecond) / 2, time.Time{}.Unix(), 0},
		{2, -5, 3, math.MinInt64, math.MaxInt64},
	} {
		f.Add(c.attempts, c.priority, c.timeout, c.sec, c.nsec)
	}
	db := valFuzzDB(f)
	f.Fuzz(func(t *testing.T, attempts, priority int, timeout, sec, nsec int64) {
		runAt := time.Unix(sec, nsec).UTC()
		valid := attempts >= 1 && attempts <= math.MaxInt32 &&
			priority >= relay.MinPriority && priority <= relay.MaxPriority &&
			timeout >= 0 && time.Duration(timeout) <= valMaxJobTimeout &&
			!runAt.Truncate(time.Microsecond).After(valPGMax)
		valInTx(t, db, func(ctx context.Context, tx pgx.Tx) {
			id, err := relay.Enqueue(ctx, tx, valKind, valArgs{},
				relay.MaxAttempts(attempts), relay.Priority(priority), relay.Timeout(time.Duration(timeout)), relay.RunAt(runAt))
			if !valid {
				valRefused(t, tx, "options", err, relay.ErrInvalidJob)
				return
			}
			if err != nil {
				t.Fatalf("MaxAttempts(%d), Priority(%d), Timeout(%v), RunAt(%v) refused: %v", attempts, priority, time.Duration(timeout), runAt, err)
			}
			valStored(t, tx, id, "max_attempts", int64(attempts))
			valStored(t, tx, id, "priority", int64(priority))
			valStored(t, tx, id, "timeout_ms", int64((time.Duration(timeout)+time.Millisecond-1)/time.Millisecond))
			switch {
			case runAt.IsZero():
				valStored(t, tx, id, "run_at <= now()", true)
			case runAt.Before(valPGMin):
				valStored(t, tx, id, "run_at", valPGMin)
			default:
				valStored(t, tx, id, "run_at", runAt.Truncate(time.Microsecond))
			}
		})
	})
}

// A queue's settings: refused iff out of their documented ranges, else stored exactly.
func FuzzQueueSettings(f *testing.F) {
	f.Add(0, "")
	f.Add(1<<32+1, "block")
	f.Add(math.MaxInt32, "move on")
	f.Add(-1, "retry")
	db := valFuzzDB(f)
	f.Fuzz(func(t *testing.T, limit int, onFailure string) {
		policy := relay.FailurePolicy(onFailure)
		valid := limit >= 0 && limit <= math.MaxInt32 &&
			(policy == "" || policy == relay.BlockOnFailure || policy == relay.MoveOnAfterFailure)
		valInTx(t, db, func(ctx context.Context, tx pgx.Tx) {
			err := relay.SetQueue(ctx, tx, "q", relay.QueueSettings{GlobalLimit: limit, OnFailure: policy})
			if !valid {
				valRefused(t, tx, "settings", err, relay.ErrInvalidConfig)
				return
			}
			if err != nil {
				t.Fatalf("GlobalLimit %d, OnFailure %q refused: %v", limit, onFailure, err)
			}
			info, err := relay.GetQueue(ctx, tx, "q")
			if err != nil || info.GlobalLimit != limit {
				t.Fatalf("GlobalLimit %d stored as %+v (%v)", limit, info, err)
			}
		})
	})
}

// Raw JSON args: relay refuses exactly what PostgreSQL's jsonb refuses, before the
// database; what it takes is stored as PostgreSQL reads it.
func FuzzJSONArgs(f *testing.F) {
	for _, s := range []string{`{}`, `"a\u0000b"`, `"\\u0000"`, `"\ud800"`, `"\ud800\udc00"`, `"\udc00"`, `"\uD800\uDBFF\uDC00"`,
		"\"\xff\"", `1e131071`, `1e131072`, `9.9999e131071`, `1e-16383`, `1.5e-16383`, `0e-16384`, `0.0e999999`, `0e1073741822`,
		`0e1073741823`, `-0.000e-16380`, `[1E+2,-1e-2,0.5]`, `{"a":[true,false,null,"\n\t\/"]}`, `1e0000000000000000001`, `-`, `"é\u00e9"`} {
		f.Add(s)
	}
	// Numbers without an exponent whose digits after the point are just in range, and one over.
	f.Add("0." + strings.Repeat("0", 16382) + "1")
	f.Add("[1." + strings.Repeat("0", 16384) + "]")
	db := valFuzzDB(f)
	f.Fuzz(func(t *testing.T, raw string) {
		valInTx(t, db, func(ctx context.Context, tx pgx.Tx) {
			id, err := relay.Enqueue(ctx, tx, valRaw, json.RawMessage(raw))
			if !json.Valid([]byte(raw)) {
				valRefused(t, tx, "invalid JSON", err, relay.ErrEncodeArgs)
				return
			}
			if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
				t.Fatalf("%.200q reached PostgreSQL (SQLSTATE %s): %v", raw, pgErr.Code, err)
			}
			// PostgreSQL's verdict, from a statement of its own (in a savepoint).
			var pgOK bool
			sp, spErr := tx.Begin(ctx)
			if spErr != nil {
				t.Fatal(spErr)
			}
			pgErr := sp.QueryRow(ctx, "SELECT $1::text::jsonb IS NOT NULL", raw).Scan(&pgOK)
			_ = sp.Rollback(ctx)
			switch {
			case pgErr == nil && err != nil:
				t.Fatalf("%.200q refused, which PostgreSQL stores: %v", raw, err)
			case pgErr != nil:
				if !errors.Is(err, relay.ErrEncodeArgs) {
					t.Fatalf("%.200q, which PostgreSQL refuses (%v), gave %v; want ErrEncodeArgs", raw, pgErr, err)
				}
				valRefused(t, tx, "args "+raw, err, relay.ErrEncodeArgs)
			default:
				valStored(t, tx, id, "args", json.RawMessage(raw))
			}
		})
	})
}
