package virtio

import (
	"strings"
	"testing"
	"time"
)

// recorder is a backend that answers every chain, writing its readable
// bytes count into the first writable byte.
type recorder struct {
	max    uint16
	chains int
	config []byte
	resets int
}

func (r *recorder) DeviceID() DeviceID   { return 42 }
func (r *recorder) Features() uint64     { return 1<<0 | FeatureIndirectDesc | FeatureEventIdx }
func (r *recorder) Config() []byte       { return r.config }
func (r *recorder) QueueSizes() []uint16 { return []uint16{r.max} }
func (r *recorder) Reset()               { r.resets++ }
func (r *recorder) Process(_ int, c *Chain) (uint32, error) {
	r.chains++
	if c.WriteLen > 0 {
		c.WriteAt([]byte{byte(c.ReadLen)}, 0)
		return 1, nil
	}
	return 0, nil
}

func TestMMIORegisters(t *testing.T) {
	rec := &recorder{max: 16, config: []byte{1, 2, 3, 4, 5, 6}}
	dr := newDriver(t, rec, nil)
	for _, tc := range []struct {
		name string
		off  uint64
		want uint32
	}{
		{"magic", RegMagic, MMIOMagic},
		{"version", RegVersion, 2},
		{"device id", RegDeviceID, 42},
		{"vendor", RegVendorID, VendorID},
		{"queue num max", RegQueueNumMax, 16},
		{"config generation", RegConfigGeneration, 0},
		{"no shared memory", RegSHMLenLow, 0xffffffff},
		{"config bytes 0-3", RegConfig, 0x04030201},
		{"config straddling its end", RegConfig + 4, 0x0605},
		{"config beyond its end", RegConfig + 0x100, 0},
		{"config at the page end", 0xffc, 0},
		{"unknown register", 0x0f0, 0},
	} {
		if got := dr.r(tc.off); got != tc.want {
			t.Errorf("%s (%#x) = %#x, want %#x", tc.name, tc.off, got, tc.want)
		}
	}
	// Features: the transport offers VERSION_1, hides indirect and event idx.
	dr.w(RegDeviceFeatSel, 0)
	if lo := dr.r(RegDeviceFeatures); lo != 1 {
		t.Errorf("features low = %#x, want 0x1 (no INDIRECT_DESC, no EVENT_IDX)", lo)
	}
	dr.w(RegDeviceFeatSel, 1)
	if hi := dr.r(RegDeviceFeatures); hi != 1 {
		t.Errorf("features high = %#x, want VERSION_1", hi)
	}
	dr.w(RegDeviceFeatSel, 7)
	if v := dr.r(RegDeviceFeatures); v != 0 {
		t.Errorf("features sel 7 = %#x", v)
	}
	// Narrow register reads return zeros; the config space may be read bytewise.
	b := []byte{0xff, 0xff}
	dr.d.Read(RegMagic, b)
	if b[0] != 0 || b[1] != 0 {
		t.Errorf("2-byte register read = % x, want zeros", b)
	}
	one := []byte{0}
	dr.d.Read(RegConfig+5, one)
	if one[0] != 6 {
		t.Errorf("config byte 5 = %d", one[0])
	}
	// Writes to the config space are ignored.
	dr.d.Write(RegConfig, []byte{9})
	if dr.r(RegConfig)&0xff != 1 {
		t.Error("config write took effect")
	}
	// A queue selector past the last queue reads zeros and ignores writes.
	dr.w(RegQueueSel, 5)
	dr.w(RegQueueNum, 8)
	dr.w(RegQueueReady, 1)
	if dr.r(RegQueueNumMax) != 0 || dr.r(RegQueueReady) != 0 || dr.needsReset() {
		t.Error("queue 5 exists")
	}
}

