package store

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/relayq/relay/backoff"
)

// Wait locks (migration 012) tell producers, through the lock manager, which queues may
// have a waiting dispatcher: a producer that finds a queue's wait lock free, and that of
// [GroupsWaitLock], skips the look at the tables that decides whether to notify. A client
// holds the wait lock of a queue from before its dispatcher commits "waiting" until a claim
// marks it busy again ([Client.Wait], [dispatcher.ClaimRequest].Busy), so a producer never
// skips the tables for a dispatcher that waits.

// GroupsWaitLock names the wait lock held by a client that serves groups of queues: it
// makes every producer ask the tables, which know the queues of each group.
const GroupsWaitLock = "*"

// defaultLockTimeout is WaitLocksConfig.LockTimeout's default.
const defaultLockTimeout = 10 * time.Second

type waitLocksParams struct {
	Queues []string `db:"queues"`
}

// WaitLocksConfig configures [Store.WaitLocks].
type WaitLocksConfig struct {
	// Connect opens the dedicated connection that holds the locks: a direct one, as the
	// listener's (a pooler in transaction mode would lend the session to others).
	Connect func(ctx context.Context) (*pgx.Conn, error)
	// Retaken runs each time the locks are held again after the connection was lost: jobs
	// committed meanwhile may not have woken anything, so every dispatcher should look
	// again, once the producers that looked meanwhile have ended ([Client.AwaitProducers]).
	Retaken func()
	// Lost runs when a connection that held the locks fails, and at each failed attempt
	// to make it again: until Retaken, which always follows, enqueues find the locks free
	// and wake nothing, and the client's dispatchers must look for work themselves. A
	// first connection that fails before any lock was held is not a loss (Hold has not
	// returned yet).
	Lost func()
	// LockTimeout bounds how long taking wait locks may wait (default 10 s): a producer
	// holds one exclusively only while it tries it, so a longer wait means a session that
	// failed to let go of one. The connection is then made again, and the error logged.
	LockTimeout time.Duration
	// ClientID, if set, is the client whose client lock the connection holds too (migration
	// 015): producers address wakeups only to clients that hold theirs.
	ClientID string
	Logger   *slog.Logger
}

// WaitLocks holds a client's wait locks on a connection of its own. Create it with
// [Store.WaitLocks], run it with [WaitLocks.Run], and say which locks to hold with
// [WaitLocks.Hold] and [WaitLocks.Release]; it takes them again after every reconnect.
type WaitLocks struct {
	s       *Store
	cfg     WaitLocksConfig
	retries backoff.Policy

	mu      sync.Mutex
	want    map[string]bool // the queues whose locks should be held
	held    map[string]bool // the queues whose locks the connection holds now
	changed chan struct{}   // closed, and replaced, when locks are taken
	// clientLocked: the connection holds the client lock (ClientID); clientRefused: a try
	// on it failed (said once per connection). Written by Run's goroutine only.
	clientLocked, clientRefused bool
	kick                        chan struct{} // capacity 1: want changed
	// recovered ends the pause before reconnecting (Recover).
	recovered backoff.Signal
}

// WaitLocks returns the holder of a client's wait locks.
func (s *Store) WaitLocks(cfg WaitLocksConfig) *WaitLocks {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.LockTimeout <= 0 {
		cfg.LockTimeout = defaultLockTimeout
	}
	return &WaitLocks{
		s: s, cfg: cfg,
		retries: backoff.Policy{Initial: 50 * time.Millisecond, Multiplier: 2, Max: 2 * time.Second, Jitter: 0.2},
		want:    map[string]bool{}, held: map[string]bool{},
		changed: make(chan struct{}), kick: make(chan struct{}, 1), recovered: backoff.NewSignal(),
	}
}

// Recover tells the holder that the database answers again: if it is waiting to
// reconnect, it reconnects at once, with its backoff reset, as the client's other services
// do. After an outage that wait had grown to up to 2 s, and until the locks are held again
// producers skip the client's waiting dispatchers: one worker process of the chaos suite
// went 1.65 s without starting a job after the database came back. It never blocks.
func (w *WaitLocks) Recover() { w.recovered.Send() }

// Hold returns once the wait locks of queues are held, which may be after a reconnect, or
// when ctx ends.
func (w *WaitLocks) Hold(ctx context.Context, queues ...string) error {
	w.mu.Lock()
	wanted := true
	for _, q := range queues {
		wanted = wanted && w.want[q]
		w.want[q] = true
	}
	w.mu.Unlock()
	if !wanted {
		w.poke()
	}
	for {
		w.mu.Lock()
		missing := slices.ContainsFunc(queues, func(q string) bool { return !w.held[q] })
		changed := w.changed
		w.mu.Unlock()
		if !missing {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("take the wait locks of %q: %w", queues, ctx.Err())
		case <-changed:
		}
	}
}

// Release lets go of the wait lock of queue soon. Holding it a while longer only makes
// producers ask the tables.
//
// A dispatcher working through a backlog releases its lock at every claim: only the first
// release wakes the connection, which otherwise idles (interrupting its wait costs a
// deadline on the socket and a round of the loop).
func (w *WaitLocks) Release(queue string) {
	w.mu.Lock()
	wanted := w.want[queue]
	delete(w.want, queue)
	w.mu.Unlock()
	if wanted {
		w.poke()
	}
}

