package relay

import (
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay/backoff"
	"github.com/relayq/relay/internal/store"
)

// Config configures a [Client]. The zero value is ready to use: schema "relay", the
// "default" queue with 100 workers, a 2 s fallback poll, and [backoff.Default] retries.
type Config struct {
	// Schema is the PostgreSQL schema relay's tables live in; default [DefaultSchema].
	Schema string
	// Queues are the queues this client works, by name, each with its own limit on
	// concurrent jobs. Default: {"default": {Workers: 100}}.
	//
	// A name ending in "*" is a group: every queue whose name starts with what comes
	// before the "*" ("tenant-*", or "*" for every queue), each with the group's settings.
	// A queue of a group is worked from when its first job's wakeup arrives (or at start,
	// if it already has jobs) until it has been idle for the group's IdleTimeout. A
	// queue's own entry wins over groups, and a longer prefix over a shorter one.
	Queues map[string]QueueConfig
	// MaxWorkers, if positive, bounds the jobs this client runs at once over all its
	// queues. While the limit is reached, queues share it fairly: a queue waiting for a
	// worker gets the next one freed, and no queue holds more than an equal share while
	// another waits. Zero means no client-wide limit (each queue's Workers still apply).
	MaxWorkers int
	// PollInterval is how often each queue looks for work even without a wakeup. Wakeups
	// come by NOTIFY, so this only bounds the delay of a notification lost while the
	// listener was reconnecting; default [DefaultPollInterval], or
	// [DefaultPollOnlyInterval] with PollOnly, where it is how long a job may wait. Each
	// queue's first poll comes after a random part of the interval, so that a client's
	// queues do not all claim at once.
	PollInterval time.Duration
	// ListenerConnString, if set, is what the client's listener connects with — a
	// connection string or URL, as pgx.ParseConfig reads it — instead of the settings of
	// the pool given to [Client.Start]. Behind a pooler in transaction mode (PgBouncer's
	// pool_mode = transaction) a LISTEN hears nothing: give Start the pool through the
	// pooler, and point this at PostgreSQL itself (or at a pooler in session mode). Every
	// other statement of the client runs on the pool, and is fit for transaction pooling.
	// A client whose listener hears nothing says so in a warning (see PollOnly).
	ListenerConnString string
	// PollOnly runs the client without a listener, for deployments where no connection
	// can LISTEN (the database is reached only through a pooler in transaction mode).
	// Each queue's dispatcher then claims every PollInterval (default
	// [DefaultPollOnlyInterval]) instead of being woken by NOTIFY: a job waits up to that
	// long to start (the next of an ordered key too, when another client ran the one
	// before), and cancelling a running job ([Cancel]) reaches its handler at the client's
	// next lease renewal (LeaseRenewal; its context's cause is [ErrCancelled], as with a
	// listener) rather than within milliseconds. Nothing else changes: every job still runs, in the same
	// order, under the same leases. Enqueues do not NOTIFY for a poll-only client's sake.
	// It cannot be combined with ListenerConnString.
	PollOnly bool
	// Backoff spaces the retries of failed attempts; default [backoff.Default]. A kind
	// can have its own ([Backoff] as a [HandleOption]).
	Backoff backoff.Policy
	// LeaseTTL is how long a claimed job stays this client's without renewal; default
	// [DefaultLeaseTTL]. A client that dies has its jobs rescued by other clients this long
	// after its last renewal.
	LeaseTTL time.Duration
	// LeaseRenewal is how often the client renews the leases of its running jobs (its
	// heartbeat); default [DefaultLeaseRenewal]. It must be at most half of LeaseTTL, so that
	// one failed renewal never loses a lease. It is also how long (2 s at least) the client
	// waits, once the database answers again after an outage, before it rescues other
	// clients' expired leases: they were cut off too, and renew theirs in that time.
	LeaseRenewal time.Duration
	// Logger receives relay's logs; default slog.Default().
	Logger *slog.Logger
	// ID names this client in the jobs it claims (attempted_by) and in pg_stat_activity:
	// at most [MaxNameLen] bytes of UTF-8 without NUL bytes; default
	// "<hostname>-<pid>-<random>".
	ID string
	// StartTimeout bounds [Client.Start] when its context has no earlier deadline: checking
	// the schema and connecting the listener; default [DefaultStartTimeout].
	StartTimeout time.Duration
	// MaxOutputSize is the most bytes, as JSON, an output of this client's handlers may take
	// ([Job.SetOutput], [HandleWithOutput]); default [DefaultMaxSize]. A larger one is
	// refused with an error wrapping [ErrTooLarge], which fails the attempt like any error.
	MaxOutputSize int
	// MaxCheckpointSize is the most bytes, as JSON, a [Checkpoint] of this client's handlers
	// may save; default [DefaultMaxSize]. A larger one is refused with an error wrapping
	// [ErrTooLarge], and nothing is written.
	MaxCheckpointSize int
	// MaxErrorDataSize is the most bytes, as JSON, the data of a failed attempt's error may
	// take ([ErrorData]); default [DefaultMaxErrorDataSize]. Larger data is not recorded:
	// the attempt is, with [Attempt].DataError saying so.
	MaxErrorDataSize int
	// ReservedConns is how many connections of its own the client may open, with the
	// settings of the pool given to [Client.Start], for its own statements (claims, lease
	// renewals, rescues, outcomes) while the application holds every connection of that
	// pool: handlers that exhaust the pool then never starve their client, whose starved
	// renewals would lose leases and run jobs twice. They are opened only when needed and
	// closed after a minute unused, with application_name [ReservedApplicationName]; while
	// the pool has a connection to spare, the client uses it. Default
	// [DefaultReservedConns]; a negative value reserves none (the client then waits for
	// the pool like any handler).
	ReservedConns int
	// Middleware wraps the handling of every job this client runs, the first outermost,
	// around the middleware of its kind (see [Middleware]).
	Middleware []Middleware
	// Retention is how long finished jobs are kept, by state, after they finished: 24 h for
	// succeeded and cancelled jobs and 7 days for failed ones unless it says otherwise
	// ([KeepForever] keeps them). Every client deletes expired jobs of every queue, taking
	// turns, so give every client the same retention: where they differ, the shortest wins.
	// A failed job that blocks its ordered key is kept until it is retried or cancelled.
	Retention Retention
	// QueueRetention overrides Retention for the queues it names (whole names, not
	// groups); its zero fields take Retention's values.
	QueueRetention map[string]Retention
	// ClientRetention is how long the row of a client that stopped, or died, stays in the
	// clients table (and the client_status view); default [DefaultClientRetention] (24 h),
	// [KeepForever] to keep them.
	ClientRetention time.Duration
}

