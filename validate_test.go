package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/relaytest"
)

// Tests of the checks at every public entry point: a value PostgreSQL would refuse (and
// so abort the caller's transaction) or store as something else is refused first, with an
// error that wraps the entry point's sentinel; nothing is written and the caller's
// transaction goes on. The helpers of this file are prefixed val.

type valArgs struct{ S string }

var (
	valKind   = relay.NewKind[valArgs]("val")
	valRaw    = relay.NewKind[json.RawMessage]("val-raw")
	valBytes  = relay.NewKind[[]byte]("val-bytes")
	valLogger = slog.New(slog.NewTextHandler(io.Discard, nil))
)

// valTimeout bounds every wait for something that should happen promptly.
const valTimeout = 15 * time.Second

// valPGMax is the last instant relay stores (its microseconds since 1970 are the largest
// bigint); valPGMin the first (PostgreSQL's first).
var (
	valPGMax = time.UnixMicro(math.MaxInt64).UTC()
	valPGMin = time.Date(-4713, 11, 24, 0, 0, 0, 0, time.UTC)
)

// valRefused fails the test unless err wraps every one of want, says "relay:", and was
// not a PostgreSQL error, and unless tx is still usable: a statement after it succeeds.
func valRefused(t testing.TB, tx pgx.Tx, what string, err error, want ...error) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error; want %v", what, want)
		return
	}
	for _, w := range want {
		if !errors.Is(err, w) {
			t.Errorf("%s: %v; want an error wrapping %q", what, err, w)
		}
	}
	if !strings.Contains(err.Error(), "relay: ") {
		t.Errorf("%s: %q does not say it comes from relay", what, err)
	}
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
		t.Errorf("%s: reached PostgreSQL (SQLSTATE %s): %v", what, pgErr.Code, err)
	}
	if tx != nil {
		if _, err := tx.Exec(context.Background(), "SELECT 1"); err != nil {
			t.Errorf("%s: the transaction is no longer usable: %v", what, err)
		}
	}
}

// valCase calls one entry point with a bad value on db, a transaction.
type valCase struct {
	name string
	want []error
	call func(ctx context.Context, db relay.DB) error
}

func valEnqueue(args valArgs, opts ...relay.EnqueueOption) func(context.Context, relay.DB) error {
	return func(ctx context.Context, db relay.DB) error {
		_, err := relay.Enqueue(ctx, db, valKind, args, opts...)
		return err
	}
}

func valEnqueueRaw(raw string, opts ...relay.EnqueueOption) func(context.Context, relay.DB) error {
	return func(ctx context.Context, db relay.DB) error {
		_, err := relay.Enqueue(ctx, db, valRaw, json.RawMessage(raw), opts...)
		return err
	}
}

// valBatch enqueues a good job and the bad one, so that the whole batch is refused.
func valBatch(bad relay.JobSpec, opts ...relay.EnqueueOption) func(context.Context, relay.DB) error {
	return func(ctx context.Context, db relay.DB) error {
		_, err := relay.EnqueueJobs(ctx, db, []relay.JobSpec{valKind.Job(valArgs{"fine"}), bad}, opts...)
		return err
	}
}

