package bench

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// PlotFormats are the file extensions Plot writes.
var plotFormats = []string{".svg", ".png", ".pdf"}

// CheckPlotPath verifies that path has an extension Plot can write.
func CheckPlotPath(path string) error {
	ext := strings.ToLower(filepath.Ext(path))
	for _, f := range plotFormats {
		if ext == f {
			return nil
		}
	}
	return fmt.Errorf("plot %q: unknown format %q (use .svg, .png or .pdf)", path, ext)
}

var (
	exitColor  = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	readyColor = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
)

// Plot draws the distributions per path — a box (quartiles, median,
// whiskers) and every sample as a dot, launch→exit and launch→ready side
// by side — on a logarithmic time axis, and saves it as SVG, PNG or PDF
// (by the extension of path).
func Plot(rep *Report, path string) error {
	if err := CheckPlotPath(path); err != nil {
		return err
	}
	var rows []*PathResult
	for _, p := range rep.Paths {
		if p.Usable() {
			rows = append(rows, p)
		}
	}
	if len(rows) == 0 {
		return errors.New("plot: no path has successful samples")
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("microvm bench: startup per path (%d runs each, %d CPUs, KVM: %s)", rep.Runs, rep.Host.CPUs, rep.Host.KVMModule)
	p.X.Label.Text = "time since launch [ms], log scale"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	p.Legend.Top = true
	p.Legend.Left = false
	p.Add(plotter.NewGrid())

	names := make([]string, len(rows))
	legend := map[string]bool{}
	minV, maxV := math.Inf(1), 0.0
	for i, pr := range rows {
		y := float64(len(rows) - 1 - i) // first path on top
		label := pr.Name
		if pr.Failed > 0 {
			label += fmt.Sprintf("\n(%d failed)", pr.Failed)
		}
		names[len(rows)-1-i] = label
		var exit, ready plotter.Values
		for _, s := range pr.Samples {
			if s.Failed() {
				continue
			}
			exit = append(exit, ms(s.Exit))
			if s.HasReady {
				ready = append(ready, ms(s.Ready))
			}
		}
		for _, set := range []struct {
			vals   plotter.Values
			off    float64
			col    color.Color
			legend string
		}{{exit, -0.17, exitColor, "launch→exit"}, {ready, 0.17, readyColor, "launch→ready"}} {
			if len(set.vals) == 0 {
				continue
			}
			for _, v := range set.vals {
				minV, maxV = math.Min(minV, v), math.Max(maxV, v)
			}
			bp, err := plotter.NewBoxPlot(vg.Points(11), y+set.off, set.vals)
			if err != nil {
				return fmt.Errorf("plot %s: %w", pr.Name, err)
			}
			bp.Horizontal = true
			bp.FillColor = withAlpha(set.col, 0x50)
			bp.BoxStyle.Color = set.col
			bp.MedianStyle.Color = set.col
			bp.MedianStyle.Width = vg.Points(2)
			bp.WhiskerStyle.Color = set.col
			bp.CapWidth = vg.Points(6)
			bp.GlyphStyle.Radius = 0 // outliers are drawn as dots below
			p.Add(bp)
			pts := make(plotter.XYs, len(set.vals))
			for k, v := range set.vals {
				// Deterministic jitter spreads the dots over the box height.
				j := (float64((k*7919)%97)/96 - 0.5) * 0.16
				pts[k] = plotter.XY{X: v, Y: y + set.off + j}
			}
			sc, err := plotter.NewScatter(pts)
			if err != nil {
				return fmt.Errorf("plot %s: %w", pr.Name, err)
			}
			sc.GlyphStyle = draw.GlyphStyle{Color: withAlpha(set.col, 0xb0), Radius: vg.Points(1.6), Shape: draw.CircleGlyph{}}
			p.Add(sc)
			if !legend[set.legend] {
				legend[set.legend] = true
				p.Legend.Add(set.legend, sc)
			}
		}
	}
	p.NominalY(names...)
	p.Y.Min, p.Y.Max = -0.6, float64(len(rows))-0.4
	p.X.Min, p.X.Max = minV/1.5, maxV*1.5
	h := vg.Length(len(rows))*0.55*vg.Inch + 1.6*vg.Inch
	if err := p.Save(9*vg.Inch, h, path); err != nil {
		return fmt.Errorf("plot: save %s: %w", path, err)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func withAlpha(c color.Color, a uint8) color.Color {
	r, g, b, _ := c.RGBA()
	return color.NRGBA{R: uint8(r >> 8), G: uint8(g >> 8), B: uint8(b >> 8), A: a}
}
