package relay_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/relayq/relay"
	"github.com/relayq/relay/internal/pgtest"
	"github.com/relayq/relay/internal/store"
	"github.com/relayq/relay/relaytest"
)

// The SQL functions enqueue() and enqueue_many() of migration 010, for producers in other
// languages: they must behave as relay.Enqueue does.

type mailArgs struct {
	To string `json:"to"`
	N  int    `json:"n"`
}

// TestSQLEnqueueFromPSQL enqueues from psql, in transactions: the committed job runs,
// woken at its commit (the client's poll is an hour away), and the rolled-back one never
// exists.
func TestSQLEnqueueFromPSQL(t *testing.T) {
	t.Parallel()
	b := setup(t)
	psql := psqlPath(t)
	ran := mailWorker(t, b, "sql-email", "mail")

	script := `
BEGIN;
SELECT id FROM relay.enqueue('sql-email', '{"to": "nobody", "n": -1}', queue => 'mail');
ROLLBACK;
BEGIN;
SELECT id FROM relay.enqueue('sql-email', '{"to": "ada@example.com", "n": 7}', queue => 'mail',
    priority => 3, max_attempts => 4, timeout => '1.5 s', metadata => '{"tenant": "acme"}');
COMMIT;
`
	cmd := exec.Command(psql, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", b.URL)
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psql: %v\n%s", err, out)
	}
	lines := strings.Fields(string(out))
	if len(lines) != 2 {
		t.Fatalf("psql printed %q; want the ids of both jobs", out)
	}
	committed, _ := strconv.ParseInt(lines[1], 10, 64)

	job := recv(t, ran, "the committed job")
	if job.ID != committed || job.Args != (mailArgs{To: "ada@example.com", N: 7}) || job.Queue != "mail" ||
		job.MaxAttempts != 4 || job.Metadata["tenant"] != "acme" {
		t.Errorf("ran job %d %+v in %q, %d attempts, metadata %v; want job %d as enqueued", job.ID, job.Args, job.Queue,
			job.MaxAttempts, job.Metadata, committed)
	}
	rec, err := relay.GetJob(context.Background(), b, committed)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Priority != 3 || rec.Timeout == nil || *rec.Timeout != 1500*time.Millisecond {
		t.Errorf("stored priority %d, timeout %v; want 3 and 1.5s", rec.Priority, rec.Timeout)
	}
	if n := countJobs(t, b); n != 1 {
		t.Errorf("%d jobs in the table; want only the committed one", n)
	}
}

