package lease_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay"
	"github.com/relayq/relay/dispatcher"
	"github.com/relayq/relay/internal/store"
	"github.com/relayq/relay/lease"
	"github.com/relayq/relay/relaytest"
)

func TestMain(m *testing.M) { relaytest.Main(m) }

const waitTimeout = 15 * time.Second

// rig is a schema of the test's own with its Store.
type rig struct {
	t     *testing.T
	db    *relaytest.DB
	store *store.Store
}

func newRig(t *testing.T) *rig {
	t.Helper()
	db := relaytest.NewDB(t)
	s, err := store.For(db.Schema)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{t: t, db: db, store: s}
}

// claim enqueues n jobs of kind "k" with opts and claims them all for client, leased for
// ttl, as a client's dispatcher would.
func (r *rig) claim(client string, n int, ttl time.Duration, opts ...relay.EnqueueOption) []*dispatcher.Job {
	r.t.Helper()
	ctx := context.Background()
	specs := make([]relay.JobSpec, n)
	for i := range specs {
		specs[i] = relay.NewKind[int]("k").Job(i)
	}
	if _, err := relay.EnqueueMany(ctx, r.db, specs, append(opts, relay.Schema(r.db.Schema))...); err != nil {
		r.t.Fatal(err)
	}
	c, err := r.store.Client(r.db, store.ClientInfo{ID: client, Lease: ttl, Kinds: []string{"k"}, Attempts: []int32{5}}).
		Claim(ctx, dispatcher.ClaimRequest{Queue: relay.DefaultQueue, Limit: n})
	if err != nil {
		r.t.Fatal(err)
	}
	if len(c.Jobs) != n {
		r.t.Fatalf("claimed %d jobs, want %d", len(c.Jobs), n)
	}
	return c.Jobs
}

// leaseOf returns the job's state, its lease expiry and the database's clock.
func (r *rig) leaseOf(id int64) (state string, expires, now time.Time) {
	r.t.Helper()
	var exp *time.Time
	err := r.db.QueryRow(context.Background(), `SELECT state, lease_expires_at, clock_timestamp() FROM `+
		r.store.Table("jobs")+` WHERE id = $1`, id).Scan(&state, &exp, &now)
	if err != nil {
		r.t.Fatal(err)
	}
	if exp != nil {
		expires = *exp
	}
	return state, expires, now
}

func (r *rig) job(id int64) *relay.JobRecord {
	r.t.Helper()
	rec, err := relay.GetJob(context.Background(), r.db, id, relay.Schema(r.db.Schema))
	if err != nil {
		r.t.Fatal(err)
	}
	return rec
}

// runKeeper runs k until the test ends.
func runKeeper(t *testing.T, k *lease.Keeper) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- k.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Keeper.Run returned %v, want context.Canceled", err)
		}
	})
}

// held is a handler's context as the Keeper holds it.
type held struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

func hold(k *lease.Keeper, j *dispatcher.Job) held {
	ctx, cancel := context.WithCancelCause(context.Background())
	k.Hold(j.ID, j.Attempt, cancel)
	return held{ctx, cancel}
}

// ended waits for h's context to end and returns when it ended and its cause.
func (h held) ended(t *testing.T, within time.Duration, what string) (time.Time, error) {
	t.Helper()
	select {
	case <-h.ctx.Done():
		return time.Now(), context.Cause(h.ctx)
	case <-time.After(within):
		t.Fatalf("%s: the handler's context was not cancelled within %v", what, within)
		panic("unreachable")
	}
}

func (h held) alive() bool { return h.ctx.Err() == nil }

// Each tick extends the leases of the held attempts and records the client's heartbeat.
func TestKeeperRenewsHeldLeasesAndHeartbeats(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const ttl = time.Second
	jobs := r.claim("keeper-a", 2, ttl)
	_, claimedUntil, _ := r.leaseOf(jobs[0].ID)
	_, otherUntil, _ := r.leaseOf(jobs[1].ID)

	k := lease.NewKeeper(lease.KeeperConfig{
		Renewer: r.store.Client(r.db, store.ClientInfo{ID: "keeper-a", Queues: []string{"default"}, Kinds: []string{"k"}}),
		TTL:     ttl, Interval: 50 * time.Millisecond,
	})
	h := hold(k, jobs[0]) // jobs[1] is not held: its lease must stay as claimed
	runKeeper(t, k)

	// Well past what the claim granted: only renewals can have moved it there.
	relaytest.WaitFor(t, waitTimeout, "the held lease to be extended", func() bool {
		_, until, _ := r.leaseOf(jobs[0].ID)
		return until.After(claimedUntil.Add(300 * time.Millisecond))
	})
	var first, later time.Time
	heartbeat := func() time.Time {
		var at time.Time
		if err := r.db.QueryRow(context.Background(), `SELECT heartbeat_at FROM `+r.store.Table("clients")+
			` WHERE id = 'keeper-a'`).Scan(&at); err != nil {
			t.Fatalf("the client's heartbeat row: %v", err)
		}
		return at
	}
	first = heartbeat()
	relaytest.WaitFor(t, waitTimeout, "the heartbeat to advance", func() bool {
		later = heartbeat()
		return later.After(first)
	})
	if _, until, _ := r.leaseOf(jobs[1].ID); !until.Equal(otherUntil) {
		t.Errorf("the lease of a job the keeper does not hold moved from %v to %v", otherUntil, until)
	}
	if !h.alive() {
		t.Fatalf("the handler of a renewed job was cancelled: %v", context.Cause(h.ctx))
	}
	if k.Held() != 1 {
		t.Errorf("Held() = %d, want 1", k.Held())
	}
}

