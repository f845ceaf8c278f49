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
	// this version of relay needs. Run [Migrate] or `relay migrate --apply`.
	ErrNotMigrated = errors.New("relay: schema is not migrated")
	// ErrInvalidJob is returned by [Enqueue] and [EnqueueMany] for a job that cannot be
	// inserted (a zero [Kind], an empty or over-long kind or queue name, invalid options);
	// nothing is inserted. [Handle] returns it for a kind it cannot register.
	ErrInvalidJob = errors.New("relay: invalid job")
	// ErrEncodeArgs is returned by [Enqueue] and [EnqueueMany] when args cannot be encoded
	// as JSON; nothing is inserted.
	ErrEncodeArgs = errors.New("relay: cannot encode job args")
	// ErrInvalidConfig is returned by [Client.Start] for a configuration it cannot run.
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
