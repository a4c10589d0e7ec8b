package virtio

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// blkReq lays out a request in fake memory: header at dataBase, data at
// dataBase+0x1000 (dataLen bytes, split in two descriptors when split),
// status at dataBase+0x100; returns the head.
func blkReq(r *ring, typ uint32, sector uint64, dataLen uint32, split bool, out bool) {
	m := r.m
	m.put32(dataBase, typ)
	m.put32(dataBase+4, 0)
	m.put64(dataBase+8, sector)
	m.at(dataBase + 0x100)[0] = 0xee
	dataFlags := uint16(descFNext)
	if !out {
		dataFlags |= descFWrite
	}
	r.setDesc(0, dataBase, 16, descFNext, 1)
	if dataLen == 0 {
		r.setDesc(1, dataBase+0x100, 1, descFWrite, 0)
	} else if split {
		half := dataLen / 2
		r.setDesc(1, dataBase+0x1000, half, dataFlags, 2)
		r.setDesc(2, dataBase+0x1000+uint64(half), dataLen-half, dataFlags, 3)
		r.setDesc(3, dataBase+0x100, 1, descFWrite, 0)
	} else {
		r.setDesc(1, dataBase+0x1000, dataLen, dataFlags, 2)
		r.setDesc(2, dataBase+0x100, 1, descFWrite, 0)
	}
	r.offer(0)
}

func newDisk(t *testing.T, sectors int, tail int) (string, []byte) {
	t.Helper()
	content := make([]byte, sectors*SectorSize+tail)
	for i := range content {
		content[i] = byte(i*7 + i/SectorSize)
	}
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, content, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, content
}

func TestBlkRequests(t *testing.T) {
	const sectors = 16
	for _, tc := range []struct {
		name     string
		ro       bool
		typ      uint32
		sector   uint64
		dataLen  uint32
		split    bool
		out      bool
		status   byte
		usedLen  uint32
		modified bool // sector `sector` on disk now holds the written pattern
	}{
		{"read sector 0", false, BlkTIn, 0, 512, false, false, BlkSOK, 513, false},
		{"read 4 KiB split over two buffers", false, BlkTIn, 8, 4096, true, false, BlkSOK, 4097, false},
		{"read the last sector", false, BlkTIn, sectors - 1, 512, false, false, BlkSOK, 513, false},
		{"read past the end", false, BlkTIn, sectors - 1, 1024, false, false, BlkSIOErr, 1, false},
		{"read at a huge sector", false, BlkTIn, 1 << 62, 512, false, false, BlkSIOErr, 1, false},
		{"read of a partial sector", false, BlkTIn, 0, 100, false, false, BlkSIOErr, 1, false},
		{"write sector 3", false, BlkTOut, 3, 512, false, true, BlkSOK, 1, true},
		{"write split", false, BlkTOut, 4, 1024, true, true, BlkSOK, 1, true},
		{"write past the end", false, BlkTOut, sectors, 512, false, true, BlkSIOErr, 1, false},
		{"write straddling the end", false, BlkTOut, sectors - 1, 1024, false, true, BlkSIOErr, 1, false},
		{"write with sector overflow", false, BlkTOut, ^uint64(0), 512, false, true, BlkSIOErr, 1, false},
		{"write to a read-only disk", true, BlkTOut, 3, 512, false, true, BlkSIOErr, 1, false},
		{"read from a read-only disk", true, BlkTIn, 3, 512, false, false, BlkSOK, 513, false},
		{"flush", false, BlkTFlush, 0, 0, false, false, BlkSOK, 1, false},
		{"flush read-only", true, BlkTFlush, 0, 0, false, false, BlkSOK, 1, false},
		{"get id", false, BlkTGetID, 0, 20, false, false, BlkSOK, 21, false},
		{"get id into a short buffer", false, BlkTGetID, 0, 4, false, false, BlkSOK, 5, false},
		{"discard is unsupported", false, 11, 0, 0, false, false, BlkSUnsupp, 1, false},
		{"unknown type", false, 0xdead, 0, 0, false, false, BlkSUnsupp, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, content := newDisk(t, sectors, 100)
			b, err := OpenBlk(path, tc.ro)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			if b.Sectors() != sectors {
				t.Fatalf("capacity %d sectors, want %d (the 100-byte tail is unreachable)", b.Sectors(), sectors)
			}
			dr := newDriver(t, b, nil)
			dr.start(0, 8)
			r := dr.rings[0]
			if tc.out {
				for i := uint32(0); i < tc.dataLen; i++ {
					dr.m.at(dataBase + 0x1000)[i] = 0xa5
				}
			}
			blkReq(r, tc.typ, tc.sector, tc.dataLen, tc.split, tc.out)
			dr.w(RegQueueNotify, 0)
			if dr.needsReset() || r.usedIdx() != 1 {
				t.Fatalf("status %#x used %d", dr.r(RegStatus), r.usedIdx())
			}
			if st := dr.m.at(dataBase + 0x100)[0]; st != tc.status {
				t.Errorf("request status %d, want %d", st, tc.status)
			}
			if _, n := r.usedElem(0); n != tc.usedLen {
				t.Errorf("used len %d, want %d", n, tc.usedLen)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(content) {
				t.Fatalf("disk file is %d bytes, was %d", len(got), len(content))
			}
			want := append([]byte(nil), content...)
			if tc.modified {
				off := int(tc.sector) * SectorSize
				copy(want[off:off+int(tc.dataLen)], bytes.Repeat([]byte{0xa5}, int(tc.dataLen)))
			}
			if !bytes.Equal(got, want) {
				t.Error("disk contents differ from what the request should leave")
			}
			if tc.typ == BlkTIn && tc.status == BlkSOK {
				off := int(tc.sector) * SectorSize
				if !bytes.Equal(dr.m.at(dataBase + 0x1000)[:tc.dataLen], content[off:off+int(tc.dataLen)]) {
					t.Error("read returned the wrong bytes")
				}
			}
			if tc.typ == BlkTGetID {
				id := string(dr.m.at(dataBase + 0x1000)[:tc.dataLen])
				if !strings.HasPrefix("disk.img", strings.TrimRight(id, "\x00")) {
					t.Errorf("id %q", id)
				}
			}
		})
	}
}

