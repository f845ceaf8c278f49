package dispatcher

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// Slots is pure bookkeeping: these tests drive it as dispatchers do (take before a claim,
// claimed after it, give as each job ends, leave when Run returns) on dispatchers that
// never run, and read the nudges it sends from their signal channels.

func newSlotsRig(limit, n int) (*Slots, []*Dispatcher) {
	ds := make([]*Dispatcher, n)
	for i := range ds {
		ds[i] = New(Config{Queue: fmt.Sprint("q", i)})
	}
	return NewSlots(limit), ds
}

// nudged reports whether d was nudged since the last look, and forgets the nudge.
func nudged(d *Dispatcher) bool {
	select {
	case <-d.signal:
		return true
	default:
		return false
	}
}

// run takes want slots for d and claims them: a claim that finds as many jobs as it was
// granted (d's backlog is deep) or only found jobs.
func run(s *Slots, d *Dispatcher, want, found int) int {
	n := s.take(d, want)
	if n > 0 {
		s.claimed(d, n, min(n, found))
	}
	return n
}

func (s *Slots) heldBy(d *Dispatcher) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.held[d]
}

func TestSlotsQueueAloneUsesTheWholeLimit(t *testing.T) {
	s, ds := newSlotsRig(10, 3)
	a := ds[0]
	if got := run(s, a, 4, 4); got != 4 {
		t.Fatalf("a alone asked for 4 of 10: granted %d", got)
	}
	// The other dispatchers exist but want nothing: they do not shrink a's share.
	if got := run(s, a, 100, 100); got != 6 {
		t.Fatalf("a alone asked for 100 with 6 free: granted %d, want 6", got)
	}
	if got := s.Used(); got != 10 {
		t.Errorf("Used() = %d, want 10", got)
	}
	if got := s.take(a, 1); got != 0 {
		t.Errorf("a took %d slots beyond the limit", got)
	}
	for i, d := range ds {
		if nudged(d) {
			t.Errorf("dispatcher %d was nudged though nothing was given back", i)
		}
	}
}

// A second queue that needs slots gets them as the first queue's jobs end, not by
// pre-emption; the first cannot take back more than its share while the second is short
// of its own, and both end at their share.
func TestSlotsSecondQueueGetsItsShareAsJobsEnd(t *testing.T) {
	s, ds := newSlotsRig(10, 2)
	a, b := ds[0], ds[1]
	run(s, a, 10, 10) // a holds everything and has more work

	if got := s.take(b, 5); got != 0 {
		t.Fatalf("b was granted %d slots while a held all 10", got)
	}
	if got := s.heldBy(a); got != 10 {
		t.Fatalf("b's request took slots from a: a holds %d, want 10 (no pre-emption)", got)
	}
	for step := 1; step <= 5; step++ {
		s.give(a, 1) // one of a's jobs ends
		if !nudged(b) {
			t.Fatalf("step %d: a gave a slot back and b, which waits for one, was not nudged", step)
		}
		if nudged(a) {
			t.Fatalf("step %d: the giver nudged itself through Slots", step)
		}
		// a, whose worker freed, asks first: it is above its share of 5 while b is short.
		if got := s.take(a, 1); got != 0 {
			t.Fatalf("step %d: a (holding %d of 10) retook a slot while b held %d, short of its share of 5", step, s.heldBy(a), s.heldBy(b))
		}
		if got := run(s, b, 5, 5); got != 1 {
			t.Fatalf("step %d: b was granted %d of the 1 free slot", step, got)
		}
	}
	if ha, hb := s.heldBy(a), s.heldBy(b); ha != 5 || hb != 5 {
		t.Fatalf("after 5 jobs of a ended: a holds %d, b %d; want 5 each", ha, hb)
	}

	// At their shares, a freed slot goes back to whoever ran the job: b may not go above
	// its share while a, now short, waits.
	s.give(a, 1)
	if got := s.take(b, 5); got != 0 {
		t.Fatalf("b took %d slots above its share of 5 while a held 4 and waited", got)
	}
	if got := run(s, a, 1, 1); got != 1 {
		t.Fatalf("a, short of its share, was granted %d of the free slot", got)
	}
	if got := s.Used(); got != 10 {
		t.Errorf("Used() = %d, want 10", got)
	}
}