// TestSQLEnqueueStoresWhatGoStores enqueues the same jobs with relay.Enqueue and with the
// SQL functions and compares what each stored and returned.
func TestSQLEnqueueStoresWhatGoStores(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	kind := relay.NewKind[mailArgs]("same")
	if err := relay.SetQueue(ctx, b, "seq", relay.QueueSettings{Ordered: true}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2031, 2, 3, 4, 5, 6, 0, time.UTC)
	args := mailArgs{To: "x", N: 1}
	cases := []struct {
		name string
		opts []relay.EnqueueOption
		sql  string // the arguments of enqueue() after kind and args
	}{
		{"defaults", nil, ""},
		{"options", []relay.EnqueueOption{relay.Queue("q"), relay.Priority(-7), relay.MaxAttempts(3), relay.Timeout(1500 * time.Microsecond),
			relay.RunAt(at), relay.Metadata(map[string]string{"a": "b"})},
			`, queue => 'q', priority => -7, max_attempts => 3, timeout => '1.5 ms', run_at => '2031-02-03T04:05:06Z', metadata => '{"a": "b"}'`},
		{"past run_at", []relay.EnqueueOption{relay.RunAt(time.Date(-5000, 1, 1, 0, 0, 0, 0, time.UTC))}, `, run_at => '-infinity'`},
		{"no timeout", []relay.EnqueueOption{relay.Timeout(0)}, `, timeout => '0'`},
		{"empty metadata", []relay.EnqueueOption{relay.Metadata(map[string]string{})}, `, metadata => '{}'`},
		{"ordered, no key", []relay.EnqueueOption{relay.Queue("seq")}, `, queue => 'seq'`},
		{"ordered, a key", []relay.EnqueueOption{relay.Queue("seq"), relay.OrderKey("k")}, `, queue => 'seq', order_key => 'k'`},
		{"unique", []relay.EnqueueOption{relay.Unique("u-"+t.Name(), relay.StateSucceeded)}, `, unique_key => 'u-` + t.Name() + `', unique_states => '{succeeded}'`},
	}
	encoded, _ := json.Marshal(args)
	for _, tc := range cases {
		goJob, err := relay.EnqueueJob(ctx, b, kind, args, tc.opts...)
		if err != nil {
			t.Fatalf("%s: Go: %v", tc.name, err)
		}
		var sqlJob relay.Enqueued
		if err := b.QueryRow(ctx, "SELECT id, duplicate FROM relay.enqueue('same', $1"+tc.sql+")", encoded).Scan(&sqlJob.ID, &sqlJob.Duplicate); err != nil {
			t.Fatalf("%s: SQL: %v", tc.name, err)
		}
		if tc.name == "unique" {
			if sqlJob != (relay.Enqueued{ID: goJob.ID, Duplicate: true}) {
				t.Errorf("unique: SQL returned %+v after Go inserted %+v; want Go's job, a duplicate", sqlJob, goJob)
			}
			continue
		}
		goRow, sqlRow := storedRow(t, b, goJob.ID), storedRow(t, b, sqlJob.ID)
		if goRow != sqlRow {
			t.Errorf("%s: Go stored\n  %s\nSQL stored\n  %s", tc.name, goRow, sqlRow)
		}
	}

	// Batches: arrays, and a JSON array of specs, with a unique key shared in the batch.
	goJobs, err := relay.EnqueueJobs(ctx, b, []relay.JobSpec{
		kind.Job(args, relay.Queue("q")), kind.Job(args, relay.Unique("batch")), kind.Job(args, relay.Unique("batch")),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`SELECT id, duplicate FROM relay.enqueue_many(ARRAY['same', 'same', 'same'], ARRAY[$1, $1, $1]::jsonb[],
			queues => ARRAY['q', NULL, NULL], unique_keys => ARRAY[NULL, 'batch', 'batch'])`,
		`SELECT id, duplicate FROM relay.enqueue_many(jsonb_build_array(
			jsonb_build_object('kind', 'same', 'args', $1::jsonb, 'queue', 'q'),
			jsonb_build_object('kind', 'same', 'args', $1::jsonb, 'unique_key', 'batch'),
			jsonb_build_object('kind', 'same', 'args', $1::jsonb, 'unique_key', 'batch')))`,
	} {
		rows, _ := b.Query(ctx, q, string(encoded))
		got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (relay.Enqueued, error) {
			var e relay.Enqueued
			return e, r.Scan(&e.ID, &e.Duplicate)
		})
		if err != nil {
			t.Fatal(err)
		}
		want := []relay.Enqueued{{}, {ID: goJobs[1].ID, Duplicate: true}, {ID: goJobs[1].ID, Duplicate: true}}
		if len(got) == 3 {
			want[0].ID = got[0].ID
		}
		if !slices.Equal(got, want) || storedRow(t, b, got[0].ID) != storedRow(t, b, goJobs[0].ID) {
			t.Errorf("%s\nreturned %+v; want %+v, and a first job stored as Go's", q, got, want)
		}
	}
}

// mailWorker starts a client that runs jobs of kind in queue, sending each to the channel
// it returns.
func mailWorker(t *testing.T, b *bundle, kind, queue string) <-chan *relay.Job[mailArgs] {
	t.Helper()
	ran := make(chan *relay.Job[mailArgs], 8)
	c := b.client(relay.Config{Queues: queues(2, queue)})
	handle(t, c, relay.NewKind[mailArgs](kind), func(_ context.Context, job *relay.Job[mailArgs]) error { ran <- job; return nil })
	b.start(c)
	return ran
}

// storedRow is what a job was stored with, but for its id and times of insertion.
func storedRow(t *testing.T, b *bundle, id int64) string {
	t.Helper()
	var row string
	err := b.QueryRow(context.Background(), `
		SELECT concat_ws(' | ', kind, queue, args, state, max_attempts, timeout_ms, priority, order_key, unique_key, metadata,
			payload, CASE WHEN run_at > now() + interval '1 day' OR run_at < '1900-01-01' THEN run_at::text END)
		FROM relay.jobs WHERE id = $1`, id).Scan(&row)
	if err != nil {
		t.Fatalf("job %d: %v", id, err)
	}
	return row
}

