package vmm

import (
	"io"
	"sync"
	"time"
)

// console sits between the guest's UART and Config.Console. It remembers
// the last line (bounded, whatever the guest writes), hands every complete
// line to onLine, and batches output: a guest writes one byte per VM exit,
// and one write system call per byte costs more than the exit itself on
// emulated hosts. Output is flushed at each newline, when 4 KiB are
// waiting, and flushDelay after the first byte of a partial line (so a
// prompt still shows at once), and by flush when the machine ends.
type console struct {
	w      io.Writer
	onLine func(line []byte) // may be nil; called with mu held

	mu    sync.Mutex
	buf   []byte
	armed bool   // a flush timer is pending
	cur   []byte // the line being written
	last  []byte // the last complete non-empty line
	err   error  // the first error writing to w
}

const (
	maxTrackedLine = 256
	consoleBuffer  = 4096
	flushDelay     = 2 * time.Millisecond
)

func (c *console) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	newline := false
	for _, b := range p {
		switch b {
		case '\n':
			newline = true
			if len(c.cur) > 0 {
				c.last = append(c.last[:0], c.cur...)
				if c.onLine != nil {
					c.onLine(c.cur)
				}
			}
			c.cur = c.cur[:0]
		case '\r':
		default:
			if len(c.cur) < maxTrackedLine {
				c.cur = append(c.cur, b)
			}
		}
	}
	c.buf = append(c.buf, p...)
	switch {
	case newline || len(c.buf) >= consoleBuffer:
		c.flushLocked()
	case !c.armed:
		c.armed = true
		time.AfterFunc(flushDelay, c.flush)
	}
	return len(p), nil
}

// flush writes out whatever is buffered.
func (c *console) flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.armed = false
	c.flushLocked()
}

func (c *console) flushLocked() {
	if len(c.buf) == 0 {
		return
	}
	if c.err == nil {
		_, c.err = c.w.Write(c.buf)
	}
	c.buf = c.buf[:0]
}

// Last returns the last line of output: the unfinished one if there is
// one, else the last complete one.
func (c *console) Last() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.cur) > 0 {
		return string(c.cur)
	}
	return string(c.last)
}