// Shares are the limit divided by the contenders (dispatchers holding slots or waiting
// for them), rounded up.
func TestSlotsSharesRoundUp(t *testing.T) {
	s, ds := newSlotsRig(10, 3)
	a, b, c := ds[0], ds[1], ds[2]
	// b and c wait for slots (c asked while b held them all, b's last claim filled every
	// slot it had) when a arrives at an empty pool. Each share is ceil(10/3) = 4.
	run(s, b, 10, 10)
	if got := s.take(c, 10); got != 0 {
		t.Fatalf("c was granted %d slots of a full pool", got)
	}
	s.give(b, 10)
	if got := run(s, a, 10, 10); got != 4 {
		t.Errorf("a was granted %d with b and c waiting; want its share ceil(10/3) = 4", got)
	}
	if got := run(s, b, 10, 10); got != 4 {
		t.Errorf("b was granted %d; want its share 4", got)
	}
	if got := run(s, c, 10, 10); got != 2 {
		t.Errorf("c was granted %d; want the 2 left", got)
	}
	if got := s.Used(); got != 10 {
		t.Errorf("Used() = %d, want 10", got)
	}
}

// A claim that finds fewer jobs than it was granted gives the rest back at once, nudging
// the dispatchers that wait, and stops counting as a contender: the others may then use
// its share.
func TestSlotsShortClaimGivesBackAndStopsContending(t *testing.T) {
	s, ds := newSlotsRig(10, 3)
	a, b, c := ds[0], ds[1], ds[2]
	run(s, a, 10, 10)
	if got := s.take(b, 10); got != 0 {
		t.Fatalf("b was granted %d of a full pool", got)
	}
	s.give(a, 6) // six of a's jobs end; b is nudged and claims
	if !nudged(b) {
		t.Fatal("b was not nudged when a gave slots back")
	}
	if nudged(c) {
		t.Fatal("c, which never asked for slots, was nudged")
	}
	// b is granted its share but finds only 2 jobs: 3 go back, and b is no contender now.
	if got := s.take(b, 10); got != 5 {
		t.Fatalf("b was granted %d, want its share 5", got)
	}
	s.claimed(b, 5, 2)
	if !nudged(a) {
		t.Error("a, which wants more, was not nudged when b gave back the slots it could not use")
	}
	if nudged(b) {
		t.Error("b nudged itself by giving back")
	}
	if got := s.heldBy(b); got != 2 {
		t.Errorf("b holds %d after finding 2 jobs, want 2", got)
	}
	// b holds 2 and wants no more: a may take everything that is free, above its share.
	if got := run(s, a, 10, 10); got != 4 {
		t.Errorf("a was granted %d with b content with 2; want the 4 free", got)
	}
	if got := s.Used(); got != 10 {
		t.Errorf("Used() = %d, want 10", got)
	}
}

// A dispatcher that stops (its Run returns) leaves: it no longer counts as waiting, and is
// not nudged. Once it holds nothing either, a remaining queue uses the whole limit again.
func TestSlotsLeave(t *testing.T) {
	s, ds := newSlotsRig(10, 2)
	a, b := ds[0], ds[1]
	run(s, a, 10, 10)
	s.take(b, 10) // b waits
	s.leave(b)
	s.give(a, 3)
	if nudged(b) {
		t.Error("a dispatcher that left was nudged")
	}
	if got := run(s, a, 3, 3); got != 3 {
		t.Errorf("a was granted %d of 3 free slots after the only other contender left, want 3", got)
	}

	// A leaver's jobs may still run: their slots come back as they end.
	s.give(a, 10)
	run(s, b, 4, 4)
	s.leave(b)
	if got := run(s, a, 10, 10); got != 6 {
		t.Errorf("a was granted %d while a stopped dispatcher's 4 jobs run, want 6", got)
	}
	s.give(b, 4)
	if !nudged(a) {
		t.Error("a was not nudged as the stopped dispatcher's jobs ended")
	}
	if got := run(s, a, 10, 10); got != 4 {
		t.Errorf("a was granted %d once the stopped dispatcher's jobs ended, want 4", got)
	}
}

