// Package relay runs background jobs out of PostgreSQL: durable, transactional and fast,
// with no second piece of infrastructure.
//
// # Kinds, handlers and producers
//
// A kind of job is declared once, with the Go type of its args ([NewKind]), and used by the
// handler and by every producer, so that they agree at compile time: enqueueing args of
// another type does not compile.
//
//	type EmailArgs struct{ To, Subject string }
//
//	var SendEmail = relay.NewKind[EmailArgs]("email")
//
// A worker registers a handler per kind on a [Client] and starts it with the application's
// *pgxpool.Pool:
//
//	c := relay.New(relay.Config{Logger: logger})
//	err := relay.Handle(c, SendEmail, func(ctx context.Context, job *relay.Job[EmailArgs]) error {
//		return send(ctx, job.Args)
//	})
//	if err != nil { ... }
//	if err := c.Start(ctx, pool); err != nil { ... }
//	defer c.Stop(shutdownCtx)
//
// A producer enqueues inside its own transaction ([Enqueue], [EnqueueMany]): the job
// exists, and a worker is woken, only when that transaction commits, and not at all if it
// rolls back. No client needs to be running; jobs wait in the table.
//
//	id, err := relay.Enqueue(ctx, tx, SendEmail, EmailArgs{To: "a@example.com"})
//
// Producers in other languages, triggers and scripts enqueue the same way in SQL, with the
// same checks and semantics: the functions enqueue and enqueue_many in relay's schema
// (SELECT id, duplicate FROM relay.enqueue('email', '{"to": "a@example.com"}', queue =>
// 'mail')), described in the README.
//
// # How a job flows
//
//  1. Enqueue inserts a row in state pending, in the caller's transaction, and sends a
//     NOTIFY on the schema's channel in the same transaction.
//  2. Each client keeps one LISTEN connection (package [github.com/relayq/relay/listener])
//     and routes every wakeup to the dispatcher of its queue (package
//     [github.com/relayq/relay/dispatcher]). A dispatcher claims as many due jobs as it
//     has free workers, most urgent first, in one statement with FOR UPDATE SKIP LOCKED:
//     each job is claimed by one client, and leased to it for [Config].LeaseTTL. Polling
//     ([Config].PollInterval) only covers wakeups lost while no connection listened.
//     Behind a pooler in transaction mode, where LISTEN hears nothing, the listener
//     connects to PostgreSQL itself ([Config].ListenerConnString), or the client polls
//     without one ([Config].PollOnly); a listener that hears nothing is reported.
//  3. The handler runs on a worker goroutine with a context that ends on timeout,
//     cancellation ([Cancel]), lost lease or shutdown. One keep-alive ticker per client
//     renews the leases of all its running jobs in one statement; that tick is its
//     heartbeat (package [github.com/relayq/relay/lease]).
//  4. What the handler returns decides the outcome: nil succeeds; an error retries with
//     backoff (package [github.com/relayq/relay/backoff]) until [MaxAttempts] is used up;
//     [Discard], [Snooze] and [RetryAfter] say otherwise; a panic is recorded with its
//     stack. Outcomes are written in batches, and only while the attempt still holds the
//     job, so a late handler never overwrites the work of another.
//  5. A client that dies stops renewing; every client runs a rescuer that retries the
//     jobs of expired leases, each exactly once, within LeaseTTL of the last heartbeat.
//  6. When the database fails, every part of the client retries with backoff; the first
//     statement that gets through again (often the listener's reconnect) makes all of them
//     carry on at once. An attempt that failed only because its connection did is an
//     infrastructure fault ([ReasonInfrastructure]): retried at once and not counted. The
//     client's own statements get connections of their own while the application holds
//     every connection of its pool ([Config].ReservedConns).
//
// Queues ([Queue], [QueueConfig]) are lanes with their own workers; [SetQueue] makes one
// ordered by key, blocking on failure, or limited cluster-wide, and [PauseQueue] pauses it
// on every client. Jobs can be scheduled ([RunAt]), prioritised ([Priority]), made
// unique ([Unique]) and given a retry policy of their own ([Backoff]).
//
// A producer can reserve a job's place before it knows whether the work goes ahead
// ([Reserved]): the job is held — its ordered key waits behind it, its unique key is
// taken — until the producer commits it in a later transaction ([CommitJobs]), or its
// deadline passes and it ends cancelled with reason [ReasonExpired], never having run.
// Every client expires lapsed reservations, each exactly once, within milliseconds of the
// deadline. A handler's error can carry structured data ([ErrorData], [DataError]),
// recorded as JSON with its attempt ([Attempt].Data, [Attempt.DecodeData]).
//
// Periodic jobs are registered like handlers ([Schedule], with [Cron] or [Every]), and
// finished jobs are deleted once their retention has passed ([Config].Retention); every
// client does both, with no leader, and the database keeps one job per slot. Operators
// delete jobs ([DeleteJob]) or act on every job a filter selects ([DeleteJobs],
// [RetryJobs], [CancelJobs]).
//
// Middleware wraps every handler ([Config].Middleware, or a kind's, as a [HandleOption]) and
// every enqueue ([EnqueueMiddleware]) with a view of the job that does not depend on its
// args type ([JobInfo], [EnqueueInfo]); jobs carry a small [Metadata] set at enqueue.
// Package [github.com/relayq/relay/relayotel] builds OpenTelemetry traces and metrics on
// them, on committed outcomes ([Client.Observe]) and on [QueueDepths].
//
// # Delivery semantics
//
// Delivery is at least once: every committed job runs to an outcome, however processes,
// connections or the database fail, and no job is lost. A handler can run more than once
// for one job when its process dies (or loses the database for longer than its lease)
// after it started. Effects in the same database happen exactly once when the handler
// does them and calls [CompleteTx] in one transaction; other effects should be idempotent,
// keyed by the job's id. [Checkpoint] saves progress that the next attempt resumes from.
//
// # Where each concern lives
//
//   - This package: the public API, the client's wiring, enqueueing, handling, outcomes,
//     validation of everything before it reaches the database ([ErrInvalidJob],
//     [ErrNilDB], [ErrTooLarge] …), listing ([ListJobs], [CountJobs]) and operator actions.
//   - [github.com/relayq/relay/dispatcher]: one queue's claim loop, worker slots and the
//     fair share of a client-wide limit. It claims through a [dispatcher.Claimer].
//   - [github.com/relayq/relay/lease]: lease renewal (the heartbeat), rescue, and the
//     expiry of lapsed reservations, through a [lease.Renewer] and functions relay gives. Neither package imports relay; relay implements their interfaces.
//   - [github.com/relayq/relay/listener] and [github.com/relayq/relay/backoff]: a LISTEN
//     connection that reconnects, and retry delays; they know nothing of jobs.
//   - internal/store: all SQL, in .sql files bound to one schema; internal/outcome: the
//     batching outcome writer; internal/fleet: worker processes for the chaos suite
//     (go run ./chaos), which injects faults and checks what became of every job.
//   - Add-ons built on the public API: [github.com/relayq/relay/relaytest] (test helpers:
//     a database per test), [github.com/relayq/relay/relayui] (the operators' dashboard),
//     [github.com/relayq/relay/relayotel] (OpenTelemetry), and the relay command
//     (migrations, queues, jobs, the dashboard).
//
// Everything relay stores lives in one PostgreSQL schema ("relay" by default; [Schema]),
// created and upgraded by [Migrate]. The README has the full story, with measured
// performance.
package relay
