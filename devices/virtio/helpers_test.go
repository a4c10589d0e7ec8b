package virtio

import (
	"encoding/binary"
	"fmt"
	"testing"
)

// fakeMem is guest RAM at [base, base+len(b)).
type fakeMem struct {
	base uint64
	b    []byte
}

func newFakeMem(base uint64, size int) *fakeMem { return &fakeMem{base: base, b: make([]byte, size)} }

func (m *fakeMem) Slice(gpa, n uint64) ([]byte, error) {
	size := uint64(len(m.b))
	if gpa < m.base || n > size || gpa-m.base > size-n {
		return nil, fmt.Errorf("guest address outside RAM: [%#x, +%#x)", gpa, n)
	}
	off := gpa - m.base
	return m.b[off : off+n : off+n], nil
}

func (m *fakeMem) at(gpa uint64) []byte { return m.b[gpa-m.base:] }

func (m *fakeMem) put16(gpa uint64, v uint16) { binary.LittleEndian.PutUint16(m.at(gpa), v) }
func (m *fakeMem) put32(gpa uint64, v uint32) { binary.LittleEndian.PutUint32(m.at(gpa), v) }
func (m *fakeMem) put64(gpa uint64, v uint64) { binary.LittleEndian.PutUint64(m.at(gpa), v) }
func (m *fakeMem) get16(gpa uint64) uint16    { return binary.LittleEndian.Uint16(m.at(gpa)) }
func (m *fakeMem) get32(gpa uint64) uint32    { return binary.LittleEndian.Uint32(m.at(gpa)) }

// countIRQ counts triggers.
type countIRQ struct{ n int }

func (c *countIRQ) Trigger() error { c.n++; return nil }

// ring places one queue's rings in fake memory.
type ring struct {
	m                 *fakeMem
	size              uint16
	desc, avail, used uint64
	availIdx          uint16
}

// Guest layout used by the tests: RAM at 0x10000, 1 MiB; queue q's rings
// at 0x10000 + q*0x4000 (room for 256 entries); data from 0x40000.
const (
	ramBase  = 0x10000
	ramSize  = 1 << 20
	dataBase = 0x40000
)

func newRing(m *fakeMem, q int, size uint16) *ring {
	base := uint64(ramBase + q*0x4000)
	return &ring{m: m, size: size, desc: base, avail: base + 0x1000, used: base + 0x2000}
}

// setDesc writes descriptor i.
func (r *ring) setDesc(i uint16, addr uint64, length uint32, flags, next uint16) {
	d := r.desc + 16*uint64(i)
	r.m.put64(d, addr)
	r.m.put32(d+8, length)
	r.m.put16(d+12, flags)
	r.m.put16(d+14, next)
}

// offer makes the chain at head available.
func (r *ring) offer(head uint16) {
	r.m.put16(r.avail+4+2*uint64(r.availIdx%r.size), head)
	r.availIdx++
	r.m.put16(r.avail+2, r.availIdx)
}

func (r *ring) usedIdx() uint16 { return r.m.get16(r.used + 2) }

// usedElem returns used ring element i (id, len).
func (r *ring) usedElem(i uint16) (uint32, uint32) {
	e := r.used + 4 + 8*uint64(i%r.size)
	return r.m.get32(e), r.m.get32(e + 4)
}

// driver drives an MMIODevice through its registers, as a guest would.
type driver struct {
	t     testing.TB
	d     *MMIODevice
	m     *fakeMem
	rings []*ring
}

func (dr *driver) w(off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	dr.d.Write(off, b[:])
}

func (dr *driver) r(off uint64) uint32 {
	var b [4]byte
	dr.d.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

// negotiate resets the device and accepts features; it reports whether
// the device kept FEATURES_OK.
func (dr *driver) negotiate(features uint64) bool {
	dr.w(RegStatus, 0)
	dr.w(RegStatus, StatusAcknowledge)
	dr.w(RegStatus, StatusAcknowledge|StatusDriver)
	dr.w(RegDriverFeatSel, 0)
	dr.w(RegDriverFeatures, uint32(features))
	dr.w(RegDriverFeatSel, 1)
	dr.w(RegDriverFeatures, uint32(features>>32))
	dr.w(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK)
	return dr.r(RegStatus)&StatusFeaturesOK != 0
}

// setupQueue programs queue q with r's rings and makes it ready.
func (dr *driver) setupQueue(q int, r *ring) {
	dr.w(RegQueueSel, uint32(q))
	dr.w(RegQueueNum, uint32(r.size))
	dr.w(RegQueueDescLow, uint32(r.desc))
	dr.w(RegQueueDescHigh, uint32(r.desc>>32))
	dr.w(RegQueueDriverLow, uint32(r.avail))
	dr.w(RegQueueDriverHigh, uint32(r.avail>>32))
	dr.w(RegQueueDeviceLow, uint32(r.used))
	dr.w(RegQueueDeviceHigh, uint32(r.used>>32))
	dr.w(RegQueueReady, 1)
}

// start negotiates VERSION_1 plus features, sets up every queue with size
// entries and sets DRIVER_OK.
func (dr *driver) start(features uint64, size uint16) {
	dr.t.Helper()
	if !dr.negotiate(FeatureVersion1 | features) {
		dr.t.Fatalf("FEATURES_OK refused for %#x", features)
	}
	dr.rings = nil
	clear(dr.m.at(ramBase)[:dataBase-ramBase]) // fresh rings, as a driver allocates
	for q := 0; q < dr.d.NumQueues(); q++ {
		r := newRing(dr.m, q, size)
		dr.setupQueue(q, r)
		dr.rings = append(dr.rings, r)
	}
	dr.w(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
	if s := dr.r(RegStatus); s&StatusNeedsReset != 0 {
		dr.t.Fatalf("device needs reset after start: status %#x", s)
	}
}

func newDriver(t testing.TB, b Backend, irq *countIRQ) *driver {
	m := newFakeMem(ramBase, ramSize)
	var d *MMIODevice
	if irq != nil {
		d = NewMMIODevice(b, m, irq, nil)
	} else {
		d = NewMMIODevice(b, m, nil, nil)
	}
	return &driver{t: t, d: d, m: m}
}

func (dr *driver) needsReset() bool { return dr.r(RegStatus)&StatusNeedsReset != 0 }