func countJobs(t *testing.T, b *bundle) int {
	t.Helper()
	var n int
	if err := b.QueryRow(context.Background(), "SELECT count(*) FROM relay.jobs").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSQLEnqueueRefusesBadInput: every invalid job is refused with an error that names
// the problem and carries a SQLSTATE, and nothing is inserted — not even the valid jobs
// of a batch with an invalid one.
func TestSQLEnqueueRefusesBadInput(t *testing.T) {
	t.Parallel()
	b := setup(t)
	long := strings.Repeat("x", 257)
	cases := []struct {
		call, code, msg string
	}{
		{`enqueue(NULL)`, "22004", "kind is NULL"},
		{`enqueue('')`, "22023", "kind is empty"},
		{`enqueue(repeat('k', 129))`, "22023", "is 129 bytes long, the limit is 128"},
		{`enqueue('k', queue => '')`, "22023", "queue is empty"},
		{`enqueue('k', queue => repeat('q', 200))`, "22023", "is 200 bytes long, the limit is 128"},
		{`enqueue('k', NULL)`, "22004", `the args of kind "k" are NULL`},
		{`enqueue('k', '{"a": "\u0000"}')`, "22P05", "unsupported Unicode escape sequence"},
		{`enqueue('k', priority => 32768)`, "22023", "priority must be between -32767 and 32767, got 32768"},
		{`enqueue('k', priority => -40000)`, "22023", "priority must be between -32767 and 32767, got -40000"},
		{`enqueue('k', max_attempts => 0)`, "22023", "max_attempts must be between 1 and 2147483647, got 0"},
		{`enqueue('k', max_attempts => 2147483648)`, "22023", "max_attempts must be between 1 and 2147483647, got 2147483648"},
		{`enqueue('k', timeout => '-1 s')`, "22023", "timeout must be between 0 (none) and 576:00:00"},
		{`enqueue('k', timeout => '577 hours')`, "22023", "timeout must be between 0 (none) and 576:00:00"},
		{`enqueue('k', run_at => 'infinity')`, "22023", "run_at infinity is outside the times relay can store"},
		{`enqueue('k', run_at => now(), run_in => '1 s')`, "22023", "both run_at and run_in are given"},
		{`enqueue('k', order_key => '` + long + `')`, "22023", "the order_key is 257 bytes long, the limit is 256"},
		{`enqueue('k', order_key => 'a')`, "RLY01", `queue "default" is not ordered`},
		{`enqueue('k', queue => 'nowhere', order_key => 'a')`, "RLY01", `queue "nowhere" is not ordered`},
		{`enqueue('k', unique_key => '')`, "22023", "unique_key is empty"},
		{`enqueue('k', unique_key => '` + long + `')`, "22023", "the unique_key is 257 bytes long, the limit is 256"},
		{`enqueue('k', unique_key => 'u', unique_states => '{succeeded,done}')`, "22023", `unique_states: "done" is not a job state`},
		{`enqueue('k', unique_states => '{failed}')`, "22023", "unique_states is given without a unique_key"},
		{`enqueue('k', '{"a": "12345678901"}', max_args_size => 10)`, "54000", `args of kind "k": 20 bytes, over the limit of 10 set by max_args_size`},
		{`enqueue('k', '[1]', max_args_size => 0)`, "22023", "max_args_size must be at least 1, got 0"},
		{`enqueue('k', metadata => '["a"]')`, "22023", `the metadata of kind "k" must be a JSON object of strings`},
		{`enqueue('k', metadata => '{"n": 1}')`, "22023", `the metadata of kind "k" must be a JSON object of strings`},
		{`enqueue('k', metadata => '{"a": "bcdefgh"}', max_metadata_size => 10)`, "54000", `metadata of kind "k": 16 bytes, over the limit of 10 set by max_metadata_size`},
		{`enqueue('k', metadata => '{"a": "b"}', max_metadata_size => -1)`, "22023", "max_metadata_size must be at least 1, got -1"},
		// batches: the valid first job is not inserted either
		{`enqueue_many(ARRAY['ok', 'k'], ARRAY['{}', '{}']::jsonb[], priorities => ARRAY[0, 99999])`, "22023",
			`job 2 of 2 (kind "k"): relay: invalid job: priority must be between -32767 and 32767, got 99999`},
		{`enqueue_many(ARRAY['ok', 'k'], ARRAY['{}']::jsonb[])`, "22023", "args has 1 elements and kinds 2"},
		{`enqueue_many(ARRAY['ok'], NULL)`, "22004", "args is NULL"},
		{`enqueue_many(ARRAY['ok', 'k'], ARRAY['{}', '{}']::jsonb[], unique_keys => ARRAY[NULL, 'u'], unique_states => '{gone}')`, "22023",
			`job 2 of 2 (kind "k"): relay: invalid job: unique_states: "gone" is not a job state`},
		{`enqueue_many('{"kind": "k"}')`, "22023", "specs must be a JSON array of objects, one per job, not object"},
		{`enqueue_many('[{"kind": "ok"}, 3]')`, "22023", "job 2 of 2: is a JSON number, not an object"},
		{`enqueue_many('[{"kind": "ok"}, {"kind": "k", "prio": 1}]')`, "22023", `job 2 of 2: "prio" is not an argument of enqueue`},
		{`enqueue_many('[{"kind": "ok"}, {"kind": 5}]')`, "22023", `job 2 of 2: "kind" must be a string, got 5`},
		{`enqueue_many('[{"kind": "ok"}, {"kind": "k", "priority": 1.5}]')`, "22023", `job 2 of 2: "priority" must be a whole number, got 1.5`},
		{`enqueue_many('[{"kind": "ok"}, {"kind": "k", "unique_key": "u", "unique_states": "failed"}]')`, "22023",
			`job 2 of 2: "unique_states" must be an array of strings, got "failed"`},
		{`enqueue_many('[{"kind": "ok"}, {"kind": "k", "max_attempts": 0}]')`, "22023",
			`job 2 of 2 (kind "k"): relay: invalid job: max_attempts must be between 1 and 2147483647, got 0`},
		{`enqueue_many('[{"kind": "ok"}, {"kind": "k", "order_key": "a"}]')`, "RLY01", `queue "default" is not ordered`},
	}
	ctx := context.Background()
	for _, tc := range cases {
		_, err := b.Exec(ctx, "SELECT * FROM relay."+tc.call)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) {
			t.Errorf("%s: got %v; want a PostgreSQL error", tc.call, err)
			continue
		}
		if pgErr.Code != tc.code || !strings.Contains(pgErr.Message, tc.msg) {
			t.Errorf("%s:\n got %s %q\nwant %s …%s…", tc.call, pgErr.Code, pgErr.Message, tc.code, tc.msg)
		}
	}
	if n := countJobs(t, b); n != 0 {
		t.Errorf("%d jobs inserted by refused enqueues; want none", n)
	}
	// A hint says what to do, where the message does not already.
	_, err := b.Exec(ctx, "SELECT * FROM relay.enqueue('k', queue => 'nowhere', order_key => 'a')")
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || !strings.Contains(pgErr.Hint, "relay queue set nowhere --ordered") {
		t.Errorf("an order key for a queue that is not ordered: got %v (hint %q); want a hint naming `relay queue set`", err, pgErr.Hint)
	}
}

