package relay

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/relayq/relay/dispatcher"
	"github.com/relayq/relay/internal/lifecycle"
	"github.com/relayq/relay/internal/store"
)

// serving is the set of queues a running client works: one dispatcher per queue, made
// at start for the queues its Config names and, for the groups it names ("tenant-*"),
// whenever a queue of the group turns out to have work. A dispatcher of a group retires
// when it has been idle for the group's IdleTimeout.
type serving struct {
	mu       sync.Mutex
	queues   map[string]*worked
	closed   bool // the client is stopping: no new dispatchers
	newQueue func(name string, q QueueConfig, dynamic bool) *dispatcher.Dispatcher
	groups   []group
	ctx      context.Context // the dispatchers' context
}

// worked is one queue being worked.
type worked struct {
	d   *dispatcher.Dispatcher
	svc *lifecycle.Service
	cfg QueueConfig
}

// group is a Config.Queues entry that names queues by prefix.
type group struct {
	prefix string
	cfg    QueueConfig
}

// groupsOf returns the groups of queues, longest prefix first, so that the most specific
// group decides a queue's settings.
func groupsOf(queues map[string]QueueConfig) []group {
	var gs []group
	for key, q := range queues {
		if store.IsGroup(key) {
			gs = append(gs, group{prefix: strings.TrimSuffix(key, "*"), cfg: q})
		}
	}
	for i := range gs { // a handful of groups: insertion sort by prefix length, descending
		for j := i; j > 0 && len(gs[j].prefix) > len(gs[j-1].prefix); j-- {
			gs[j], gs[j-1] = gs[j-1], gs[j]
		}
	}
	return gs
}

// start begins working the named queues.
func (s *serving) start(ctx context.Context, named map[string]QueueConfig) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ctx = ctx
	for name, q := range named {
		if !store.IsGroup(name) {
			s.startLocked(name, q, false)
		}
	}
}

func (s *serving) startLocked(name string, q QueueConfig, dynamic bool) *worked {
	w := &worked{d: s.newQueue(name, q, dynamic), cfg: q}
	s.queues[name] = w
	w.svc = lifecycle.Go(s.ctx, w.d.Run)
	return w
}

// with calls fn with the dispatcher of queue, starting one if queue belongs to a group,
// while holding the lock that retirement takes: a wakeup passed to a dispatcher in fn is
// never lost to the dispatcher's retirement. It reports whether the client works queue.
func (s *serving) with(queue string, fn func(*dispatcher.Dispatcher)) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.queues[queue]
	if w == nil {
		if s.closed || s.ctx == nil {
			return false
		}
		g, ok := s.groupOf(queue)
		if !ok {
			return false
		}
		w = s.startLocked(queue, g.cfg, true)
	}
	fn(w.d)
	return true
}

func (s *serving) groupOf(queue string) (group, bool) {
	for _, g := range s.groups {
		if strings.HasPrefix(queue, g.prefix) {
			return g, true
		}
	}
	return group{}, false
}

// retire removes the dispatcher of queue if it is still quiet, reporting whether it did.
func (s *serving) retire(queue string, d *dispatcher.Dispatcher) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if w := s.queues[queue]; w == nil || w.d != d || !d.Quiet() {
		return false
	}
	delete(s.queues, queue)
	return true
}

// each calls fn for every dispatcher.
func (s *serving) each(fn func(*dispatcher.Dispatcher)) {
	s.mu.Lock()
	ds := make([]*dispatcher.Dispatcher, 0, len(s.queues))
	for _, w := range s.queues {
		ds = append(ds, w.d)
	}
	s.mu.Unlock()
	for _, d := range ds {
		fn(d)
	}
}

// stats returns the running jobs and workers of each queue worked now.
func (s *serving) stats() map[string]QueueStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	stats := make(map[string]QueueStats, len(s.queues))
	for name, w := range s.queues {
		stats[name] = QueueStats{Running: w.d.Running(), Workers: w.cfg.Workers}
	}
	return stats
}

// names returns the queues being worked now.
func (s *serving) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.queues))
}

// stop stops every dispatcher claiming, and any new one from starting. Their jobs run on.
func (s *serving) stop() {
	s.mu.Lock()
	s.closed = true
	ws := make([]*worked, 0, len(s.queues))
	for _, w := range s.queues {
		ws = append(ws, w)
	}
	s.mu.Unlock()
	for _, w := range ws {
		w.svc.Stop()
	}
}
