package relay

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/relayq/relay/dispatcher"
	"github.com/relayq/relay/internal/lifecycle"
	"github.com/relayq/relay/internal/outcome"
	"github.com/relayq/relay/internal/store"
	"github.com/relayq/relay/lease"
	"github.com/relayq/relay/listener"
)

// cancelGrace is how long Stop waits for handlers to return once their context is
// cancelled. A handler that ignores its context is abandoned after it: its job stays
// running in the table until its lease expires and another client retries it.
const cancelGrace = 5 * time.Second

// probeTimeout is how long the listener's probe may take to arrive before the client
// warns that its listener hears nothing: a NOTIFY arrives within milliseconds, but the
// machine may be busy.
const probeTimeout = 5 * time.Second

// Client runs the jobs of the kinds registered with [Handle] from the queues in its
// [Config]. Create it with [New]; it holds no global state, so any number of clients can
// share a process. A Client is started once and stopped once.
type Client struct {
	cfg      Config
	store    *store.Store
	handlers map[string]handler
	// schedules are the periodic schedules registered with Schedule; scheduleErrs the
	// registrations it refused, which Start reports too.
	schedules    []*schedule
	scheduleErrs []error

	mu          sync.Mutex
	state       clientState
	stopped     chan struct{} // closed when Stop has finished
	queues      serving
	writer      *outcome.Writer
	writerSvc   *lifecycle.Service
	keeper      *lease.Keeper
	handOffs    handOffs // jobs handed off to the client by their producers
	registered  bool     // Start recorded the client in the clients table: it may be handed jobs
	keeperSvc   *lifecycle.Service
	rescuerSvc  *lifecycle.Service
	expirer     *lease.Expirer
	expirerSvc  *lifecycle.Service
	finderSvc   *lifecycle.Service // finds queues of groups with work; nil without groups
	watchSvc    *lifecycle.Service // warns of jobs no live client can run
	reviverSvc  *lifecycle.Service // see reviveAfterLapses
	jobs        *store.Client      // the client's claims, renewals and wakeups
	lapsed      chan struct{}      // capacity 1: a renewal found the heartbeat had lapsed
	lookAgain   chan struct{}      // capacity 1: findQueues looks at once, not at its next tick
	schedSvc    *lifecycle.Service // enqueues periodic jobs; nil without schedules
	prunerSvc   *lifecycle.Service // deletes expired jobs and clients
	pruner      *pruner
	listenerSvc *lifecycle.Service
	// waitLocksSvc holds the client's wait locks, waitLocks (see store.WaitLocks); nil when
	// PollOnly.
	waitLocksSvc *lifecycle.Service
	waitLocks    atomic.Pointer[store.WaitLocks] // read by databaseBack, from any service
	// unlocked: the connection holding the wait locks is lost (see pollWhileUnlocked).
	unlocked     atomic.Bool
	unlockedWake chan struct{} // capacity 1
	unlockedSvc  *lifecycle.Service
	rescuer      *lease.Rescuer
	pool         *pgxpool.Pool
	conns        *conns            // what the client's own statements run on
	recovery     *recovery         // tells the services when the database is back
	backlogFull  atomic.Bool       // a dispatcher found no room for outcomes and waits for a nudge
	slots        *dispatcher.Slots // the client-wide limit; nil without MaxWorkers
	listens      atomic.Int64      // times the listener has begun listening
	events       eventHub
	work         context.Context // handlers' context; cancelled when Stop gives up waiting
	cancelWork   context.CancelFunc

	unhandledEvery time.Duration // how often watchUnhandled looks; tests shorten it
	probeTimeout   time.Duration // how long the listener's probe may take; tests shorten it
}

type clientState int

const (
	stateNew clientState = iota
	stateRunning
	stateStopping
	stateStopped
)

// New returns a client for cfg. Invalid configuration is reported by [Client.Start].
func New(cfg Config) *Client {
	return &Client{cfg: cfg, handlers: map[string]handler{}, stopped: make(chan struct{}), unhandledEvery: unhandledCheck,
		probeTimeout: probeTimeout}
}

