package relay

import (
	"time"

	"github.com/relayq/relay/backoff"
)

// Defaults used when a job or client does not say otherwise.
const (
	DefaultSchema       = "relay"
	DefaultQueue        = "default"
	DefaultMaxAttempts  = 20
	DefaultWorkers      = 100
	DefaultPollInterval = 2 * time.Second
	// DefaultPollOnlyInterval is the PollInterval of a client with [Config].PollOnly: how
	// long a job may wait to start, and how often each of its queues claims while idle
	// (one short statement each time).
	DefaultPollOnlyInterval = 250 * time.Millisecond
	DefaultLeaseTTL         = 15 * time.Second
	DefaultLeaseRenewal     = 5 * time.Second
	DefaultIdleTimeout      = time.Minute
	DefaultStartTimeout     = 10 * time.Second
	// DefaultReservedConns is how many connections of its own a client may open for its
	// statements while the application holds every connection of its pool (see
	// [Config].ReservedConns).
	DefaultReservedConns = 2
	// MaxNameLen is the longest kind or queue name, in bytes.
	MaxNameLen = 128
)

// EnqueueOption changes how [Enqueue] and [EnqueueMany] insert a job.
type EnqueueOption interface{ applyEnqueue(*enqueueOptions) }

// MigrateOption changes what [Migrate] and [MigrationSQL] work on.
type MigrateOption interface{ applyMigrate(*migrateOptions) }

// HandleOption changes how [Handle] runs the jobs of a kind.
type HandleOption interface{ applyHandle(*kindConfig) }

type enqueueOptions struct {
	schema      string
	queue       string
	runAt       time.Time
	maxAttempts *int
	timeout     *time.Duration
	priority    int
	orderKey    *string
	unique      bool // Unique was given
	uniqueKey   string
	uniqueIn    []JobState
	maxArgsSize *int // nil: DefaultMaxSize
	// metadata and the middleware around the insert: see Metadata and EnqueueMiddleware
	metadata        map[string]string
	maxMetadataSize *int // nil: DefaultMaxMetadataSize
	middleware      []EnqueueMiddleware
	backoff         *backoff.Policy // nil: the kind's
	reserved        bool            // Reserved was given, for hold
	hold            time.Duration
}

type migrateOptions struct{ schema string }

// kindConfig is how a client runs the jobs of one kind.
type kindConfig struct {
	maxAttempts int
	timeout     *time.Duration // nil: the queue's JobTimeout
	backoff     *backoff.Policy
	middleware  []Middleware // the kind's own, inside Config.Middleware
}

func defaultEnqueueOptions() enqueueOptions {
	return enqueueOptions{schema: DefaultSchema, queue: DefaultQueue}
}

// Queue puts the job on the named queue instead of [DefaultQueue].
func Queue(name string) EnqueueOption { return queueOption(name) }

type queueOption string

func (q queueOption) applyEnqueue(o *enqueueOptions) { o.queue = string(q) }

// RunAt schedules the job to start no earlier than t. A time in the past means now.
func RunAt(t time.Time) EnqueueOption { return runAtOption(t) }

type runAtOption time.Time

func (t runAtOption) applyEnqueue(o *enqueueOptions) { o.runAt = time.Time(t) }

// RunIn schedules the job to start no earlier than d from now (on the caller's clock).
func RunIn(d time.Duration) EnqueueOption { return runAtOption(time.Now().Add(d)) }

// MaxAttempts sets how many times a job may be attempted before it is failed for good;
// it must be from 1 to 2147483647 (the largest integer PostgreSQL's integer column holds). As an [EnqueueOption] it applies to one job; as a
// [HandleOption] it is the default for the kind's jobs enqueued without one. Default
// [DefaultMaxAttempts].
func MaxAttempts(n int) MaxAttemptsOption { return MaxAttemptsOption(n) }

// MaxAttemptsOption is the option made by [MaxAttempts].
type MaxAttemptsOption int

func (n MaxAttemptsOption) applyEnqueue(o *enqueueOptions) { v := int(n); o.maxAttempts = &v }
func (n MaxAttemptsOption) applyHandle(k *kindConfig)      { k.maxAttempts = int(n) }

// Timeout bounds how long a handler may run: past it, the handler's context is cancelled
// (with cause [ErrTimeout]) and the attempt ends with reason "timeout", retried like an
// error. Zero means no timeout; negative is invalid. As an [EnqueueOption] it applies to
// one job, as a [HandleOption] to a kind; otherwise the queue's [QueueConfig].JobTimeout
// applies. A handler that ignores its context keeps its worker slot until it returns,
// but its outcome is still "timeout".
func Timeout(d time.Duration) TimeoutOption { return TimeoutOption(d) }

// TimeoutOption is the option made by [Timeout].
type TimeoutOption time.Duration

func (t TimeoutOption) applyEnqueue(o *enqueueOptions) { d := time.Duration(t); o.timeout = &d }
func (t TimeoutOption) applyHandle(k *kindConfig)      { d := time.Duration(t); k.timeout = &d }

// Priority sets the job's priority: among the due jobs of a queue, higher priorities are
// claimed first, and equal priorities first in, first out. The default is 0; any value
// from [MinPriority] to [MaxPriority] is valid, so there are as many levels as you need.
// In an ordered queue the order of a key is the order of enqueueing, whatever the priority;
// priority then decides which key's next job starts first.
func Priority(p int) EnqueueOption { return priorityOption(p) }