// valBadCases are bad values for every entry point that takes a DB, in the order of the
// README: enqueueing and its options, queues, managing and listing jobs, migrations.
func valBadCases() []valCase {
	big := strings.Repeat("x", relay.DefaultMaxSize)
	job, cfg, enc, large, filter := relay.ErrInvalidJob, relay.ErrInvalidConfig, relay.ErrEncodeArgs, relay.ErrTooLarge, relay.ErrInvalidFilter
	cases := []valCase{
		{"kind with a NUL byte", []error{job}, func(ctx context.Context, db relay.DB) error {
			_, err := relay.Enqueue(ctx, db, relay.NewKind[valArgs]("a\x00b"), valArgs{})
			return err
		}},
		{"kind not UTF-8", []error{job}, func(ctx context.Context, db relay.DB) error {
			_, err := relay.EnqueueJob(ctx, db, relay.NewKind[valArgs]("a\xffb"), valArgs{})
			return err
		}},
		{"queue with a NUL byte", []error{job}, valEnqueue(valArgs{}, relay.Queue("q\x00"))},
		{"queue not UTF-8", []error{job}, valEnqueue(valArgs{}, relay.Queue("\xc3("))},
		{"unique key with a NUL byte", []error{job}, valEnqueue(valArgs{}, relay.Unique("k\x00"))},
		{"unique key not UTF-8", []error{job}, valEnqueue(valArgs{}, relay.Unique("\xed\xa0\x80"))},
		{"order key with a NUL byte", []error{job}, valEnqueue(valArgs{}, relay.Queue("ordered"), relay.OrderKey("\x00"))},
		{"order key not UTF-8", []error{job}, valEnqueue(valArgs{}, relay.Queue("ordered"), relay.OrderKey("\x80"))},
		{"args with a NUL character", []error{enc}, valEnqueue(valArgs{"a\x00b"})},
		{"raw args with \\u0000", []error{enc}, valEnqueueRaw(`{"s":"a\u0000b"}`)},
		{"raw args with half a surrogate pair", []error{enc}, valEnqueueRaw(`["\ud800"]`)},
		{"raw args with a lone low surrogate", []error{enc}, valEnqueueRaw(`"\udc00\ud800"`)},
		{"raw args not UTF-8", []error{enc}, valEnqueueRaw("\"\xff\"")},
		{"raw args with a number too large", []error{enc}, valEnqueueRaw(`{"n":1e131072}`)},
		{"raw args with a number too precise", []error{enc}, valEnqueueRaw(`[1.5e-16383]`)},
		{"raw args with an exponent too large", []error{enc}, valEnqueueRaw(`0e2147483648`)},
		{"args over the default limit", []error{large, job}, valEnqueue(valArgs{big})},
		{"args over MaxArgsSize", []error{large, job}, valEnqueue(valArgs{"0123456789"}, relay.MaxArgsSize(10))},
		{"payload over MaxArgsSize", []error{large, job}, func(ctx context.Context, db relay.DB) error {
			_, err := relay.Enqueue(ctx, db, valBytes, make([]byte, 11), relay.MaxArgsSize(10))
			return err
		}},
		{"MaxArgsSize(0)", []error{job}, valEnqueue(valArgs{}, relay.MaxArgsSize(0))},
		{"MaxAttempts(1<<32+3), which int32 cuts to 3", []error{job}, valEnqueue(valArgs{}, relay.MaxAttempts(1<<32+3))},
		{"MaxAttempts(MaxInt32+1)", []error{job}, valEnqueue(valArgs{}, relay.MaxAttempts(math.MaxInt32+1))},
		{"RunAt in year 300000", []error{job}, valEnqueue(valArgs{}, relay.RunAt(time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC)))},
		{"RunAt in year 294276, which PostgreSQL holds, but not as microseconds since 1970 in a bigint", []error{job}, valEnqueue(valArgs{}, relay.RunAt(time.Date(294276, 1, 1, 0, 0, 0, 0, time.UTC)))},
		{"RunAt just past the latest", []error{job}, valEnqueue(valArgs{}, relay.RunAt(valPGMax.Add(time.Microsecond)))},
		{"EnqueueMany: a kind with a NUL byte", []error{job}, valBatch(relay.NewKind[valArgs]("\x00").Job(valArgs{}))},
		{"EnqueueMany: a queue not UTF-8", []error{job}, valBatch(valKind.Job(valArgs{}, relay.Queue("\xff")))},
		{"EnqueueMany: args with a NUL character", []error{enc}, valBatch(valKind.Job(valArgs{"\x00"}))},
		{"EnqueueMany: raw args with \\u0000", []error{enc}, valBatch(valRaw.Job(json.RawMessage(`"\u0000"`)))},
		{"EnqueueMany: args over the limit", []error{large, job}, valBatch(valKind.Job(valArgs{big}))},
		{"EnqueueMany: a unique key with a NUL byte", []error{job}, valBatch(valKind.Job(valArgs{}, relay.Unique("\x00")))},
		{"EnqueueMany: MaxAttempts(1<<32+2) for the batch", []error{job}, func(ctx context.Context, db relay.DB) error {
			_, err := relay.EnqueueMany(ctx, db, []relay.JobSpec{valKind.Job(valArgs{})}, relay.MaxAttempts(1<<32+2))
			return err
		}},
		{"EnqueueMany: RunAt in year 300000", []error{job}, valBatch(valKind.Job(valArgs{}, relay.RunAt(time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC))))},
		{"Backoff with a negative Initial", []error{job, backoff.ErrInvalidPolicy}, valEnqueue(valArgs{}, relay.Backoff(backoff.Policy{Initial: -1, Multiplier: 2, Max: time.Second}))},
		{"Backoff whose Max with Jitter overflows", []error{job, backoff.ErrInvalidPolicy}, valEnqueue(valArgs{}, relay.Backoff(backoff.Policy{Initial: 1, Multiplier: 2, Max: math.MaxInt64, Jitter: 0.5}))},
		{"EnqueueMany: Backoff with a NaN Multiplier", []error{job}, valBatch(valKind.Job(valArgs{}, relay.Backoff(backoff.Policy{Initial: 1, Multiplier: math.NaN(), Max: 1})))},
		{"Reserved(0)", []error{job}, valEnqueue(valArgs{}, relay.Reserved(0))},
		{"EnqueueMany: Reserved(-1s)", []error{job}, valBatch(valKind.Job(valArgs{}, relay.Reserved(-time.Second)))},

		{"SetQueue: a name with a NUL byte", []error{cfg, job}, func(ctx context.Context, db relay.DB) error {
			return relay.SetQueue(ctx, db, "q\x00", relay.QueueSettings{})
		}},
		{"SetQueue: GlobalLimit 1<<32+1, which int32 cuts to 1", []error{cfg}, func(ctx context.Context, db relay.DB) error {
			return relay.SetQueue(ctx, db, "q", relay.QueueSettings{GlobalLimit: 1<<32 + 1})
		}},
		{"SetQueue: GlobalLimit MaxInt32+1", []error{cfg}, func(ctx context.Context, db relay.DB) error {
			return relay.SetQueue(ctx, db, "q", relay.QueueSettings{GlobalLimit: math.MaxInt32 + 1})
		}},
		{"PauseQueue: a name not UTF-8", []error{cfg}, func(ctx context.Context, db relay.DB) error {
			return relay.PauseQueue(ctx, db, "\xff")
		}},
		{"ResumeQueue: a name with a NUL byte", []error{cfg}, func(ctx context.Context, db relay.DB) error {
			return relay.ResumeQueue(ctx, db, "\x00")
		}},
		{"GetQueue: a name with a NUL byte", []error{cfg}, func(ctx context.Context, db relay.DB) error {
			_, err := relay.GetQueue(ctx, db, "\x00")
			return err
		}},
		{"GetQueue: an empty name", []error{cfg}, func(ctx context.Context, db relay.DB) error {
			_, err := relay.GetQueue(ctx, db, "")
			return err
		}},

		{"Cancel in a schema with a NUL byte", []error{relay.ErrInvalidSchema}, func(ctx context.Context, db relay.DB) error {
			return relay.Cancel(ctx, db, 1, relay.Schema("s\x00"))
		}},
		{"Retry in a schema not UTF-8", []error{relay.ErrInvalidSchema}, func(ctx context.Context, db relay.DB) error {
			return relay.Retry(ctx, db, 1, relay.Schema("\xff"))
		}},
		{"CommitJobs in a schema with a NUL byte", []error{relay.ErrInvalidSchema}, func(ctx context.Context, db relay.DB) error {
			return relay.CommitJobs(ctx, db, []int64{1}, relay.Schema("s\x00"))
		}},
		{"ExtendReservation in a schema not UTF-8", []error{relay.ErrInvalidSchema}, func(ctx context.Context, db relay.DB) error {
			return relay.ExtendReservation(ctx, db, []int64{1}, time.Minute, relay.Schema("\xff"))
		}},
		{"GetJob in a schema with a NUL byte", []error{relay.ErrInvalidSchema}, func(ctx context.Context, db relay.DB) error {
			_, err := relay.GetJob(ctx, db, 1, relay.Schema("\x00"))
			return err
		}},
		{"GetJobOf in a schema with a NUL byte", []error{relay.ErrInvalidSchema}, func(ctx context.Context, db relay.DB) error {
			_, err := relay.GetJobOf[valArgs, string](ctx, db, 1, relay.Schema("\x00"))
			return err
		}},
		{"ListJobs: a queue with a NUL byte", []error{filter}, func(ctx context.Context, db relay.DB) error {
			_, err := relay.ListJobs(ctx, db, relay.ListFilter{Queue: "\x00"})
			return err
		}},
		{"ListJobs: a kind not UTF-8", []error{filter}, func(ctx context.Context, db relay.DB) error {
			_, err := relay.ListJobs(ctx, db, relay.ListFilter{Kind: "\xff", States: []relay.JobState{relay.StateFailed}})
			return err
		}},
		{"ListJobs: From in year 300000", []error{filter}, func(ctx context.Context, db relay.DB) error {
			_, err := relay.ListJobs(ctx, db, relay.ListFilter{From: time.Date(300000, 1, 1, 0, 0, 0, 0, time.UTC)})
			return err
		}},
		{"ListJobs: To before 4713 BC", []error{filter}, func(ctx context.Context, db relay.DB) error {
			_, err := relay.ListJobs(ctx, db, relay.ListFilter{To: valPGMin.Add(-time.Microsecond)})
			return err
		}},
		{"CountJobs in a schema with a NUL byte", []error{relay.ErrInvalidSchema}, func(ctx context.Context, db relay.DB) error {
			_, err := relay.CountJobs(ctx, db, relay.Schema("\x00"))
			return err
		}},
		{"MigrationSQL for a schema with a NUL byte", []error{relay.ErrInvalidSchema}, func(ctx context.Context, db relay.DB) error {
			_, err := relay.MigrationSQL(ctx, db, relay.Schema("\x00"))
			return err
		}},
		{"Migrate a schema not UTF-8", []error{relay.ErrInvalidSchema}, func(ctx context.Context, db relay.DB) error {
			return relay.Migrate(ctx, db.(relay.Beginner), relay.Schema("\xff"))
		}},
	}
	return cases
}

