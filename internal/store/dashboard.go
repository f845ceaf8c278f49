package store

import (
	"context"
	_ "embed"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
)

//go:embed dashboard.sql
var dashboardSQL string

// dashboardQueries are dashboard.sql's statements, each with the struct of its
// parameters. Those that read a range of jobs are planned for their values each time.
type dashboardQueries struct {
	queues      statement[dashboardQueuesParams]
	queueNames  statement[struct{}]
	throughput  statement[throughputParams]
	blockedKeys statement[blockedKeysParams]
	clients     statement[limitParams]
}

func buildDashboardQueries(names *strings.Replacer) dashboardQueries {
	var q dashboardQueries
	bindAll(dashboardSQL, "dashboard.sql", names, []named{
		{"queues", &q.queues}, {"queueNames", &q.queueNames}, {"throughput", &q.throughput},
		{"blockedKeys", &q.blockedKeys}, {"clients", &q.clients},
	})
	q.queues.each, q.queueNames.each, q.throughput.each = true, true, true
	checkBuilt(q)
	return q
}

type dashboardQueuesParams struct {
	Queue     pgtype.Text `db:"queue"`     // NULL: every queue
	Window    float64     `db:"window"`    // seconds
	LookBack  float64     `db:"look_back"` // seconds: {windowStart}
	MaxRecent int         `db:"max_recent"`
}

type throughputParams struct {
	Queue       string  `db:"queue"`
	Window      float64 `db:"window"`    // seconds
	LookBack    float64 `db:"look_back"` // seconds: {windowStart}
	Step        float64 `db:"step"`      // seconds
	MaxPerState int     `db:"max_per_state"`
}

type blockedKeysParams struct {
	Queue string `db:"queue"`
	Limit int    `db:"limit"`
}

type limitParams struct {
	Limit int `db:"limit"`
}

// DashboardQueue is a queue as the dashboard lists it.
type DashboardQueue struct {
	Name        string
	Ordered     bool
	OnFailure   string
	GlobalLimit int
	PausedAt    time.Time // zero if not paused
	Running     int64
	Blocked     int64
	OldestDue   time.Time     // run_at of its oldest due pending job; zero if none
	OldestAge   time.Duration // now - OldestDue, on the database's clock
	Finished    int64         // jobs finished within the window asked for
}

// DashboardQueues returns every queue (only queue, if not "") that has settings,
// unfinished or blocked jobs, or jobs finished within window (counting at most maxRecent
// of the newest jobs).
func (s *Store) DashboardQueues(ctx context.Context, db DB, queue string, window time.Duration, maxRecent int) ([]DashboardQueue, error) {
	rows, err := s.dash.queues.query(ctx, db, dashboardQueuesParams{
		Queue: nullText(queue), Window: window.Seconds(), LookBack: window.Seconds(), MaxRecent: maxRecent,
	})
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	qs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (DashboardQueue, error) {
		var (
			q                 DashboardQueue
			paused, oldestDue pgtype.Timestamptz
			age               pgtype.Float8
			limit             int32
		)
		err := row.Scan(&q.Name, &q.Ordered, &q.OnFailure, &limit, &paused, &q.Running, &q.Blocked, &oldestDue, &age, &q.Finished)
		q.GlobalLimit, q.PausedAt, q.OldestDue = int(limit), paused.Time, oldestDue.Time
		q.OldestAge = seconds(age)
		return q, err
	})
	if err != nil {
		return nil, fmt.Errorf("list queues: %w", err)
	}
	return qs, nil
}