// The range of [Priority].
const (
	MinPriority = -32767
	MaxPriority = 32767
)

type priorityOption int

func (p priorityOption) applyEnqueue(o *enqueueOptions) { o.priority = int(p) }

// OrderKey puts the job in the sequence key of its queue, which must be ordered (see
// [SetQueue]): the jobs of one key start one at a time, in the order they were enqueued,
// across all clients, while different keys run side by side ("ordered by customer id").
// In an ordered queue, jobs enqueued without a key form one queue-wide sequence. An order
// key for a queue that is not ordered is refused with [ErrQueueNotOrdered].
func OrderKey(key string) EnqueueOption { return orderKeyOption(key) }

type orderKeyOption string

func (k orderKeyOption) applyEnqueue(o *enqueueOptions) { key := string(k); o.orderKey = &key }

// Unique makes the job unique by key: if a job with the same key already exists in one of
// the states given (default: pending, which includes scheduled, and running), nothing is
// inserted and the enqueue returns that job's id instead (see [EnqueueJob] for the flag
// saying so). The states always include pending and running, and a unique index on the
// key of unfinished jobs enforces that however many processes enqueue at once. Add
// [StateSucceeded], [StateFailed] or [StateCancelled] to also refuse a repeat of a job
// that ended so; each enqueue's own states decide. Keys are global across queues and
// kinds: put the kind in the key if two kinds may share one.
func Unique(key string, states ...JobState) EnqueueOption {
	return uniqueOption{key: key, states: states}
}

type uniqueOption struct {
	key    string
	states []JobState
}

func (u uniqueOption) applyEnqueue(o *enqueueOptions) {
	o.unique, o.uniqueKey, o.uniqueIn = true, u.key, u.states
}

// MaxArgsSize sets the most bytes the job's args may take, as encoded JSON (or as given,
// for a Kind[[]byte]); default [DefaultMaxSize]. Larger args are refused with an error
// wrapping [ErrTooLarge] and [ErrInvalidJob] before anything is sent. It bounds what a
// producer can put in the table, which every listing, claim and retry then carries: keep
// large data elsewhere and pass a reference where you can.
func MaxArgsSize(n int) EnqueueOption { return maxArgsSizeOption(n) }

type maxArgsSizeOption int

func (n maxArgsSizeOption) applyEnqueue(o *enqueueOptions) { v := int(n); o.maxArgsSize = &v }

// Backoff sets the delays between the retries of failed attempts. As a [HandleOption] it
// applies to a kind's jobs, instead of [Config].Backoff; as an [EnqueueOption], to one job,
// instead of its kind's (or the client's): stored with the job, so that whichever client
// runs it retries it so. A delay the handler chooses ([RetryAfter]) still wins.
//
// The policy must be valid ([backoff.Policy.Validate]: a positive Initial, a finite
// Multiplier of at least 1, a Max of at least Initial, a Jitter from 0 to 1), and its
// largest delay, Max × (1 + Jitter), must fit a [time.Duration]; otherwise [Enqueue]
// refuses the job with [ErrInvalidJob] and [Handle] the kind with [ErrInvalidConfig].
func Backoff(p backoff.Policy) BackoffOption { return BackoffOption(p) }

// BackoffOption is the option made by [Backoff].
type BackoffOption backoff.Policy

func (b BackoffOption) applyHandle(k *kindConfig)      { p := backoff.Policy(b); k.backoff = &p }
func (b BackoffOption) applyEnqueue(o *enqueueOptions) { p := backoff.Policy(b); o.backoff = &p }

// Reserved enqueues the job as a reservation, held for within: it exists at once and keeps
// its place — in an ordered queue the jobs enqueued after it in its key wait behind it,
// and its [Unique] key is taken — but it never runs until its producer commits it with
// [CommitJobs], in a later transaction, typically with the producer's own writes. If
// nobody commits it (or extends it, [ExtendReservation]) within that time, it expires: it
// ends cancelled with reason [ReasonExpired], without running, and its key moves on. The
// deadline is measured on the database's clock from the insert; within must be positive.
//
// Commit the enqueueing transaction before the work the reservation waits for (a call to
// a payment provider, say): until then other transactions cannot see the job, and jobs
// enqueued behind it by them do not wait for it.
func Reserved(within time.Duration) EnqueueOption { return reservedOption(within) }

type reservedOption time.Duration

func (r reservedOption) applyEnqueue(o *enqueueOptions) { o.reserved, o.hold = true, time.Duration(r) }

// Schema selects the PostgreSQL schema relay's tables live in (default [DefaultSchema]).
// It is an [EnqueueOption], a [MigrateOption] and a [JobOption]; a [Client] takes it from
// [Config].Schema. Independent relay instances can share one database in different schemas.
func Schema(name string) SchemaOption { return SchemaOption(name) }

// SchemaOption is the option made by [Schema].
type SchemaOption string

func (s SchemaOption) applyEnqueue(o *enqueueOptions) { o.schema = string(s) }
func (s SchemaOption) applyMigrate(o *migrateOptions) { o.schema = string(s) }
func (s SchemaOption) applyJob(o *jobOptions)         { o.schema = string(s) }
