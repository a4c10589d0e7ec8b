package devices

import "encoding/binary"

// Control is the microvm control device: a write to its exit register ends
// the VM with the written value as status; any write to its ready register
// marks the workload as running. The same device serves port I/O (exit at
// 0x501, ready at 0x502) and MMIO (exit at base+0, ready at base+2), so it
// is placed with the register offsets of its range.
type Control struct {
	exitOff, readyOff uint64
	onExit            func(status uint64)
	onReady           func()
}

// Ports and MMIO address of the control registers (tiny-guest ABI).
const (
	ControlExitPort  = 0x501
	ControlReadyPort = 0x502
	ControlMMIOBase  = 0xc0000000
	ControlMMIOSize  = 0x1000
	ControlMMIOExit  = 0
	ControlMMIOReady = 2
)

// NewControl returns a control device whose exit and ready registers sit at
// the given offsets of its range. onExit gets the value written (zero-extended
// from the access width); onReady is called for every ready write.
func NewControl(exitOff, readyOff uint64, onExit func(status uint64), onReady func()) *Control {
	return &Control{exitOff: exitOff, readyOff: readyOff, onExit: onExit, onReady: onReady}
}

// Read returns zeros: the registers are write-only.
func (c *Control) Read(offset uint64, data []byte) { clear(data) }

// Write handles exit and ready writes; other offsets are ignored.
func (c *Control) Write(offset uint64, data []byte) {
	switch offset {
	case c.exitOff:
		c.onExit(le(data))
	case c.readyOff:
		c.onReady()
	}
}

// le decodes a little-endian value of 1 to 8 bytes.
func le(data []byte) uint64 {
	var b [8]byte
	copy(b[:], data)
	return binary.LittleEndian.Uint64(b[:])
}