// Every entry point that takes a DB refuses bad values before the database: the error
// wraps its sentinel, nothing is inserted, and the caller's transaction goes on to commit.
func TestBadValuesAreRefusedBeforeTheDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := relaytest.NewDB(t)
	if err := relay.SetQueue(ctx, db, "ordered", relay.QueueSettings{Ordered: true}); err != nil {
		t.Fatal(err)
	}
	for _, c := range valBadCases() {
		t.Run(c.name, func(t *testing.T) {
			tx, err := db.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback(ctx)
			valRefused(t, tx, c.name, c.call(ctx, tx), c.want...)
			var jobs, queues int
			if err := tx.QueryRow(ctx, "SELECT (SELECT count(*) FROM relay.jobs), (SELECT count(*) FROM relay.queues)").Scan(&jobs, &queues); err != nil {
				t.Fatalf("read the tables in the transaction: %v", err)
			}
			if jobs != 0 || queues != 1 {
				t.Errorf("%d jobs and %d queues in the transaction; want none and the one set up", jobs, queues)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Errorf("commit after the refused call: %v", err)
			}
		})
	}
}

// Every function that takes a DB or Beginner, and Start, refuses a nil one — also a typed
// nil in the interface — with ErrNilDB instead of a nil pointer dereference.
func TestNilDBIsRefused(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var nilTx pgx.Tx
	nils := map[string]relay.DB{
		"nil":                  nil,
		"(*pgxpool.Pool)(nil)": (*pgxpool.Pool)(nil),
		"(*pgxpool.Conn)(nil)": (*pgxpool.Conn)(nil),
		"(*pgx.Conn)(nil)":     (*pgx.Conn)(nil),
		"a nil pgx.Tx":         nilTx,
	}
	job := &relay.Job[valArgs]{ID: 1}
	calls := map[string]func(db relay.DB) error{
		"Enqueue": func(db relay.DB) error { _, err := relay.Enqueue(ctx, db, valKind, valArgs{}); return err },
		"EnqueueJob": func(db relay.DB) error {
			_, err := relay.EnqueueJob(ctx, db, valKind, valArgs{})
			return err
		},
		"EnqueueMany": func(db relay.DB) error {
			_, err := relay.EnqueueMany(ctx, db, []relay.JobSpec{valKind.Job(valArgs{})})
			return err
		},
		"EnqueueJobs (empty)": func(db relay.DB) error { _, err := relay.EnqueueJobs(ctx, db, nil); return err },
		"GetJob":              func(db relay.DB) error { _, err := relay.GetJob(ctx, db, 1); return err },
		"GetJobOf":            func(db relay.DB) error { _, err := relay.GetJobOf[valArgs, string](ctx, db, 1); return err },
		"Cancel":              func(db relay.DB) error { return relay.Cancel(ctx, db, 1) },
		"Retry":               func(db relay.DB) error { return relay.Retry(ctx, db, 1) },
		"CommitJobs":          func(db relay.DB) error { return relay.CommitJobs(ctx, db, []int64{1}) },
		"ExtendReservation":   func(db relay.DB) error { return relay.ExtendReservation(ctx, db, []int64{1}, time.Minute) },
		"ListJobs":            func(db relay.DB) error { _, err := relay.ListJobs(ctx, db, relay.ListFilter{}); return err },
		"CountJobs":           func(db relay.DB) error { _, err := relay.CountJobs(ctx, db); return err },
		"SetQueue":            func(db relay.DB) error { return relay.SetQueue(ctx, db, "q", relay.QueueSettings{}) },
		"PauseQueue":          func(db relay.DB) error { return relay.PauseQueue(ctx, db, "q") },
		"ResumeQueue":         func(db relay.DB) error { return relay.ResumeQueue(ctx, db, "q") },
		"GetQueue":            func(db relay.DB) error { _, err := relay.GetQueue(ctx, db, "q"); return err },
		"MigrationSQL":        func(db relay.DB) error { _, err := relay.MigrationSQL(ctx, db); return err },
		"CompleteTx":          func(db relay.DB) error { return relay.CompleteTx(ctx, db, job) },
		"Checkpoint":          func(db relay.DB) error { return relay.Checkpoint(ctx, db, job, 1) },
		"Migrate": func(db relay.DB) error {
			b, _ := db.(relay.Beginner)
			if db != nil && b == nil {
				b = (*pgxpool.Pool)(nil) // the nil *pgxpool.Conn is no Beginner
			}
			return relay.Migrate(ctx, b)
		},
	}
	for fn, call := range calls {
		for what, db := range nils {
			func() {
				defer func() {
					if p := recover(); p != nil {
						t.Errorf("%s on %s panicked: %v", fn, what, p)
					}
				}()
				if err := call(db); !errors.Is(err, relay.ErrNilDB) {
					t.Errorf("%s on %s: %v; want ErrNilDB", fn, what, err)
				}
			}()
		}
	}
	c := relay.New(relay.Config{})
	if err := relay.Handle(c, valKind, func(context.Context, *relay.Job[valArgs]) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, nil); !errors.Is(err, relay.ErrNilDB) || !errors.Is(err, relay.ErrInvalidConfig) {
		t.Errorf("Start with a nil pool: %v; want ErrNilDB and ErrInvalidConfig", err)
	}
}

