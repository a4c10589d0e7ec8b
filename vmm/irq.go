package vmm

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

// irqLine raises an in-kernel irqchip input (a GSI) through an irqfd: one
// eventfd write, no ioctl, delivered as an edge.
type irqLine struct {
	efd int
	gsi uint32
}

// newIRQLine wires an eventfd to gsi. The machine closes it.
func (m *Machine) newIRQLine(gsi uint32) (*irqLine, error) {
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	if err := m.vm.IRQFD(efd, gsi); err != nil {
		unix.Close(efd)
		return nil, err
	}
	l := &irqLine{efd: efd, gsi: gsi}
	m.irqs = append(m.irqs, l)
	return l, nil
}

// Trigger raises the line.
func (l *irqLine) Trigger() error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], 1)
	_, err := unix.Write(l.efd, b[:])
	if err == unix.EAGAIN { // the counter is saturated: an interrupt is pending anyway
		return nil
	}
	return err
}

func (l *irqLine) close() error { return unix.Close(l.efd) }
