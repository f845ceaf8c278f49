package relayui

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/relayq/relay/internal/store"
)

// chart is an SVG chart laid out on the server: the template only draws what it holds.
// Coordinates are in the SVG's viewBox; the browser scales it to the page's width.
type chart struct {
	Width, Height            float64
	Left, Top, Right, Bottom float64 // the plot area
	MidX, MidY               float64 // its centre
	Bars                     []bar
	Lines                    []line
	Dots                     []dot
	YTicks, XTicks           []tick
	Legend                   []legendEntry
	Empty                    bool
	Unit                     string
}

type bar struct {
	X, Y, W, H float64
	Class      string
	Title      string
}

type line struct {
	Class  string
	Points string
}

type dot struct {
	X, Y  float64
	Class string
	Title string
}

type tick struct {
	X, Y  float64
	Label string
}

type legendEntry struct{ Class, Label string }

const (
	chartWidth, chartHeight = 560.0, 176.0
	plotLeft, plotRight     = 40.0, 542.0
	plotTop, plotBottom     = 10.0, 152.0
	buckets                 = int(chartWindow / chartStep)
)

func newChart(unit string) chart {
	c := chart{Width: chartWidth, Height: chartHeight, Left: plotLeft, Top: plotTop, Right: plotRight, Bottom: plotBottom, Unit: unit,
		MidX: (plotLeft + plotRight) / 2, MidY: (plotTop + plotBottom) / 2}
	for _, ago := range []int{60, 45, 30, 15, 0} {
		label := fmt.Sprintf("−%d min", ago)
		if ago == 0 {
			label = "now"
		}
		c.XTicks = append(c.XTicks, tick{X: bucketX(buckets-ago) + 0, Y: plotBottom + 17, Label: label})
	}
	return c
}

// bucketX is the left edge of the slot of bucket i, counted from the oldest (0) to the
// newest (buckets-1); bucketX(buckets) is the right edge of the plot.
func bucketX(i int) float64 { return plotLeft + float64(i)*(plotRight-plotLeft)/float64(buckets) }

// yTicks scales values up to max onto the plot, in 4 steps of a round size.
func (c *chart) yTicks(max float64, label func(float64) string) func(float64) float64 {
	top := 4 * niceCeil(max/4)
	y := func(v float64) float64 { return plotBottom - v/top*(plotBottom-plotTop) }
	for i := 0; i <= 4; i++ {
		v := top * float64(i) / 4
		c.YTicks = append(c.YTicks, tick{X: plotLeft - 8, Y: y(v), Label: label(v)})
	}
	return y
}

// niceCeil is the smallest of 1, 2 and 5 times a power of ten that is at least v (at
// least 1).
func niceCeil(v float64) float64 {
	if v <= 1 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= v {
			return m * p
		}
	}
	return 10 * p
}

// throughputChart stacks the jobs that finished in each minute by how they ended.
func throughputChart(bs []store.Bucket) chart {
	c := newChart("jobs / min")
	c.Legend = []legendEntry{{"succeeded", "succeeded"}, {"failed", "failed"}, {"cancelled", "cancelled"}}
	var peak int64
	for _, b := range bs {
		peak = max(peak, b.Succeeded+b.Failed+b.Cancelled)
	}
	c.Empty = peak == 0
	y := c.yTicks(float64(peak), func(v float64) string { return trimFloat(v) })
	w := bucketX(1) - bucketX(0)
	for _, b := range bs {
		if b.Ago >= buckets {
			continue
		}
		x := bucketX(buckets-1-b.Ago) + w*0.12
		base := 0.0
		title := fmt.Sprintf("%s: %d succeeded, %d failed, %d cancelled", minutesAgo(b.Ago), b.Succeeded, b.Failed, b.Cancelled)
		for _, part := range []struct {
			n     int64
			class string
		}{{b.Succeeded, "succeeded"}, {b.Failed, "failed"}, {b.Cancelled, "cancelled"}} {
			if part.n == 0 {
				continue
			}
			top := base + float64(part.n)
			c.Bars = append(c.Bars, bar{X: x, Y: y(top), W: w * 0.76, H: y(base) - y(top), Class: part.class, Title: title})
			base = top
		}
	}
	return c
}

// latencyChart draws, per minute, the wait from due to start at the median and the 95th
// percentile, and the median run time, of the jobs that finished in it.
func latencyChart(bs []store.Bucket) chart {
	c := newChart("ms")
	c.Legend = []legendEntry{{"wait-p50", "wait p50"}, {"wait-p95", "wait p95"}, {"run-p50", "run time p50"}}
	var peak time.Duration
	for _, b := range bs {
		peak = max(peak, b.WaitP95, b.WaitP50, b.RunP50)
	}
	c.Empty = peak == 0
	y := c.yTicks(float64(peak)/float64(time.Millisecond), func(v float64) string { return trimFloat(v) })
	w := bucketX(1) - bucketX(0)
	series := []struct {
		class string
		get   func(store.Bucket) time.Duration
	}{
		{"wait-p95", func(b store.Bucket) time.Duration { return b.WaitP95 }},
		{"wait-p50", func(b store.Bucket) time.Duration { return b.WaitP50 }},
		{"run-p50", func(b store.Bucket) time.Duration { return b.RunP50 }},
	}
	for _, s := range series {
		var pts []string
		for i := len(bs) - 1; i >= 0; i-- { // oldest first
			b := bs[i]
			if b.Ago >= buckets || b.Succeeded+b.Failed == 0 {
				continue
			}
			d := s.get(b)
			px, py := bucketX(buckets-1-b.Ago)+w/2, y(float64(d)/float64(time.Millisecond))
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px, py))
			c.Dots = append(c.Dots, dot{X: px, Y: py, Class: s.class, Title: fmt.Sprintf("%s: %s %s", minutesAgo(b.Ago), strings.ReplaceAll(s.class, "-", " "), humanDuration(d))})
		}
		if len(pts) > 1 {
			c.Lines = append(c.Lines, line{Class: s.class, Points: strings.Join(pts, " ")})
		}
	}
	return c
}

func minutesAgo(ago int) string {
	if ago == 0 {
		return "this minute"
	}
	return fmt.Sprintf("%d–%d min ago", ago, ago+1)
}

func trimFloat(v float64) string {
	if v == math.Trunc(v) {
		return thousands(int64(v))
	}
	return fmt.Sprintf("%.1f", v)
}