// TestSQLEnqueueWakesOnlyWhatItCan: an enqueue from SQL notifies as Go's does, only when a
// dispatcher of the queue waits for a wakeup.
func TestSQLEnqueueWakesOnlyWhatItCan(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	next := listenOn(t, b, "relay:relay")
	// No client: nothing to wake.
	if _, err := b.Exec(ctx, "SELECT * FROM relay.enqueue('nobody', queue => 'idle')"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Exec(ctx, `SELECT pg_notify('relay:relay', 'marker')`); err != nil {
		t.Fatal(err)
	}
	if p := next(); p != "marker" {
		t.Fatalf("got notification %q before the marker; an enqueue with nothing to wake notified", p)
	}
	// A waiting client: woken.
	ran := mailWorker(t, b, "woken", "idle")
	var id int64
	if err := b.QueryRow(ctx, "SELECT id FROM relay.enqueue_many('[{\"kind\": \"woken\", \"queue\": \"idle\"}]')").Scan(&id); err != nil {
		t.Fatal(err)
	}
	if p := next(); !strings.HasPrefix(p, "w:") || !strings.HasSuffix(p, ":idle") {
		t.Fatalf("got notification %q; want the wakeup of queue idle", p)
	}
	if got := recv(t, ran, "the job").ID; got != id {
		t.Errorf("ran job %d; want %d", got, id)
	}
}

// TestSQLEnqueueInAnotherSchema: the functions of a schema of another name (one that needs
// quoting) insert into it and wake its clients on its own channel, as Go's enqueues do.
func TestSQLEnqueueInAnotherSchema(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	const schema = "Other Schema"
	if err := relay.Migrate(ctx, b, relay.Schema(schema)); err != nil {
		t.Fatal(err)
	}
	listen := listenOn(t, b, "relay:"+schema)
	other := newBundle(t, &relaytest.DB{Pool: b.Pool, Schema: schema, URL: b.URL})
	ran := mailWorker(t, other, "elsewhere", "q")
	var fromSQL int64
	if err := b.QueryRow(ctx, `SELECT id FROM "Other Schema".enqueue('elsewhere', '{"n": 1}', queue => 'q')`).Scan(&fromSQL); err != nil {
		t.Fatal(err)
	}
	if p := listen(); !strings.HasPrefix(p, "w:") || !strings.HasSuffix(p, ":q") {
		t.Fatalf("got notification %q; want the wakeup of queue q on the schema's channel", p)
	}
	fromGo := other.enqueueMany([]relay.JobSpec{relay.NewKind[mailArgs]("elsewhere").Job(mailArgs{N: 2}, relay.Queue("q"))})
	got := map[int64]bool{recv(t, ran, "a job").ID: true, recv(t, ran, "a job").ID: true}
	if !got[fromSQL] || !got[fromGo[0]] {
		t.Errorf("ran jobs %v; want %d (from SQL) and %d (from Go's EnqueueMany)", got, fromSQL, fromGo[0])
	}
	if n := countJobs(t, b); n != 0 {
		t.Errorf("%d jobs in schema relay; want them all in %q", n, schema)
	}
}

// listenOn LISTENs on channel and returns a function that waits for its next payload,
// passing over the probes that clients' listeners send themselves when they connect.
func listenOn(t *testing.T, b *bundle, channel string) func() string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, b.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{channel}.Sanitize()); err != nil {
		t.Fatal(err)
	}
	return func() string {
		t.Helper()
		waitCtx, cancel := context.WithTimeout(ctx, waitTimeout)
		defer cancel()
		for {
			n, err := conn.WaitForNotification(waitCtx)
			if err != nil {
				t.Fatalf("no notification on %q: %v", channel, err)
			}
			if !strings.HasPrefix(n.Payload, store.ProbePrefix) {
				return n.Payload
			}
		}
	}
}

