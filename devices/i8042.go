package devices

import "sync"

// I8042 is the part of the PS/2 keyboard controller a VMM needs: enough of
// its command set for Linux to probe it, and the CPU reset line (command
// 0xFE, or output-port bit 0 cleared) that ends the VM. It is placed at
// port 0x60 (data, offset 0) and 0x64 (status/command, offset 4).
type I8042 struct {
	mu      sync.Mutex
	onReset func()
	ctr     byte   // controller configuration byte
	out     []byte // output buffer, read at 0x60
	pending byte   // command waiting for its data byte at 0x60, or 0
}

// I8042 ports and commands.
const (
	I8042Base    = 0x60
	I8042Size    = 5 // 0x60–0x64; 0x61–0x63 read as zero
	i8042Data    = 0
	i8042Command = 4

	i8042StatusOBF  = 0x01
	i8042StatusSys  = 0x04
	i8042StatusCmd  = 0x08
	i8042CmdReadCTR = 0x20
	i8042CmdWrCTR   = 0x60
	i8042CmdTest    = 0xaa
	i8042CmdPort1   = 0xab
	i8042CmdWrOut   = 0xd1
	i8042CmdReset   = 0xfe
)

// NewI8042 returns a controller that calls onReset when the guest pulses
// the reset line.
func NewI8042(onReset func()) *I8042 {
	return &I8042{onReset: onReset, ctr: 0x47}
}

// Read serves the data port (offset 0) and status port (offset 4).
func (d *I8042) Read(offset uint64, data []byte) {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(data)
	switch offset {
	case i8042Data:
		if len(d.out) > 0 {
			data[0] = d.out[0]
			d.out = d.out[1:]
		}
	case i8042Command:
		s := byte(i8042StatusSys)
		if len(d.out) > 0 {
			s |= i8042StatusOBF
		}
		data[0] = s
	}
}

// Write serves commands (offset 4) and their data bytes (offset 0).
func (d *I8042) Write(offset uint64, data []byte) {
	d.mu.Lock()
	v := data[0]
	reset := false
	switch offset {
	case i8042Data:
		switch d.pending {
		case i8042CmdWrCTR:
			d.ctr = v
		case i8042CmdWrOut:
			reset = v&1 == 0
		}
		d.pending = 0
	case i8042Command:
		switch v {
		case i8042CmdReadCTR:
			d.push(d.ctr)
		case i8042CmdWrCTR, i8042CmdWrOut:
			d.pending = v
		case i8042CmdTest:
			d.push(0x55)
		case i8042CmdPort1:
			d.push(0x00)
		case i8042CmdReset:
			reset = true
		}
	}
	d.mu.Unlock()
	if reset {
		d.onReset()
	}
}

func (d *I8042) push(b byte) {
	if len(d.out) < 16 {
		d.out = append(d.out, b)
	}
}