// ID is the client's identifier, recorded as attempted_by on the jobs it claims and as
// part of the application_name of its listener connection. It is set by Start.
func (c *Client) ID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cfg.ID
}

// handler is a registered kind: its typed handler and how to run it.
type handler struct {
	run runner
	kindConfig
	chain JobFunc // run wrapped in middleware; nil without any
}

func (c *Client) register(kind string, k kindConfig, run runner) error {
	if err := validateName("kind", kind); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != stateNew {
		return fmt.Errorf("%w: register the handler of %q before Start", ErrAlreadyStarted, kind)
	}
	if _, dup := c.handlers[kind]; dup {
		return fmt.Errorf("%w: %q", ErrDuplicateKind, kind)
	}
	c.handlers[kind] = handler{run: run, kindConfig: k}
	return nil
}

// Start checks that the schema is migrated, starts listening for wakeups and starts one
// dispatcher per queue. It returns once the listener is listening and the dispatchers run;
// from then on a committed job is picked up within milliseconds ([Config].PollOnly: within
// the poll interval, without a listener). A listener that turns out to hear nothing (its
// connection goes through a pooler in transaction mode) is reported by a warning, a few
// seconds after Start; see [Config].ListenerConnString. ctx bounds start-up only:
// the client runs until [Client.Stop]. Start-up also gives up after [Config].StartTimeout
// (default [DefaultStartTimeout]) if ctx has no earlier deadline, so that a database that
// never answers fails Start with an error wrapping [context.DeadlineExceeded] instead of
// hanging it.
func (c *Client) Start(ctx context.Context, pool *pgxpool.Pool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.state {
	case stateRunning, stateStopping:
		return ErrAlreadyStarted
	case stateStopped:
		return ErrClientStopped
	}
	if err := checkDB(pool, "Start"); err != nil {
		return alsoMatching(err, ErrInvalidConfig)
	}
	if len(c.handlers) == 0 {
		return ErrNoHandlers
	}
	if len(c.scheduleErrs) > 0 {
		return errors.Join(c.scheduleErrs...)
	}
	cfg, err := c.cfg.withDefaults()
	if err != nil {
		return err
	}
	if cfg.ID == "" {
		cfg.ID = newClientID()
	}
	for kind, h := range c.handlers {
		if all := slices.Concat(cfg.Middleware, h.middleware); len(all) > 0 {
			if h.chain, err = chain(h.run, all); err != nil {
				return fmt.Errorf("%w (kind %q)", err, kind)
			}
			c.handlers[kind] = h
		}
	}
	c.cfg, c.pool = cfg, pool
	if c.store, err = store.For(cfg.Schema); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	ctx, cancel := context.WithTimeoutCause(ctx, cfg.StartTimeout,
		fmt.Errorf("relay: start: the database did not answer within StartTimeout (%v): %w", cfg.StartTimeout, context.DeadlineExceeded))
	defer cancel()
	if err := checkMigrated(ctx, pool, c.store); err != nil {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return err
	}

	background := context.WithoutCancel(ctx)
	c.work, c.cancelWork = context.WithCancel(background)
	if c.conns, err = newConns(ctx, pool, cfg.ReservedConns, cfg.ID); err != nil {
		return fmt.Errorf("relay: start: reserved connections: %w", err)
	}
	c.recovery = newRecovery(c.work.Done(), c.databaseBack, c.databaseBackToAll)

	kinds := slices.Sorted(maps.Keys(c.handlers))
	attempts := make([]int32, len(kinds))
	for i, k := range kinds {
		attempts[i] = int32(c.handlers[k].maxAttempts)
	}
	schedules := make([]string, len(c.schedules))
	for i, s := range c.schedules {
		schedules[i] = s.name
	}
	jobs := c.store.Client(c.conns, store.ClientInfo{
		ID: cfg.ID, Lease: cfg.LeaseTTL, Kinds: kinds, Attempts: attempts,
		Queues:    slices.Sorted(maps.Keys(cfg.Queues)), // names and groups, as unhandled_jobs reads them
		Schedules: schedules, PollOnly: cfg.PollOnly, SharedSlots: cfg.MaxWorkers > 0,
	})
	c.jobs = jobs
	c.lapsed = make(chan struct{}, 1)
	c.lookAgain = make(chan struct{}, 1)
	c.unlockedWake = make(chan struct{}, 1)
	c.writer = outcome.New(cfg.ID, c.store, c.conns, cfg.Logger, c.released)
	c.writer.Observe(c.recovery.observe)
	c.keeper = lease.NewKeeper(lease.KeeperConfig{
		Renewer: observedRenewer{jobs, c.recovery, c.writer, min(cfg.LeaseTTL/4, maxRenewalWait)},
		TTL:     cfg.LeaseTTL, Interval: cfg.LeaseRenewal, Logger: cfg.Logger, Lapsed: c.signalLapse,
	})
	c.keeperSvc = lifecycle.Go(background, c.keeper.Run)
	c.writerSvc = lifecycle.Go(background, c.writer.Run)
	rescue := func(ctx context.Context, limit int) (lease.Rescued, error) {
		r, err := jobs.Rescue(ctx, limit)
		c.events.rescued(r.Jobs, time.Now())
		return r, err
	}
	c.rescuer = lease.NewRescuer(lease.RescuerConfig{Rescue: observed(c.recovery, rescue), MaxWait: cfg.LeaseRenewal, Grace: max(cfg.LeaseRenewal, minRescueGrace), Logger: cfg.Logger})
	c.rescuerSvc = lifecycle.Go(background, c.rescuer.Run)
	// Reservations are announced by NOTIFY (see onNotify), so its poll only covers what
	// nothing announces: the fallback poll of the queues will do.
	c.expirer = lease.NewExpirer(lease.ExpirerConfig{Expire: observed(c.recovery, jobs.Expire), MaxWait: cfg.PollInterval, Logger: cfg.Logger})
	c.expirerSvc = lifecycle.Go(background, c.expirer.Run)

	var slots *dispatcher.Slots
	if cfg.MaxWorkers > 0 {
		slots = dispatcher.NewSlots(cfg.MaxWorkers)
	}
	c.slots = slots
	c.queues = serving{queues: map[string]*worked{}, groups: groupsOf(cfg.Queues)}
	c.queues.newQueue = func(name string, q QueueConfig, dynamic bool) *dispatcher.Dispatcher {
		dc := dispatcher.Config{
			Claimer: observedClaimer{jobs, c.recovery}, Queue: name, Workers: q.Workers, Poll: cfg.PollInterval,
			Run: c.runJob, Room: c.outcomeRoom, Slots: slots, Wait: jobs.Wait, Logger: cfg.Logger,
		}
		if cfg.PollOnly {
			dc.Wait = nil // it polls: no wakeup would come
		}
		if dynamic {
			var d *dispatcher.Dispatcher
			dc.IdleAfter, dc.Horizon = q.IdleTimeout, c.lookAhead()
			dc.Retire = func() bool {
				if !c.queues.retire(name, d) {
					return false
				}
				// Only tidying: a quiet dispatcher's row says it waits, as no row does.
				if err := jobs.Retired(background, name); err != nil {
					cfg.Logger.Debug("relay: could not forget a retired dispatcher", "queue", name, "error", err)
				}
				return true
			}
			d = dispatcher.New(dc)
			cfg.Logger.Debug("relay: working a new queue of a group", "queue", name)
			return d
		}
		return dispatcher.New(dc)
	}

	if !cfg.PollOnly {
		if err := c.startListener(ctx, background); err != nil {
			c.abortStart()
			return err
		}
	}

	if !cfg.PollOnly {
		if err := c.startWaitLocks(background); err != nil {
			c.abortStart()
			return err
		}
	}

	// Enqueues wake only dispatchers that wait for it (see wake, migrations 006 and 012):
	// hold the wait locks and count as live for them before the first claims. Jobs of
	// producers that looked before, and commit after those claims, are found once those
	// producers have ended (the reviver).
	if err := jobs.Register(ctx, cfg.LeaseTTL); err != nil {
		c.abortStart()
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("relay: start: %w", err)
	}
	c.registered = true
	c.signalLapse()
	c.reviverSvc = lifecycle.Go(background, c.reviveAfterLapses)

	if len(c.schedules) > 0 {
		// Catching up on missed slots is part of starting: its jobs exist once Start returns.
		sched := newScheduler(c.store, pool, cfg.Logger, c.schedules)
		if err := sched.start(ctx); err != nil {
			c.abortStart()
			if ctx.Err() != nil {
				return context.Cause(ctx)
			}
			return fmt.Errorf("relay: start: periodic schedules: %w", err)
		}
		c.schedSvc = lifecycle.Go(background, sched.Run)
	}
	if rules := retentionRules(cfg); rules != nil || cfg.ClientRetention >= 0 {
		c.pruner = &pruner{store: c.store, db: pool, rules: rules, clientKeep: cfg.ClientRetention,
			every: pruneEvery(rules, cfg.ClientRetention), logger: cfg.Logger}
		c.prunerSvc = lifecycle.Go(background, c.pruner.Run)
	}

	c.queues.start(background, cfg.Queues)
	if len(c.queues.groups) > 0 {
		c.finderSvc = lifecycle.Go(background, c.findQueues)
	}
	c.watchSvc = lifecycle.Go(background, c.watchUnhandled)
	c.state = stateRunning
	cfg.Logger.Debug("relay: client started", "id", cfg.ID, "schema", cfg.Schema, "queues", len(cfg.Queues), "kinds", kinds)
	return nil
}

