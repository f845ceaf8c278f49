package main

import (
	"math"
	"slices"
	"testing"
	"time"
)

// TestMeanInterval: the mean of a sample and the half-width of its 95 % interval, against
// figures worked out by hand (Student's t with n−1 degrees of freedom).
func TestMeanInterval(t *testing.T) {
	for _, c := range []struct {
		v               []float64
		mean, halfWidth float64
	}{
		{[]float64{1, 2, 3, 4, 5}, 3, 2.78 * math.Sqrt(2.5/5)}, // s² = 2.5, t(4) = 2.78
		{[]float64{4, 4, 4}, 4, 0},
		{[]float64{-1, 1}, 0, 12.71 * 1}, // s = √2, s/√2 = 1
	} {
		mean, hw := meanInterval(c.v)
		if math.Abs(mean-c.mean) > 1e-9 || math.Abs(hw-c.halfWidth) > 1e-9 {
			t.Errorf("meanInterval(%v) = %v ± %v, want %v ± %v", c.v, mean, hw, c.mean, c.halfWidth)
		}
	}
	if _, hw := meanInterval([]float64{3}); !math.IsInf(hw, 1) {
		t.Errorf("one sample: half-width %v, want +Inf", hw)
	}
}

// TestRoute: a job whose AttemptedAt came before its Commit returned was handed off; one
// leased after, or not yet started, was claimed. Pickups split by it add up to the whole.
func TestRoute(t *testing.T) {
	base := time.Now()
	r := newRecorder(base, 3)
	for seq, attemptedAfter := range []time.Duration{-time.Millisecond, time.Millisecond} {
		r.committed(int64(seq), base.Add(10*time.Millisecond))
		r.beganClaimed(int64(seq), base.Add(12*time.Millisecond), base.Add(10*time.Millisecond+attemptedAfter))
	}
	r.committed(2, base.Add(10*time.Millisecond)) // never started
	if got := []int{r.route(0), r.route(1), r.route(2)}; !slices.Equal(got, []int{0, 1, 1}) {
		t.Errorf("routes %v, want [0 1 1] (handed off, claimed, not started)", got)
	}
	byRoute := []histogram{newHist(), newHist()}
	p := r.pickups(0, 3, nil, r.route, byRoute)
	if byRoute[0].TotalCount() != 1 || byRoute[1].TotalCount() != 1 || p.hist.TotalCount() != 2 || p.missing != 1 {
		t.Errorf("split %d + %d of %d started, %d missing; want 1 + 1 of 2, 1 missing",
			byRoute[0].TotalCount(), byRoute[1].TotalCount(), p.hist.TotalCount(), p.missing)
	}
}