// A held job that is deleted or re-claimed by someone else in the database is missing from
// the next renewal: its handler is cancelled with ErrLostLease, the others carry on. One
// cancelled in the database is reported by the renewal as cancelled, and its handler is
// cancelled with ErrCancelled, as the cancel's wakeup would (the keeper here hears none),
// but only if the cancel ended its attempt: one rescued from it, then cancelled, was lost.
func TestKeeperCancelsJobsLostInTheDatabase(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	const ttl = time.Second
	jobs := r.claim("keeper-b", 5, ttl)
	k := lease.NewKeeper(lease.KeeperConfig{
		Renewer: r.store.Client(r.db, store.ClientInfo{ID: "keeper-b", Queues: []string{"default"}, Kinds: []string{"k"}}),
		TTL:     ttl, Interval: 50 * time.Millisecond,
	})
	hs := make([]held, len(jobs))
	for i, j := range jobs {
		hs[i] = hold(k, j)
	}
	runKeeper(t, k)
	// One renewal went through with everything held.
	relaytest.WaitFor(t, waitTimeout, "a first renewal", func() bool {
		_, until, now := r.leaseOf(jobs[4].ID)
		return until.After(now.Add(ttl - 200*time.Millisecond))
	})
	for i, h := range hs {
		if !h.alive() {
			t.Fatalf("job %d was cancelled before anything happened to it: %v", i, context.Cause(h.ctx))
		}
	}

	if _, err := r.db.Exec(ctx, `DELETE FROM `+r.store.Table("jobs")+` WHERE id = $1`, jobs[0].ID); err != nil {
		t.Fatal(err)
	}
	if err := relay.Cancel(ctx, r.db, jobs[1].ID, relay.Schema(r.db.Schema)); err != nil {
		t.Fatal(err)
	}
	// Rescued and re-claimed by another client meanwhile: same state, another owner.
	if _, err := r.db.Exec(ctx, `UPDATE `+r.store.Table("jobs")+` SET attempted_by = 'someone else', attempt = attempt + 1 WHERE id = $1`, jobs[2].ID); err != nil {
		t.Fatal(err)
	}
	// Rescued (its lease taken for expired), then cancelled while pending: its attempt was
	// not cancelled, it lost its lease.
	if _, err := r.db.Exec(ctx, `UPDATE `+r.store.Table("jobs")+` SET state = 'pending', lease_expires_at = NULL,
		attempts = `+r.store.Table("append_attempt")+`(attempts, `+r.store.Table("attempt_entry")+`(attempt, attempted_at, now(), attempted_by, 'lost lease', 'lost lease', NULL, NULL))
		WHERE id = $1`, jobs[3].ID); err != nil {
		t.Fatal(err)
	}
	if err := relay.Cancel(ctx, r.db, jobs[3].ID, relay.Schema(r.db.Schema)); err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct {
		what string
		want error
	}{{"deleted", lease.ErrLostLease}, {"cancelled", lease.ErrCancelled}, {"re-claimed", lease.ErrLostLease}, {"rescued, then cancelled", lease.ErrLostLease}} {
		_, cause := hs[i].ended(t, 2*time.Second, c.what+" job")
		if !errors.Is(cause, c.want) {
			t.Errorf("the %s job's handler was cancelled with %v, want %v", c.what, cause, c.want)
		}
	}
	// The untouched job keeps its lease through further renewals.
	_, before, _ := r.leaseOf(jobs[4].ID)
	relaytest.WaitFor(t, waitTimeout, "the remaining lease to be renewed again", func() bool {
		_, until, _ := r.leaseOf(jobs[4].ID)
		return until.After(before)
	})
	if !hs[4].alive() {
		t.Errorf("the untouched job's handler was cancelled: %v", context.Cause(hs[4].ctx))
	}
	if k.Held() != 1 {
		t.Errorf("Held() = %d, want 1 (only the untouched job)", k.Held())
	}
}