// Handle's options, kind names and Config are refused with their sentinels before Start
// reaches the database.
func TestHandleAndConfigRefuseBadValues(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := relaytest.NewDB(t)
	noop := func(context.Context, *relay.Job[valArgs]) (string, error) { return "", nil }
	handles := []struct {
		name string
		want error
		call func(c *relay.Client) error
	}{
		{"a kind with a NUL byte", relay.ErrInvalidJob, func(c *relay.Client) error {
			return relay.HandleWithOutput(c, relay.NewKind[valArgs]("\x00"), noop)
		}},
		{"a kind not UTF-8", relay.ErrInvalidJob, func(c *relay.Client) error {
			return relay.HandleWithOutput(c, relay.NewKind[valArgs]("k\xfe"), noop)
		}},
		{"MaxAttempts(1<<32+2), which int32 cuts to 2", relay.ErrInvalidConfig, func(c *relay.Client) error {
			return relay.HandleWithOutput(c, valKind, noop, relay.MaxAttempts(1<<32+2))
		}},
		{"MaxAttempts(MaxInt32+1)", relay.ErrInvalidConfig, func(c *relay.Client) error {
			return relay.HandleWithOutput(c, valKind, noop, relay.MaxAttempts(math.MaxInt32+1))
		}},
		{"a nil client", relay.ErrInvalidConfig, func(*relay.Client) error {
			return relay.HandleWithOutput(nil, valKind, noop)
		}},
	}
	for _, h := range handles {
		valRefused(t, nil, "Handle: "+h.name, h.call(relay.New(relay.Config{})), h.want)
	}
	c := relay.New(relay.Config{})
	if err := relay.HandleWithOutput(c, valKind, noop, relay.MaxAttempts(math.MaxInt32)); err != nil {
		t.Errorf("Handle with MaxAttempts(MaxInt32): %v", err)
	}

	configs := map[string]relay.Config{
		"a queue with a NUL byte":      {Queues: map[string]relay.QueueConfig{"q\x00": {Workers: 1}}},
		"a group not UTF-8":            {Queues: map[string]relay.QueueConfig{"\xff*": {Workers: 1}}},
		"an ID with a NUL byte":        {ID: "client\x00"},
		"an ID not UTF-8":              {ID: "\xc0\xaf"},
		"an over-long ID":              {ID: strings.Repeat("i", relay.MaxNameLen+1)},
		"a negative MaxOutputSize":     {MaxOutputSize: -1},
		"a negative MaxCheckpointSize": {MaxCheckpointSize: -1},
		"a negative MaxErrorDataSize":  {MaxErrorDataSize: -1},
		"ReservedConns over MaxInt32":  {ReservedConns: math.MaxInt32 + 1},
	}
	for name, cfg := range configs {
		cfg.Logger = valLogger
		c := relay.New(cfg)
		if err := relay.Handle(c, valKind, func(context.Context, *relay.Job[valArgs]) error { return nil }); err != nil {
			t.Fatal(err)
		}
		err := c.Start(ctx, db.Pool)
		valRefused(t, nil, "Start with "+name, err, relay.ErrInvalidConfig)
		if err == nil {
			c.Stop(ctx)
		}
	}
}

