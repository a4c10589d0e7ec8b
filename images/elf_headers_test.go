package images

import (
	"debug/elf"
	"testing"
)

// TestLoadTinyIgnoresNonLoadHeaders: a PT_TLS with filesz 0 and an offset
// past the end of the file (and other non-LOAD headers with garbage
// offsets) neither fails the load nor places bytes.
func TestLoadTinyIgnoresNonLoadHeaders(t *testing.T) {
	rx := elf.PF_R | elf.PF_X
	good := seg{paddr: 0x100000, flags: rx, data: code}
	for _, tc := range []struct {
		name  string
		extra seg
	}{
		{"PT_TLS offset past end", seg{ptype: elf.PT_TLS, paddr: 0x200000, offset: 1 << 40, memsz: 0x100}},
		{"PT_TLS with bytes past end", seg{ptype: elf.PT_TLS, paddr: 0x200000, offset: 1 << 40, data: []byte{1, 2, 3}}},
		{"PT_GNU_STACK", seg{ptype: elf.PT_GNU_STACK, offset: -1 & 0x7fffffffffffffff}},
		{"PT_DYNAMIC past end", seg{ptype: elf.PT_DYNAMIC, paddr: 0x300000, offset: 1 << 30, data: code}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := mkELF(elf.ET_EXEC, 0x100000, good, tc.extra)
			if len(tc.extra.data) > 0 {
				img = img[:len(img)-len(tc.extra.data)] // its bytes are not in the file
			}
			mem := newFakeMem(Region{Start: 0, Size: 4 << 20})
			l, err := LoadTiny(mem, img, FormatUnknown)
			if err != nil {
				t.Fatalf("LoadTiny: %v", err)
			}
			if l.Start != 0x100000 || l.End != 0x100000+uint64(len(code)) {
				t.Errorf("loaded %+v: want only the PT_LOAD", l)
			}
			for _, b := range mem.bufs[0][0x200000:0x300010] {
				if b != 0 {
					t.Fatal("bytes placed outside the PT_LOAD segment")
				}
			}
		})
	}
}
