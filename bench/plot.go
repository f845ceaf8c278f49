package main

import (
	"fmt"
	"math"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// writePlots writes one latency CDF per workload group that has latency series, with
// the series of all its runs merged: latency in ms against percentile on a log axis
// (x = 1/(1−p), so 90%, 99%, 99.9% … are evenly spaced).
func writePlots(dir string, workloads []workloadReport) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	type line struct {
		label string
		hist  histogram
	}
	var groups []string
	lines := map[string][]line{}
	titles := map[string]string{}
	for _, wr := range workloads {
		merged := map[string]histogram{}
		var order []string
		for _, run := range wr.Runs {
			for _, s := range run.series {
				h := merged[s.label]
				if h == nil {
					h = newHist()
					merged[s.label] = h
					order = append(order, s.label)
				}
				h.Merge(s.hist)
			}
		}
		if len(order) == 0 {
			continue
		}
		if _, ok := lines[wr.Group]; !ok {
			groups = append(groups, wr.Group)
		}
		for _, label := range order {
			l := label
			if wr.Group == "latency" {
				l = wr.Name
			}
			lines[wr.Group] = append(lines[wr.Group], line{l, merged[label]})
		}
		titles[wr.Group] = wr.Name
		if wr.Group == "latency" {
			titles[wr.Group] = "latency (handler start − Commit returned)"
		}
	}
	var files []string
	for _, g := range groups {
		p := plot.New()
		title := titles[g]
		if len(workloads[0].Runs) > 1 {
			title += fmt.Sprintf(", %d runs merged", len(workloads[0].Runs))
		}
		p.Title.Text = title
		p.X.Label.Text = "percentile"
		p.Y.Label.Text = "ms"
		p.X.Scale = plot.LogScale{}
		p.Add(plotter.NewGrid())
		maxX, maxY := 10.0, 0.1
		for i, l := range lines[g] {
			pts := cdf(l.hist)
			if len(pts) == 0 {
				continue
			}
			maxX = max(maxX, pts[len(pts)-1].X)
			maxY = max(maxY, pts[len(pts)-1].Y)
			ln, err := plotter.NewLine(pts)
			if err != nil {
				return files, err
			}
			ln.Color = plotutil.Color(i)
			ln.Width = vg.Points(1.5)
			p.Add(ln)
			p.Legend.Add(fmt.Sprintf("%s (n=%d)", l.label, l.hist.TotalCount()), ln)
		}
		p.Legend.Top = true
		p.Legend.Left = true
		p.X.Min, p.X.Max = 1, maxX
		p.Y.Min, p.Y.Max = 0, maxY*1.08
		p.Title.Padding = vg.Points(6)
		p.X.Tick.Marker = percentileTicks(maxX)
		path := filepath.Join(dir, g+".png")
		if err := p.Save(9*vg.Inch, 5*vg.Inch, path); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	return files, nil
}

// cdf samples h at percentiles p = 1 − 10^(−k/20) up to the resolution its count allows,
// then its max, as points (1/(1−p), ms).
func cdf(h histogram) plotter.XYs {
	n := h.TotalCount()
	if n == 0 {
		return nil
	}
	var pts plotter.XYs
	limit := float64(n) // beyond 1/(1−p) = n every percentile is the max
	for k := 0; ; k++ {
		x := math.Pow(10, float64(k)/20)
		if x > limit {
			break
		}
		q := 100 * (1 - 1/x)
		pts = append(pts, plotter.XY{X: x, Y: ms(h.ValueAtQuantile(q))})
	}
	pts = append(pts, plotter.XY{X: max(limit, pts[len(pts)-1].X*1.01), Y: ms(h.Max())})
	return pts
}

func percentileTicks(maxX float64) plot.ConstantTicks {
	ticks := plot.ConstantTicks{{Value: 1, Label: "0%"}, {Value: 2, Label: "50%"}}
	labels := []string{"90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"}
	for i, l := range labels {
		v := math.Pow(10, float64(i+1))
		if v > maxX*1.0001 {
			break
		}
		ticks = append(ticks, plot.Tick{Value: v, Label: l})
	}
	return ticks
}
