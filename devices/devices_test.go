package devices

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

// countIRQ counts triggers.
type countIRQ struct{ n int }

func (c *countIRQ) Trigger() error { c.n++; return nil }

// reg is a fake device remembering the last access.
type reg struct {
	lastOff   uint64
	lastWrite []byte
	fill      byte
}

func (r *reg) Read(off uint64, d []byte) {
	r.lastOff = off
	for i := range d {
		d[i] = r.fill
	}
}
func (r *reg) Write(off uint64, d []byte) { r.lastOff, r.lastWrite = off, append([]byte(nil), d...) }

func TestBus(t *testing.T) {
	var b Bus
	dev := &reg{fill: 0x42}
	if err := b.Add(PIO, 0x3f8, 8, "uart", dev); err != nil {
		t.Fatal(err)
	}
	mm := &reg{fill: 0x24}
	if err := b.Add(MMIO, 0xd0000000, 0x1000, "mmio", mm); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		space      Space
		base, size uint64
	}{
		{PIO, 0x3fc, 8},           // overlaps the uart
		{PIO, 0x3f0, 9},           // overlaps its start
		{PIO, 0x100, 0},           // empty
		{MMIO, ^uint64(0) - 1, 4}, // wraps
	} {
		if err := b.Add(bad.space, bad.base, bad.size, "bad", &reg{}); err == nil {
			t.Errorf("Add(%v %#x+%#x) succeeded", bad.space, bad.base, bad.size)
		}
	}

	d := make([]byte, 1)
	if !b.Read(PIO, 0x3fd, d) || d[0] != 0x42 || dev.lastOff != 5 {
		t.Errorf("read 0x3fd: claimed data %x off %d", d, dev.lastOff)
	}
	// A wide port access belongs to the device at its first port.
	if !b.Write(PIO, 0x3ff, []byte{1, 2, 3, 4}) || dev.lastOff != 7 {
		t.Errorf("outl at the last port of a device not delivered: off %d", dev.lastOff)
	}
	// An MMIO access must fit the range.
	d4 := make([]byte, 4)
	if b.Read(MMIO, 0xd0000ffe, d4) {
		t.Error("MMIO read straddling the end of a range was claimed")
	}
	if !b.Read(MMIO, 0xd0000ffc, d4) || mm.lastOff != 0xffc {
		t.Error("MMIO read at the end of a range was not claimed")
	}

	var unknown []string
	b.OnUnknown = func(s Space, a uint64, w bool, data []byte) {
		unknown = append(unknown, s.String())
	}
	d2 := []byte{0, 0}
	if b.Read(PIO, 0x80, d2) || !bytes.Equal(d2, []byte{0xff, 0xff}) {
		t.Errorf("unknown port read = %x, want ff ff", d2)
	}
	if b.Write(MMIO, 0x1234, []byte{1}) {
		t.Error("unknown MMIO write claimed")
	}
	r, w := b.Unknown()
	if r != 2 || w != 1 || strings.Join(unknown, ",") != "port,mmio" { // reads: the straddling MMIO read and port 0x80
		t.Errorf("unknown counts %d/%d, seen %v", r, w, unknown)
	}
}

func uartIO(s *Serial, write bool, off uint64, v byte) byte {
	d := []byte{v}
	if write {
		s.Write(off, d)
		return 0
	}
	s.Read(off, d)
	return d[0]
}

