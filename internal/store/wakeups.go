package store

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// Enqueues send their NOTIFY only when it can wake something: when a live client's
// dispatcher of the queue waits for one (migration 006 has the protocol, and its wake
// function the producers' side; migration 012 the wait locks, which spare producers the
// look at the tables while nothing waits). These are the dispatchers' side: a claim marks
// its dispatcher busy ([dispatcher.ClaimRequest].Busy) and releases its wait lock, and a
// busy dispatcher that runs out of work calls [Client.Wait] before it sleeps.

type queueClientParams struct {
	Queue  pgtype.Text `db:"queue"` // NULL: every queue
	Client string      `db:"client"`
}

type queuesClientParams struct {
	Queues []string `db:"queues"`
	Client string   `db:"client"`
}

type writersParams struct {
	Schema string `db:"schema"`
}

type vxidsParams struct {
	VXIDs []string `db:"vxids"`
}

// Register readies the client's dispatchers to be woken, before any of them claims: it
// takes the client's wait locks (see [Client.HoldWaitLocks]), records the client's
// heartbeat (so that enqueues count it as live) and forgets what an earlier life under the
// same id left of its dispatchers (every dispatcher of a starting client waits for work).
// Producers that looked for a live client before it may still commit jobs that did not
// wake it: call [Client.AwaitProducers] for every queue, then claim again.
//
// A client that hears no wakeups ([ClientInfo].PollOnly) instead records its dispatchers of
// the queues it names as never waiting, so that enqueues do not notify for its sake; its
// claims keep the rows of the queues of its groups so ([Client.Claim]).
func (c *Client) Register(ctx context.Context, ttl time.Duration) error {
	if c.locks != nil {
		if err := c.locks.Hold(ctx, c.initialWaitLocks()...); err != nil {
			return err
		}
	}
	if _, err := c.Renew(ctx, nil, ttl); err != nil {
		return err
	}
	if _, err := c.s.q.forgetDispatchers.exec(ctx, c.db, queueClientParams{Client: c.info.ID}); err != nil {
		return fmt.Errorf("forget the dispatchers of an earlier client %s: %w", c.info.ID, err)
	}
	if !c.info.PollOnly {
		return nil
	}
	var named []string
	for _, q := range c.info.Queues {
		if !IsGroup(q) {
			named = append(named, q)
		}
	}
	if _, err := c.s.q.dispatchersPoll.exec(ctx, c.db, queuesClientParams{Queues: named, Client: c.info.ID}); err != nil {
		return fmt.Errorf("record that the dispatchers of client %s poll: %w", c.info.ID, err)
	}
	return nil
}

// Wait takes the wait lock of queue, records that the client's dispatcher of it, busy
// until now, waits for a wakeup, and returns once every producer that may have seen it
// busy has ended: from then on an enqueue into queue either notifies, or committed before
// the dispatcher's next claim ([dispatcher.Config].Wait). It calls progress each time some
// of them have ended.
func (c *Client) Wait(ctx context.Context, queue string, progress func()) error {
	if c.perQueue {
		if err := c.locks.Hold(ctx, queue); err != nil {
			return err
		}
	}
	if _, err := c.s.q.dispatcherWaits.exec(ctx, c.db, queueClientParams{Queue: pgtype.Text{String: queue, Valid: true}, Client: c.info.ID}); err != nil {
		return fmt.Errorf("record that the dispatcher of queue %q waits: %w", queue, err)
	}
	return c.AwaitProducers(ctx, queue, progress)
}

// Retired forgets the client's dispatcher of queue, which has stopped: enqueues then wake
// the client, which starts another.
func (c *Client) Retired(ctx context.Context, queue string) error {
	if _, err := c.s.q.forgetDispatchers.exec(ctx, c.db, queueClientParams{Queue: pgtype.Text{String: queue, Valid: true}, Client: c.info.ID}); err != nil {
		return fmt.Errorf("forget the dispatcher of queue %q: %w", queue, err)
	}
	return nil
}

// Producers rarely hold their transactions for long: AwaitProducers looks again soon, then
// less often, up to awaitProducersMax apart, which bounds how late it notices the last one
// end (and so how late that producer's job starts).
const (
	awaitProducersFirst = 200 * time.Microsecond
	awaitProducersMax   = 20 * time.Millisecond
)

// AwaitProducers waits until every transaction that writes to the jobs table now has
// ended, calling progress (if not nil) each time some have: among them are the producers
// that may have looked at queue (at any queue, if queue is "") before now, unannounced. It
// takes no lock, so producers never wait for it, nor it for producers that come later.
func (c *Client) AwaitProducers(ctx context.Context, queue string, progress func()) error {
	var holders []string
	if err := c.s.q.writers.queryRow(ctx, c.db, writersParams{Schema: c.s.schema}).Scan(&holders); err != nil {
		return fmt.Errorf("list the producers of queue %q: %w", queue, err)
	}
	pause := awaitProducersFirst
	for len(holders) > 0 {
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, awaitProducersMax)
		var running []string
		if err := c.s.q.stillRunning.queryRow(ctx, c.db, vxidsParams{VXIDs: holders}).Scan(&running); err != nil {
			return fmt.Errorf("wait for the producers of queue %q: %w", queue, err)
		}
		before := len(holders)
		holders = slices.DeleteFunc(holders, func(h string) bool { return !slices.Contains(running, h) })
		if len(holders) < before && len(holders) > 0 && progress != nil {
			progress()
		}
	}
	return nil
}

// HoldWaitLocks makes the client hold its wait locks through the [WaitLocks] it returns,
// which the caller runs ([WaitLocks.Run]) until the client stops: from [Client.Register]
// on, the lock of each queue whose dispatcher may wait (all of them at first;
// [Client.Wait] takes a lock again, and a claim that marks its dispatcher busy releases
// it), or, for a client that serves groups of queues, the lock of [GroupsWaitLock] for
// its whole life. Without it, enqueues find no wait lock held for the client and wake it
// only through others' locks: a client that hears wakeups must hold them. The connection
// also holds the client's client lock, so that wakeups are addressed to it (migration
// 015), on [Store.ClientChannel]. Call it before Register.
func (c *Client) HoldWaitLocks(cfg WaitLocksConfig) *WaitLocks {
	cfg.ClientID = c.info.ID
	c.locks = c.s.WaitLocks(cfg)
	c.perQueue = !slices.ContainsFunc(c.info.Queues, IsGroup)
	return c.locks
}

// initialWaitLocks are the locks a client holds from its start: those of its queues, or
// that of every queue when it serves groups, whose queues are not known beforehand. Only
// dispatchers of groups retire, so a client with a lock per queue never drops one for good.
func (c *Client) initialWaitLocks() []string {
	if c.perQueue {
		return c.info.Queues
	}
	return []string{GroupsWaitLock}
}

// busied releases the wait lock of queue after a claim that marked its dispatcher busy.
func (c *Client) busied(queue string) {
	if c.perQueue {
		c.locks.Release(queue)
	}
}

// IsGroup reports whether a queue a client serves ([ClientInfo].Queues, relay.Config.Queues)
// names a group of queues: a prefix ending in '*'.
func IsGroup(queue string) bool { return strings.HasSuffix(queue, "*") }