func TestFeatureNegotiation(t *testing.T) {
	dr := newDriver(t, &recorder{max: 8}, nil)
	for _, tc := range []struct {
		name     string
		features uint64
		ok       bool
	}{
		{"legacy driver without VERSION_1", 1, false},
		{"feature not offered", FeatureVersion1 | 1<<3, false},
		{"indirect descriptors not offered", FeatureVersion1 | FeatureIndirectDesc, false},
		{"event index not offered", FeatureVersion1 | FeatureEventIdx, false},
		{"VERSION_1 only", FeatureVersion1, true},
		{"VERSION_1 and a device feature", FeatureVersion1 | 1, true},
	} {
		if got := dr.negotiate(tc.features); got != tc.ok {
			t.Errorf("%s: FEATURES_OK = %v, want %v", tc.name, got, tc.ok)
		}
	}
	// Once FEATURES_OK is set, the driver's features are fixed.
	dr.negotiate(FeatureVersion1)
	dr.w(RegDriverFeatSel, 0)
	dr.w(RegDriverFeatures, 1<<3)
	if dr.d.drvFeatures != FeatureVersion1 {
		t.Errorf("features changed after FEATURES_OK: %#x", dr.d.drvFeatures)
	}
}

func TestProcessAndReset(t *testing.T) {
	rec := &recorder{max: 8}
	irq := &countIRQ{}
	dr := newDriver(t, rec, irq)
	dr.start(0, 8)
	r := dr.rings[0]
	r.setDesc(0, dataBase, 7, descFNext, 1)
	r.setDesc(1, dataBase+0x100, 4, descFWrite, 0)
	r.offer(0)
	dr.w(RegQueueNotify, 0)
	if r.usedIdx() != 1 || rec.chains != 1 {
		t.Fatalf("used idx %d, chains %d", r.usedIdx(), rec.chains)
	}
	if id, n := r.usedElem(0); id != 0 || n != 1 || dr.m.at(dataBase + 0x100)[0] != 7 {
		t.Errorf("used elem id %d len %d, byte %d", id, n, dr.m.at(dataBase + 0x100)[0])
	}
	if dr.r(RegInterruptStatus) != IntUsedBuffer || irq.n != 1 {
		t.Errorf("interrupt status %#x, triggers %d", dr.r(RegInterruptStatus), irq.n)
	}
	dr.w(RegInterruptACK, IntUsedBuffer)
	if dr.r(RegInterruptStatus) != 0 {
		t.Error("ack did not clear the interrupt status")
	}
	// Several chains in one notification; a second notification finds none.
	for i := 0; i < 3; i++ {
		r.offer(0)
	}
	dr.w(RegQueueNotify, 0)
	dr.w(RegQueueNotify, 0)
	if r.usedIdx() != 4 || rec.chains != 4 {
		t.Errorf("used idx %d chains %d, want 4", r.usedIdx(), rec.chains)
	}
	// Queue registers are frozen while the queue is ready.
	dr.w(RegQueueSel, 0)
	dr.w(RegQueueDescLow, 0x1234)
	if dr.r(RegQueueDescLow) != uint32(r.desc) {
		t.Error("descriptor address changed while ready")
	}
	// Reset clears everything.
	resets := rec.resets
	dr.w(RegStatus, 0)
	if dr.r(RegStatus) != 0 || dr.r(RegQueueReady) != 0 || dr.r(RegInterruptStatus) != 0 || dr.r(RegQueueDescLow) != 0 || rec.resets != resets+1 {
		t.Errorf("after reset: status %#x ready %d int %#x desc %#x resets %d",
			dr.r(RegStatus), dr.r(RegQueueReady), dr.r(RegInterruptStatus), dr.r(RegQueueDescLow), rec.resets)
	}
	if s := dr.d.Stats(); s.Chains != 4 || s.Notifications != 3 || s.Resets == 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestNotifyBeforeDriverOK(t *testing.T) {
	rec := &recorder{max: 8}
	dr := newDriver(t, rec, nil)
	if !dr.negotiate(FeatureVersion1) {
		t.Fatal("negotiate")
	}
	r := newRing(dr.m, 0, 8)
	dr.setupQueue(0, r)
	r.setDesc(0, dataBase, 1, 0, 0)
	r.offer(0)
	dr.w(RegQueueNotify, 0)
	if rec.chains != 0 || dr.d.Stats().EarlyNotifications != 1 {
		t.Fatalf("processed before DRIVER_OK: chains %d stats %+v", rec.chains, dr.d.Stats())
	}
	// DRIVER_OK picks up what was offered before.
	dr.w(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
	if rec.chains != 1 || r.usedIdx() != 1 {
		t.Errorf("DRIVER_OK did not process the pending chain: chains %d used %d", rec.chains, r.usedIdx())
	}
	// DRIVER_OK without FEATURES_OK never runs the device.
	dr2 := newDriver(t, &recorder{max: 8}, nil)
	dr2.w(RegStatus, StatusAcknowledge|StatusDriver|StatusDriverOK)
	dr2.w(RegQueueNotify, 0)
	if dr2.d.Stats().EarlyNotifications != 1 {
		t.Error("device ran without FEATURES_OK")
	}
}

// TestHostileQueues drives the transport with broken rings: each must put
// the device in NEEDS_RESET with a config-change interrupt (or be refused
// harmlessly), never panic, and a reset must bring it back.
func TestHostileQueues(t *testing.T) {
	const outside = 0x7000_0000 // not RAM
	for _, tc := range []struct {
		name  string
		size  uint16 // queue size the driver asks for
		setup func(r *ring)
		// reset: the device must need a reset afterwards.
		reset bool
	}{
		{"descriptor loop", 8, func(r *ring) {
			r.setDesc(0, dataBase, 8, descFNext, 1)
			r.setDesc(1, dataBase, 8, descFNext, 0)
			r.offer(0)
		}, true},
		{"self loop", 8, func(r *ring) {
			r.setDesc(3, dataBase, 8, descFNext, 3)
			r.offer(3)
		}, true},
		{"chain longer than the queue", 4, func(r *ring) {
			for i := uint16(0); i < 4; i++ {
				r.setDesc(i, dataBase, 1, descFNext, (i+1)%4)
			}
			r.offer(0)
		}, true},
		{"address outside RAM", 8, func(r *ring) {
			r.setDesc(0, outside, 16, 0, 0)
			r.offer(0)
		}, true},
		{"buffer running off the end of RAM", 8, func(r *ring) {
			r.setDesc(0, ramBase+ramSize-8, 16, 0, 0)
			r.offer(0)
		}, true},
		{"length that wraps", 8, func(r *ring) {
			r.setDesc(0, ^uint64(0)-15, 32, 0, 0)
			r.offer(0)
		}, true},
		{"address below RAM", 8, func(r *ring) {
			r.setDesc(0, 0x100, 16, 0, 0)
			r.offer(0)
		}, true},
		{"next out of range", 8, func(r *ring) {
			r.setDesc(0, dataBase, 8, descFNext, 9)
			r.offer(0)
		}, true},
		{"head out of range", 8, func(r *ring) {
			r.offer(200)
		}, true},
		{"indirect descriptor", 8, func(r *ring) {
			r.setDesc(0, dataBase, 16, descFIndirect, 0)
			r.offer(0)
		}, true},
		{"readable after writable", 8, func(r *ring) {
			r.setDesc(0, dataBase, 8, descFWrite|descFNext, 1)
			r.setDesc(1, dataBase, 8, 0, 0)
			r.offer(0)
		}, true},
		{"available index far ahead", 8, func(r *ring) {
			r.setDesc(0, dataBase, 8, 0, 0)
			r.m.put16(r.avail+2, 1000)
		}, true},
		{"chain over the byte limit", 8, func(r *ring) {
			for i := uint16(0); i < 8; i++ {
				r.setDesc(i, dataBase, 0xffffffff, descFNext, i+1)
			}
			r.offer(0)
		}, true},
		{"queue size not a power of 2", 6, nil, true},
		{"queue size above the maximum", 64, nil, true},
		{"queue size 0", 0, nil, true},
		{"zero-length descriptor is fine", 8, func(r *ring) {
			r.setDesc(0, dataBase, 0, 0, 0)
			r.offer(0)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{max: 16}
			irq := &countIRQ{}
			dr := newDriver(t, rec, irq)
			if !dr.negotiate(FeatureVersion1) {
				t.Fatal("negotiate")
			}
			r := newRing(dr.m, 0, max(tc.size, 1))
			r.size = tc.size
			dr.setupQueue(0, r)
			dr.w(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
			if tc.setup != nil {
				tc.setup(r)
				dr.w(RegQueueNotify, 0)
			}
			if got := dr.needsReset(); got != tc.reset {
				t.Fatalf("NEEDS_RESET = %v, want %v (status %#x)", got, tc.reset, dr.r(RegStatus))
			}
			if !tc.reset {
				return
			}
			if dr.r(RegInterruptStatus)&IntConfigChange == 0 || irq.n == 0 {
				t.Errorf("no config-change interrupt: status %#x triggers %d", dr.r(RegInterruptStatus), irq.n)
			}
			if rec.chains != 0 {
				t.Errorf("backend saw %d chains from a broken queue", rec.chains)
			}
			// The driver cannot clear NEEDS_RESET by writing status.
			dr.w(RegStatus, StatusAcknowledge|StatusDriver|StatusFeaturesOK|StatusDriverOK)
			if !dr.needsReset() {
				t.Error("NEEDS_RESET cleared without a reset")
			}
			// Further notifications do nothing; a reset brings the device back.
			dr.w(RegQueueNotify, 0)
			dr.start(0, 8)
			good := dr.rings[0]
			good.setDesc(0, dataBase, 4, descFNext, 1)
			good.setDesc(1, dataBase+0x10, 1, descFWrite, 0)
			good.offer(0)
			dr.w(RegQueueNotify, 0)
			if good.usedIdx() != 1 || rec.chains != 1 {
				t.Errorf("after reset: used %d chains %d", good.usedIdx(), rec.chains)
			}
		})
	}
}

func TestHostileRingPlacement(t *testing.T) {
	for _, tc := range []struct {
		name              string
		desc, avail, used uint64
	}{
		{"descriptor table misaligned", ramBase + 8, ramBase + 0x1000, ramBase + 0x2000},
		{"available ring misaligned", ramBase, ramBase + 0x1001, ramBase + 0x2000},
		{"used ring misaligned", ramBase, ramBase + 0x1000, ramBase + 0x2002},
		{"descriptor table outside RAM", 0x10, ramBase + 0x1000, ramBase + 0x2000},
		{"used ring past the end of RAM", ramBase, ramBase + 0x1000, ramBase + ramSize - 8},
		{"available ring at the top of the address space", ramBase, ^uint64(0) - 1, ramBase + 0x2000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dr := newDriver(t, &recorder{max: 8}, nil)
			dr.negotiate(FeatureVersion1)
			dr.setupQueue(0, &ring{m: dr.m, size: 8, desc: tc.desc, avail: tc.avail, used: tc.used})
			if !dr.needsReset() || dr.r(RegQueueReady) != 0 {
				t.Errorf("status %#x ready %d: want NEEDS_RESET and not ready", dr.r(RegStatus), dr.r(RegQueueReady))
			}
		})
	}
}

// TestLoopWorkIsBounded walks a loop in the largest queue: the walker
// must give up after one pass over the table.
func TestLoopWorkIsBounded(t *testing.T) {
	m := newFakeMem(0, 1<<20)
	q := NewQueue(MaxQueueSize)
	q.DescAddr, q.AvailAddr, q.UsedAddr = 0, 0x80000, 0x90000
	if err := q.Activate(m); err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < MaxQueueSize; i++ {
		m.put64(16*i, 0x100)
		m.put32(16*i+8, 1)
		m.put16(16*i+12, descFNext)
		m.put16(16*i+14, uint16((i+1)%MaxQueueSize))
	}
	m.put16(0x80002, 1)
	start := time.Now()
	_, _, err := q.Pop(m)
	if err == nil || !strings.Contains(err.Error(), "loop") {
		t.Fatalf("Pop = %v, want a loop error", err)
	}
	t.Logf("walked %d descriptors in %v", MaxQueueSize, time.Since(start))
}

func TestChainAccessors(t *testing.T) {
	c := &Chain{
		Readable: [][]byte{[]byte("ab"), []byte("cde"), []byte("f")},
		Writable: [][]byte{make([]byte, 2), make([]byte, 3)},
	}
	c.ReadLen, c.WriteLen = 6, 5
	p := make([]byte, 4)
	if n := c.ReadAt(p, 1); n != 4 || string(p) != "bcde" {
		t.Errorf("ReadAt = %d %q", n, p)
	}
	if n := c.ReadAt(p, 5); n != 1 || p[0] != 'f' {
		t.Errorf("ReadAt at the end = %d %q", n, p[:n])
	}
	if n := c.ReadAt(p, 100); n != 0 {
		t.Errorf("ReadAt past the end = %d", n)
	}
	if n := c.WriteAt([]byte("xyz"), 1); n != 3 || string(c.Writable[0]) != "\x00x" || string(c.Writable[1]) != "yz\x00" {
		t.Errorf("WriteAt = %d %q %q", n, c.Writable[0], c.Writable[1])
	}
	if n := c.WriteAt([]byte("123456"), 3); n != 2 {
		t.Errorf("WriteAt past the end wrote %d", n)
	}
}

// TestStateRoundTrip moves a running device's state into a fresh
// transport over the same memory: the new one must continue the ring
// where the old one stopped, and a request offered while the old one was
// paused must be answered by the new one when it resumes.
func TestStateRoundTrip(t *testing.T) {
	rec := &recorder{max: 8}
	dr := newDriver(t, rec, &countIRQ{})
	dr.start(1, 8)
	r := dr.rings[0]
	r.setDesc(0, dataBase, 7, descFNext, 1)
	r.setDesc(1, dataBase+0x100, 4, descFWrite, 0)
	for i := 0; i < 3; i++ {
		r.offer(0)
		dr.w(RegQueueNotify, 0)
	}
	dr.d.Pause()
	r.offer(0)
	dr.w(RegQueueNotify, 0) // held off
	if r.usedIdx() != 3 || rec.chains != 3 {
		t.Fatalf("paused device answered: used idx %d, chains %d", r.usedIdx(), rec.chains)
	}
	st := dr.d.State()
	if q := st.Queues[0]; !q.Ready || q.LastAvail != 3 || q.NextUsed != 3 || q.Size != 8 || st.Status&StatusDriverOK == 0 {
		t.Fatalf("state %+v", st)
	}

	rec2 := &recorder{max: 8}
	d2 := NewMMIODevice(rec2, dr.m, &countIRQ{}, nil)
	if err := d2.SetState(st); err != nil {
		t.Fatal(err)
	}
	if rec2.chains != 0 {
		t.Fatal("SetState processed a queue before Resume")
	}
	d2.Resume()
	if r.usedIdx() != 4 || rec2.chains != 1 {
		t.Fatalf("after Resume: used idx %d, chains %d; want the held-off request answered", r.usedIdx(), rec2.chains)
	}
	dr2 := &driver{t: t, d: d2, m: dr.m, rings: dr.rings}
	if dr2.r(RegStatus) != st.Status || dr2.r(RegQueueReady) != 1 || dr2.r(RegQueueDescLow) != uint32(r.desc) {
		t.Errorf("registers after SetState: status %#x ready %d desc %#x", dr2.r(RegStatus), dr2.r(RegQueueReady), dr2.r(RegQueueDescLow))
	}
	r.offer(0)
	dr2.w(RegQueueNotify, 0)
	if id, n := r.usedElem(4); r.usedIdx() != 5 || id != 0 || n != 1 {
		t.Errorf("next request: used idx %d, elem %d/%d", r.usedIdx(), id, n)
	}
}

// TestSetStateRefusesBadState: a state that does not fit the device or
// guest memory leaves the device reset and says why.
func TestSetStateRefusesBadState(t *testing.T) {
	rec := &recorder{max: 8}
	dr := newDriver(t, rec, &countIRQ{})
	dr.start(0, 8)
	good := dr.d.State()
	for _, tc := range []struct {
		name string
		edit func(*MMIOState)
		want string
	}{
		{"two queues", func(s *MMIOState) { s.Queues = append(s.Queues, s.Queues[0]) }, "2 queues"},
		{"feature not offered", func(s *MMIOState) { s.DriverFeatures |= 1 << 40 }, "does not offer"},
		{"ring outside RAM", func(s *MMIOState) { s.Queues[0].UsedAddr = 1 << 40 }, "outside RAM"},
		{"queue over its maximum", func(s *MMIOState) { s.Queues[0].Size = 16 }, "exceeds the maximum"},
		{"size not a power of 2", func(s *MMIOState) { s.Queues[0].Size = 6 }, "power of 2"},
		{"positions on a queue not ready", func(s *MMIOState) { s.Queues[0].Ready, s.Queues[0].NextUsed = false, 1 }, "not ready"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			s.Queues = append([]QueueState(nil), good.Queues...)
			tc.edit(&s)
			d := NewMMIODevice(&recorder{max: 8}, dr.m, nil, nil)
			err := d.SetState(s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("SetState: %v, want an error with %q", err, tc.want)
			}
			if d.Status() != 0 || d.State().Queues[0].Ready {
				t.Errorf("after a refused state: status %#x, queue %+v; want reset", d.Status(), d.State().Queues[0])
			}
		})
	}
}