func TestSerialTransmit(t *testing.T) {
	var out bytes.Buffer
	irq := &countIRQ{}
	s := NewSerial(&out, irq)
	for _, c := range []byte("hi\n") {
		uartIO(s, true, uartData, c)
	}
	if out.String() != "hi\n" {
		t.Errorf("output %q", out.String())
	}
	if lsr := uartIO(s, false, uartLSR, 0); lsr&(lsrTHRE|lsrTEMT) != lsrTHRE|lsrTEMT || lsr&lsrDR != 0 {
		t.Errorf("LSR = %#x, want THRE|TEMT and no data", lsr)
	}
	if irq.n != 0 {
		t.Errorf("%d interrupts with IER=0", irq.n)
	}
	// Enabling THRE interrupts raises one at once; reading IIR acknowledges it.
	uartIO(s, true, uartIER, ierTHRE)
	if irq.n != 1 {
		t.Fatalf("enabling THRE: %d interrupts, want 1", irq.n)
	}
	if iir := uartIO(s, false, uartIIR, 0); iir != iirTHRE {
		t.Errorf("IIR = %#x, want THRE", iir)
	}
	if iir := uartIO(s, false, uartIIR, 0); iir != iirNone {
		t.Errorf("IIR after ack = %#x, want none", iir)
	}
	uartIO(s, true, uartData, 'x')
	if irq.n != 2 || uartIO(s, false, uartIIR, 0) != iirTHRE {
		t.Errorf("THR write with THRE enabled: %d interrupts", irq.n)
	}
	// FIFO enabled shows in IIR's top bits.
	uartIO(s, true, uartIIR, fcrEnable)
	if iir := uartIO(s, false, uartIIR, 0); iir&iirFIFO != iirFIFO {
		t.Errorf("IIR with FIFOs = %#x", iir)
	}
}

func TestSerialReceive(t *testing.T) {
	irq := &countIRQ{}
	s := NewSerial(nil, irq)
	if n := s.Enqueue([]byte("ab")); n != 2 {
		t.Fatalf("Enqueue took %d", n)
	}
	if irq.n != 0 {
		t.Error("interrupt with RDA disabled")
	}
	uartIO(s, true, uartIER, ierRDA)
	if irq.n != 1 {
		t.Errorf("enabling RDA with data waiting: %d interrupts", irq.n)
	}
	if iir := uartIO(s, false, uartIIR, 0); iir != iirRDA {
		t.Errorf("IIR = %#x, want RDA", iir)
	}
	var got []byte
	for uartIO(s, false, uartLSR, 0)&lsrDR != 0 {
		got = append(got, uartIO(s, false, uartData, 0))
	}
	if string(got) != "ab" {
		t.Errorf("received %q", got)
	}
	if iir := uartIO(s, false, uartIIR, 0); iir != iirNone {
		t.Errorf("IIR with nothing pending = %#x", iir)
	}
	// The FIFO is bounded.
	big := make([]byte, serialInSize+10)
	if n := s.Enqueue(big); n != serialInSize {
		t.Errorf("Enqueue of %d bytes took %d, want %d", len(big), n, serialInSize)
	}
	if n := s.Enqueue([]byte{1}); n != 0 {
		t.Errorf("Enqueue into a full FIFO took %d", n)
	}
	uartIO(s, true, uartIIR, fcrEnable|fcrClearRX)
	if uartIO(s, false, uartLSR, 0)&lsrDR != 0 {
		t.Error("FCR clear-RX left data")
	}
}

