package backoff_test

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/relayq/relay/backoff"
)

func TestDelayGrowsAndCaps(t *testing.T) {
	p := backoff.Policy{Initial: time.Second, Multiplier: 2, Max: 10 * time.Second}
	want := []time.Duration{1, 2, 4, 8, 10, 10, 10}
	for i, w := range want {
		if got := p.Delay(i + 1); got != w*time.Second {
			t.Errorf("Delay(%d) = %v, want %v", i+1, got, w*time.Second)
		}
	}
	if got := p.Delay(10_000); got != 10*time.Second {
		t.Errorf("Delay(10000) = %v, want the cap", got)
	}
}

func TestDelayJitterStaysInBounds(t *testing.T) {
	p := backoff.Policy{Initial: 100 * time.Millisecond, Multiplier: 3, Max: time.Hour, Jitter: 0.5}
	seen := map[time.Duration]bool{}
	for range 200 {
		d := p.Delay(3) // base 900 ms
		if d < 450*time.Millisecond || d > 1350*time.Millisecond {
			t.Fatalf("Delay(3) = %v, outside 900ms ±50%%", d)
		}
		seen[d] = true
	}
	if len(seen) < 10 {
		t.Fatalf("jitter produced only %d distinct delays in 200 draws", len(seen))
	}
}

func TestValidate(t *testing.T) {
	if err := backoff.Default().Validate(); err != nil {
		t.Fatalf("default policy invalid: %v", err)
	}
	bad := []backoff.Policy{
		{Initial: 0, Multiplier: 2, Max: time.Second},
		{Initial: time.Second, Multiplier: 0.5, Max: time.Second},
		{Initial: time.Second, Multiplier: 2, Max: time.Millisecond},
		{Initial: time.Second, Multiplier: 2, Max: time.Second, Jitter: 2},
		{Initial: -time.Second, Multiplier: 2, Max: time.Second},
		{Initial: time.Second, Multiplier: math.NaN(), Max: time.Second},
		{Initial: time.Second, Multiplier: math.Inf(1), Max: time.Second},
		{Initial: time.Second, Multiplier: 2, Max: time.Second, Jitter: math.NaN()},
		{Initial: time.Second, Multiplier: 2, Max: time.Second, Jitter: -0.1},
		// Max × (1 + Jitter) past the largest time.Duration: jittered delays would wrap
		{Initial: time.Second, Multiplier: 2, Max: math.MaxInt64, Jitter: 0.5},
		{Initial: time.Second, Multiplier: 2, Max: math.MaxInt64},
	}
	for _, p := range bad {
		if err := p.Validate(); !errors.Is(err, backoff.ErrInvalidPolicy) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalidPolicy", p, err)
		}
	}
	// The longest valid Max: every delay it allows is positive.
	edge := backoff.Policy{Initial: time.Second, Multiplier: 2, Max: math.MaxInt64 / 4, Jitter: 1}
	if err := edge.Validate(); err != nil {
		t.Fatalf("Validate(%+v) = %v", edge, err)
	}
	for range 100 {
		if d := edge.Delay(100); d <= 0 {
			t.Fatalf("Delay of a valid policy = %v", d)
		}
	}
}

func TestSeriesResets(t *testing.T) {
	s := backoff.Policy{Initial: time.Millisecond, Multiplier: 2, Max: time.Second}.Series()
	if a, b, c := s.Next(), s.Next(), s.Next(); a != time.Millisecond || b != 2*time.Millisecond || c != 4*time.Millisecond {
		t.Fatalf("series = %v %v %v, want 1ms 2ms 4ms", a, b, c)
	}
	s.Reset()
	if d := s.Next(); d != time.Millisecond {
		t.Fatalf("after Reset Next = %v, want 1ms", d)
	}
}

func TestSeriesWaitLastsTheNextDelay(t *testing.T) {
	s := backoff.Policy{Initial: 20 * time.Millisecond, Multiplier: 2, Max: time.Second}.Series()
	began := time.Now()
	if err := s.Wait(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(began); took < 20*time.Millisecond {
		t.Fatalf("Wait returned after %v, before its 20ms delay", took)
	}
	if d := s.Next(); d != 40*time.Millisecond {
		t.Fatalf("after one Wait Next = %v, want 40ms: Wait counts as one failure", d)
	}
}

// A signal ends the wait at once and starts the series over: the delays had grown for an
// outage that is over.
func TestSeriesWaitEndsOnASignalAndStartsOver(t *testing.T) {
	s := backoff.Policy{Initial: time.Hour, Multiplier: 2, Max: 10 * time.Hour}.Series()
	s.Next()
	s.Next()
	resume := backoff.NewSignal()
	resume.Send() // sent before the wait, as a recovery seen while the statement failed is
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Wait(ctx, resume.C()); err != nil {
		t.Fatalf("Wait = %v, want nil: the signal must end an hour's wait", err)
	}
	if d := s.Next(); d != time.Hour {
		t.Fatalf("after a signalled Wait Next = %v, want the first delay, 1h", d)
	}
}

func TestSeriesWaitEndsWithItsContext(t *testing.T) {
	s := backoff.Policy{Initial: time.Hour, Multiplier: 2, Max: time.Hour}.Series()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Wait(ctx, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want context.Canceled", err)
	}
}

func TestSignalKeepsOne(t *testing.T) {
	sig := backoff.NewSignal()
	sig.Send()
	sig.Send() // never blocks, and is not doubled
	select {
	case <-sig.C():
	default:
		t.Fatal("a signal sent while no one waited was lost")
	}
	select {
	case <-sig.C():
		t.Fatal("two Sends delivered two signals; want one")
	default:
	}
}
