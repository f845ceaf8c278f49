package dispatcher

import "sync"

// Slots is a client-wide limit on running jobs, shared by the dispatchers of one client so
// that no queue starves another: while any dispatcher waits for a slot, each may hold at
// most an equal share of the limit (rounded up), counted over the dispatchers that hold or
// want slots. A queue alone uses the whole limit; when a second one needs slots, the first
// gives them up as its jobs end, not by pre-emption. Create it with [NewSlots].
type Slots struct {
	mu      sync.Mutex
	limit   int
	used    int
	held    map[*Dispatcher]int
	waiting map[*Dispatcher]bool
}

// NewSlots returns a limit of n running jobs.
func NewSlots(n int) *Slots {
	return &Slots{limit: n, held: map[*Dispatcher]int{}, waiting: map[*Dispatcher]bool{}}
}

// Used is how many slots are held now.
func (s *Slots) Used() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.used
}

// take grants d up to want slots. A dispatcher granted fewer than it wanted waits: the
// others are held to their share until it is served.
func (s *Slots) take(d *Dispatcher, want int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(want, s.limit-s.used)
	if s.othersWaiting(d) {
		contenders := len(s.held)
		if s.held[d] == 0 {
			contenders++
		}
		for w := range s.waiting {
			if s.held[w] == 0 && w != d {
				contenders++
			}
		}
		share := (s.limit + contenders - 1) / contenders
		n = min(n, share-s.held[d])
	}
	n = max(n, 0)
	if n > 0 {
		s.held[d] += n
		s.used += n
	}
	if n < want {
		s.waiting[d] = true
	} else {
		delete(s.waiting, d)
	}
	return n
}

func (s *Slots) othersWaiting(d *Dispatcher) bool {
	for w := range s.waiting {
		if w != d {
			return true
		}
	}
	return false
}

// claimed gives back the slots of a claim that found fewer jobs than it was granted; such
// a dispatcher has no more work for now and stops waiting.
func (s *Slots) claimed(d *Dispatcher, granted, started int) {
	if started < granted {
		s.mu.Lock()
		delete(s.waiting, d)
		s.mu.Unlock()
		s.give(d, granted-started)
	}
}

// give returns n slots of d and nudges the dispatchers waiting for one.
func (s *Slots) give(d *Dispatcher, n int) {
	s.mu.Lock()
	s.used -= n
	if s.held[d] -= n; s.held[d] <= 0 {
		delete(s.held, d)
	}
	waiters := make([]*Dispatcher, 0, len(s.waiting))
	for w := range s.waiting {
		waiters = append(waiters, w)
	}
	s.mu.Unlock()
	for _, w := range waiters {
		w.poke()
	}
}

// leave forgets d, which has stopped claiming.
func (s *Slots) leave(d *Dispatcher) {
	s.mu.Lock()
	delete(s.waiting, d)
	s.mu.Unlock()
}
