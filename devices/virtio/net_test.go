package virtio

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"
	"testing"
	"time"
)

// fakeTap hands frames from in to the device and records what it sends.
type fakeTap struct {
	in     chan []byte
	mu     sync.Mutex
	out    [][]byte
	closed chan struct{}
	once   sync.Once
}

func newFakeTap() *fakeTap { return &fakeTap{in: make(chan []byte, 16), closed: make(chan struct{})} }

func (f *fakeTap) Read(p []byte) (int, error) {
	select {
	case b := <-f.in:
		return copy(p, b), nil
	case <-f.closed:
		return 0, net.ErrClosed
	}
}

func (f *fakeTap) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.out = append(f.out, append([]byte(nil), p...))
	return len(p), nil
}

func (f *fakeTap) Close() error { f.once.Do(func() { close(f.closed) }); return nil }

func (f *fakeTap) sent() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.out
}

func TestDefaultMAC(t *testing.T) {
	a, b := DefaultMAC("tap0"), DefaultMAC("tap1")
	if len(a) != 6 || a[0] != 0x02 || bytes.Equal(a, b) || !bytes.Equal(a, DefaultMAC("tap0")) {
		t.Errorf("DefaultMAC: %v %v", a, b)
	}
}

func TestNetTX(t *testing.T) {
	tap := newFakeTap()
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	n := NewNet(mac, tap)
	dr := newDriver(t, n, nil)
	if got := []byte{byte(dr.r(RegConfig)), byte(dr.r(RegConfig) >> 8)}; got[0] != 2 || got[1] != 0 {
		t.Errorf("config mac starts % x", got)
	}
	dr.start(NetFMAC, 8)
	tx := dr.rings[NetTXQueue]
	frame := []byte("\xff\xff\xff\xff\xff\xff\x02\x00\x00\x00\x00\x01\x88\xb5hello")
	// Header split over two descriptors, the second carrying the frame too.
	copy(dr.m.at(dataBase), make([]byte, NetHdrSize))
	copy(dr.m.at(dataBase+NetHdrSize), frame)
	tx.setDesc(0, dataBase, 5, descFNext, 1)
	tx.setDesc(1, dataBase+5, uint32(NetHdrSize-5+len(frame)), 0, 0)
	tx.offer(0)
	// A chain shorter than the header is dropped, not fatal.
	tx.setDesc(2, dataBase, 4, 0, 0)
	tx.offer(2)
	dr.w(RegQueueNotify, NetTXQueue)
	if dr.needsReset() || tx.usedIdx() != 2 {
		t.Fatalf("status %#x used %d", dr.r(RegStatus), tx.usedIdx())
	}
	if out := tap.sent(); len(out) != 1 || !bytes.Equal(out[0], frame) {
		t.Errorf("tap got %q, want %q", out, frame)
	}
	if s := n.Stats(); s.TXFrames != 1 || s.TXDropped != 1 {
		t.Errorf("stats %+v", s)
	}
}

