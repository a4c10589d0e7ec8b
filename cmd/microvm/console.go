package main

import (
	"io"
	"os"

	"github.com/microvm/microvm/vmm"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// escapeKey (Ctrl-A) starts an escape sequence on an interactive console:
// Ctrl-A x stops the VM, Ctrl-A Ctrl-A sends a literal Ctrl-A.
const escapeKey = 0x01

// attachConsole feeds stdin to the guest's serial port. A terminal is put
// in raw mode (output post-processing kept, so "\n" still returns the
// carriage) and watched for the escape sequence; other input is fed only
// when force is set. restore undoes the terminal change.
func attachConsole(stdin io.Reader, m *vmm.Machine, force bool) (restore func(), err error) {
	f, ok := stdin.(*os.File)
	if ok && term.IsTerminal(int(f.Fd())) {
		fd := int(f.Fd())
		old, err := term.MakeRaw(fd)
		if err != nil {
			return nil, err
		}
		if t, err := unix.IoctlGetTermios(fd, unix.TCGETS); err == nil {
			t.Oflag |= unix.OPOST | unix.ONLCR
			unix.IoctlSetTermios(fd, unix.TCSETS, t)
		}
		go m.PumpInput(&escapeReader{r: f, stop: m.Stop})
		return func() { term.Restore(fd, old) }, nil
	}
	if force {
		go m.PumpInput(stdin)
	}
	return func() {}, nil
}

// escapeReader passes input through, except for Ctrl-A sequences: Ctrl-A x
// calls stop and ends the input; Ctrl-A Ctrl-A yields one Ctrl-A.
type escapeReader struct {
	r       io.Reader
	stop    func()
	pending bool // a Ctrl-A was the last byte read
}

func (e *escapeReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	out := p[:0]
	for _, c := range p[:n] {
		if e.pending {
			e.pending = false
			switch c {
			case 'x', 'X':
				e.stop()
				return len(out), io.EOF
			case escapeKey:
				out = append(out, escapeKey)
			}
			continue
		}
		if c == escapeKey {
			e.pending = true
			continue
		}
		out = append(out, c)
	}
	return len(out), err
}
