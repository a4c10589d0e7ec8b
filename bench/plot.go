package bench

import (
	"errors"
	"fmt"
	"image/color"
	"math"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// plotFormats are the file extensions Plot writes.
var plotFormats = []string{".svg", ".png"}

// CheckPlotPath verifies that path has an extension Plot can write.
func CheckPlotPath(path string) error {
	ext := strings.ToLower(filepath.Ext(path))
	if slices.Contains(plotFormats, ext) {
		return nil
	}
	return fmt.Errorf("plot %q: unknown format %q (use .svg or .png)", path, ext)
}

var (
	exitColor  = color.NRGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	readyColor = color.NRGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	textColor  = color.NRGBA{A: 0xff}
	gridColor  = color.NRGBA{R: 0xdd, G: 0xdd, B: 0xdd, A: 0xff}
)

// The chart's geometry in pixels (SVG user units and PNG pixels alike).
const (
	plotWidth  = 900
	plotTop    = 58 // title and legend above
	plotBottom = 50 // tick labels and axis label below
	plotRight  = 24
	plotRowH   = 60 // per path: launch→ready above, launch→exit below
	plotBoxOff = 12 // distance of each box's centre from the row's centre
	plotBoxH   = 8  // half the height of a box
	charWidth  = 7  // of the label font (the PNG font is 7×13)
)

// plotSize is the size of a chart of rows paths.
func plotSize(rows int) (w, h int) {
	return plotWidth, plotTop + rows*plotRowH + plotBottom
}

// canvas is what a chart is drawn on: the SVG and PNG writers.
// Coordinates are pixels from the top-left corner; text y is the baseline.
type canvas interface {
	rect(x0, y0, x1, y1 float64, fill color.NRGBA)
	line(x0, y0, x1, y1, width float64, c color.NRGBA) // horizontal or vertical
	dot(x, y, r float64, c color.NRGBA)
	text(x, y float64, s string, anchor textAnchor, c color.NRGBA)
}

// textAnchor says which point of a text x is.
type textAnchor int

const (
	anchorStart textAnchor = iota
	anchorMiddle
	anchorEnd
)

// plotSeries is one figure (launch→exit or launch→ready) of one path, in ms.
type plotSeries struct {
	vals  []float64
	off   float64 // from the row's centre, in pixels
	col   color.NRGBA
	label string
}

// plotRow is one path of the chart.
type plotRow struct {
	name   string
	failed int
	series []plotSeries
}

// Plot draws the distributions per path — a box (quartiles, median,
// whiskers) and every sample as a dot, launch→ready above launch→exit —
// on a logarithmic time axis, and saves it as SVG or PNG (by the extension
// of path).
func Plot(rep *Report, path string) error {
	if err := CheckPlotPath(path); err != nil {
		return err
	}
	var rows []plotRow
	for _, p := range rep.Paths {
		if !p.Usable() {
			continue
		}
		var exit, ready []float64
		for _, s := range p.Samples {
			if s.Failed() {
				continue
			}
			exit = append(exit, ms(s.Exit))
			if s.HasReady {
				ready = append(ready, ms(s.Ready))
			}
		}
		rows = append(rows, plotRow{name: p.Name, failed: p.Failed, series: []plotSeries{
			{ready, -plotBoxOff, readyColor, "launch→ready"},
			{exit, plotBoxOff, exitColor, "launch→exit"},
		}})
	}
	if len(rows) == 0 {
		return errors.New("plot: no path has successful samples")
	}
	title := fmt.Sprintf("microvm bench: startup per path (%d runs each, %d CPUs, KVM: %s)", rep.Runs, rep.Host.CPUs, rep.Host.KVMModule)
	var err error
	if strings.ToLower(filepath.Ext(path)) == ".svg" {
		err = writeSVG(path, title, rows)
	} else {
		err = writePNG(path, title, rows)
	}
	if err != nil {
		return fmt.Errorf("plot: save %s: %w", path, err)
	}
	return nil
}

// drawChart draws the chart of rows on c, which is plotSize(len(rows)).
func drawChart(c canvas, title string, rows []plotRow) {
	w, h := plotSize(len(rows))
	c.rect(0, 0, float64(w), float64(h), color.NRGBA{R: 0xff, G: 0xff, B: 0xff, A: 0xff})

	labelChars := 0
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range rows {
		labelChars = max(labelChars, len([]rune(r.name)), len(failedLabel(r.failed)))
		for _, s := range r.series {
			for _, v := range s.vals {
				lo, hi = min(lo, v), max(hi, v)
			}
		}
	}
	lo, hi = max(lo, 1e-6)/1.5, max(hi, 1e-6)*1.5
	left := float64(max(80, labelChars*charWidth+24))
	right := float64(w - plotRight)
	top, bottom := float64(plotTop), float64(h-plotBottom)
	xOf := func(v float64) float64 {
		return left + (math.Log(max(v, 1e-6))-math.Log(lo))/(math.Log(hi)-math.Log(lo))*(right-left)
	}

	c.text(float64(w)/2, 22, title, anchorMiddle, textColor)
	// Legend, top right: one swatch per figure.
	lx := right - 250
	for i, s := range rows[0].series {
		x := lx + float64(i)*130
		c.rect(x, 36, x+14, 46, withAlpha(s.col, 0x50))
		c.dot(x+7, 41, 2.5, s.col)
		c.text(x+20, 45, s.label, anchorStart, textColor)
	}

	for _, t := range logTicks(lo, hi) {
		x := xOf(t)
		c.line(x, top, x, bottom, 1, gridColor)
		c.line(x, bottom, x, bottom+5, 1, textColor)
		c.text(x, bottom+18, strconv.FormatFloat(t, 'g', -1, 64), anchorMiddle, textColor)
	}
	c.line(left, top, right, top, 1, textColor)
	c.line(left, bottom, right, bottom, 1, textColor)
	c.line(left, top, left, bottom, 1, textColor)
	c.line(right, top, right, bottom, 1, textColor)
	c.text((left+right)/2, float64(h)-10, "time since launch [ms], log scale", anchorMiddle, textColor)

	for i, r := range rows {
		yc := top + (float64(i)+0.5)*plotRowH
		if lbl := failedLabel(r.failed); lbl != "" {
			c.text(left-10, yc-2, r.name, anchorEnd, textColor)
			c.text(left-10, yc+13, lbl, anchorEnd, textColor)
		} else {
			c.text(left-10, yc+5, r.name, anchorEnd, textColor)
		}
		for _, s := range r.series {
			if len(s.vals) == 0 {
				continue
			}
			drawBox(c, s, yc+s.off, xOf)
		}
	}
}

// drawBox draws one series at height y: the box from the first to the third
// quartile with the median, whiskers to the farthest samples within 1.5
// interquartile ranges, and every sample as a dot.
func drawBox(c canvas, s plotSeries, y float64, xOf func(float64) float64) {
	v := slices.Sorted(slices.Values(s.vals))
	q1, med, q3 := quantile(v, 0.25), quantile(v, 0.5), quantile(v, 0.75)
	iqr := q3 - q1
	wlo, whi := q1, q3
	for _, x := range v {
		if x >= q1-1.5*iqr {
			wlo = min(wlo, x)
		}
		if x <= q3+1.5*iqr {
			whi = max(whi, x)
		}
	}
	x1, xm, x3 := xOf(q1), xOf(med), xOf(q3)
	top, bot := y-plotBoxH, y+plotBoxH
	c.line(xOf(wlo), y, x1, y, 1, s.col)
	c.line(x3, y, xOf(whi), y, 1, s.col)
	c.line(xOf(wlo), y-4, xOf(wlo), y+4, 1, s.col)
	c.line(xOf(whi), y-4, xOf(whi), y+4, 1, s.col)
	c.rect(x1, top, max(x3, x1+1), bot, withAlpha(s.col, 0x50))
	c.line(x1, top, x3, top, 1, s.col)
	c.line(x1, bot, x3, bot, 1, s.col)
	c.line(x1, top, x1, bot, 1, s.col)
	c.line(x3, top, x3, bot, 1, s.col)
	c.line(xm, top, xm, bot, 2, s.col)
	for k, x := range s.vals {
		// Deterministic jitter spreads the dots over the box height.
		j := (float64((k*7919)%97)/96 - 0.5) * 2 * (plotBoxH - 2)
		c.dot(xOf(x), y+j, 2, withAlpha(s.col, 0xb0))
	}
}

// failedLabel is the second label line of a path with failed launches.
func failedLabel(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("(%d failed)", n)
}

// quantile is the p-quantile of the sorted v, interpolated linearly.
func quantile(v []float64, p float64) float64 {
	pos := p * float64(len(v)-1)
	i := int(pos)
	if i+1 >= len(v) {
		return v[len(v)-1]
	}
	return v[i] + (pos-float64(i))*(v[i+1]-v[i])
}

// logTicks are the 1-2-5 values (or all 1…9 on a narrow axis, only the
// powers of ten on a wide one) between lo and hi.
func logTicks(lo, hi float64) []float64 {
	pick := func(mults []float64) []float64 {
		var ts []float64
		for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
			for _, m := range mults {
				// Round to the decade's precision so that labels read 0.2, not 0.20000000000000004.
				t, _ := strconv.ParseFloat(strconv.FormatFloat(m*math.Pow(10, e), 'g', 6, 64), 64)
				if t >= lo && t <= hi {
					ts = append(ts, t)
				}
			}
		}
		return ts
	}
	ts := pick([]float64{1, 2, 5})
	switch {
	case len(ts) < 3:
		ts = pick([]float64{1, 2, 3, 4, 5, 6, 7, 8, 9})
	case len(ts) > 12:
		ts = pick([]float64{1})
	}
	return ts
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func withAlpha(c color.NRGBA, a uint8) color.NRGBA {
	c.A = a
	return c
}