func TestSerialRegisters(t *testing.T) {
	var out bytes.Buffer
	s := NewSerial(&out, nil)
	// DLAB exposes the divisor latch instead of data and IER.
	uartIO(s, true, uartLCR, lcrDLAB|0x03)
	uartIO(s, true, uartData, 0x01)
	uartIO(s, true, uartIER, 0x00)
	if uartIO(s, false, uartData, 0) != 0x01 || uartIO(s, false, uartIER, 0) != 0 {
		t.Error("divisor latch not kept")
	}
	if out.Len() != 0 {
		t.Error("DLL write went to the output")
	}
	uartIO(s, true, uartLCR, 0x03)
	if uartIO(s, false, uartLCR, 0) != 0x03 {
		t.Error("LCR not kept")
	}
	uartIO(s, true, uartSCR, 0xa5)
	if uartIO(s, false, uartSCR, 0) != 0xa5 {
		t.Error("scratch register not kept")
	}
	if msr := uartIO(s, false, uartMSR, 0); msr != msrDefault {
		t.Errorf("MSR = %#x, want carrier, DSR and CTS", msr)
	}
	// Loopback: transmitted bytes come back, modem lines follow MCR.
	uartIO(s, true, uartMCR, mcrLoop|0x0f)
	uartIO(s, true, uartData, 'L')
	if out.Len() != 0 || uartIO(s, false, uartData, 0) != 'L' {
		t.Error("loopback byte did not come back")
	}
	if msr := uartIO(s, false, uartMSR, 0); msr != 0xf0 {
		t.Errorf("loopback MSR = %#x, want 0xf0", msr)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) { f.n++; return 0, errors.New("broken pipe") }

func TestSerialOutputError(t *testing.T) {
	w := &failWriter{}
	s := NewSerial(w, nil)
	uartIO(s, true, uartData, 'a')
	uartIO(s, true, uartData, 'b')
	if s.OutputError() == nil || w.n != 1 {
		t.Errorf("output error %v after %d writes, want the first error kept and no retries", s.OutputError(), w.n)
	}
}

func TestI8042(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ops   [][2]uint64 // offset, value
		reset bool
	}{
		{"reset command", [][2]uint64{{i8042Command, i8042CmdReset}}, true},
		{"output port reset", [][2]uint64{{i8042Command, i8042CmdWrOut}, {i8042Data, 0xfe}}, true},
		{"output port keep", [][2]uint64{{i8042Command, i8042CmdWrOut}, {i8042Data, 0xff}}, false},
		{"ctr write", [][2]uint64{{i8042Command, i8042CmdWrCTR}, {i8042Data, 0x00}}, false},
		{"self test", [][2]uint64{{i8042Command, i8042CmdTest}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reset := false
			d := NewI8042(func() { reset = true })
			for _, op := range tc.ops {
				d.Write(op[0], []byte{byte(op[1])})
			}
			if reset != tc.reset {
				t.Errorf("reset = %v, want %v", reset, tc.reset)
			}
		})
	}
	d := NewI8042(func() {})
	b := []byte{0}
	d.Read(i8042Command, b)
	if b[0]&i8042StatusOBF != 0 {
		t.Error("output buffer full at start")
	}
	d.Write(i8042Command, []byte{i8042CmdTest})
	d.Read(i8042Command, b)
	if b[0]&i8042StatusOBF == 0 {
		t.Error("self-test left no result")
	}
	d.Read(i8042Data, b)
	if b[0] != 0x55 {
		t.Errorf("self-test result %#x, want 0x55", b[0])
	}
	d.Write(i8042Command, []byte{i8042CmdWrCTR})
	d.Write(i8042Data, []byte{0x65})
	d.Write(i8042Command, []byte{i8042CmdReadCTR})
	d.Read(i8042Data, b)
	if b[0] != 0x65 {
		t.Errorf("CTR = %#x, want 0x65", b[0])
	}
	// Flooding commands never grows the output buffer without bound.
	for i := 0; i < 1000; i++ {
		d.Write(i8042Command, []byte{i8042CmdTest})
	}
	if len(d.out) > 16 {
		t.Errorf("output buffer grew to %d", len(d.out))
	}
}

func TestControl(t *testing.T) {
	var exits []uint64
	readies := 0
	c := NewControl(0, 1, func(s uint64) { exits = append(exits, s) }, func() { readies++ })
	c.Write(1, []byte{9})
	c.Write(0, []byte{7})
	c.Write(0, []byte{0x2c, 0x01, 0, 0}) // outl 300
	c.Write(5, []byte{1})                // unused offset: ignored
	d := []byte{0xaa}
	c.Read(0, d)
	if readies != 1 || len(exits) != 2 || exits[0] != 7 || exits[1] != 300 || d[0] != 0 {
		t.Errorf("readies %d exits %v read %#x", readies, exits, d[0])
	}
}