// TestSQLEnqueueFromPython runs testdata/sqlenqueue/enqueue.py, which enqueues with
// psycopg (Debian's python3-psycopg; .ci/run installs it) in transactions of its own, and
// checks that a Go client runs exactly what it committed.
func TestSQLEnqueueFromPython(t *testing.T) {
	t.Parallel()
	python := "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import psycopg").CombinedOutput(); err != nil {
		t.Skipf("no psycopg for %s (apt-get install python3-psycopg): %v %s", python, err, out)
	}
	b := setup(t)
	ran := mailWorker(t, b, "py-email", "py")

	out, err := exec.Command(python, filepath.Join("testdata", "sqlenqueue", "enqueue.py"), b.URL).CombinedOutput()
	if err != nil {
		t.Fatalf("enqueue.py: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{"enqueued", "duplicate", "rolled back", "batch", "refused"}
	if len(lines) != len(want) {
		t.Fatalf("enqueue.py printed\n%s\nwant a line for each of %v", out, want)
	}
	field := func(line, prefix string) []string {
		rest, ok := strings.CutPrefix(line, prefix+" ")
		if !ok && line != prefix {
			t.Fatalf("enqueue.py printed %q; want a line starting %q", line, prefix)
		}
		return strings.Fields(rest)
	}
	first := field(lines[0], "enqueued")
	dup := field(lines[1], "duplicate")
	if first[1] != "False" || dup[0] != first[0] || dup[1] != "True" {
		t.Errorf("enqueued %v, then the same unique key %v; want the first job's id, a duplicate", first, dup)
	}
	field(lines[2], "rolled back")
	batch := field(lines[3], "batch")
	refused := field(lines[4], "refused")
	if len(refused) < 2 || refused[0] != "22023" || !strings.Contains(lines[4], "priority must be between -32767 and 32767, got 40000") {
		t.Errorf("a bad priority from Python: %q; want SQLSTATE 22023 and the reason", lines[4])
	}

	wantRun := map[string]mailArgs{first[0]: {To: "ada@example.com", N: 1}, batch[0]: {To: "bob@example.com", N: 2}, batch[1]: {To: "bob@example.com", N: 3}}
	for range len(wantRun) {
		job := recv(t, ran, "a job enqueued from Python")
		id := strconv.FormatInt(job.ID, 10)
		if job.Args != wantRun[id] {
			t.Errorf("ran job %s with %+v; want %+v", id, job.Args, wantRun[id])
		}
		if id == first[0] && job.Metadata["tenant"] != "acme" {
			t.Errorf("job %s has metadata %v; want the tenant Python gave", id, job.Metadata)
		}
		delete(wantRun, id)
	}
	if n := countJobs(t, b); n != 3 {
		t.Errorf("%d jobs in the table; want the 3 Python committed", n)
	}
}

// psqlPath is the psql of the PostgreSQL installation the tests run.
func psqlPath(t *testing.T) string {
	t.Helper()
	dir, err := pgtest.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "psql")
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("psql: %v", err)
	}
	return p
}