// A handler's checkpoints and outputs that cannot be stored are refused with a clear error
// and leave the handler's transaction usable: it goes on to complete the job.
func TestHandlerValuesAreRefusedBeforeTheDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := relaytest.NewDB(t)
	c := relay.New(relay.Config{Logger: valLogger, MaxOutputSize: 100, MaxCheckpointSize: 100})
	err := relay.Handle(c, valKind, func(ctx context.Context, job *relay.Job[valArgs]) error {
		tx, err := db.Begin(ctx)
		if err != nil {
			return err
		}
		defer tx.Rollback(ctx)
		long := strings.Repeat("x", 100)
		valRefused(t, tx, "Checkpoint with a NUL character", relay.Checkpoint(ctx, tx, job, "a\x00b"), relay.ErrEncodeValue)
		valRefused(t, tx, "Checkpoint with half a surrogate pair", relay.Checkpoint(ctx, tx, job, json.RawMessage(`"\udbff"`)), relay.ErrEncodeValue)
		valRefused(t, tx, "Checkpoint with a number out of range", relay.Checkpoint(ctx, tx, job, json.RawMessage(`1e200000`)), relay.ErrEncodeValue)
		valRefused(t, tx, "Checkpoint over MaxCheckpointSize", relay.Checkpoint(ctx, tx, job, long), relay.ErrTooLarge)
		valRefused(t, tx, "Checkpoint that does not encode", relay.Checkpoint(ctx, tx, job, func() {}), relay.ErrEncodeValue)
		valRefused(t, tx, "Checkpoint on a nil DB", relay.Checkpoint(ctx, nil, job, 1), relay.ErrNilDB)
		valRefused(t, tx, "CompleteTx on a nil pgx.Tx", relay.CompleteTx(ctx, pgx.Tx(nil), job), relay.ErrNilDB)
		valRefused(t, tx, "SetOutput with a NUL character", job.SetOutput(map[string]string{"k": "\x00"}), relay.ErrEncodeValue)
		valRefused(t, tx, "SetOutput over MaxOutputSize", job.SetOutput(long), relay.ErrTooLarge)
		if err := relay.Checkpoint(ctx, tx, job, "step 1"); err != nil {
			return fmt.Errorf("a good checkpoint after the refused ones: %w", err)
		}
		if err := job.SetOutput("out"); err != nil {
			return fmt.Errorf("a good output after the refused ones: %w", err)
		}
		if err := relay.CompleteTx(ctx, tx, job); err != nil {
			return fmt.Errorf("CompleteTx after the refused calls: %w", err)
		}
		return tx.Commit(ctx)
	})
	if err != nil {
		t.Fatal(err)
	}
	events := valStart(t, c, db.Pool)
	id, err := relay.Enqueue(ctx, db, valKind, valArgs{})
	if err != nil {
		t.Fatal(err)
	}
	e := relaytest.Receive(t, events, valTimeout, "the job's outcome")
	rec, err := relay.GetJobOf[valArgs, string](ctx, db, id)
	if err != nil {
		t.Fatal(err)
	}
	if e.State != relay.StateSucceeded || !e.CompletedTx || rec.Output == nil || *rec.Output != "out" || string(rec.Checkpoint) != `"step 1"` {
		t.Errorf("job ended %s (%s), output %v, checkpoint %s; want succeeded by CompleteTx with the good output and checkpoint",
			e.State, e.Error, rec.Output, rec.Checkpoint)
	}
}

