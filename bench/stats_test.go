package main

import (
	"math"
	"testing"
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
