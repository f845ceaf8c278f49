package relay

// ClientStats are a client's own figures at one moment ([Client.Stats]): what it runs, what
// room it has, and how its connection to the database has fared.
type ClientStats struct {
	// Queues holds the queues the client works now (a queue of a group while it has a
	// dispatcher), by name.
	Queues map[string]QueueStats
	// Running is how many handlers run now, over all queues.
	Running int
	// FreeSlots is how many more jobs the client could start now: its queues' idle workers,
	// within [Config].MaxWorkers.
	FreeSlots int
	// OutcomeBacklog is how many outcomes of ended attempts wait to be written. The client
	// stops claiming while it holds 5,000: a steadily high backlog means the database does
	// not keep up with the writes.
	OutcomeBacklog int
	// ListenerReconnects is how often the listener has connected again after losing its
	// connection; jobs enqueued meanwhile wait for the reconnect or the fallback poll.
	ListenerReconnects int64
}

// QueueStats are the figures of one queue in [ClientStats].
type QueueStats struct {
	Running int // its handlers running now on this client
	Workers int // the most it runs at once on this client ([QueueConfig].Workers)
}

// Stats returns the client's figures now; zero before [Client.Start].
func (c *Client) Stats() ClientStats {
	c.mu.Lock()
	started := c.state != stateNew
	c.mu.Unlock()
	if !started {
		return ClientStats{}
	}
	s := ClientStats{Queues: c.queues.stats(), OutcomeBacklog: c.writer.Backlog()}
	for _, q := range s.Queues {
		s.Running += q.Running
		s.FreeSlots += max(q.Workers-q.Running, 0)
	}
	if c.slots != nil {
		s.FreeSlots = min(s.FreeSlots, max(c.cfg.MaxWorkers-c.slots.Used(), 0))
	}
	s.ListenerReconnects = max(c.listens.Load()-1, 0)
	return s
}
