// Package fleet runs relay clients in worker processes of their own, as a deployment of
// several pods would: the chaos suite kills, partitions and starves them, and the
// benchmark can spread workers over processes with it.
//
// A program that starts workers calls [Main] first thing in its main function: a worker is
// the same binary started again by [Start], with its [Spec] in the environment, and Main
// runs it instead of the program. The worker opens a pool on the database, starts a relay
// client with a handler for [Kind] and says "ready" on stdout; it stops its client
// gracefully when it reads "stop" on stdin, and exits at once when its stdin closes (its
// parent is gone). Its relay log goes to stderr.
//
// What a job does is in its args ([Work]): work for a while, then leave an effect in a
// table — with a plain INSERT (at least once) or in the transaction that calls
// relay.CompleteTx (exactly once) — so that the database tells how often each ran.
package fleet

import (
	"time"

	"github.com/relayq/relay"
)

// Spec is what a worker process runs: its client's configuration and where it connects.
type Spec struct {
	URL    string `json:"url"`    // the database, as pgxpool.ParseConfig takes it
	Schema string `json:"schema"` // relay's schema
	// ID is the client's ID; App the application_name of its pool's connections, by which
	// the parent finds them in pg_stat_activity (its listener's is
	// relay.ListenerApplicationName(ID)).
	ID  string `json:"id"`
	App string `json:"app"`
	// PoolConns is the MaxConns of the pool the handlers and the client share.
	PoolConns int32  `json:"pool_conns"`
	Queue     string `json:"queue"`
	Workers   int    `json:"workers"`
	// Clients is how many relay clients the process runs, each with Workers workers, all
	// on its one pool; 0 means 1. The first has ID, the others ID-2, ID-3 and so on.
	Clients int `json:"clients,omitempty"`
	// LeaseTTL and LeaseRenewal are the client's; zero: relay's defaults.
	LeaseTTL     time.Duration `json:"lease_ttl"`
	LeaseRenewal time.Duration `json:"lease_renewal"`
	// Effects is the schema-qualified, quoted table handlers write their effects to (see
	// [EffectsTable]); needed only by jobs that leave one.
	Effects string `json:"effects"`
	// Debug logs relay's debug records too.
	Debug bool `json:"debug"`
}

// Work is the args of a fleet job: what its handler does.
type Work struct {
	// Ms is how long the handler works, in milliseconds, before its effect.
	Ms int `json:"ms"`
	// Effect is what it leaves: EffectPlain, EffectTx, or nothing.
	Effect string `json:"e,omitempty"`
	// Hold makes the handler hold a connection of the pool, in an open transaction, while
	// it works: an application that keeps its pool busy.
	Hold bool `json:"h,omitempty"`
	// Stubborn makes the handler ignore its context: it works its time out and leaves its
	// effect even after its context ended (a stuck handler, or one that does not check).
	Stubborn bool `json:"s,omitempty"`
}

// Effects a job can leave.
const (
	// EffectPlain: an INSERT on the pool once the work is done, then success: at least once.
	EffectPlain = "plain"
	// EffectTx: the INSERT and relay.CompleteTx in one transaction: exactly once.
	EffectTx = "tx"
)

// Kind is the kind of every fleet job.
var Kind = relay.NewKind[Work]("fleet")

// EffectsTable is the statement that creates the table effects are written to, given its
// quoted, schema-qualified name: one row per effect, with the attempt and the client that
// left it.
func EffectsTable(name string) string {
	return `CREATE TABLE ` + name + ` (job_id bigint NOT NULL, attempt int NOT NULL, mode text NOT NULL,
		client text NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())`
}