// With the database unreachable, a handler is cancelled with ErrLeaseExpired once its lease
// has certainly expired: not before the TTL has passed since it was held, and not long after.
func TestKeeperCancelsWithLeaseExpiredWhenTheDatabaseIsUnreachable(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const ttl = 400 * time.Millisecond
	const interval = 50 * time.Millisecond
	jobs := r.claim("keeper-c", 1, ttl)

	// A pool on a port where nothing listens: every renewal fails at once.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg, err := pgxpool.ParseConfig(fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable&connect_timeout=2", port))
	if err != nil {
		t.Fatal(err)
	}
	dead, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dead.Close)

	k := lease.NewKeeper(lease.KeeperConfig{
		Renewer: r.store.Client(dead, store.ClientInfo{ID: "keeper-c", Queues: []string{"default"}, Kinds: []string{"k"}}),
		TTL:     ttl, Interval: interval,
	})
	heldAt := time.Now()
	h := hold(k, jobs[0])
	runKeeper(t, k)
	at, cause := h.ended(t, 5*time.Second, "unreachable database")
	took := at.Sub(heldAt)
	t.Logf("cancelled %v after Hold (TTL %v, renewal every %v)", took, ttl, interval)
	if !errors.Is(cause, lease.ErrLeaseExpired) {
		t.Errorf("cancelled with %v, want ErrLeaseExpired", cause)
	}
	if took < ttl {
		t.Errorf("cancelled %v after Hold, before the %v lease could have expired", took, ttl)
	}
	if took > ttl+time.Second {
		t.Errorf("cancelled %v after Hold; want soon after the %v lease expired", took, ttl)
	}
	if k.Held() != 0 {
		t.Errorf("Held() = %d after the lease expired, want 0", k.Held())
	}
}

