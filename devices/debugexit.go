package devices

// DebugExit is QEMU's isa-debug-exit device: a write of value v to its port
// ends the VM with status (v<<1)|1, so a guest can never exit 0 through it
// (test harnesses written for QEMU map their own "success" value). It is
// opt-in: a guest that writes the port by accident would otherwise stop.
// Reads return zero.
type DebugExit struct {
	onExit func(status uint64)
}

// isa-debug-exit's usual place (QEMU -device isa-debug-exit,iobase=0xf4,iosize=0x04).
const (
	DebugExitPort = 0xf4
	DebugExitSize = 4
)

// NewDebugExit returns a debug-exit device that ends the VM through onExit.
func NewDebugExit(onExit func(status uint64)) *DebugExit {
	return &DebugExit{onExit: onExit}
}

// DebugExitStatus is the status a write of v gives: (v<<1)|1.
func DebugExitStatus(v uint64) uint64 { return v<<1 | 1 }

// Read returns zeros.
func (d *DebugExit) Read(offset uint64, data []byte) { clear(data) }

// Write of v (zero-extended from the access width) at any offset ends the VM.
func (d *DebugExit) Write(offset uint64, data []byte) { d.onExit(DebugExitStatus(le(data))) }