// A dispatcher that was refused slots and then stopped (a retired queue of a group) leaves
// nothing behind: the queues after it share the limit as if it had never been.
func TestSlotsRefusedDispatcherThatLeftIsNoContender(t *testing.T) {
	s, ds := newSlotsRig(10, 3)
	a, gone, c := ds[0], ds[1], ds[2]
	run(s, a, 10, 10)
	if got := s.take(gone, 10); got != 0 {
		t.Fatalf("granted %d slots of a full pool", got)
	}
	s.leave(gone)
	s.give(a, 6) // a holds 4, short of its share of 5 with c
	if got := run(s, c, 10, 10); got != 5 {
		t.Errorf("c was granted %d while a held 4 and waited; want its share of 10 between a and c, 5", got)
	}
}

// Under random job ends, every queue with an endless backlog, the limit is never exceeded,
// no take lifts a queue above its share while another waits short of its own, a free slot
// never stays unused while a nudged queue wants it, and holdings settle at the shares.
func TestSlotsRandomJobEndsConvergeToFairShares(t *testing.T) {
	for _, tc := range []struct{ limit, queues int }{{10, 2}, {10, 3}, {7, 4}, {100, 5}, {3, 5}} {
		t.Run(fmt.Sprintf("limit%d-queues%d", tc.limit, tc.queues), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tc.limit), uint64(tc.queues)))
			s, ds := newSlotsRig(tc.limit, tc.queues)
			share := (tc.limit + tc.queues - 1) / tc.queues
			// The first queue takes everything before the others arrive.
			run(s, ds[0], tc.limit, tc.limit)
			for _, d := range ds[1:] {
				if got := s.take(d, tc.limit); got != 0 {
					t.Fatalf("granted %d slots of a full pool", got)
				}
			}
			for step := range 20 * tc.limit {
				var holders []*Dispatcher
				for _, d := range ds {
					if s.heldBy(d) > 0 {
						holders = append(holders, d)
					}
				}
				giver := holders[rng.IntN(len(holders))]
				s.give(giver, 1)
				// The giver's freed worker asks again; so does every nudged queue, in random
				// order. All of them want more than is free.
				askers := []*Dispatcher{giver}
				for _, d := range ds {
					if nudged(d) {
						askers = append(askers, d)
					}
				}
				rng.Shuffle(len(askers), func(i, j int) { askers[i], askers[j] = askers[j], askers[i] })
				for _, d := range askers {
					before := s.heldBy(d)
					n := run(s, d, tc.limit, tc.limit)
					if n > 0 && before+n > share {
						for _, w := range ds {
							if w != d && s.heldBy(w) < share {
								t.Fatalf("step %d: %s went from %d to %d slots, above its share of %d, while %s held %d and waited",
									step, d.cfg.Queue, before, before+n, share, w.cfg.Queue, s.heldBy(w))
							}
						}
					}
				}
				total := 0
				for _, d := range ds {
					total += s.heldBy(d)
				}
				if total != s.Used() || total > tc.limit {
					t.Fatalf("step %d: queues hold %d slots, Used() = %d, limit %d", step, total, s.Used(), tc.limit)
				}
				if total < tc.limit {
					t.Fatalf("step %d: %d of %d slots are held, though every queue asked for more", step, total, tc.limit)
				}
			}
			for _, d := range ds {
				if h := s.heldBy(d); h > share {
					t.Errorf("after %d job ends %s holds %d slots, above its share of %d", 20*tc.limit, d.cfg.Queue, h, share)
				}
			}
		})
	}
}