// Three rescuers started together rescue each expired job exactly once, leave live leases
// alone, fail a job that is out of attempts, and a late outcome of the old attempt writes
// nothing.
func TestRescuersRescueEachExpiredJobExactlyOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	const n = 1500 // more than one rescue statement takes, so that the rescuers overlap
	expired := r.claim("dead-client", n, time.Millisecond)
	lastTry := r.claim("dead-client", 1, time.Millisecond, relay.MaxAttempts(1))[0]
	live := r.claim("live-client", 1, time.Hour)[0]
	relaytest.WaitFor(t, waitTimeout, "the short leases to expire", func() bool {
		var left int
		if err := r.db.QueryRow(ctx, `SELECT count(*) FROM `+r.store.Table("jobs")+
			` WHERE state = 'running' AND lease_expires_at >= now() AND attempted_by = 'dead-client'`).Scan(&left); err != nil {
			t.Fatal(err)
		}
		return left == 0
	})

	runCtx, stopRescuers := context.WithCancel(ctx)
	var wg sync.WaitGroup
	gate := make(chan struct{})
	for range 3 {
		pool := r.db.NewPool(t) // each its own connections, as on separate clients
		if err := pool.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		resc := lease.NewRescuer(lease.RescuerConfig{Rescue: r.store.Client(pool, store.ClientInfo{}).Rescue, MaxWait: 50 * time.Millisecond})
		wg.Go(func() {
			<-gate
			resc.Run(runCtx)
		})
	}
	t.Cleanup(func() {
		stopRescuers()
		wg.Wait()
	})
	close(gate)

	relaytest.WaitFor(t, waitTimeout, "every expired job to be rescued", func() bool {
		var running int
		if err := r.db.QueryRow(ctx, `SELECT count(*) FROM `+r.store.Table("jobs")+
			` WHERE state = 'running' AND attempted_by = 'dead-client'`).Scan(&running); err != nil {
			t.Fatal(err)
		}
		return running == 0
	})
	// Let the rescuers make further passes over what they have already rescued.
	var passes sync.WaitGroup
	for range 3 {
		passes.Go(func() {
			if _, err := r.store.Client(r.db, store.ClientInfo{}).Rescue(ctx, 1000); err != nil {
				t.Error(err)
			}
		})
	}
	passes.Wait()

	var wrong []string
	for _, j := range expired {
		rec := r.job(j.ID)
		ok := rec.State == relay.StatePending && rec.Attempt == 1 && len(rec.Attempts) == 1
		if ok {
			a := rec.Attempts[0]
			ok = a.Reason == relay.ReasonLostLease && a.Number == 1 && a.Client == "dead-client" && a.Outcome == "pending"
		}
		if !ok {
			wrong = append(wrong, fmt.Sprintf("job %d is %s after attempt %d with history %+v", j.ID, rec.State, rec.Attempt, rec.Attempts))
		}
	}
	if len(wrong) > 0 {
		t.Errorf("%d of %d expired jobs were not rescued exactly once (want pending after attempt 1, one %q entry of dead-client); e.g. %s",
			len(wrong), n, relay.ReasonLostLease, wrong[0])
	}

	rec := r.job(lastTry.ID)
	if rec.State != relay.StateFailed || rec.FinishedAt.IsZero() || len(rec.Attempts) != 1 ||
		rec.Attempts[0].Reason != relay.ReasonLostLease || rec.Attempts[0].Outcome != "failed" {
		t.Errorf("job out of attempts is %s (finished %v) with history %+v; want failed, finished, one lost-lease entry with outcome failed",
			rec.State, rec.FinishedAt, rec.Attempts)
	}

	if state, _, _ := r.leaseOf(live.ID); state != "running" || len(r.job(live.ID).Attempts) != 0 {
		t.Errorf("a job with a live lease was touched: %s, history %+v", state, r.job(live.ID).Attempts)
	}

	// The dead client's late outcome for the rescued attempt writes nothing.
	late := []store.Outcome{
		{ID: expired[0].ID, Attempt: 1, State: store.StateSucceeded, EndedAt: time.Now()},
		{ID: lastTry.ID, Attempt: 1, State: store.StateSucceeded, EndedAt: time.Now()},
	}
	skipped, err := r.store.WriteOutcomes(ctx, r.db, "dead-client", late)
	if err != nil {
		t.Fatal(err)
	}
	if skipped.Wrote(late[0]) || skipped.Wrote(late[1]) || len(skipped) != 2 {
		t.Errorf("late outcomes of rescued attempts: skipped %v; want both", skipped)
	}
	if rec := r.job(expired[0].ID); rec.State != relay.StatePending {
		t.Errorf("after the late outcome the rescued job is %s, want pending", rec.State)
	}
	// Nor once another client has claimed the job again and runs it.
	again, err := r.store.Client(r.db, store.ClientInfo{ID: "new-client", Lease: time.Hour, Kinds: []string{"k"}, Attempts: []int32{5}}).
		Claim(ctx, dispatcher.ClaimRequest{Queue: relay.DefaultQueue, Limit: 1})
	if err != nil || len(again.Jobs) != 1 || again.Jobs[0].Attempt != 2 {
		t.Fatalf("claiming a rescued job again: %v, %+v; want one job at attempt 2", err, again.Jobs)
	}
	reclaimed := again.Jobs[0].ID
	late = []store.Outcome{
		{ID: reclaimed, Attempt: 1, State: store.StateSucceeded, EndedAt: time.Now()},
		{ID: reclaimed, Attempt: 2, State: store.StateSucceeded, EndedAt: time.Now()},
	}
	skipped, err = r.store.WriteOutcomes(ctx, r.db, "dead-client", late)
	if err != nil {
		t.Fatal(err)
	}
	if state, _, _ := r.leaseOf(reclaimed); skipped.Wrote(late[0]) || skipped.Wrote(late[1]) || state != "running" {
		t.Errorf("late outcomes of the dead client: skipped %v; the job another client runs is %s; want both skipped and running", skipped, state)
	}
	// The client that holds it: in one batch, its own attempt's outcome is written and a
	// stale one of the same job is not.
	mixed := []store.Outcome{
		{ID: reclaimed, Attempt: 1, State: store.StateSucceeded, EndedAt: time.Now()},
		{ID: reclaimed, Attempt: 2, State: store.StateSucceeded, EndedAt: time.Now()},
	}
	if skipped, err = r.store.WriteOutcomes(ctx, r.db, "new-client", mixed); err != nil {
		t.Fatal(err)
	}
	if state, _, _ := r.leaseOf(reclaimed); skipped.Wrote(mixed[0]) || !skipped.Wrote(mixed[1]) || state != "succeeded" {
		t.Errorf("the holder's batch: skipped %v, the job is %s; want only attempt 1 skipped, and succeeded", skipped, state)
	}
}