// valStart starts c on pool, stops it when the test ends, and returns the events of the
// attempts it ends.
func valStart(t testing.TB, c *relay.Client, pool *pgxpool.Pool) <-chan relay.Event {
	t.Helper()
	events, unsubscribe := c.Subscribe(10)
	ctx, cancel := context.WithTimeout(context.Background(), valTimeout)
	defer cancel()
	if err := c.Start(ctx, pool); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), valTimeout)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("Stop: %v", err)
		}
		unsubscribe()
	})
	return events
}

// An error text, panic or output that PostgreSQL cannot store fails its own attempt with a
// readable record, and never keeps the client from writing outcomes: before, one error
// with a NUL byte failed the write of every outcome batched with it, again and again.
func TestUnstorableHandlerResultsDoNotStopOutcomes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := relaytest.NewDB(t)
	c := relay.New(relay.Config{Logger: valLogger})
	err := relay.HandleWithOutput(c, valKind, func(ctx context.Context, job *relay.Job[valArgs]) (string, error) {
		switch job.Args.S {
		case "nul error":
			return "", errors.New("bad\x00byte")
		case "utf8 error":
			return "", errors.New("bad\xffbyte")
		case "nul panic":
			panic("bad\x00panic")
		case "nul output":
			return "out\x00put", nil
		}
		return "fine", nil
	}, relay.MaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	events := valStart(t, c, db.Pool)
	want := map[string]string{ // args → the error text recorded
		"nul error":  `bad\x00byte`,
		"utf8 error": `bad\xffbyte`,
		"nul panic":  `panic: bad\x00panic`,
		"nul output": "relay: cannot encode the value as JSON that PostgreSQL can store: the output of job",
		"fine":       "",
	}
	for _, args := range []string{"nul error", "utf8 error", "nul panic", "nul output", "fine"} {
		id, err := relay.Enqueue(ctx, db, valKind, valArgs{args})
		if err != nil {
			t.Fatal(err)
		}
		e := relaytest.Receive(t, events, valTimeout, "the outcome of the job "+args)
		rec, err := relay.GetJob(ctx, db, id)
		if err != nil {
			t.Fatal(err)
		}
		if args == "fine" {
			if e.State != relay.StateSucceeded || rec.State != relay.StateSucceeded {
				t.Errorf("the job after them: %s, stored %s; want succeeded", e.State, rec.State)
			}
			continue
		}
		if e.State != relay.StateFailed || rec.State != relay.StateFailed || len(rec.Attempts) != 1 || !strings.HasPrefix(rec.Attempts[0].Error, want[args]) {
			t.Errorf("job %q: %s, stored %s with %+v; want failed with error %q", args, e.State, rec.State, rec.Attempts, want[args])
		}
	}
}

// Counts are stored as given, up to the largest PostgreSQL's integer holds, never cut.
func TestCountsAreStoredWhole(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := relaytest.NewDB(t)
	id, err := relay.Enqueue(ctx, db, valKind, valArgs{}, relay.MaxAttempts(math.MaxInt32))
	if err != nil {
		t.Fatal(err)
	}
	if rec, err := relay.GetJob(ctx, db, id); err != nil || rec.MaxAttempts != math.MaxInt32 {
		t.Errorf("MaxAttempts(MaxInt32) stored as %v (%v)", rec, err)
	}
	if err := relay.SetQueue(ctx, db, "q", relay.QueueSettings{GlobalLimit: math.MaxInt32}); err != nil {
		t.Fatal(err)
	}
	if info, err := relay.GetQueue(ctx, db, "q"); err != nil || info.GlobalLimit != math.MaxInt32 {
		t.Errorf("GlobalLimit MaxInt32 stored as %+v (%v)", info, err)
	}
}