// Queues whose backlogs come and go, at random: jobs arrive (the queue is notified and
// asks), jobs end (the queue that ran one asks again, and every queue nudged asks until no
// nudge is left). After every take, no queue is above its share while another waits short
// of its own; once everyone has asked, no slot is free while a queue has jobs waiting.
//
// A queue waits, as the Slots doc defines it, from a take granted less than it asked, or
// a claim that filled its slots, until a claim that comes up short; its share is the
// limit over the queues holding slots or waiting, itself included, rounded up.
func TestSlotsRandomBacklogsNeverExceedAShareWhileAnotherWaits(t *testing.T) {
	for _, tc := range []struct{ limit, queues int }{{10, 2}, {10, 3}, {7, 4}, {3, 5}, {20, 6}} {
		t.Run(fmt.Sprintf("limit%d-queues%d", tc.limit, tc.queues), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(tc.limit)*31, uint64(tc.queues)))
			s, ds := newSlotsRig(tc.limit, tc.queues)
			backlog := map[*Dispatcher]int{}
			waiting := map[*Dispatcher]bool{}
			shareOf := func(d *Dispatcher) int {
				contenders := 1
				for _, w := range ds {
					if w != d && (s.heldBy(w) > 0 || waiting[w]) {
						contenders++
					}
				}
				return (tc.limit + contenders - 1) / contenders
			}
			ask := func(step int, d *Dispatcher) {
				if backlog[d] == 0 && !waiting[d] {
					return // no reason to claim
				}
				want, before, share := tc.limit, s.heldBy(d), shareOf(d)
				n := s.take(d, want)
				if n < want {
					waiting[d] = true
				}
				if n == 0 {
					return
				}
				if before+n > share {
					for _, w := range ds {
						if w != d && waiting[w] && s.heldBy(w) < share {
							t.Fatalf("step %d: %s went from %d to %d slots, above its share of %d, while %s held %d and waited",
								step, d.cfg.Queue, before, before+n, share, w.cfg.Queue, s.heldBy(w))
						}
					}
				}
				found := min(n, backlog[d])
				backlog[d] -= found
				s.claimed(d, n, found)
				waiting[d] = found == n
			}
			settle := func(step int, first ...*Dispatcher) {
				pending := first
				for len(pending) > 0 {
					var d *Dispatcher
					d, pending = pending[0], pending[1:]
					ask(step, d)
					for _, w := range ds {
						if nudged(w) {
							pending = append(pending, w)
						}
					}
				}
			}
			for step := range 5000 {
				var holders []*Dispatcher
				for _, d := range ds {
					if s.heldBy(d) > 0 {
						holders = append(holders, d)
					}
				}
				if len(holders) > 0 && rng.IntN(2) == 0 {
					// Some jobs end before any dispatcher gets to claim again, as when
					// goroutines run late; each queue whose job ended asks again.
					var givers []*Dispatcher
					for range 1 + rng.IntN(tc.limit) {
						giver := holders[rng.IntN(len(holders))]
						if s.heldBy(giver) > 0 {
							s.give(giver, 1)
							givers = append(givers, giver)
						}
					}
					settle(step, givers...)
				} else {
					d := ds[rng.IntN(len(ds))]
					backlog[d] += 1 + rng.IntN(tc.limit) // jobs arrive, and their wakeup
					settle(step, d)
				}
				total := 0
				for _, d := range ds {
					total += s.heldBy(d)
				}
				if total != s.Used() || total > tc.limit {
					t.Fatalf("step %d: queues hold %d slots, Used() = %d, limit %d", step, total, s.Used(), tc.limit)
				}
				for _, d := range ds {
					if total < tc.limit && backlog[d] > 0 {
						t.Fatalf("step %d: %d of %d slots are free while %s has %d jobs waiting", step, tc.limit-total, tc.limit, d.cfg.Queue, backlog[d])
					}
				}
			}
		})
	}
}
