package store

import (
	"sync"
	"sync/atomic"
	"time"
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
	// SharedSlots: the client's running jobs are limited client-wide (relay's
	// Config.MaxWorkers), and its claims share those slots fairly between its queues. It is
	// handed no job (migration 016): one that came while every slot was taken would be given
	// back, and the queue's claim that followed would lose its turn to a busier queue.
	SharedSlots bool
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
	strays   straysPasses
	// deaf: the client's listener hears no notifications, so it refuses hand-offs
	// (see RefuseHandOffs).
	deaf atomic.Bool
}

// ClientDB is what a client's claims, renewals and rescues run on: a pool, since a claim
// must commit on its own and waiting for a locked row needs a transaction of its own.
type ClientDB interface {
	BatchDB
	Beginner
}

// Client returns the access of the client that info describes, on db.
func (s *Store) Client(db ClientDB, info ClientInfo) *Client {
	return &Client{s: s, db: db, info: info}
}

// Kinds are the kinds the client handles, sorted.
func (c *Client) Kinds() []string { return c.info.Kinds }

// straysEvery is how often a client's claims of one gated queue look for its strays (see
// claimGated): a scan of the queue's unfinished jobs, which on every claim cost an ordered
// queue 15 % of its hand-off rate for ten minutes after each change of its settings.
const straysEvery = time.Second

// straysPasses is when this client's claims of each gated queue last looked for strays.
type straysPasses struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// due reports whether a claim of queue made at now should look for strays, and if so
// counts it as done: at most one claim per straysEvery does.
func (p *straysPasses) due(queue string, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if last, ok := p.last[queue]; ok && now.Sub(last) < straysEvery {
		return false
	}
	if p.last == nil {
		p.last = map[string]time.Time{}
	}
	if len(p.last) >= straysForgetAt {
		// Dynamic queues come and go for months: a pass older than straysEvery counts as
		// none, so forgetting it changes nothing.
		for q, last := range p.last {
			if now.Sub(last) >= straysEvery {
				delete(p.last, q)
			}
		}
	}
	p.last[queue] = now
	return true
}

// straysForgetAt is how many queues' passes a client remembers before it forgets those
// that no longer count.
const straysForgetAt = 64