// QueueNames returns the name of every queue that has settings or holds jobs, in order.
func (s *Store) QueueNames(ctx context.Context, db DB) ([]string, error) {
	rows, err := s.dash.queueNames.query(ctx, db, struct{}{})
	if err != nil {
		return nil, fmt.Errorf("list queue names: %w", err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list queue names: %w", err)
	}
	return names, nil
}

// Bucket is one time bucket of a queue's throughput: Ago buckets back from now (0 is the
// newest). The durations are zero in a bucket without jobs that ran.
type Bucket struct {
	Ago                          int
	Succeeded, Failed, Cancelled int64
	WaitP50, WaitP95             time.Duration // from due to started
	RunP50, RunP95               time.Duration // from started to finished
}

// Throughput returns the jobs of queue that finished within window, by bucket of width
// step, reading at most maxPerState jobs of each finished state. Buckets without jobs are
// left out.
func (s *Store) Throughput(ctx context.Context, db DB, queue string, window, step time.Duration, maxPerState int) ([]Bucket, error) {
	rows, err := s.dash.throughput.query(ctx, db, throughputParams{
		Queue: queue, Window: window.Seconds(), LookBack: 2 * window.Seconds(), Step: step.Seconds(), MaxPerState: maxPerState,
	})
	if err != nil {
		return nil, fmt.Errorf("queue throughput: %w", err)
	}
	bs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Bucket, error) {
		var (
			b    Bucket
			secs [4]pgtype.Float8
		)
		err := row.Scan(&b.Ago, &b.Succeeded, &b.Failed, &b.Cancelled, &secs[0], &secs[1], &secs[2], &secs[3])
		b.WaitP50, b.WaitP95, b.RunP50, b.RunP95 = seconds(secs[0]), seconds(secs[1]), seconds(secs[2]), seconds(secs[3])
		return b, err
	})
	if err != nil {
		return nil, fmt.Errorf("queue throughput: %w", err)
	}
	return bs, nil
}

// seconds reads a duration sent as seconds; NULL is zero.
func seconds(f pgtype.Float8) time.Duration { return time.Duration(f.Float64 * float64(time.Second)) }

// BlockedKey is a key of an ordered queue held by a failed job.
type BlockedKey struct {
	Key        string
	JobID      int64
	Kind       string
	FinishedAt time.Time
	Error      string // the failed job's last error
	Waiting    int64  // pending jobs of the key behind it
}

// BlockedKeys returns at most limit blocked keys of queue, oldest first.
func (s *Store) BlockedKeys(ctx context.Context, db DB, queue string, limit int) ([]BlockedKey, error) {
	rows, err := s.dash.blockedKeys.query(ctx, db, blockedKeysParams{Queue: queue, Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("blocked keys: %w", err)
	}
	ks, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (BlockedKey, error) {
		var (
			k        BlockedKey
			finished pgtype.Timestamptz
		)
		err := row.Scan(&k.Key, &k.JobID, &k.Kind, &finished, &k.Error, &k.Waiting)
		k.FinishedAt = finished.Time
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("blocked keys: %w", err)
	}
	return ks, nil
}

// ClientRow is a client as the view client_status shows it.
type ClientRow struct {
	ID                     string
	StartedAt, HeartbeatAt time.Time
	LeaseTTL               time.Duration
	Queues, Kinds          []string
	StoppedAt              time.Time // zero while running
	Alive                  bool
	RunningJobs            int64
}

// Clients returns at most limit clients, live ones first, then the latest heartbeat first.
func (s *Store) Clients(ctx context.Context, db DB, limit int) ([]ClientRow, error) {
	rows, err := s.dash.clients.query(ctx, db, limitParams{Limit: limit})
	if err != nil {
		return nil, fmt.Errorf("list clients: %w", err)
	}
	cs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (ClientRow, error) {
		var (
			c       ClientRow
			stopped pgtype.Timestamptz
			ttl     pgtype.Float8
		)
		err := row.Scan(&c.ID, &c.StartedAt, &c.HeartbeatAt, &ttl, &c.Queues, &c.Kinds, &stopped, &c.Alive, &c.RunningJobs)
		c.StoppedAt, c.LeaseTTL = stopped.Time, seconds(ttl)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("list clients: %w", err)
	}
	return cs, nil
}
