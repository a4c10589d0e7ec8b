package virtio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// FuzzQueue walks rings made of random guest memory with random queue
// registers: Pop must return valid chains or an ErrQueue error, bounded by
// the queue size, never panic.
func FuzzQueue(f *testing.F) {
	seed := make([]byte, 0x400)
	binary.LittleEndian.PutUint16(seed[0x102:], 2) // avail idx 2
	binary.LittleEndian.PutUint16(seed[0x106:], 1) // second head 1
	binary.LittleEndian.PutUint64(seed[0:], 0x300)
	binary.LittleEndian.PutUint32(seed[8:], 16)
	binary.LittleEndian.PutUint16(seed[12:], descFNext)
	binary.LittleEndian.PutUint16(seed[14:], 1)
	binary.LittleEndian.PutUint64(seed[16:], 0x380)
	binary.LittleEndian.PutUint32(seed[24:], 8)
	binary.LittleEndian.PutUint16(seed[28:], descFWrite)
	f.Add(uint16(8), uint64(0), uint64(0x100), uint64(0x200), seed)
	f.Add(uint16(6), uint64(0), uint64(0x100), uint64(0x200), seed)
	f.Add(uint16(4), uint64(0x10), uint64(0x101), uint64(0x3fc), seed)
	f.Fuzz(func(t *testing.T, size uint16, desc, avail, used uint64, mem []byte) {
		m := &fakeMem{base: 0, b: mem}
		q := NewQueue(256)
		q.Size, q.DescAddr, q.AvailAddr, q.UsedAddr = size, desc, avail, used
		if err := q.Activate(m); err != nil {
			if !errors.Is(err, ErrQueue) {
				t.Fatalf("Activate error %v does not wrap ErrQueue", err)
			}
			return
		}
		for i := 0; i < 2*int(size)+2; i++ {
			c, ok, err := q.Pop(m)
			if err != nil {
				if !errors.Is(err, ErrQueue) {
					t.Fatalf("Pop error %v does not wrap ErrQueue", err)
				}
				return
			}
			if !ok {
				return
			}
			if len(c.Readable)+len(c.Writable) > int(size) || c.ReadLen+c.WriteLen > MaxChainBytes || c.Head >= size {
				t.Fatalf("chain head %d with %d+%d buffers, %d bytes, queue size %d", c.Head, len(c.Readable), len(c.Writable), c.ReadLen+c.WriteLen, size)
			}
			if err := q.PushUsed(c.Head, uint32(c.WriteLen)); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// FuzzMMIO applies random register accesses to a device over random
// memory: the transport must never panic and never leave NEEDS_RESET
// without a reset.
func FuzzMMIO(f *testing.F) {
	var ops []byte
	add := func(off uint16, v uint32) {
		ops = binary.LittleEndian.AppendUint16(ops, off)
		ops = binary.LittleEndian.AppendUint32(ops, v)
	}
	add(RegStatus, 3)
	add(RegDriverFeatSel, 1)
	add(RegDriverFeatures, 1)
	add(RegStatus, 11)
	add(RegQueueNum, 8)
	add(RegQueueDescLow, 0)
	add(RegQueueDriverLow, 0x100)
	add(RegQueueDeviceLow, 0x200)
	add(RegQueueReady, 1)
	add(RegStatus, 15)
	add(RegQueueNotify, 0)
	f.Add(ops, make([]byte, 0x400))
	f.Fuzz(func(t *testing.T, ops []byte, mem []byte) {
		b := newRNGFrom(func(p []byte) error { clear(p); return nil })
		d := NewMMIODevice(b, &fakeMem{b: mem}, &countIRQ{}, nil)
		for len(ops) >= 6 {
			off := uint64(binary.LittleEndian.Uint16(ops)) % (MMIOSize + 8)
			data := bytes.Clone(ops[2:6])
			width := []int{4, 1, 2, 4, 8}[off%5]
			if width > 4 {
				data = append(data, 0, 0, 0, 0)
			}
			ops = ops[6:]
			before := d.Status()
			if off&0x800 != 0 {
				d.Read(off&^0x800, data[:width])
			} else {
				d.Write(off, data[:width])
			}
			if before&StatusNeedsReset != 0 && d.Status()&StatusNeedsReset == 0 && d.Status() != 0 {
				t.Fatalf("NEEDS_RESET cleared without a reset: %#x", d.Status())
			}
		}
	})
}

// chainFrom builds a chain from fuzz bytes: shape says how many readable
// and writable buffers there are and how long, data fills them.
func chainFrom(shape, data []byte) *Chain {
	c := &Chain{}
	for i := 0; i+2 < len(shape) && i < 24; i += 3 {
		n := int(binary.LittleEndian.Uint16(shape[i:]))
		buf := make([]byte, n)
		copy(buf, data)
		if len(data) > n {
			data = data[n:]
		} else {
			data = nil
		}
		if shape[i+2]&1 != 0 || len(c.Writable) > 0 {
			c.Writable = append(c.Writable, buf)
			c.WriteLen += uint64(n)
		} else {
			c.Readable = append(c.Readable, buf)
			c.ReadLen += uint64(n)
		}
	}
	return c
}

// memFile is a BlkFile in memory that fails the test on any access past
// its end.
type memFile struct {
	t *testing.T
	b []byte
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		m.t.Fatalf("read [%d, +%d) past the end of a %d-byte disk", off, len(p), len(m.b))
	}
	return copy(p, m.b[off:]), nil
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || off+int64(len(p)) > int64(len(m.b)) {
		m.t.Fatalf("write [%d, +%d) past the end of a %d-byte disk", off, len(p), len(m.b))
	}
	return copy(m.b[off:], p), nil
}

func (m *memFile) Sync() error { return nil }

// FuzzBlkRequest feeds random requests to virtio-blk over a small disk:
// it must never touch the disk outside its capacity, write a read-only
// disk, or report more bytes than the chain holds.
func FuzzBlkRequest(f *testing.F) {
	hdr := func(typ uint32, sector uint64) []byte {
		b := binary.LittleEndian.AppendUint32(nil, typ)
		b = binary.LittleEndian.AppendUint32(b, 0)
		return binary.LittleEndian.AppendUint64(b, sector)
	}
	shape := []byte{16, 0, 0, 0, 2, 1, 1, 0, 1} // header, 512 writable, status
	f.Add(false, shape, hdr(BlkTIn, 1))
	f.Add(false, []byte{16, 0, 0, 0, 2, 0, 1, 0, 1}, hdr(BlkTOut, 7))
	f.Add(true, []byte{16, 0, 0, 0, 2, 0, 1, 0, 1}, hdr(BlkTOut, 0))
	f.Add(false, []byte{16, 0, 0, 21, 0, 1}, hdr(BlkTGetID, 0))
	f.Add(false, []byte{16, 0, 0, 1, 0, 1}, hdr(BlkTFlush, 0))
	f.Add(false, []byte{8, 0, 0}, hdr(BlkTIn, 0))
	f.Fuzz(func(t *testing.T, ro bool, shape, data []byte) {
		disk := make([]byte, 8*SectorSize+100)
		orig := bytes.Clone(disk)
		b := NewBlk(&memFile{t: t, b: disk}, int64(len(disk)), ro, "fuzz")
		c := chainFrom(shape, data)
		n, err := b.Process(0, c)
		if err != nil {
			if c.WriteLen != 0 || !errors.Is(err, ErrQueue) {
				t.Fatalf("Process error %v with %d writable bytes", err, c.WriteLen)
			}
			return
		}
		if uint64(n) > c.WriteLen || n == 0 {
			t.Fatalf("used len %d, chain has %d writable bytes", n, c.WriteLen)
		}
		if ro && !bytes.Equal(disk, orig) {
			t.Fatal("read-only disk written")
		}
		if !bytes.Equal(disk[8*SectorSize:], orig[8*SectorSize:]) {
			t.Fatal("unreachable tail written")
		}
	})
}

// FuzzNetTx feeds random transmit chains to virtio-net: what reaches the
// tap is exactly the chain past its 12-byte header, or nothing.
func FuzzNetTx(f *testing.F) {
	f.Add([]byte{26, 0, 0}, append(make([]byte, NetHdrSize), "\xff\xff\xff\xff\xff\xff\x02\x00\x00\x00\x00\x01\x88\xb5"...))
	f.Add([]byte{5, 0, 0, 30, 0, 0}, make([]byte, 40))
	f.Add([]byte{4, 0, 0}, []byte{1, 2, 3, 4})
	f.Fuzz(func(t *testing.T, shape, data []byte) {
		tap := newFakeTap()
		n := NewNet(DefaultMAC("fuzz"), tap)
		c := chainFrom(shape, data)
		if w, err := n.Process(NetTXQueue, c); w != 0 || err != nil {
			t.Fatalf("Process = %d, %v", w, err)
		}
		out := tap.sent()
		if c.ReadLen < NetHdrSize || c.ReadLen-NetHdrSize > MaxFrame {
			if len(out) != 0 {
				t.Fatal("frame sent from a chain without a header or over MaxFrame")
			}
			return
		}
		all := bytes.Join(c.Readable, nil)
		if len(out) != 1 || !bytes.Equal(out[0], all[NetHdrSize:]) {
			t.Fatalf("tap got %d frames", len(out))
		}
		// The receive side must not fill a chain too small for the frame.
		if _, err := n.Process(NetRXQueue, c); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzRNG checks the entropy device never writes more than the chain's
// writable bytes or the per-request bound.
func FuzzRNG(f *testing.F) {
	f.Add([]byte{16, 0, 1})
	f.Add([]byte{4, 0, 0, 255, 255, 1, 255, 255, 1})
	f.Fuzz(func(t *testing.T, shape []byte) {
		r := newRNGFrom(func(p []byte) error {
			for i := range p {
				p[i] = 0xaa
			}
			return nil
		})
		c := chainFrom(shape, nil)
		n, err := r.Process(0, c)
		if err != nil || uint64(n) > min(c.WriteLen, RNGMaxRequest) {
			t.Fatalf("Process = %d, %v (writable %d)", n, err, c.WriteLen)
		}
		filled := bytes.Count(bytes.Join(c.Writable, nil), []byte{0xaa})
		if filled != int(n) {
			t.Fatalf("filled %d bytes, reported %d", filled, n)
		}
		if len(c.Readable) > 0 && bytes.Contains(bytes.Join(c.Readable, nil), []byte{0xaa}) {
			t.Fatal("wrote into a readable buffer")
		}
	})
}
