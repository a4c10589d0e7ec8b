package vmm

import (
	"io"
	"sync"
)

// lineTracker passes console output through and remembers the last
// non-empty line, bounded in size whatever the guest writes.
type lineTracker struct {
	w    io.Writer
	mu   sync.Mutex
	cur  []byte // the line being written
	last []byte // the last complete non-empty line
	// onLine, when set, sees every complete line (without its newline).
	onLine func(line []byte)
}

const maxTrackedLine = 256

func (t *lineTracker) Write(p []byte) (int, error) {
	t.mu.Lock()
	for _, c := range p {
		switch c {
		case '\n':
			if len(t.cur) > 0 {
				t.last = append(t.last[:0], t.cur...)
				if t.onLine != nil {
					t.onLine(t.cur)
				}
			}
			t.cur = t.cur[:0]
		case '\r':
		default:
			if len(t.cur) < maxTrackedLine {
				t.cur = append(t.cur, c)
			}
		}
	}
	t.mu.Unlock()
	return t.w.Write(p)
}

// Last returns the last line of output: the unfinished one if there is
// one, else the last complete one.
func (t *lineTracker) Last() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.cur) > 0 {
		return string(t.cur)
	}
	return string(t.last)
}
