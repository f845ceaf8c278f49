package dispatcher

import "sync"

// Slots is a client-wide limit on running jobs, shared by the dispatchers of one client so
// that no queue starves another. A dispatcher with more work than it could take is a
// contender; each contender's fair share is the limit divided by the number of contenders
// and of dispatchers holding slots, rounded up. While some contender holds less than its
// share, no dispatcher may take beyond its own share. A queue alone uses the whole limit;
// when a second one needs slots, the first gives them up as its jobs end, not by
// pre-emption. Create it with [NewSlots].
type Slots struct {
	mu    sync.Mutex
	limit int
	used  int
	held  map[*Dispatcher]int
	wants map[*Dispatcher]bool // has work beyond what it holds, as far as it knows
}

// NewSlots returns a limit of n running jobs.
func NewSlots(n int) *Slots {
	return &Slots{limit: n, held: map[*Dispatcher]int{}, wants: map[*Dispatcher]bool{}}
}

// Used is how many slots are held now.
func (s *Slots) Used() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// take grants d up to want slots.
func (s *Slots) take(d *Dispatcher, want int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(want, s.limit-s.used)
	if share := s.share(d); s.othersShortOf(d, share) {
		n = min(n, share-s.held[d])
	}
	n = max(n, 0)
	if n > 0 {
		// Only a dispatcher that holds slots has an entry: share counts those that want
		// slots and hold none separately.
		s.held[d] += n
		s.used += n
	}
	if n < want {
		s.wants[d] = true
	}
	return n
}

// share is the fair share of each dispatcher that holds or wants slots, d included.
func (s *Slots) share(d *Dispatcher) int {
	contenders := len(s.held)
	if s.held[d] == 0 {
		contenders++ // d itself
	}
	for w := range s.wants {
		if s.held[w] == 0 && w != d {
			contenders++
		}
	}
	return (s.limit + contenders - 1) / contenders
}

// othersShortOf reports whether a dispatcher other than d wants slots and holds fewer than
// share.
func (s *Slots) othersShortOf(d *Dispatcher, share int) bool {
	for w := range s.wants {
		if w != d && s.held[w] < share {
			return true
		}
	}
	return false
}

// claimed records how a claim with granted slots went: one that filled them has more work
// (a contender); one that found fewer jobs has none for now, and gives the rest back.
func (s *Slots) claimed(d *Dispatcher, granted, started int) {
	s.mu.Lock()
	if started < granted {
		delete(s.wants, d)
	} else {
		s.wants[d] = true
	}
	s.mu.Unlock()
	if started < granted {
		s.give(d, granted-started)
	}
}

// give returns n slots of d and nudges the other dispatchers that want slots.
func (s *Slots) give(d *Dispatcher, n int) {
	s.mu.Lock()
	s.used -= n
	if s.held[d] -= n; s.held[d] <= 0 {
		delete(s.held, d)
	}
	waiters := make([]*Dispatcher, 0, len(s.wants))
	for w := range s.wants {
		if w != d {
			waiters = append(waiters, w)
		}
	}
	s.mu.Unlock()
	for _, w := range waiters {
		w.poke()
	}
}

// leave forgets d, which has stopped claiming.
func (s *Slots) leave(d *Dispatcher) {
	s.mu.Lock()
	delete(s.wants, d)
	s.mu.Unlock()
}