// QueueConfig configures one queue of a client.
type QueueConfig struct {
	// Workers is the most jobs of this queue this client runs at once (at least 1).
	Workers int
	// JobTimeout bounds each job of the queue whose kind and job set no [Timeout];
	// zero means none.
	JobTimeout time.Duration
	// IdleTimeout is, for a group of queues, how long a queue of the group stays worked
	// with nothing to do; default [DefaultIdleTimeout]. It must not be set on a single queue.
	IdleTimeout time.Duration
}

// withDefaults fills in defaults and rejects what cannot run.
func (c Config) withDefaults() (Config, error) {
	if c.Schema == "" {
		c.Schema = DefaultSchema
	}
	if err := store.ValidateSchema(c.Schema); err != nil {
		return c, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if len(c.Queues) == 0 {
		c.Queues = map[string]QueueConfig{DefaultQueue: {Workers: DefaultWorkers}}
	}
	queues := make(map[string]QueueConfig, len(c.Queues))
	for name, q := range c.Queues {
		if err := checkQueueName(name); err != nil {
			return c, err
		}
		if strings.Contains(strings.TrimSuffix(name, "*"), "*") {
			return c, fmt.Errorf("%w: queue %q: a group of queues is a prefix followed by one \"*\" at the end", ErrInvalidConfig, name)
		}
		switch {
		case q.IdleTimeout < 0:
			return c, fmt.Errorf("%w: queue %q has a negative IdleTimeout (%v)", ErrInvalidConfig, name, q.IdleTimeout)
		case q.IdleTimeout > 0 && !store.IsGroup(name):
			return c, fmt.Errorf("%w: queue %q sets IdleTimeout, which only a group of queues (\"prefix*\") has", ErrInvalidConfig, name)
		case q.IdleTimeout == 0 && store.IsGroup(name):
			q.IdleTimeout = DefaultIdleTimeout
		}
		if q.Workers < 1 {
			return c, fmt.Errorf("%w: queue %q has %d workers; it needs at least 1", ErrInvalidConfig, name, q.Workers)
		}
		if q.JobTimeout < 0 {
			return c, fmt.Errorf("%w: queue %q has a negative JobTimeout (%v)", ErrInvalidConfig, name, q.JobTimeout)
		}
		queues[name] = q
	}
	c.Queues = queues // a copy: the caller's map is theirs to change
	if c.MaxWorkers < 0 {
		return c, fmt.Errorf("%w: MaxWorkers is negative (%d)", ErrInvalidConfig, c.MaxWorkers)
	}
	switch {
	case c.PollInterval == 0 && c.PollOnly:
		c.PollInterval = DefaultPollOnlyInterval
	case c.PollInterval == 0:
		c.PollInterval = DefaultPollInterval
	case c.PollInterval < 0:
		return c, fmt.Errorf("%w: PollInterval is negative (%v)", ErrInvalidConfig, c.PollInterval)
	}
	switch {
	case c.PollOnly && c.ListenerConnString != "":
		return c, fmt.Errorf("%w: PollOnly runs no listener, so ListenerConnString has nothing to connect: set one or the other", ErrInvalidConfig)
	case c.ListenerConnString != "":
		if _, err := pgx.ParseConfig(c.ListenerConnString); err != nil {
			return c, fmt.Errorf("%w: ListenerConnString: %w", ErrInvalidConfig, err)
		}
	}
	if c.Backoff == (backoff.Policy{}) {
		c.Backoff = backoff.Default()
	}
	if err := c.Backoff.Validate(); err != nil {
		return c, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.LeaseRenewal == 0 {
		c.LeaseRenewal = min(DefaultLeaseRenewal, c.LeaseTTL/3)
	}
	if c.LeaseTTL < 100*time.Millisecond || c.LeaseRenewal <= 0 || c.LeaseRenewal*2 > c.LeaseTTL {
		return c, fmt.Errorf("%w: LeaseTTL (%v) must be at least 100ms and LeaseRenewal (%v) positive and at most half of it", ErrInvalidConfig, c.LeaseTTL, c.LeaseRenewal)
	}
	switch {
	case c.StartTimeout == 0:
		c.StartTimeout = DefaultStartTimeout
	case c.StartTimeout < 0:
		return c, fmt.Errorf("%w: StartTimeout is negative (%v)", ErrInvalidConfig, c.StartTimeout)
	}
	var err error
	if c.MaxOutputSize, err = sizeSetting(ErrInvalidConfig, outputLimit, c.MaxOutputSize); err != nil {
		return c, err
	}
	if c.MaxCheckpointSize, err = sizeSetting(ErrInvalidConfig, checkpointLimit, c.MaxCheckpointSize); err != nil {
		return c, err
	}
	if c.MaxErrorDataSize, err = sizeSetting(ErrInvalidConfig, errorDataLimit, c.MaxErrorDataSize); err != nil {
		return c, err
	}
	switch {
	case c.ReservedConns == 0:
		c.ReservedConns = DefaultReservedConns
	case c.ReservedConns > math.MaxInt32:
		return c, fmt.Errorf("%w: ReservedConns is %d; a pool holds at most %d connections", ErrInvalidConfig, c.ReservedConns, math.MaxInt32)
	}
	if c, err = c.withRetention(); err != nil {
		return c, err
	}
	if c.ID != "" {
		if err := checkName(ErrInvalidConfig, "ID", c.ID); err != nil {
			return c, err
		}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// withRetention fills in the defaults of the retention settings and checks them.
func (c Config) withRetention() (Config, error) {
	if err := c.Retention.validate("Retention"); err != nil {
		return c, err
	}
	c.Retention = c.Retention.over(Retention{
		Succeeded: DefaultSucceededRetention, Failed: DefaultFailedRetention, Cancelled: DefaultCancelledRetention,
	})
	queues := make(map[string]Retention, len(c.QueueRetention))
	for name, r := range c.QueueRetention {
		if err := checkQueueName(name); err != nil {
			return c, err
		}
		if err := r.validate(fmt.Sprintf("QueueRetention[%q]", name)); err != nil {
			return c, err
		}
		queues[name] = r.over(c.Retention)
	}
	c.QueueRetention = queues // a copy: the caller's map is theirs to change
	if err := checkKeep("ClientRetention", c.ClientRetention); err != nil {
		return c, err
	}
	if c.ClientRetention == 0 {
		c.ClientRetention = DefaultClientRetention
	}
	return c, nil
}
