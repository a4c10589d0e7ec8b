package devices

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// fwRead selects key and reads n bytes one data-port read at a time.
func fwRead(d *FWCfg, key uint16, n int) []byte {
	d.Write(0, binary.LittleEndian.AppendUint16(nil, key))
	out := make([]byte, n)
	for i := range out {
		d.Read(1, out[i:i+1])
	}
	return out
}

func TestFWCfgItems(t *testing.T) {
	d, err := NewFWCfg(256<<20, 3, []FWCfgFile{{"opt/b", []byte("bee")}, {"opt/a", []byte("ay!")}})
	if err != nil {
		t.Fatal(err)
	}
	dirEntry := func(size uint32, sel uint16, name string) []byte {
		b := binary.BigEndian.AppendUint32(nil, size)
		b = binary.BigEndian.AppendUint16(b, sel)
		b = append(b, 0, 0)
		var n [56]byte
		copy(n[:], name)
		return append(b, n[:]...)
	}
	dir := append([]byte{0, 0, 0, 2}, append(dirEntry(3, 0x20, "opt/a"), dirEntry(3, 0x21, "opt/b")...)...)
	for _, tt := range []struct {
		name string
		key  uint16
		want []byte
	}{
		{"signature", FWCfgSignature, []byte("QEMU\x00\x00")},
		{"id: traditional interface", FWCfgID, []byte{1, 0, 0, 0}},
		{"ram size", FWCfgRAMSize, binary.LittleEndian.AppendUint64(nil, 256<<20)},
		{"cpus", FWCfgNbCPUs, []byte{3, 0}},
		{"max cpus", FWCfgMaxCPUs, []byte{3, 0}},
		{"file dir", FWCfgFileDir, dir},
		{"file a (sorted first)", 0x20, []byte("ay!\x00")},
		{"file b", 0x21, []byte("bee")},
		{"write bit ignored", FWCfgSignature | 0x4000, []byte("QEMU")},
		{"unknown key", 0x1234, []byte{0, 0}},
		{"arch key unknown", 0x8003, []byte{0}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := fwRead(d, tt.key, len(tt.want)); !bytes.Equal(got, tt.want) {
				t.Errorf("key %#x: % x, want % x", tt.key, got, tt.want)
			}
		})
	}
}

func TestFWCfgAccess(t *testing.T) {
	d, err := NewFWCfg(1<<30, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Reset on select: reading twice gives the start again.
	fwRead(d, FWCfgSignature, 2)
	if got := fwRead(d, FWCfgSignature, 4); string(got) != "QEMU" {
		t.Errorf("after reselect: %q", got)
	}
	// A wide read takes consecutive bytes; the selector port reads zero;
	// data-port writes change nothing.
	d.Write(0, []byte{0, 0})
	d.Write(1, []byte{'X'})
	b := make([]byte, 4)
	d.Read(1, b)
	if string(b) != "QEMU" {
		t.Errorf("4-byte read %q", b)
	}
	d.Read(0, b[:2])
	if b[0] != 0 || b[1] != 0 {
		t.Errorf("selector port reads % x", b[:2])
	}
	// The empty directory is a zero count.
	if got := fwRead(d, FWCfgFileDir, 5); !bytes.Equal(got, make([]byte, 5)) {
		t.Errorf("empty dir % x", got)
	}
}

func TestFWCfgBadFiles(t *testing.T) {
	for _, tt := range []struct {
		name  string
		files []FWCfgFile
		want  string
	}{
		{"empty name", []FWCfgFile{{"", nil}}, "want 1 to 55"},
		{"long name", []FWCfgFile{{strings.Repeat("x", 56), nil}}, "want 1 to 55"},
		{"duplicate", []FWCfgFile{{"a", nil}, {"a", nil}}, "twice"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewFWCfg(1<<20, 1, tt.files); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestDebugExit(t *testing.T) {
	for _, tt := range []struct {
		name string
		data []byte
		want uint64
	}{
		{"0 → 1", []byte{0}, 1},
		{"1 → 3", []byte{1}, 3},
		{"0x10 → 33", []byte{0x10}, 33},
		{"0xff → 511", []byte{0xff}, 511},
		{"32-bit 0x12345678", []byte{0x78, 0x56, 0x34, 0x12}, 0x2468acf1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []uint64
			d := NewDebugExit(func(s uint64) { got = append(got, s) })
			d.Write(0, tt.data)
			if len(got) != 1 || got[0] != tt.want {
				t.Errorf("statuses %v, want [%d]", got, tt.want)
			}
			b := []byte{9}
			d.Read(0, b)
			if b[0] != 0 {
				t.Errorf("read %#x, want 0", b[0])
			}
		})
	}
}

// FuzzCMOSFWCfg drives the CMOS and fw_cfg ports with arbitrary accesses:
// never a panic, and the CMOS data port always answers one byte.
func FuzzCMOSFWCfg(f *testing.F) {
	f.Add([]byte{0, 0x0b, 1, 0x80, 0, 0x09, 1, 0x99, 0, 0x0b, 1, 0x02, 2, 0x09})
	f.Add([]byte{0, 0x0b, 1, 0x84, 0, 0x04, 1, 0xff, 0, 0x0b, 1, 0x00, 3, 0x19})
	f.Fuzz(func(t *testing.T, ops []byte) {
		c := NewCMOS(64<<20, 0, nil)
		fw, err := NewFWCfg(64<<20, 2, []FWCfgFile{{"opt/x", []byte("x")}})
		if err != nil {
			t.Fatal(err)
		}
		for len(ops) >= 2 {
			op, v := ops[0], ops[1]
			ops = ops[2:]
			switch op % 4 {
			case 0:
				c.Write(0, []byte{v})
			case 1:
				c.Write(1, []byte{v})
			case 2:
				b := []byte{0, 0xee}
				c.Read(1, b)
				if b[1] != 0 {
					t.Fatalf("CMOS wide read filled % x", b)
				}
			case 3:
				fw.Write(0, []byte{v, op})
				b := make([]byte, 1+int(v%8))
				fw.Read(1, b)
			}
		}
	})
}
