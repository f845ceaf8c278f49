package relay

import (
	"time"
)

// Defaults used when a job or client does not say otherwise.
const (
	DefaultSchema       = "relay"
	DefaultQueue        = "default"
	DefaultMaxAttempts  = 20
	DefaultWorkers      = 100
	DefaultPollInterval = 2 * time.Second
	// MaxNameLen is the longest kind or queue name, in bytes.
	MaxNameLen = 128
)

// EnqueueOption changes how [Enqueue] and [EnqueueMany] insert a job.
type EnqueueOption interface{ applyEnqueue(*enqueueOptions) }

// MigrateOption changes what [Migrate] and [MigrationSQL] work on.
type MigrateOption interface{ applyMigrate(*migrateOptions) }

type enqueueOptions struct {
	schema      string
	queue       string
	runAt       time.Time
	maxAttempts int
}

type migrateOptions struct{ schema string }

func defaultEnqueueOptions() enqueueOptions {
	return enqueueOptions{schema: DefaultSchema, queue: DefaultQueue, maxAttempts: DefaultMaxAttempts}
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

// MaxAttempts sets how many times the job may be attempted before it is failed for good
// (default [DefaultMaxAttempts]); it must be at least 1.
func MaxAttempts(n int) EnqueueOption { return maxAttemptsOption(n) }

type maxAttemptsOption int

func (n maxAttemptsOption) applyEnqueue(o *enqueueOptions) { o.maxAttempts = int(n) }

// Schema selects the PostgreSQL schema relay's tables live in (default [DefaultSchema]).
// It is both an [EnqueueOption] and a [MigrateOption]; a [Client] takes it from
// [Config].Schema. Independent relay instances can share one database in different schemas.
func Schema(name string) SchemaOption { return SchemaOption(name) }

// SchemaOption is the option made by [Schema].
type SchemaOption string

func (s SchemaOption) applyEnqueue(o *enqueueOptions) { o.schema = string(s) }
func (s SchemaOption) applyMigrate(o *migrateOptions) { o.schema = string(s) }