// A rescuer sleeps until the next lease expires rather than for its MaxWait: a lease
// that expires in 500 ms is rescued shortly after, though MaxWait is an hour.
func TestRescuerWakesWhenTheNextLeaseExpires(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const ttl = 500 * time.Millisecond
	j := r.claim("mortal-client", 1, ttl)[0]
	_, until, dbNow := r.leaseOf(j.ID)
	offset := time.Since(dbNow) // local clock minus the database's, roughly
	resc := lease.NewRescuer(lease.RescuerConfig{Rescue: r.store.Client(r.db, store.ClientInfo{}).Rescue, MaxWait: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); resc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	var rescuedAt time.Time
	relaytest.WaitFor(t, waitTimeout, "the job to be rescued", func() bool {
		state, _, _ := r.leaseOf(j.ID)
		rescuedAt = time.Now()
		return state == "pending"
	})
	late := rescuedAt.Sub(until.Add(offset))
	t.Logf("rescued %v after its lease expired", late)
	if late > time.Second {
		t.Errorf("rescued %v after its lease expired; want within milliseconds (MaxWait is an hour)", late)
	}
	if a := r.job(j.ID).Attempts; len(a) != 1 || a[0].EndedAt.Before(until) {
		t.Errorf("history %+v: want one rescue, ended no earlier than the lease expiry %v", a, until)
	}
}

// A finished handler's lease is renewed until its outcome is written (Release): the job
// is still running in the table until then, and a lapsed lease would have it rescued and
// run again. Rows locked by an outcome write in flight are skipped, not waited for, and do
// not count as lost. A finished job that stops being the client's (its outcome was
// written) is dropped without cancelling anything.
func TestKeeperKeepsFinishedLeasesUntilReleased(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	const ttl = time.Second
	jobs := r.claim("keeper-f", 3, ttl)
	k := lease.NewKeeper(lease.KeeperConfig{
		Renewer: r.store.Client(r.db, store.ClientInfo{ID: "keeper-f", Queues: []string{"default"}, Kinds: []string{"k"}}),
		TTL:     ttl, Interval: 50 * time.Millisecond,
	})
	finished, locked, written := hold(k, jobs[0]), hold(k, jobs[1]), hold(k, jobs[2])
	for _, j := range jobs {
		k.Finished(j.ID, j.Attempt)
	}

	// An outcome write in flight: the row is locked by another transaction.
	tx, err := r.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1 FROM `+r.store.Table("jobs")+` WHERE id = $1 FOR UPDATE`, jobs[1].ID); err != nil {
		t.Fatal(err)
	}
	// An outcome already written: the job is no longer running.
	if _, err := r.db.Exec(ctx, `UPDATE `+r.store.Table("jobs")+` SET state = 'succeeded' WHERE id = $1`, jobs[2].ID); err != nil {
		t.Fatal(err)
	}
	_, claimedUntil, _ := r.leaseOf(jobs[0].ID)
	runKeeper(t, k)

	relaytest.WaitFor(t, waitTimeout, "the finished job's lease to be extended", func() bool {
		_, until, _ := r.leaseOf(jobs[0].ID)
		return until.After(claimedUntil.Add(300 * time.Millisecond))
	})
	relaytest.WaitFor(t, waitTimeout, "the written job to be dropped", func() bool { return k.Held() == 2 })
	for name, h := range map[string]held{"finished": finished, "locked": locked, "written": written} {
		if !h.alive() {
			t.Errorf("the %s job's context was cancelled: %v", name, context.Cause(h.ctx))
		}
	}

	k.Release(jobs[0].ID, jobs[0].Attempt)
	k.Release(jobs[1].ID, jobs[1].Attempt)
	if k.Held() != 0 {
		t.Errorf("Held() = %d after releasing everything, want 0", k.Held())
	}
}

// warned is a log handler that signals (once, until read) that a warning was logged.
type warned chan struct{}

func (w warned) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w warned) Handle(context.Context, slog.Record) error {
	select {
	case w <- struct{}{}:
	default:
	}
	return nil
}
func (w warned) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w warned) WithGroup(string) slog.Handler      { return w }

// A keeper whose renewal failed renews again at its next tick, an hour later here, unless
// it is told the database is back: then at once.
func TestKeeperRenewsAtOnceWhenTheDatabaseIsBack(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	j := r.claim("keeper-back", 1, time.Minute)[0]
	// The renewal records the heartbeat first: it fails while the clients table is away.
	if _, err := r.db.Exec(ctx, `ALTER TABLE `+r.store.Table("clients")+` RENAME TO clients_away`); err != nil {
		t.Fatal(err)
	}
	failed := make(warned, 1)
	k := lease.NewKeeper(lease.KeeperConfig{
		Renewer: r.store.Client(r.db, store.ClientInfo{ID: "keeper-back", Queues: []string{"default"}, Kinds: []string{"k"}}),
		TTL:     time.Minute, Interval: time.Hour, Logger: slog.New(failed),
	})
	hold(k, j)
	_, claimed, _ := r.leaseOf(j.ID)
	runKeeper(t, k)
	select {
	case <-failed:
	case <-time.After(waitTimeout):
		t.Fatal("the first renewal did not fail")
	}
	if _, err := r.db.Exec(ctx, `ALTER TABLE `+r.store.Table("clients_away")+` RENAME TO clients`); err != nil {
		t.Fatal(err)
	}
	k.Recover()
	relaytest.WaitFor(t, 5*time.Second, "the lease to be renewed after Recover", func() bool {
		_, expires, _ := r.leaseOf(j.ID)
		return expires.After(claimed)
	})
}

// A rescuer waits up to MaxWait between passes, an hour here, unless it is told the
// database is back: then it rescues at once.
func TestRescuerRescuesAtOnceWhenTheDatabaseIsBack(t *testing.T) {
	t.Parallel()
	passes := make(chan struct{}, 10)
	resc := lease.NewRescuer(lease.RescuerConfig{MaxWait: time.Hour, Rescue: func(context.Context, int) (lease.Rescued, error) {
		passes <- struct{}{}
		return lease.Rescued{}, nil
	}})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); resc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	<-passes
	select {
	case <-passes:
		t.Fatal("the rescuer rescued again before MaxWait")
	case <-time.After(200 * time.Millisecond):
	}
	resc.Recover()
	select {
	case <-passes:
	case <-time.After(5 * time.Second):
		t.Fatal("the rescuer did not rescue after Recover")
	}
}

// A rescuer whose passes failed (the database away) does not rescue, once the database
// answers again, before Grace has passed: leases that expired meanwhile belong to clients
// cut off as it was, which renew them within moments. Its first pass back acts on nothing;
// the owner's renewal in between keeps the job, and the pass after Grace leaves it alone.
// A lease nobody renews is rescued after Grace, as ever.
func TestRescuerBackFromAnOutageGivesOwnersGraceToRenew(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	const grace = time.Second // time for the owner's one renewal, even on a loaded machine
	jobs := r.claim("owner", 2, 100*time.Millisecond)
	renewed, abandoned := jobs[0], jobs[1]

	type call struct {
		limit int
		at    time.Time
		err   error
	}
	var down atomic.Bool
	down.Store(true)
	calls := make(chan call, 100)
	rescue := r.store.Client(r.db, store.ClientInfo{}).Rescue
	resc := lease.NewRescuer(lease.RescuerConfig{
		Rescue: func(ctx context.Context, limit int) (lease.Rescued, error) {
			if down.Load() {
				calls <- call{limit, time.Now(), errors.New("the database is away")}
				return lease.Rescued{}, errors.New("the database is away")
			}
			res, err := rescue(ctx, limit)
			calls <- call{limit, time.Now(), err}
			return res, err
		},
		MaxWait: time.Hour, Grace: grace,
	})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- resc.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		<-done
	})
	if c := relaytest.Receive(t, calls, waitTimeout, "a failed pass"); c.err == nil {
		t.Fatalf("a pass succeeded while the database was away")
	}
	relaytest.WaitFor(t, waitTimeout, "both leases to expire", func() bool {
		_, exp0, now := r.leaseOf(renewed.ID)
		_, exp1, _ := r.leaseOf(abandoned.ID)
		return now.After(exp0) && now.After(exp1)
	})

	down.Store(false)
	resc.Recover()
	probe := relaytest.Receive(t, calls, waitTimeout, "the first pass back")
	for probe.err != nil { // failed passes made before the database came back
		probe = relaytest.Receive(t, calls, waitTimeout, "the first pass back")
	}
	if probe.limit != 0 {
		t.Fatalf("the first pass back had a limit of %d; want 0, acting on nothing", probe.limit)
	}
	// The owner, back too, renews one of its leases.
	renewal, err := r.store.Client(r.db, store.ClientInfo{ID: "owner", Lease: time.Hour, Queues: []string{relay.DefaultQueue}, Kinds: []string{"k"}}).
		Renew(ctx, []lease.Held{{ID: renewed.ID, Attempt: renewed.Attempt}}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !renewal.Renewed[renewed.ID] {
		t.Fatalf("the owner could not renew its expired lease in the grace after the outage: %+v", renewal)
	}
	pass := relaytest.Receive(t, calls, waitTimeout, "the pass after the grace")
	if pass.limit == 0 || pass.err != nil {
		t.Fatalf("the pass after the grace: limit %d, %v; want a pass that rescues", pass.limit, pass.err)
	}
	if waited := pass.at.Sub(probe.at); waited < grace {
		t.Errorf("the rescuer passed %v after the database answered it; want at least its grace, %v", waited, grace)
	}
	if state, _, _ := r.leaseOf(renewed.ID); state != "running" || len(r.job(renewed.ID).Attempts) != 0 {
		t.Errorf("the renewed job is %s with history %+v; want running, untouched", state, r.job(renewed.ID).Attempts)
	}
	rec := r.job(abandoned.ID)
	if rec.State != relay.StatePending || len(rec.Attempts) != 1 || rec.Attempts[0].Reason != relay.ReasonLostLease {
		t.Errorf("the job nobody renewed is %s with history %+v; want pending after one lost lease", rec.State, rec.Attempts)
	}
}

// Holds says which attempt of a job the keeper holds: from Hold to Release, and only that
// attempt (the client skips a hand-off it heard again while it runs the job).
func TestKeeperHoldsAnAttemptFromHoldToRelease(t *testing.T) {
	t.Parallel()
	k := lease.NewKeeper(lease.KeeperConfig{TTL: time.Minute, Interval: time.Minute})
	if k.Holds(7, 1) {
		t.Fatal("holds attempt 1 of job 7 before any Hold")
	}
	k.Hold(7, 1, func(error) {})
	if !k.Holds(7, 1) || k.Holds(7, 2) || k.Holds(8, 1) {
		t.Fatalf("after Hold(7, 1): holds (7, 1) %v, (7, 2) %v, (8, 1) %v; want only (7, 1)", k.Holds(7, 1), k.Holds(7, 2), k.Holds(8, 1))
	}
	k.Finished(7, 1)
	if !k.Holds(7, 1) {
		t.Error("its handler returned, its outcome not written: no longer held")
	}
	k.Release(7, 1)
	if k.Holds(7, 1) {
		t.Error("held after Release")
	}
}

// A job left to its lease (LeaveToLease: its client could not write its outcome) with no
// lease at all, as a hand-off not acknowledged has, is kept by the keeper, Release or not,
// through renewals that cannot reach its row, until one gives it a lease; then the keeper
// lets go of it, and the lease runs out for the rescuers.
func TestKeeperLetsGoOfAJobLeftToItsLeaseOnceItHasOne(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	const ttl = time.Second
	job := r.claim("keeper-left", 1, ttl)[0]
	r.unacknowledged(job)
	// The handler's transaction, still open, holds the row.
	tx, err := r.db.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if _, err := tx.Exec(ctx, `SELECT FROM `+r.store.Table("jobs")+` WHERE id = $1 FOR UPDATE`, job.ID); err != nil {
		t.Fatal(err)
	}
	k := lease.NewKeeper(lease.KeeperConfig{
		Renewer: r.store.Client(r.db, store.ClientInfo{ID: "keeper-left", Queues: []string{"default"}, Kinds: []string{"k"}}),
		TTL:     ttl, Interval: 50 * time.Millisecond,
	})
	leaveToLease(t, k, job)
	var since time.Time
	if err := r.db.QueryRow(ctx, "SELECT clock_timestamp()").Scan(&since); err != nil {
		t.Fatal(err)
	}
	runKeeper(t, k)
	// Renewals pass by the locked row, until past the keeper's own view of the lease's end.
	relaytest.WaitFor(t, waitTimeout, "heartbeats for twice the lease's length", func() bool {
		var beat time.Time
		err := r.db.QueryRow(ctx, `SELECT heartbeat_at FROM `+r.store.Table("clients")+` WHERE id = 'keeper-left'`).Scan(&beat)
		return err == nil && beat.After(since.Add(2*ttl))
	})
	if !k.Holds(job.ID, job.Attempt) {
		t.Fatal("the keeper let go of a job left to its lease that still has none")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	r.awaitLeasedAndLetGo(k, job)
}

// A job left to its lease without one outlives an outage longer than the lease: the
// keeper's expiry, which lets go of the other finished jobs and cancels the running ones
// once their leases have certainly run out, keeps it, and the first renewal after the
// outage gives it its lease. Let go of during the outage, it would stay running with no
// lease under a live client, never rescued.
func TestKeeperKeepsAJobLeftToItsLeaseThroughAnOutage(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	const ttl = 400 * time.Millisecond
	jobs := r.claim("keeper-out", 2, ttl)
	left, running := jobs[0], jobs[1]
	r.unacknowledged(left)
	// The renewal records the heartbeat first: it fails while the clients table is away.
	if _, err := r.db.Exec(ctx, `ALTER TABLE `+r.store.Table("clients")+` RENAME TO clients_away`); err != nil {
		t.Fatal(err)
	}
	k := lease.NewKeeper(lease.KeeperConfig{
		Renewer: r.store.Client(r.db, store.ClientInfo{ID: "keeper-out", Queues: []string{"default"}, Kinds: []string{"k"}}),
		TTL:     ttl, Interval: 50 * time.Millisecond,
	})
	leaveToLease(t, k, left)
	h := hold(k, running)
	runKeeper(t, k)
	if _, cause := h.ended(t, waitTimeout, "a lease that could not be renewed"); !errors.Is(cause, lease.ErrLeaseExpired) {
		t.Fatalf("the running job's handler was cancelled with %v; want ErrLeaseExpired", cause)
	}
	if !k.Holds(left.ID, left.Attempt) {
		t.Fatal("the keeper let go of a job left to its lease, with none, during the outage")
	}
	if _, err := r.db.Exec(ctx, `ALTER TABLE `+r.store.Table("clients_away")+` RENAME TO clients`); err != nil {
		t.Fatal(err)
	}
	k.Recover()
	r.awaitLeasedAndLetGo(k, left)
}

// unacknowledged makes job as a hand-off not acknowledged yet leaves it: running, with
// no lease.
func (r *rig) unacknowledged(job *dispatcher.Job) {
	r.t.Helper()
	if _, err := r.db.Exec(context.Background(), `UPDATE `+r.store.Table("jobs")+` SET lease_expires_at = NULL WHERE id = $1`, job.ID); err != nil {
		r.t.Fatal(err)
	}
}

// leaveToLease has k hold job's attempt, see its handler return and leave it to its lease,
// as a client does that could not write its outcome, and then release it: the keeper must
// keep it still.
func leaveToLease(t *testing.T, k *lease.Keeper, job *dispatcher.Job) {
	t.Helper()
	hold(k, job)
	k.Finished(job.ID, job.Attempt)
	k.LeaveToLease(job.ID, job.Attempt)
	k.Release(job.ID, job.Attempt)
	if !k.Holds(job.ID, job.Attempt) {
		t.Fatal("Release let go of a job left to its lease before it had one")
	}
}

// awaitLeasedAndLetGo waits until k lets go of job, left to its lease, and checks that the
// job then has a lease that has not run out.
func (r *rig) awaitLeasedAndLetGo(k *lease.Keeper, job *dispatcher.Job) {
	r.t.Helper()
	relaytest.WaitFor(r.t, waitTimeout, "a renewal to lease the job and the keeper to let go", func() bool {
		return !k.Holds(job.ID, job.Attempt)
	})
	if state, until, now := r.leaseOf(job.ID); state != "running" || !until.After(now) {
		r.t.Errorf("job %s with lease until %v (now %v) once let go; want running under a lease that has not run out", state, until, now)
	}
}

// renewerThen calls then after each renewal, before its answer reaches the keeper.
type renewerThen struct {
	lease.Renewer
	then func()
}

func (r renewerThen) Renew(ctx context.Context, held []lease.Held, ttl time.Duration) (lease.Renewal, error) {
	renewal, err := r.Renewer.Renew(ctx, held, ttl)
	r.then()
	return renewal, err
}

// An attempt held again under the same number while a renewal was in flight (a snooze
// gives its number back, and the same client may claim the job again at once) is not
// judged by that renewal, whose answer is about the attempt before: its handler is not
// cancelled as having lost its lease. It once was.
func TestKeeperDoesNotJudgeAnAttemptHeldAgainDuringARenewal(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	const ttl = time.Second
	job := r.claim("keeper-again", 1, ttl)[0]
	// Snoozed: pending again, its attempt given back. The renewal finds it not held.
	if _, err := r.db.Exec(ctx, `UPDATE `+r.store.Table("jobs")+`
		SET state = 'pending', attempt = attempt - 1, attempted_by = NULL, attempted_at = NULL, lease_expires_at = NULL WHERE id = $1`, job.ID); err != nil {
		t.Fatal(err)
	}
	var k *lease.Keeper
	var again held
	heldAgain, renewedSince := make(chan struct{}), make(chan struct{}, 1)
	var renewals atomic.Int32
	k = lease.NewKeeper(lease.KeeperConfig{
		Renewer: renewerThen{r.store.Client(r.db, store.ClientInfo{ID: "keeper-again", Queues: []string{"default"}, Kinds: []string{"k"}}), func() {
			switch renewals.Add(1) {
			case 1: // the old attempt's handler returned; the job is claimed again, as the same attempt
				k.Release(job.ID, job.Attempt)
				if _, err := r.db.Exec(ctx, `UPDATE `+r.store.Table("jobs")+`
					SET state = 'running', attempt = attempt + 1, attempted_by = 'keeper-again', attempted_at = now(), lease_expires_at = now() + interval '1 second'
					WHERE id = $1`, job.ID); err != nil {
					t.Error(err)
				}
				again = hold(k, job)
				close(heldAgain)
			case 3:
				renewedSince <- struct{}{}
			}
		}},
		TTL: ttl, Interval: 20 * time.Millisecond,
	})
	hold(k, job)
	runKeeper(t, k)
	for _, ch := range []<-chan struct{}{heldAgain, renewedSince} {
		select {
		case <-ch:
		case <-time.After(waitTimeout):
			t.Fatal("the keeper renewed no more")
		}
	}
	if err := context.Cause(again.ctx); err != nil {
		t.Fatalf("the attempt held again was cancelled: %v", err)
	}
	if !k.Holds(job.ID, job.Attempt) {
		t.Error("the keeper let go of the attempt held again")
	}
}

// The outcome of an attempt whose number was given back (a snooze) lets go of that attempt
// only: the same client may have claimed the job again under that number before it heard
// the outcome was written, and the new attempt, whose handler runs, is kept.
func TestKeeperKeepsAnAttemptHeldAgainWhenTheOneBeforeIsWritten(t *testing.T) {
	t.Parallel()
	k := lease.NewKeeper(lease.KeeperConfig{TTL: time.Minute, Interval: time.Minute})
	job := &dispatcher.Job{ID: 7, Attempt: 1}
	hold(k, job)
	k.Finished(job.ID, job.Attempt)
	again := hold(k, job) // its outcome (a snooze) committed; claimed again, as attempt 1
	k.Written(job.ID, job.Attempt)
	if !k.Holds(job.ID, job.Attempt) {
		t.Fatal("the keeper let go of the attempt held again, whose handler runs")
	}
	k.Finished(job.ID, job.Attempt)
	k.Written(job.ID, job.Attempt)
	if k.Holds(job.ID, job.Attempt) {
		t.Error("the keeper still holds the attempt held again once its outcome is written")
	}
	if err := context.Cause(again.ctx); err != nil {
		t.Errorf("the attempt held again was cancelled: %v", err)
	}
}
