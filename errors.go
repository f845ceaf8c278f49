package relay

import (
	"errors"

	"github.com/relayq/relay/internal/store"
)

// Errors that callers can test for with [errors.Is].
var (
	// ErrAlreadyStarted is returned by [Client.Start] on a running client, and by [Handle]
	// once the client has started: register every handler before Start.
	ErrAlreadyStarted = errors.New("relay: client already started")
	// ErrClientStopped is returned by [Client.Start] after [Client.Stop]: a Client runs
	// once; make a new one to start again.
	ErrClientStopped = errors.New("relay: client was stopped; create a new client with relay.New to start again")
	// ErrDuplicateKind is returned by [Handle] when the kind's name already has a handler.
	ErrDuplicateKind = errors.New("relay: kind already has a handler")
	// ErrNoHandlers is returned by [Client.Start] when no handler was registered.
	ErrNoHandlers = errors.New("relay: no handlers registered; call relay.Handle before Start")
	// ErrNotMigrated is returned by [Client.Start] when the schema is missing or older than
	// this version of relay needs, and by [Enqueue] and [EnqueueMany] when a statement
	// finds a table or function of the schema missing. Run [Migrate] or `relay migrate
	// --apply`.
	ErrNotMigrated = errors.New("relay: schema is not migrated")
	// ErrInvalidJob is returned by [Enqueue] and [EnqueueMany] for a job that cannot be
	// inserted: a zero [Kind]; a kind or queue name that is empty, longer than
	// [MaxNameLen] or not storable text (a NUL byte, bytes that are not UTF-8); an order or
	// unique key likewise; invalid options (a count out of range, a [RunAt] past
	// PostgreSQL's latest time); args over their size limit (with [ErrTooLarge]). It is
	// returned before anything is sent to the database: nothing is inserted, and a
	// transaction passed as db is still usable. [Handle] returns it for a kind name it
	// cannot register, and the queue functions ([SetQueue], …) for a queue name, along with
	// [ErrInvalidConfig].
	ErrInvalidJob = errors.New("relay: invalid job")
	// ErrEncodeArgs is returned by [Enqueue] and [EnqueueMany] when args cannot be encoded
	// as JSON that PostgreSQL's jsonb can store (it refuses a string holding \u0000, half a
	// surrogate pair, or a number out of its range). Nothing is inserted, and a transaction
	// passed as db is still usable.
	ErrEncodeArgs = errors.New("relay: cannot encode job args")
	// ErrEncodeValue is returned by [Checkpoint] and [Job.SetOutput] for a value that cannot
	// be encoded as JSON that PostgreSQL's jsonb can store (see [ErrEncodeArgs]); nothing is
	// written.
	ErrEncodeValue = errors.New("relay: cannot encode the value as JSON that PostgreSQL can store")
	// ErrTooLarge is returned for a value over its size limit, before it is sent: args or a
	// []byte payload ([Enqueue], [EnqueueMany]; see [MaxArgsSize]), an output
	// ([Job.SetOutput], [HandleWithOutput]; see [Config].MaxOutputSize) or a checkpoint
	// ([Checkpoint]; see [Config].MaxCheckpointSize). Each limit defaults to
	// [DefaultMaxSize]; the error names the limit and how to change it.
	ErrTooLarge = errors.New("relay: value too large")
	// ErrNilDB is returned by every function that takes a [DB] or [Beginner], and by
	// [Client.Start], when it is nil — also a typed nil, such as a (*pgxpool.Pool)(nil) or a
	// nil pgx.Tx passed in the interface.
	ErrNilDB = errors.New("relay: the database handle is nil")
	// ErrInvalidConfig is returned by [Client.Start] for a configuration it cannot run, by
	// [Handle] for invalid options of a kind, by [Schedule] (and then Start) for a periodic
	// schedule that cannot run, and by the queue functions ([SetQueue], [PauseQueue],
	// [ResumeQueue], [GetQueue]) for invalid settings or queue names.
	ErrInvalidConfig = errors.New("relay: invalid config")
	// ErrInvalidSchema is returned for a schema name PostgreSQL cannot hold.
	ErrInvalidSchema = store.ErrInvalidSchema
	// ErrQueueNotOrdered is returned by [Enqueue] and [EnqueueMany] for a job with an
	// [OrderKey] whose queue is not ordered: declare it with [SetQueue] first. Nothing is
	// inserted, but the statement failed: a transaction it ran in must be rolled back.
	ErrQueueNotOrdered = errors.New("relay: queue is not ordered")
	// ErrUniqueKeyHeld is returned by [Retry] when the job's [Unique] key is now held by
	// another job.
	ErrUniqueKeyHeld = errors.New("relay: another job holds the job's unique key")
)