// RunAt takes every time PostgreSQL holds, in every query exec mode; one before its first
// is the first (a past time means now), one after its last is refused.
func TestRunAtRange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	base := relaytest.NewDB(t)
	for _, mode := range []pgx.QueryExecMode{pgx.QueryExecModeCacheStatement, pgx.QueryExecModeSimpleProtocol} {
		cfg := base.Config().Copy()
		cfg.ConnConfig.DefaultQueryExecMode = mode
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer pool.Close()
		for _, c := range []struct{ runAt, stored time.Time }{
			{valPGMax, valPGMax},
			{valPGMax.Add(999 * time.Nanosecond), valPGMax},
			{valPGMin, valPGMin},
			{valPGMin.Add(-time.Nanosecond), valPGMin},
			{time.Date(-300000, 1, 1, 0, 0, 0, 0, time.UTC), valPGMin},
		} {
			for _, enqueue := range []func() (int64, error){
				func() (int64, error) { return relay.Enqueue(ctx, pool, valKind, valArgs{}, relay.RunAt(c.runAt)) },
				func() (int64, error) {
					ids, err := relay.EnqueueMany(ctx, pool, []relay.JobSpec{valKind.Job(valArgs{}, relay.RunAt(c.runAt))})
					if err != nil {
						return 0, err
					}
					return ids[0], nil
				},
			} {
				id, err := enqueue()
				if err != nil {
					t.Errorf("%v: RunAt(%v): %v", mode, c.runAt, err)
					continue
				}
				rec, err := relay.GetJob(ctx, pool, id)
				if err != nil || !rec.ScheduledAt.Equal(c.stored) {
					t.Errorf("%v: RunAt(%v) stored as %v (%v); want %v", mode, c.runAt, rec.ScheduledAt, err, c.stored)
				}
			}
		}
	}
}

// Args, payloads, outputs and checkpoints are bounded: by default at DefaultMaxSize, per
// call with MaxArgsSize, per client with Config.MaxOutputSize and MaxCheckpointSize; the
// error names the limit and how to change it.
func TestSizeLimits(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := relaytest.NewDB(t)
	atLimit := strings.Repeat("x", relay.DefaultMaxSize-len(`{"S":""}`))
	if _, err := relay.Enqueue(ctx, db, valKind, valArgs{atLimit}); err != nil {
		t.Errorf("args of exactly DefaultMaxSize bytes: %v", err)
	}
	_, err := relay.Enqueue(ctx, db, valKind, valArgs{atLimit + "x"})
	if !errors.Is(err, relay.ErrTooLarge) || !strings.Contains(err.Error(), "relay.MaxArgsSize") || !strings.Contains(err.Error(), fmt.Sprint(relay.DefaultMaxSize+1)) {
		t.Errorf("args one byte over: %v; want ErrTooLarge naming the size and relay.MaxArgsSize", err)
	}
	if _, err := relay.Enqueue(ctx, db, valKind, valArgs{atLimit + "x"}, relay.MaxArgsSize(relay.DefaultMaxSize+1)); err != nil {
		t.Errorf("args one byte over, with MaxArgsSize raised: %v", err)
	}
	if _, err := relay.Enqueue(ctx, db, valBytes, make([]byte, relay.DefaultMaxSize+1)); !errors.Is(err, relay.ErrTooLarge) {
		t.Errorf("a payload one byte over: %v; want ErrTooLarge", err)
	}
	// A job's own option wins over the batch's.
	_, err = relay.EnqueueMany(ctx, db, []relay.JobSpec{
		valKind.Job(valArgs{"small"}),
		valKind.Job(valArgs{strings.Repeat("y", 100)}, relay.MaxArgsSize(200)),
	}, relay.MaxArgsSize(50))
	if err != nil {
		t.Errorf("a batch limit of 50 with one job's own of 200: %v", err)
	}
	if _, err := relay.EnqueueMany(ctx, db, []relay.JobSpec{valKind.Job(valArgs{strings.Repeat("y", 100)})}, relay.MaxArgsSize(50)); !errors.Is(err, relay.ErrTooLarge) {
		t.Errorf("a batch limit of 50: %v; want ErrTooLarge", err)
	}

	// A client's handlers are held to its limits; the errors fail the attempt.
	c := relay.New(relay.Config{Logger: valLogger, MaxOutputSize: 10, MaxCheckpointSize: 20,
		Queues: map[string]relay.QueueConfig{"sized": {Workers: 1}}})
	err = relay.Handle(c, valKind, func(ctx context.Context, job *relay.Job[valArgs]) error {
		if err := relay.Checkpoint(ctx, db, job, job.Args.S); err != nil {
			return err
		}
		return job.SetOutput(job.Args.S)
	}, relay.MaxAttempts(1))
	if err != nil {
		t.Fatal(err)
	}
	events := valStart(t, c, db.Pool)
	for _, tc := range []struct{ args, error string }{
		{"12345678", ""},                                    // "12345678" in JSON: 10 bytes
		{"123456789", "output of job"},                      // 11 bytes: over MaxOutputSize
		{"1234567890123456789", "Config.MaxCheckpointSize"}, // 21 bytes: over MaxCheckpointSize
	} {
		if _, err := relay.Enqueue(ctx, db, valKind, valArgs{tc.args}, relay.Queue("sized")); err != nil {
			t.Fatal(err)
		}
		e := relaytest.Receive(t, events, valTimeout, "an outcome")
		switch {
		case tc.error == "" && e.State != relay.StateSucceeded:
			t.Errorf("%q: %s (%s); want succeeded", tc.args, e.State, e.Error)
		case tc.error != "" && (e.State != relay.StateFailed || !strings.Contains(e.Error, tc.error) || !strings.Contains(e.Error, "relay: value too large")):
			t.Errorf("%q: %s (%s); want failed, too large, naming %q", tc.args, e.State, e.Error, tc.error)
		}
	}
}