// waitChains waits until the device has returned want chains.
func waitChains(t *testing.T, d *MMIODevice, want uint64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for d.Stats().Chains < want {
		if time.Now().After(deadline) {
			t.Fatalf("device returned %d chains, want %d", d.Stats().Chains, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestNetRX(t *testing.T) {
	tap := newFakeTap()
	n := NewNet(DefaultMAC("x"), tap)
	dr := newDriver(t, n, &countIRQ{})
	served := make(chan error, 1)
	go func() { served <- n.ServeRX(dr.d) }()

	// Before the driver starts the device, frames are dropped.
	tap.in <- []byte("early frame")
	deadline := time.Now().Add(5 * time.Second)
	for n.Stats().RXDropped < 1 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n.Stats().RXDropped != 1 {
		t.Fatalf("early frame not dropped: %+v", n.Stats())
	}

	dr.start(NetFMAC, 8)
	rx := dr.rings[NetRXQueue]
	const buf0, buf1 = dataBase, dataBase + 0x1000
	// A frame with no buffer posted waits for one.
	tap.in <- bytes.Repeat([]byte{0x11}, 60)
	time.Sleep(20 * time.Millisecond)
	if dr.d.Stats().Chains != 0 {
		t.Fatal("frame delivered without a buffer")
	}
	rx.setDesc(0, buf0, 100, descFWrite, 0)
	rx.offer(0)
	dr.w(RegQueueNotify, NetRXQueue)
	waitChains(t, dr.d, 1)
	dr.d.mu.Lock()
	_, l := rx.usedElem(0)
	hdr := append([]byte(nil), dr.m.at(buf0)[:NetHdrSize]...)
	body := append([]byte(nil), dr.m.at(buf0 + NetHdrSize)[:60]...)
	dr.d.mu.Unlock()
	if l != NetHdrSize+60 || binary.LittleEndian.Uint16(hdr[10:]) != 1 || !bytes.Equal(body, bytes.Repeat([]byte{0x11}, 60)) {
		t.Errorf("used len %d hdr % x body % x", l, hdr, body[:8])
	}

	// A frame too big for the buffer is dropped; the buffer serves the next.
	rx.setDesc(1, buf1, 100, descFWrite, 0)
	rx.offer(1)
	dr.w(RegQueueNotify, NetRXQueue)
	tap.in <- bytes.Repeat([]byte{0x22}, 200)
	tap.in <- bytes.Repeat([]byte{0x33}, 30)
	waitChains(t, dr.d, 2)
	dr.d.mu.Lock()
	id, l := rx.usedElem(1)
	got := dr.m.at(buf1 + NetHdrSize)[0]
	dr.d.mu.Unlock()
	if id != 1 || l != NetHdrSize+30 || got != 0x33 {
		t.Errorf("used id %d len %d byte %#x", id, l, got)
	}
	if s := n.Stats(); s.RXFrames != 2 || s.RXDropped != 2 {
		t.Errorf("stats %+v", s)
	}
	n.Close()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeRX: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeRX did not return after Close")
	}
}

func TestNetCloseWhileWaiting(t *testing.T) {
	tap := newFakeTap()
	n := NewNet(DefaultMAC("x"), tap)
	dr := newDriver(t, n, nil)
	dr.start(NetFMAC, 8)
	served := make(chan error, 1)
	go func() { served <- n.ServeRX(dr.d) }()
	tap.in <- []byte("waits for a buffer forever")
	time.Sleep(10 * time.Millisecond)
	n.Close()
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("ServeRX stuck waiting for a buffer after Close")
	}
}

func TestRNG(t *testing.T) {
	r := NewRNG()
	dr := newDriver(t, r, nil)
	dr.start(0, 8)
	q := dr.rings[0]
	q.setDesc(0, dataBase, 16, descFWrite|descFNext, 1)
	q.setDesc(1, dataBase+0x100, 16, descFWrite, 0)
	q.offer(0)
	// More than the per-request bound.
	q.setDesc(2, dataBase+0x1000, 0x30000, descFWrite, 0)
	q.offer(2)
	// No writable buffer: answered with 0 bytes.
	q.setDesc(3, dataBase, 8, 0, 0)
	q.offer(3)
	dr.w(RegQueueNotify, 0)
	if dr.needsReset() || q.usedIdx() != 3 {
		t.Fatalf("status %#x used %d", dr.r(RegStatus), q.usedIdx())
	}
	for i, want := range []uint32{32, RNGMaxRequest, 0} {
		if _, n := q.usedElem(uint16(i)); n != want {
			t.Errorf("request %d: used len %d, want %d", i, n, want)
		}
	}
	if bytes.Equal(dr.m.at(dataBase)[:16], make([]byte, 16)) {
		t.Error("no entropy written")
	}
	if tail := dr.m.at(dataBase + 0x1000 + RNGMaxRequest)[:16]; !bytes.Equal(tail, make([]byte, 16)) {
		t.Error("wrote past the per-request bound")
	}
	if r.Bytes() != 32+RNGMaxRequest {
		t.Errorf("Bytes = %d", r.Bytes())
	}
}