func (c *Client) abortStart() {
	c.stopServices(context.Background())
}

// Stop stops claiming jobs, waits for running handlers until ctx ends, then cancels the
// handlers' context and waits up to 5 s more for them to return, writes every outcome
// and stops listening. It then gives back the jobs producers handed off to the client
// whose wakeups it had not heard, waiting up to 2 s for producers still open. Jobs whose
// handlers never return stay running in the table; the
// error then says how many. Calling Stop again, or on a client that never started, is
// harmless; a concurrent second call waits for the first.
func (c *Client) Stop(ctx context.Context) error {
	c.mu.Lock()
	switch c.state {
	case stateNew:
		c.state = stateStopped
		close(c.stopped)
		c.mu.Unlock()
		return nil
	case stateStopping, stateStopped:
		c.mu.Unlock()
		select {
		case <-c.stopped:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	c.state = stateStopping
	c.mu.Unlock()

	// Nothing more is enqueued or deleted, then nothing more claimed.
	for _, svc := range []*lifecycle.Service{c.schedSvc, c.prunerSvc, c.finderSvc} {
		if svc != nil {
			svc.Stop()
		}
	}
	c.watchSvc.Stop()
	c.reviverSvc.Stop()
	c.queues.stop() // no more claims
	var errs []error
	if abandoned := c.waitForHandlers(ctx); abandoned > 0 {
		errs = append(errs, fmt.Errorf("relay: stop: %d handlers did not return within %v of being cancelled; their jobs stay running until rescued", abandoned, cancelGrace))
	}
	if err := c.stopServices(ctx); err != nil {
		errs = append(errs, err)
	}

	c.mu.Lock()
	c.state = stateStopped
	close(c.stopped)
	c.mu.Unlock()
	return errors.Join(errs...)
}

// stopServices stops everything but the dispatchers, in the one order that loses
// nothing: outcomes are flushed while leases are still renewed, and the listener goes last.
// It serves both Stop and a Start that could not finish.
func (c *Client) stopServices(ctx context.Context) error {
	c.cancelWork()
	c.rescuerSvc.Stop()
	c.expirerSvc.Stop()
	var err error
	if werr := c.writerSvc.Stop(); werr != nil {
		err = fmt.Errorf("relay: stop: writing outcomes: %w", werr)
	}
	c.keeperSvc.Stop()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	if serr := c.store.StopClient(stopCtx, c.conns, c.cfg.ID); serr != nil {
		c.cfg.Logger.Warn("relay: could not mark the client stopped", "error", serr)
	}
	cancel()
	if c.listenerSvc != nil {
		c.listenerSvc.Stop()
	}
	if c.waitLocksSvc != nil {
		c.waitLocksSvc.Stop() // its connection's end releases the locks
		c.unlockedSvc.Stop()
	}
	if c.registered && !c.cfg.PollOnly { // producers hand jobs only to such clients
		c.giveBackHandOffsNotHeard()
	}
	c.handOffs.closeAcks() // no more are heard; give-backs end within giveBackFor
	c.conns.close()
	return err
}

// waitForHandlers waits for running handlers until ctx ends, then cancels them and waits
// cancelGrace more. It returns how many handlers were still running after that.
func (c *Client) waitForHandlers(ctx context.Context) (abandoned int) {
	done := make(chan struct{})
	go func() {
		c.queues.each((*dispatcher.Dispatcher).Wait)
		close(done)
	}()
	select {
	case <-done:
		return 0
	case <-ctx.Done():
	}
	running := c.running()
	c.cfg.Logger.Warn("relay: stop deadline reached; cancelling running handlers", "running", running)
	c.cancelWork()
	grace := time.NewTimer(cancelGrace)
	defer grace.Stop()
	select {
	case <-done:
		return 0
	case <-grace.C:
		return c.running()
	}
}

func (c *Client) running() (n int) {
	c.queues.each(func(d *dispatcher.Dispatcher) { n += d.Running() })
	return n
}

// maxOutcomeBacklog bounds the outcomes a client keeps queued: past it, its dispatchers
// stop claiming until writes catch up. It bounds memory, the age of unwritten outcomes,
// and the leases the keep-alive ticker renews in one statement.
const maxOutcomeBacklog = 5000

func (c *Client) outcomeRoom() int {
	room := maxOutcomeBacklog - c.writer.Backlog()
	if room <= 0 {
		// Flag first, then look again: a batch committed in between is either seen by the
		// second look or finds the flag and nudges the dispatchers.
		c.backlogFull.Store(true)
		room = maxOutcomeBacklog - c.writer.Backlog()
	}
	return room
}

// onNotify routes a wakeup to its queue's dispatcher, starting one for a new queue of a
// group. It runs on the listener's goroutine and never blocks for long.
func (c *Client) onNotify(payload string) {
	if id, attempt, ok := store.ParseCancel(payload); ok {
		if c.keeper.Cancel(id, attempt, ErrCancelled) {
			// Its handler logs the attempt's end with the job's kind and queue.
			c.cfg.Logger.Info("relay: cancelled a running job", slog.Group("job", "id", id, "attempt", attempt))
		}
		return
	}
	if job, ok, err := store.ParseHandOff(payload); ok {
		if err != nil {
			// Not this version's: it stays running under this client until Stop, when the
			// rescuers give it back.
			c.cfg.Logger.Error("relay: ignoring a hand-off it cannot read", "error", err, "payload", payload)
			return
		}
		c.onHandOff(job)
		return
	}
	if deadline, ok := store.ParseReservation(payload); ok {
		c.expirer.Notify(deadline)
		return
	}
	if queue, ok := store.ParseQueueControl(payload); ok {
		// The queue's settings changed, or it was paused or resumed: its next claim reads them.
		c.queues.with(queue, (*dispatcher.Dispatcher).Wake)
		return
	}
	w, ok := store.ParseWakeup(payload)
	if !ok {
		c.cfg.Logger.Warn("relay: ignoring a malformed wakeup", "payload", payload)
		return
	}
	notify := (*dispatcher.Dispatcher).Notify
	if w.Backup {
		notify = (*dispatcher.Dispatcher).Backup
	}
	c.queues.with(w.Queue, func(d *dispatcher.Dispatcher) { notify(d, w.In, w.At) })
}

// listening runs each time the listener is LISTENing on a new connection. It makes every
// dispatcher look for work, since jobs enqueued while it was not listening would otherwise
// wait for the poll, and it is the sign that the database is back if it was away.
func (c *Client) listening() {
	c.listens.Add(1)
	c.recovery.worked()
	c.wakeAll()
	c.takeHandOffsNotHeard()
	c.expirer.Notify(time.Time{}) // deadlines announced while it was not listening
	c.lookForQueues()             // the queues of groups whose wakeups were not heard
}

// lookForQueues makes findQueues look at once. It never blocks.
func (c *Client) lookForQueues() {
	select {
	case c.lookAgain <- struct{}{}:
	default:
	}
}

// wakeAll makes every dispatcher look for work from the head of its queue.
func (c *Client) wakeAll() {
	c.queues.each((*dispatcher.Dispatcher).Wake)
}

// minRescueGrace bounds from below how long the rescuer waits, after an outage, before it
// takes other clients' expired leases for lost (lease.RescuerConfig.Grace), which is
// otherwise a renewal interval, in which a live client renews. Each client learns that the
// database is back at its own next try (its listener tries a few times a second), then
// opens new connections to renew and write: on a loaded machine, clients with short
// leases did not all manage that within a LeaseRenewal of 0.67 s.
const minRescueGrace = 2 * time.Second

// databaseBack makes the dispatchers claim at once, and the wait locks be taken again,
// now that the database answers again (see recovery).
func (c *Client) databaseBack() {
	c.cfg.Logger.Info("relay: the database answers again; claims resume, then renewals, rescues and outcomes")
	c.queues.each((*dispatcher.Dispatcher).Retry)
	if locks := c.waitLocks.Load(); locks != nil {
		locks.Recover() // producers skip its waiting dispatchers until it holds its locks again
	}
}

// databaseBackToAll makes the other services that back off from a failing database retry
// at once, once a claim has gone first (see recovery).
func (c *Client) databaseBackToAll() {
	c.keeper.Recover()
	c.rescuer.Recover()
	c.expirer.Notify(time.Time{})
	c.writer.Recover()
	c.lookForQueues() // looks that failed meanwhile may have missed a job coming due
}

// lookAhead is how far ahead findQueues looks for the jobs of a group's queues: a job due
// later keeps no dispatcher (dispatcher.Config.Horizon), and one due within it is found by
// the next look at the latest, a poll interval before it is due.
// Two, but no more than a Duration holds: a huge PollInterval means "never poll".
func (c *Client) lookAhead() time.Duration {
	return min(c.cfg.PollInterval, math.MaxInt64/2) * 2
}

// findQueues starts dispatchers for the queues of the client's groups that have pending
// jobs of its kinds, due now or within lookAhead: at start, then every poll interval, which
// covers wakeups lost while the listener was reconnecting and scheduled jobs whose queue's
// dispatcher has retired. A queue whose jobs are all further ahead, or of kinds the client
// does not handle, gets no dispatcher: it would poll, for nothing, until they are due.
func (c *Client) findQueues(ctx context.Context) error {
	patterns := make([]string, 0, len(c.queues.groups))
	for _, g := range c.queues.groups {
		patterns = append(patterns, g.prefix+"*")
	}
	kinds := c.jobs.Kinds()
	tick := time.NewTicker(c.cfg.PollInterval)
	defer tick.Stop()
	for {
		queues, err := c.store.PendingQueues(ctx, c.conns, patterns, kinds, c.lookAhead())
		c.recovery.observe(err)
		if err != nil && ctx.Err() == nil {
			c.cfg.Logger.Warn("relay: could not look for queues with work", "error", err)
		}
		for _, q := range queues {
			c.queues.with(q, func(*dispatcher.Dispatcher) {})
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		case <-c.lookAgain:
		}
	}
}

// startListener starts the listener and waits until it listens, or ctx ends, or it fails.
func (c *Client) startListener(ctx, background context.Context) error {
	cc, err := c.listenConfig()
	if err != nil {
		return err
	}
	l := listener.New(listener.Config{
		Connect: func(ctx context.Context) (*pgx.Conn, error) {
			return pgx.ConnectConfig(ctx, cc.Copy())
		},
		Channel: c.store.Channel(),
		// wakeups addressed to this client (migration 015)
		Others:   []string{c.store.ClientChannel(c.cfg.ID)},
		OnNotify: c.onNotify,
		// producers hand this client jobs only while the connection that hears them lives
		Hold: func(ctx context.Context, conn *pgx.Conn) error {
			return c.store.HoldListening(ctx, conn, c.cfg.ID)
		},
		OnListen:     c.listening,
		Logger:       c.cfg.Logger,
		Probe:        func(ctx context.Context, payload string) error { return c.store.Probe(ctx, c.conns, payload) },
		ProbePrefix:  store.ProbePrefix,
		ProbeTimeout: c.probeTimeout,
		OnDeaf:       func() { c.listenerDeaf(cc) },
	})
	c.listenerSvc = lifecycle.Go(background, l.Run)
	select {
	case <-l.Listening():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("relay: start: waiting for the listener to connect: %w", context.Cause(ctx))
	case <-c.listenerSvc.Done():
		return fmt.Errorf("relay: start: listener: %w", c.listenerSvc.Stop())
	}
}

// startWaitLocks starts holding the client's wait locks on a connection of their own,
// made as the listener's (direct, named by WaitLocksApplicationName). Register takes the
// first ones. When the connection was lost, once they are held again every dispatcher
// looks for work as after a lapse of the heartbeat: enqueues meanwhile saw the locks free.
func (c *Client) startWaitLocks(background context.Context) error {
	cc, err := c.listenConfig()
	if err != nil {
		return err
	}
	cc.RuntimeParams["application_name"] = WaitLocksApplicationName(c.cfg.ID)
	locks := c.jobs.HoldWaitLocks(store.WaitLocksConfig{
		Connect: func(ctx context.Context) (*pgx.Conn, error) { return pgx.ConnectConfig(ctx, cc.Copy()) },
		Retaken: c.waitLocksRetaken,
		Lost:    c.waitLocksLost,
		Logger:  c.cfg.Logger,
	})
	c.waitLocks.Store(locks)
	c.waitLocksSvc = lifecycle.Go(background, locks.Run)
	c.unlockedSvc = lifecycle.Go(background, c.pollWhileUnlocked)
	return nil
}

// listenConfig is what the listener connects with: Config.ListenerConnString, else the
// pool's settings, named by application_name.
func (c *Client) listenConfig() (*pgx.ConnConfig, error) {
	cc := c.pool.Config().ConnConfig.Copy()
	if c.cfg.ListenerConnString != "" {
		var err error
		if cc, err = pgx.ParseConfig(c.cfg.ListenerConnString); err != nil {
			return nil, fmt.Errorf("%w: ListenerConnString: %w", ErrInvalidConfig, err) // withDefaults parsed it already
		}
	}
	cc.RuntimeParams["application_name"] = ListenerApplicationName(c.cfg.ID)
	return cc, nil
}

// listenerDeaf warns that the listener's probe did not arrive: its connection LISTENs
// but hears nothing, as through a pooler in transaction mode. Jobs then wait for the
// poll, and running jobs learn of their cancellation only at a lease renewal.
func (c *Client) listenerDeaf(cc *pgx.ConnConfig) {
	c.refuseHandOffs()
	c.cfg.Logger.Warn("relay: the listener hears no notifications: its connection LISTENs but a NOTIFY sent to it did not arrive, "+
		"as happens through a pooler in transaction mode (PgBouncer's pool_mode = transaction). "+
		"Jobs wait for the poll (PollInterval) instead of starting at once. Fix: set Config.ListenerConnString to a direct "+
		"connection to PostgreSQL (or to a pooler in session mode), or set Config.PollOnly",
		"listener", fmt.Sprintf("%s:%d", cc.Host, cc.Port), "poll_interval", c.cfg.PollInterval, "waited", c.probeTimeout)
}

// ListenerApplicationName is the application_name of the listener connection of the
// client with the given ID, as shown in pg_stat_activity: PostgreSQL keeps at most 63
// bytes of it, so a long ID is cut (at a character boundary) the same way here.
func ListenerApplicationName(clientID string) string {
	return applicationName("relay listener ", clientID)
}

// WaitLocksApplicationName is the application_name of the connection on which the client
// with the given ID holds its wait locks, which tell enqueues whether any of its
// dispatchers may wait for a wakeup, and its client lock, which tells them it is alive,
// so that they may address wakeups to it (see the README's "Wakeups only when they can
// wake something"), cut like [ListenerApplicationName]'s.
func WaitLocksApplicationName(clientID string) string {
	return applicationName("relay wait locks ", clientID)
}

// ReservedApplicationName is the application_name of the reserved connections of the
// client with the given ID (see [Config].ReservedConns), cut like
// [ListenerApplicationName]'s.
func ReservedApplicationName(clientID string) string {
	return applicationName("relay reserved ", clientID)
}

func applicationName(prefix, clientID string) string {
	name := prefix + clientID
	const limit = 63 // NAMEDATALEN - 1
	if len(name) <= limit {
		return name
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart(name[cut]) {
		cut--
	}
	return name[:cut]
}

func newClientID() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "host"
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(b))
}

// reviveAfterLapses readies the client to be woken again after it started, and each time
// its heartbeat had lapsed (the database was unreachable, or the keep-alive paused, for
// longer than the lease): enqueues did not count it as live before, and may not have
// notified it. Once the producers that may have looked meanwhile have ended, every
// dispatcher claims from the head of its queue, and finds their jobs. It waits in the
// background: a producer that keeps its transaction open for long delays only its own
// job, never the client.
func (c *Client) reviveAfterLapses(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.lapsed:
		}
		if err := c.jobs.AwaitProducers(ctx, "", c.wakeAll); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.cfg.Logger.Warn("relay: could not wait for producers after the heartbeat had lapsed; waking every queue anyway", "error", err)
		}
		c.wakeAll()
	}
}

