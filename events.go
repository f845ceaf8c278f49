package relay

import (
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayq/relay/internal/store"
	"github.com/relayq/relay/lease"
)

// Event is one ended attempt of a job, as [Client.Subscribe] and [Client.Observe] deliver
// it: an attempt this client ran, or one whose lease it found expired and rescued (reason
// [ReasonLostLease]: its own client died or was cut off).
type Event struct {
	JobID   int64
	Kind    string
	Queue   string
	Attempt int
	// State is what the attempt left the job in: [StateSucceeded], [StateFailed],
	// [StateCancelled], or [StatePending] when it is to run again (at RetryAt).
	State JobState
	// Reason is one of the Reason constants ([ReasonSnoozed] for a snooze, say); empty
	// for a success.
	Reason string
	Error  string
	// Data is the structured data the attempt's error carried ([ErrorData]), as JSON; nil
	// if none.
	Data        json.RawMessage
	ScheduledAt time.Time // when the attempt was due
	StartedAt   time.Time // when its handler began
	EndedAt     time.Time // when its handler returned
	RetryAt     time.Time // for State pending: when it runs next
	// CompletedTx is true for a job succeeded by [CompleteTx] in the handler's transaction.
	CompletedTx bool
}

// Wait is how long the job waited between being due and its handler starting.
func (e Event) Wait() time.Duration { return max(e.StartedAt.Sub(e.ScheduledAt), 0) }

// Ran is how long its handler ran. For a lost lease it is from the claim to the rescue:
// when the handler stopped is not known.
func (e Event) Ran() time.Duration { return e.EndedAt.Sub(e.StartedAt) }

// Outcome names how the attempt ended.
func (e Event) Outcome() Outcome {
	if e.CompletedTx {
		return OutcomeSucceeded
	}
	return outcomeOfState(e.State, e.Reason)
}

// Subscribe returns a channel that receives an [Event] for every attempt this client ends
// from now on — once its outcome is committed, so an event never reports what the
// database does not hold — and a function that ends the subscription and closes the
// channel. Events are for observing (tests, metrics, logs): delivery never blocks the
// client, so a subscriber that falls more than buffer events behind misses the excess,
// counted by Dropped. Attempts abandoned because the job is no longer this client's (its
// lease was lost) produce no event; the client that ends the job reports it.
func (c *Client) Subscribe(buffer int) (events <-chan Event, unsubscribe func()) {
	s := &subscriber{ch: make(chan Event, max(buffer, 0))}
	c.events.add(s)
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			c.events.remove(s)
			close(s.ch) // emit sends under the lock remove took: none can follow
		})
	}
}

// Dropped is how many events subscribers of this client have missed because they were
// full.
func (c *Client) Dropped() int64 { return c.events.dropped.Load() }

// Observe calls fn with every [Event] this client reports from now on, as [Client.Subscribe]
// delivers them — once the attempt's outcome is committed — but synchronously, on the
// goroutine that committed it, so that none is ever missed: for counting (metrics). fn must
// be quick and must not block: the client's next outcomes wait for it; nor may it call
// Subscribe or Observe. stop ends the
// observation; fn is not called once stop has returned.
func (c *Client) Observe(fn func(Event)) (stop func()) {
	s := &subscriber{fn: fn}
	c.events.add(s)
	var once sync.Once
	return func() { once.Do(func() { c.events.remove(s) }) }
}

// eventHub fans events out to subscribers.
type eventHub struct {
	n       atomic.Int32 // subscribers: zero makes emitting free
	dropped atomic.Int64
	mu      sync.Mutex // held while events are delivered, and to change subs
	// subs are the observers (fn set) and then the other subscribers, so that observers
	// see each event first: a subscriber that has received an event may rely on every
	// observer having counted it (a test reading metrics, say). A slice, not a map: every
	// event of every job ranges over it.
	subs []*subscriber
}

// subscriber receives events on ch (Subscribe) or through fn (Observe).
type subscriber struct {
	ch chan Event
	fn func(Event)
}

func (h *eventHub) add(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if s.fn != nil {
		h.subs = slices.Insert(h.subs, 0, s)
	} else {
		h.subs = append(h.subs, s)
	}
	h.n.Add(1)
}

func (h *eventHub) remove(s *subscriber) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i := slices.Index(h.subs, s); i >= 0 {
		h.subs = slices.Delete(h.subs, i, i+1)
		h.n.Add(-1)
	}
}

func (h *eventHub) active() bool { return h.n.Load() > 0 }

func (h *eventHub) emit(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.deliver(e)
}

// deliver gives e to every subscriber; h.mu is held.
func (h *eventHub) deliver(e Event) {
	for _, s := range h.subs {
		if s.fn != nil {
			s.fn(e)
			continue
		}
		select {
		case s.ch <- e:
		default:
			h.dropped.Add(1)
		}
	}
}

// eventOf is the Event of attempt o as o itself says it ended.
func eventOf(o store.Outcome) Event {
	return Event{
		JobID: o.ID, Kind: o.Kind, Queue: o.Queue, Attempt: o.Attempt, State: JobState(o.State),
		Reason: o.Reason, Error: o.Error, Data: o.Data, ScheduledAt: o.ScheduledAt, StartedAt: o.StartedAt, EndedAt: o.EndedAt,
	}
}

// cancelled emits the event of attempt o, which relay.Cancel ended while it ran.
func (h *eventHub) cancelled(o store.Outcome) {
	if !h.active() {
		return
	}
	e := eventOf(o)
	e.State, e.Reason, e.Error, e.Data, e.RetryAt, e.CompletedTx = StateCancelled, ReasonCancelled, "", nil, time.Time{}, false
	h.emit(e)
}

// outcomeEvents emits the events of a committed batch of outcomes; skipped holds those the
// batch left out.
func (h *eventHub) outcomeEvents(batch []store.Outcome, skipped store.Skipped) {
	if !h.active() {
		return
	}
	// One lock for the batch: its events are delivered together, in order.
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, o := range batch {
		e := eventOf(o)
		switch {
		case skipped.Wrote(o):
			if o.State == store.StatePending {
				e.RetryAt = o.RunAt
			}
		case o.CompletedTx:
			// The outcome was ignored because the handler's transaction had completed the job.
			e.State, e.Reason, e.Error, e.Data, e.CompletedTx = StateSucceeded, "", "", nil, true
		default:
			continue // not this client's any more
		}
		h.deliver(e)
	}
}

// rescued emits the events of jobs a rescue pass of this client found with an expired
// lease: their attempts ended when their own client stopped renewing them.
func (h *eventHub) rescued(jobs []lease.RescuedJob, now time.Time) {
	if !h.active() {
		return
	}
	for _, j := range jobs {
		e := Event{
			JobID: j.ID, Kind: j.Kind, Queue: j.Queue, Attempt: j.Attempt, State: StatePending,
			Reason: ReasonLostLease, Error: "its client stopped renewing the lease", ScheduledAt: j.DueAt,
			StartedAt: j.StartedAt, EndedAt: now, RetryAt: now,
		}
		if j.Failed {
			e.State, e.RetryAt = StateFailed, time.Time{}
		}
		h.emit(e)
	}
}
