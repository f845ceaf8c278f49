package store

import (
	"context"
	"time"

	"github.com/jackc/pgx/v5"
)

// ClientInfo is what describes a client to the database: its claims and its heartbeat.
type ClientInfo struct {
	ID       string
	Lease    time.Duration // how long a claim leases a job for
	Queues   []string      // what the client serves, as its heartbeat reports it
	Kinds    []string      // the kinds the client runs
	Attempts []int32       // each kind's default max attempts, aligned with Kinds
	// Schedules are the names of the periodic schedules the client has, as its heartbeat
	// reports them.
	Schedules []string
	// PollOnly: the client hears no wakeups and claims every poll interval instead, so
	// its dispatchers never wait for one (see [Client.Register]).
	PollOnly bool
}

// Client is one client's access to the jobs table: it claims for the client's dispatchers
// (it is a [dispatcher.Claimer]), renews the client's leases (a [lease.Renewer]) and
// rescues expired ones ([lease.RescuerConfig].Rescue), binding the database and what
// describes the client. Create it with [Store.Client].
type Client struct {
	s     *Store
	db    ClientDB
	info  ClientInfo
	locks *WaitLocks // nil: none (see Client.HoldWaitLocks)
	// perQueue: locks holds a wait lock per queue, for a client that serves no group
	// (one that does holds GroupsWaitLock instead, whatever its dispatchers do).
	perQueue bool
}

// ClientDB is what a client's claims, renewals and rescues run on: a pool, since a claim
// must commit on its own and waiting for a locked row needs a transaction of its own.
type ClientDB interface {
	DB
	Beginner
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// Client returns the access of the client that info describes, on db.
func (s *Store) Client(db ClientDB, info ClientInfo) *Client {
	return &Client{s: s, db: db, info: info}
}