// unlockedPoll is how often every dispatcher looks for work while the client's wait locks
// are not held (their connection lost): enqueues then find the locks free and wake nothing,
// though its dispatchers wait. After an outage that lasts until the connection is made
// again, a second or more when every client reconnects at once.
const unlockedPoll = 100 * time.Millisecond

// waitLocksLost starts pollWhileUnlocked's looks.
func (c *Client) waitLocksLost() {
	c.unlocked.Store(true)
	select {
	case c.unlockedWake <- struct{}{}:
	default:
	}
}

// waitLocksRetaken ends pollWhileUnlocked's looks, and has every dispatcher look for the
// jobs committed meanwhile once their producers have ended (see reviveAfterLapses).
func (c *Client) waitLocksRetaken() {
	c.unlocked.Store(false)
	c.signalLapse()
}

// pollWhileUnlocked makes every dispatcher look for work every unlockedPoll while the
// wait locks are lost. A dispatcher pausing after failed claims (the database away) does
// not claim for it.
func (c *Client) pollWhileUnlocked(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.unlockedWake:
		}
		tick := time.NewTicker(unlockedPoll)
		for c.unlocked.Load() {
			select {
			case <-ctx.Done():
				tick.Stop()
				return ctx.Err()
			case <-tick.C:
				c.wakeAll()
			}
		}
		tick.Stop()
	}
}

// signalLapse asks reviveAfterLapses to run (once more, if it already waits to run).
func (c *Client) signalLapse() {
	select {
	case c.lapsed <- struct{}{}:
	default:
	}
}