// A listing leaves the jobs' values out unless asked, and says how large they are.
func TestListJobsWithArgs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := relaytest.NewDB(t)
	big := strings.Repeat("args ", 100_000) // stored out of line, in TOAST
	jsonID, err := relay.Enqueue(ctx, db, valKind, valArgs{big})
	if err != nil {
		t.Fatal(err)
	}
	bytesID, err := relay.Enqueue(ctx, db, valBytes, []byte("raw payload"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `UPDATE relay.jobs SET output = '"the output"', checkpoint = '{"step": 3}' WHERE id = $1`, jsonID); err != nil {
		t.Fatal(err)
	}
	for _, f := range []relay.ListFilter{{}, {States: []relay.JobState{relay.StatePending}}, {Queue: relay.DefaultQueue}} {
		brief, err := relay.ListJobs(ctx, db, f)
		if err != nil {
			t.Fatal(err)
		}
		f.WithArgs = true
		full, err := relay.ListJobs(ctx, db, f)
		if err != nil {
			t.Fatal(err)
		}
		if len(brief.Jobs) != 2 || len(full.Jobs) != 2 {
			t.Fatalf("%+v: listed %d and %d jobs; want 2", f, len(brief.Jobs), len(full.Jobs))
		}
		for i, b := range brief.Jobs {
			got, err := relay.GetJob(ctx, db, b.ID)
			if err != nil {
				t.Fatal(err)
			}
			if b.Args != nil || b.Checkpoint != nil || b.Output != nil || b.Payload != nil {
				t.Errorf("%+v: job %d listed with its values: args %d bytes, checkpoint %s, output %s, payload %q", f, b.ID, len(b.Args), b.Checkpoint, b.Output, b.Payload)
			}
			if b.Sizes != got.Sizes || full.Jobs[i].Sizes != got.Sizes {
				t.Errorf("%+v: job %d listed with sizes %+v and %+v; GetJob says %+v", f, b.ID, b.Sizes, full.Jobs[i].Sizes, got.Sizes)
			}
			if string(full.Jobs[i].Args) != string(got.Args) || string(full.Jobs[i].Output) != string(got.Output) ||
				string(full.Jobs[i].Checkpoint) != string(got.Checkpoint) || string(full.Jobs[i].Payload) != string(got.Payload) {
				t.Errorf("%+v: job %d listed WithArgs is not as GetJob reads it", f, b.ID)
			}
			switch s := got.Sizes; b.ID {
			case jsonID:
				if s.Args == 0 || s.Args >= len(big) || s.Output == 0 || s.Checkpoint == 0 || s.Payload != 0 {
					t.Errorf("sizes of the JSON job: %+v; want args (compressed, under %d), output and checkpoint", s, len(big))
				}
			case bytesID:
				if s.Payload < len("raw payload") || s.Output != 0 || s.Checkpoint != 0 {
					t.Errorf("sizes of the []byte job: %+v; want its payload only", s)
				}
			}
		}
	}
}

// The decisions a handler returns are told apart with errors.Is, and their delay read with
// RetryDelay, also through relaytest.Work and wrapping.
func TestDecisionsMatchTheirSentinels(t *testing.T) {
	t.Parallel()
	cause := errors.New("upstream said 503")
	for _, c := range []struct {
		name  string
		err   error
		is    error
		delay time.Duration
		has   bool
	}{
		{"Discard", relay.Discard(cause), relay.ErrDiscarded, 0, false},
		{"Snooze", relay.Snooze(time.Minute), relay.ErrSnoozed, time.Minute, true},
		{"RetryAfter", relay.RetryAfter(time.Hour, cause), relay.ErrRetryAfter, time.Hour, true},
		{"wrapped Snooze", fmt.Errorf("later: %w", relay.Snooze(time.Second)), relay.ErrSnoozed, time.Second, true},
	} {
		handler := func(context.Context, *relay.Job[valArgs]) error { return c.err }
		err := relaytest.Work(context.Background(), t, valKind, handler, valArgs{})
		for _, s := range []error{relay.ErrDiscarded, relay.ErrSnoozed, relay.ErrRetryAfter} {
			if errors.Is(err, s) != (s == c.is) {
				t.Errorf("%s: errors.Is(err, %v) = %v", c.name, s, !(s == c.is))
			}
		}
		if c.name != "Snooze" && c.name != "wrapped Snooze" && !errors.Is(err, cause) {
			t.Errorf("%s: the cause is lost: %v", c.name, err)
		}
		if d, ok := relay.RetryDelay(err); d != c.delay || ok != c.has {
			t.Errorf("%s: RetryDelay = %v, %v; want %v, %v", c.name, d, ok, c.delay, c.has)
		}
	}
	if d, ok := relay.RetryDelay(cause); ok || d != 0 {
		t.Errorf("RetryDelay of a plain error = %v, %v", d, ok)
	}
	if errors.Is(cause, relay.ErrDiscarded) || errors.Is(nil, relay.ErrSnoozed) {
		t.Error("a plain error matches a decision")
	}
}
