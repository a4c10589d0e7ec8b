package bench

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// ProgressBar draws a one-line progress bar (for a terminal: it redraws
// with \r). Use Update as Options.Progress and Finish at the end.
type ProgressBar struct {
	w     io.Writer
	width int
	start time.Time
	mu    sync.Mutex
	last  time.Time
	drawn bool
}

// NewProgressBar draws on w.
func NewProgressBar(w io.Writer) *ProgressBar {
	return &ProgressBar{w: w, width: 30, start: time.Now()}
}

// Update redraws the bar: done of total launches, the last path launched.
// Redraws are limited to 20 per second, except the last one.
func (p *ProgressBar) Update(done, total int, path string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	if done < total && now.Sub(p.last) < 50*time.Millisecond {
		return
	}
	p.last = now
	fmt.Fprint(p.w, "\r"+p.line(done, total, path, now.Sub(p.start))+"\x1b[K")
	p.drawn = true
}

// line renders the bar.
func (p *ProgressBar) line(done, total int, path string, elapsed time.Duration) string {
	if total <= 0 {
		total = 1
	}
	done = min(max(done, 0), total)
	fill := p.width * done / total
	bar := strings.Repeat("█", fill) + strings.Repeat("░", p.width-fill)
	eta := "?"
	if done > 0 {
		rest := time.Duration(float64(elapsed) / float64(done) * float64(total-done))
		eta = rest.Round(time.Second).String()
	}
	return fmt.Sprintf("Benchmarking %-10s %s %d/%d  ETA %s", path, bar, done, total, eta)
}

// Finish clears the bar's line.
func (p *ProgressBar) Finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn {
		fmt.Fprint(p.w, "\r\x1b[K")
		p.drawn = false
	}
}