func TestBlkConfigAndFeatures(t *testing.T) {
	path, _ := newDisk(t, 100, 0)
	for _, ro := range []bool{false, true} {
		b, err := OpenBlk(path, ro)
		if err != nil {
			t.Fatal(err)
		}
		d := NewMMIODevice(b, newFakeMem(0, 4096), nil, nil)
		dr := &driver{t: t, d: d}
		if dr.r(RegDeviceID) != uint32(DeviceBlock) {
			t.Error("device id")
		}
		if cap := uint64(dr.r(RegConfig)) | uint64(dr.r(RegConfig+4))<<32; cap != 100 {
			t.Errorf("capacity %d", cap)
		}
		if seg := dr.r(RegConfig + 12); seg != blkQueueSize-2 {
			t.Errorf("seg_max %d", seg)
		}
		dr.w(RegDeviceFeatSel, 0)
		f := dr.r(RegDeviceFeatures)
		if f&BlkFFlush == 0 || (f&BlkFRO != 0) != ro {
			t.Errorf("ro=%v: features %#x", ro, f)
		}
		b.Close()
	}
}

func TestBlkBadRequests(t *testing.T) {
	path, content := newDisk(t, 4, 0)
	b, err := OpenBlk(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dr := newDriver(t, b, nil)
	dr.start(0, 8)
	r := dr.rings[0]
	// Header shorter than 16 bytes: IOERR.
	r.setDesc(0, dataBase, 8, descFNext, 1)
	r.setDesc(1, dataBase+0x100, 1, descFWrite, 0)
	r.offer(0)
	dr.w(RegQueueNotify, 0)
	if dr.m.at(dataBase + 0x100)[0] != BlkSIOErr || dr.needsReset() {
		t.Errorf("short header: status %d needs reset %v", dr.m.at(dataBase + 0x100)[0], dr.needsReset())
	}
	// No status byte at all: the request cannot be answered; the device needs a reset.
	r.setDesc(0, dataBase, 16, 0, 0)
	r.offer(0)
	dr.w(RegQueueNotify, 0)
	if !dr.needsReset() {
		t.Error("request without status byte did not set NEEDS_RESET")
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, content) {
		t.Error("disk changed")
	}
}

func TestBlkEmptyDisk(t *testing.T) {
	p := filepath.Join(t.TempDir(), "empty")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := OpenBlk(p, false)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dr := newDriver(t, b, nil)
	dr.start(0, 8)
	for _, typ := range []uint32{BlkTIn, BlkTOut} {
		blkReq(dr.rings[0], typ, 0, 512, false, typ == BlkTOut)
		dr.w(RegQueueNotify, 0)
		if st := dr.m.at(dataBase + 0x100)[0]; st != BlkSIOErr {
			t.Errorf("type %d on an empty disk: status %d, want IOERR", typ, st)
		}
	}
	if st, _ := os.Stat(p); st.Size() != 0 {
		t.Errorf("empty disk grew to %d bytes", st.Size())
	}
}

func TestOpenBlkErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		path, want string
	}{
		{filepath.Join(dir, "missing"), "no such file"},
		{dir, "is a directory"},
		{"/dev/null", "not a regular file"},
	} {
		if _, err := OpenBlk(tc.path, true); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("OpenBlk(%s) = %v, want %q", tc.path, err, tc.want)
		}
	}
}

func TestBlkHeaderLayout(t *testing.T) {
	// The header is little-endian type, reserved, sector.
	var h [16]byte
	binary.LittleEndian.PutUint32(h[0:], BlkTIn)
	binary.LittleEndian.PutUint64(h[8:], 3)
	c := &Chain{Readable: [][]byte{h[:]}, Writable: [][]byte{make([]byte, 513)}, ReadLen: 16, WriteLen: 513}
	path, content := newDisk(t, 4, 0)
	b, _ := OpenBlk(path, true)
	defer b.Close()
	n, err := b.Process(0, c)
	if err != nil || n != 513 || c.Writable[0][512] != BlkSOK || !bytes.Equal(c.Writable[0][:512], content[3*512:4*512]) {
		t.Errorf("Process = %d %v status %d", n, err, c.Writable[0][512])
	}
}