// poke tells the connection that what is wanted changed.
func (w *WaitLocks) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// Run holds the wanted locks until ctx ends, reconnecting when the connection is lost.
func (w *WaitLocks) Run(ctx context.Context) error {
	delays := w.retries.Series()
	lost := false
	for {
		conn, err := w.cfg.Connect(ctx)
		if err == nil {
			err = w.serve(ctx, conn, lost, delays)
			conn.Close(context.WithoutCancel(ctx))
			w.mu.Lock()
			clear(w.held)
			w.mu.Unlock()
			w.clientLocked, w.clientRefused = false, false
			lost = true
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if lost && w.cfg.Lost != nil { // Retaken is called only after a loss, too (serve)
			w.cfg.Lost()
		}
		w.cfg.Logger.Warn("relay: the connection that holds the wait locks failed; reconnecting (enqueues may not wake this client meanwhile: its dispatchers look for work every 100 ms until it is back)", "error", err)
		// A Recover from before this failure, while the connection was fine, only ends this
		// first pause early: one attempt more.
		if err := delays.Wait(ctx, w.recovered.C()); err != nil {
			return err
		}
	}
}

// serve keeps conn's locks as wanted until conn fails or ctx ends. The connection idles
// in WaitForNotification, which returns at once when the server ends the session, and
// which a change of what is wanted interrupts (pgx interrupts it with a deadline, which
// leaves the connection usable).
func (w *WaitLocks) serve(ctx context.Context, conn *pgx.Conn, reconnected bool, delays *backoff.Series) error {
	for first := true; ; first = false {
		if err := w.sync(ctx, conn); err != nil {
			return err
		}
		if first {
			delays.Reset()
			if reconnected && w.cfg.Retaken != nil {
				w.cfg.Retaken()
			}
		}
		idle, stopIdle := context.WithCancel(ctx)
		if w.cfg.ClientID != "" && !w.clientLocked {
			// Refused: whoever holds it may let go, and nothing else may sync for long.
			idle, stopIdle = context.WithTimeout(ctx, clientLockRetry)
		}
		done, exited := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(exited)
			select {
			case <-w.kick:
				stopIdle()
			case <-done:
			}
		}()
		_, err := conn.WaitForNotification(idle)
		close(done)
		<-exited // a poke it took is then one the next sync sees
		poked := idle.Err() != nil
		stopIdle()
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case err != nil && !poked:
			return err
		}
	}
}

// sync takes the wanted locks conn does not hold and releases those no longer wanted,
// until both agree.
func (w *WaitLocks) sync(ctx context.Context, conn *pgx.Conn) error {
	if err := w.takeClientLock(ctx, conn); err != nil {
		return err
	}
	for {
		w.mu.Lock()
		var take, drop []string
		for q := range w.want {
			if !w.held[q] {
				take = append(take, q)
			}
		}
		for q := range w.held {
			if !w.want[q] {
				drop = append(drop, q)
				// Not held from now on: a Hold of q while it is being released must wait
				// for it to be taken again, not return on the lock that is going.
				delete(w.held, q)
			}
		}
		w.mu.Unlock()
		if len(take) == 0 && len(drop) == 0 {
			return nil
		}
		if len(drop) > 0 {
			if _, err := w.s.q.releaseWaitLocks.exec(ctx, conn, waitLocksParams{Queues: drop}); err != nil {
				return fmt.Errorf("release the wait locks of %q: %w", drop, err)
			}
		}
		if len(take) > 0 {
			holdCtx, cancel := context.WithTimeout(ctx, w.cfg.LockTimeout)
			_, err := w.s.q.holdWaitLocks.exec(holdCtx, conn, waitLocksParams{Queues: take})
			cancel()
			if err != nil {
				return fmt.Errorf("take the wait locks of %q (another session may hold one exclusively: see pg_locks): %w", take, err)
			}
			w.mu.Lock()
			for _, q := range take {
				w.held[q] = true
			}
			close(w.changed)
			w.changed = make(chan struct{})
			w.mu.Unlock()
		}
	}
}

// clientLockRetry is how often the connection tries the client lock again while another
// session holds it.
const clientLockRetry = time.Second

// takeClientLock tries to take the client lock, unless conn holds it already. Until it
// does, producers address no wakeup to the client unless that other session, holding it,
// makes it look alive: they wake others, or every client. Another session holds it while
// a client of the same ID runs, or while an earlier connection of this client lingers on
// the server: it is tried again at the next sync, clientLockRetry later at the latest.
func (w *WaitLocks) takeClientLock(ctx context.Context, conn *pgx.Conn) error {
	if w.cfg.ClientID == "" || w.clientLocked {
		return nil
	}
	err := w.s.q.takeClientLock.queryRow(ctx, conn, clientParams{Client: w.cfg.ClientID}).Scan(&w.clientLocked)
	if err != nil {
		return fmt.Errorf("take the client lock of %q: %w", w.cfg.ClientID, err)
	}
	if !w.clientLocked && !w.clientRefused {
		w.clientRefused = true
		w.cfg.Logger.Warn("relay: another session holds this client's lock (a client with the same ID, or this client's earlier connection); until it is free, wakeups go to other clients, or to all",
			"client", w.cfg.ClientID)
	}
	return nil
}
