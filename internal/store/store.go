// Package store is relay's access to its jobs table: the SQL of enqueueing, claiming and
// writing outcomes, bound to one PostgreSQL schema.
//
// It knows jobs but nothing of handlers or the public API. Every method is one round
// trip; statements are plain text so that pgx's statement cache prepares each once per
// connection.
package store

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// DB is what every query runs on: a pgx.Tx, *pgxpool.Pool, *pgxpool.Conn or *pgx.Conn.
type DB interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// BatchDB is a [DB] that also sends batches: a pool, a connection or a transaction.
type BatchDB interface {
	DB
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// MaxSchemaLen is the longest schema name relay accepts: the wakeup channel is the schema
// name behind "relay:" and PostgreSQL truncates identifiers at 63 bytes.
const MaxSchemaLen = 63 - len(channelPrefix)

const channelPrefix = "relay:"

// channelOf is the LISTEN/NOTIFY channel of schema's wakeups.
func channelOf(schema string) string { return channelPrefix + schema }

// ErrInvalidSchema is returned for a schema name PostgreSQL cannot hold.
var ErrInvalidSchema = errors.New("invalid schema name")

// Store runs relay's queries against the tables of one schema.
type Store struct {
	schema  string
	channel string
	names   *strings.Replacer // fills in {schema} and {channel}: see schemaReplacer
	q       queries
	d       deleteQueries
	r       retentionQueries
	p       periodicQueries
	dash    dashboardQueries
	// withoutJIT are the statements sent around one that counts or lists over many jobs.
	withoutJIT *[2]string
	// notified remembers, for queues by a hash of their names, whether the last job
	// inserted alone notified: Insert then sends insertHandedOff. It is a guess shared by
	// every pool that uses the schema's name in the process: queues that share a slot,
	// or databases that share the name, only make the choice worse, never wrong, as
	// both statements end the same.
	notified [queueSlots]atomic.Bool
}

// stores memoises one Store per schema name. A Store's statements never change, and its
// one mutable part (notified) is a guess kept in atomics, so sharing it between clients
// and calls is safe; the map only saves rebuilding query text on every Enqueue.
var stores sync.Map // schema name → *Store

// For returns the Store for schema, building it on first use.
func For(schema string) (*Store, error) {
	if s, ok := stores.Load(schema); ok {
		return s.(*Store), nil
	}
	if err := ValidateSchema(schema); err != nil {
		return nil, err
	}
	names := schemaReplacer(schema)
	s := &Store{schema: schema, channel: channelOf(schema), names: names, q: buildQueries(names),
		d: buildDeleteQueries(names), r: buildRetentionQueries(names), p: buildPeriodicQueries(names),
		dash: buildDashboardQueries(names)}
	s.planAround()
	actual, _ := stores.LoadOrStore(schema, s)
	return actual.(*Store), nil
}

// planAround puts the statements that need it between two that set how they are planned
// (see planByIndex and planWithoutJIT in queries.sql), from every file of statements.
func (s *Store) planAround() {
	byIndex := &[2]string{s.q.planByIndex.sql, s.q.restorePlan.sql}
	for _, st := range s.byIndex() {
		st.setAround(byIndex)
	}
	// Statements that count or list over many jobs; CountJobs, QueueDepths and ListJobs,
	// which are assembled per call, take withoutJIT themselves.
	s.withoutJIT = &[2]string{s.q.planWithoutJIT.sql, s.q.restoreJIT.sql}
	s.dash.queues.setAround(s.withoutJIT)
	s.dash.throughput.setAround(s.withoutJIT)
}

// aroundable is a statement that can be sent between two others.
type aroundable interface {
	setAround(*[2]string)
	text() string
}

// byIndex are the statements that find jobs by id or unique key, some in the caller's
// transaction: they go between planByIndex and restorePlan.
func (s *Store) byIndex() []aroundable {
	return []aroundable{
		&s.q.completeTx, &s.q.checkpoint, &s.q.setOutput, &s.q.endedBy, &s.q.getJob, &s.q.cancel, &s.q.retry,
		&s.q.insertUnique, &s.q.commitJobs, &s.q.extendReservations, &s.q.renewLocked, &s.d.deleteJob,
	}
}

// ValidateSchema reports whether name can be used as relay's schema.
func ValidateSchema(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: it is empty", ErrInvalidSchema)
	case len(name) > MaxSchemaLen:
		return fmt.Errorf("%w: %q is %d bytes long, the limit is %d", ErrInvalidSchema, name, len(name), MaxSchemaLen)
	case !utf8.ValidString(name):
		return fmt.Errorf("%w: %q is not valid UTF-8", ErrInvalidSchema, name)
	}
	for _, r := range name {
		if r == 0 {
			return fmt.Errorf("%w: %q holds a NUL byte", ErrInvalidSchema, name)
		}
	}
	return nil
}

// Schema is the schema name this Store works in.
func (s *Store) Schema() string { return s.schema }

// Channel is the LISTEN/NOTIFY channel on which this schema's wakeups travel.
func (s *Store) Channel() string { return s.channel }

// ClientChannel is the channel on which client id hears the wakeups addressed to it
// (migration 015's client_channel): short enough for a channel name, whatever the lengths
// of the schema's name and of id.
func (s *Store) ClientChannel(id string) string {
	sum := md5.Sum([]byte(s.channel + ":" + id))
	return "relay-client:" + hex.EncodeToString(sum[:])
}

// Table returns the quoted, schema-qualified name of one of relay's tables.
func (s *Store) Table(name string) string { return pgx.Identifier{s.schema, name}.Sanitize() }
