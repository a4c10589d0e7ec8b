package multiboot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/microvm/microvm/images"
)

// flatMem is guest RAM [0, size) backed by one slice.
type flatMem struct{ b []byte }

func (m *flatMem) Regions() []images.Region {
	return []images.Region{{Start: 0, Size: uint64(len(m.b))}}
}

func (m *flatMem) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || !images.InRAM(m.Regions(), uint64(off), uint64(len(p))) {
		return 0, fmt.Errorf("read [%#x, +%#x) outside RAM", off, len(p))
	}
	return copy(p, m.b[off:]), nil
}

func (m *flatMem) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 || !images.InRAM(m.Regions(), uint64(off), uint64(len(p))) {
		return 0, fmt.Errorf("write [%#x, +%#x) outside RAM", off, len(p))
	}
	return copy(m.b[off:], p), nil
}

func (m *flatMem) u32(a uint64) uint32 { return binary.LittleEndian.Uint32(m.b[a:]) }
func (m *flatMem) cstr(a uint32) string {
	s := m.b[a:]
	return string(s[:bytes.IndexByte(s, 0)])
}

// header builds a Multiboot header with a correct checksum unless sum is
// given.
func header(flags uint32, aout [5]uint32, sum ...uint32) []byte {
	le := binary.LittleEndian
	h := make([]byte, 12, 32)
	le.PutUint32(h[0:], HeaderMagic)
	le.PutUint32(h[4:], flags)
	s := -(HeaderMagic + flags)
	if len(sum) > 0 {
		s = sum[0]
	}
	le.PutUint32(h[8:], s)
	if flags&flagAout != 0 {
		for _, v := range aout {
			h = le.AppendUint32(h, v)
		}
	}
	return h
}

// aoutImage is a flat image loaded at load with its header at offset 0:
// code bytes follow the header; bss of the given size.
func aoutImage(load uint32, code []byte, bss uint32) []byte {
	size := uint32(32 + len(code))
	img := header(flagAout|flagMemInfo|flagPageAlign, [5]uint32{load, load, load + size, load + size + bss, load + 32})
	return append(img, code...)
}

// elf32Image is an ELF32 ET_EXEC with one PT_LOAD at paddr (vaddr = paddr +
// vdelta) holding a Multiboot header and code, plus bss.
func elf32Image(paddr, vdelta uint32, code []byte, bss uint32) []byte {
	le := binary.LittleEndian
	const ehsize, phsize = 52, 32
	body := append(header(flagMemInfo, [5]uint32{}), code...)
	off := uint32(ehsize + phsize)
	img := make([]byte, off)
	copy(img, "\x7fELF\x01\x01\x01")
	le.PutUint16(img[16:], 2) // ET_EXEC
	le.PutUint16(img[18:], 3) // EM_386
	le.PutUint32(img[20:], 1) // version
	le.PutUint32(img[24:], paddr+vdelta+12)
	le.PutUint32(img[28:], ehsize) // phoff
	le.PutUint16(img[40:], ehsize)
	le.PutUint16(img[42:], phsize)
	le.PutUint16(img[44:], 1)
	p := img[ehsize:]
	le.PutUint32(p[0:], 1) // PT_LOAD
	le.PutUint32(p[4:], off)
	le.PutUint32(p[8:], paddr+vdelta)
	le.PutUint32(p[12:], paddr)
	le.PutUint32(p[16:], uint32(len(body)))
	le.PutUint32(p[20:], uint32(len(body))+bss)
	le.PutUint32(p[24:], 5)
	return append(img, body...)
}

func TestLoadELF32(t *testing.T) {
	mem := &flatMem{make([]byte, 8<<20)}
	code := []byte{0xf4, 0xeb, 0xfd}
	img := elf32Image(0x200000, 0xc0000000, code, 0x1000)
	mem.b[0x200000+12+3+5] = 0xaa // bss must be cleared
	mods := []Module{{Name: "a", Data: []byte("first module"), Cmdline: "a arg"}, {Name: "b", Data: bytes.Repeat([]byte{7}, 5000), Cmdline: ""}}
	l, err := Load(mem, img, Config{Cmdline: "hello world", Modules: mods})
	if err != nil {
		t.Fatal(err)
	}
	if l.Entry != 0x200000+12 {
		t.Errorf("entry %#x, want %#x (virtual entry mapped to physical)", l.Entry, 0x200000+12)
	}
	if !bytes.Equal(mem.b[0x200000+12:0x200000+15], code) {
		t.Errorf("code not placed at paddr")
	}
	if mem.b[0x200000+12+3+5] != 0 {
		t.Errorf("bss not cleared")
	}
	checkInfo(t, mem, l, "hello world", mods)
}

func TestLoadAout(t *testing.T) {
	mem := &flatMem{make([]byte, 4<<20)}
	img := aoutImage(0x100000, []byte{0x90, 0xf4}, 0x3000)
	l, err := Load(mem, img, Config{Cmdline: ""})
	if err != nil {
		t.Fatal(err)
	}
	if l.Entry != 0x100020 || l.KernelEnd != 0x100000+uint64(len(img))+0x3000 {
		t.Errorf("entry %#x end %#x", l.Entry, l.KernelEnd)
	}
	if !bytes.Equal(mem.b[0x100000:0x100000+len(img)], img) {
		t.Errorf("image not placed at load_addr")
	}
	checkInfo(t, mem, l, "", nil)
}

// checkInfo reads the information block back as a kernel would.
func checkInfo(t *testing.T, mem *flatMem, l *Loaded, cmdline string, mods []Module) {
	t.Helper()
	info := uint64(l.InfoAddr)
	flags := mem.u32(info)
	want := uint32(InfoMem | InfoCmdline | InfoMmap | InfoLoaderName)
	if len(mods) > 0 {
		want |= InfoMods
	}
	if flags != want {
		t.Errorf("flags %#x, want %#x", flags, want)
	}
	size := uint64(len(mem.b))
	if lo, up := mem.u32(info+4), mem.u32(info+8); lo != 640 || uint64(up) != (size-1<<20)/1024 {
		t.Errorf("mem_lower %d mem_upper %d for %d bytes of RAM", lo, up, size)
	}
	if got := mem.cstr(mem.u32(info + 16)); got != cmdline {
		t.Errorf("cmdline %q, want %q", got, cmdline)
	}
	if got := mem.cstr(mem.u32(info + 64)); got != BootloaderName {
		t.Errorf("boot_loader_name %q", got)
	}
	// The memory map must cover all RAM, the hole reserved.
	var avail uint64
	mlen, maddr := mem.u32(info+44), mem.u32(info+48)
	for a := uint64(maddr); a < uint64(maddr)+uint64(mlen); {
		sz := mem.u32(a)
		base := binary.LittleEndian.Uint64(mem.b[a+4:])
		n := binary.LittleEndian.Uint64(mem.b[a+12:])
		if typ := mem.u32(a + 20); typ == 1 {
			avail += n
			if base < holeEnd && base+n > holeStart {
				t.Errorf("available entry [%#x, +%#x) covers the hole", base, n)
			}
		}
		a += uint64(sz) + 4
	}
	if avail != size-(holeEnd-holeStart) {
		t.Errorf("memory map has %#x bytes available, want %#x", avail, size-(holeEnd-holeStart))
	}
	if got := mem.u32(info + 20); got != uint32(len(mods)) && len(mods) > 0 {
		t.Errorf("mods_count %d, want %d", got, len(mods))
	}
	prevEnd := uint32(l.KernelEnd)
	for i, m := range mods {
		e := uint64(mem.u32(info+24)) + uint64(i)*16
		start, end, str := mem.u32(e), mem.u32(e+4), mem.u32(e+8)
		if start%0x1000 != 0 || start < prevEnd {
			t.Errorf("module %d at %#x: not page aligned or overlaps what precedes it (%#x)", i, start, prevEnd)
		}
		if !bytes.Equal(mem.b[start:end], m.Data) {
			t.Errorf("module %d bytes differ", i)
		}
		if got := mem.cstr(str); got != m.Cmdline {
			t.Errorf("module %d string %q, want %q", i, got, m.Cmdline)
		}
		prevEnd = end
	}
}

func TestBadInput(t *testing.T) {
	big := make([]byte, 8192)
	tests := []struct {
		name   string
		image  []byte
		mem    uint64
		mods   []Module
		cmd    string
		errSub string
	}{
		{"no header", make([]byte, 9000), 4 << 20, nil, "", "no Multiboot header"},
		{"header past 8 KiB", append(make([]byte, 8192), header(0, [5]uint32{})...), 4 << 20, nil, "", "no Multiboot header"},
		{"bad checksum", append(header(flagMemInfo, [5]uint32{}, 0x1234), 0xf4), 4 << 20, nil, "", "bad checksum"},
		{"unknown required flag", header(1<<5, [5]uint32{}), 4 << 20, nil, "", "requires features"},
		{"a.out truncated", header(flagAout, [5]uint32{})[:12+4], 4 << 20, nil, "", "ends before its address fields"},
		{"a.out fields cut off", func() []byte { h := header(flagAout, [5]uint32{1, 1, 1, 1, 1}); return h[:20] }(), 4 << 20, nil, "", "ends before its address fields"},
		{"not ELF, no a.out", header(0, [5]uint32{}), 4 << 20, nil, "", "not ELF"},
		{"load outside RAM", aoutImage(0x800000, []byte{0xf4}, 0), 4 << 20, nil, "", "outside guest RAM"},
		{"load over VMM pages", aoutImage(0x8000, []byte{0xf4}, 0), 4 << 20, nil, "", "VMM's pages"},
		{"load in legacy hole", aoutImage(0xb8000, []byte{0xf4}, 0), 4 << 20, nil, "", "legacy hole"},
		{"ELF over VMM pages", elf32Image(0x1000, 0, []byte{0xf4}, 0), 4 << 20, nil, "", "VMM's pages"},
		{"ELF outside RAM", elf32Image(0x10000000, 0, []byte{0xf4}, 0), 4 << 20, nil, "", "outside guest RAM"},
		{"bss wraps 4 GiB", aoutImage(0xfffff000, []byte{0xf4}, 0x2000), 4 << 20, nil, "", "bss_end_addr"},
		{"load near 4 GiB", aoutImage(0xfffff000, []byte{0xf4}, 0), 4 << 20, nil, "", "outside guest RAM"},
		{"header_addr below load_addr", header(flagAout, [5]uint32{0x100000, 0x200000, 0, 0, 0x200000}), 4 << 20, nil, "", "below load_addr"},
		{"header_addr too far past load_addr", header(flagAout, [5]uint32{0x200000, 0x100000, 0, 0, 0x200000}), 4 << 20, nil, "", "more than the header's file offset"},
		{"load_end past the file", header(flagAout, [5]uint32{0x100000, 0x100000, 0x100000 + 0x10000000, 0, 0x100000}), 4 << 20, nil, "", "the image has"},
		{"load_end below load_addr", header(flagAout, [5]uint32{0x100000, 0x100000, 0x1000, 0, 0x100000}), 4 << 20, nil, "", "load_end_addr"},
		{"bss_end below load end", header(flagAout, [5]uint32{0x100000, 0x100000, 0x100020, 0x100010, 0x100000}), 4 << 20, nil, "", "bss_end_addr"},
		{"entry outside image", header(flagAout, [5]uint32{0x100000, 0x100000, 0x100020, 0, 0x300000}), 4 << 20, nil, "", "entry point"},
		{"module does not fit", aoutImage(0x100000, []byte{0xf4}, 0), 2 << 20, []Module{{Name: "m", Data: make([]byte, 2<<20)}}, "", "module 1"},
		{"too many modules", aoutImage(0x100000, []byte{0xf4}, 0), 16 << 20, make([]Module, MaxModules+1), "", "at most"},
		{"cmdline too long", aoutImage(0x100000, []byte{0xf4}, 0), 4 << 20, nil, strings.Repeat("x", 0x8000), "does not fit"},
		{"cmdline with NUL", aoutImage(0x100000, []byte{0xf4}, 0), 4 << 20, nil, "a\x00b", "NUL"},
		{"zeros", big, 4 << 20, nil, "", "no Multiboot header"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mem := &flatMem{make([]byte, tc.mem)}
			_, err := Load(mem, tc.image, Config{Cmdline: tc.cmd, Modules: tc.mods})
			if err == nil {
				t.Fatalf("loaded; want an error containing %q", tc.errSub)
			}
			if !errors.Is(err, images.ErrBadImage) || !strings.Contains(err.Error(), tc.errSub) {
				t.Fatalf("error %q; want ErrBadImage containing %q", err, tc.errSub)
			}
		})
	}
}

func FuzzMultibootHeader(f *testing.F) {
	f.Add(aoutImage(0x100000, []byte{0xf4}, 0x100))
	f.Add(elf32Image(0x100000, 0xc0000000, []byte{0xf4}, 0x100))
	f.Add(header(flagAout, [5]uint32{0xffffffff, 0, 0xffffffff, 0xffffffff, 0}))
	f.Fuzz(func(t *testing.T, data []byte) {
		mem := &flatMem{make([]byte, 4<<20)}
		l, err := Load(mem, data, Config{Cmdline: "x", Modules: []Module{{Name: "m", Data: []byte("mod")}}})
		if err != nil {
			if !errors.Is(err, images.ErrBadImage) {
				t.Fatalf("error not ErrBadImage: %v", err)
			}
			return
		}
		if l.KernelStart < ReservedEnd || l.KernelEnd > uint64(len(mem.b)) {
			t.Fatalf("kernel [%#x, %#x) placed outside the allowed area", l.KernelStart, l.KernelEnd)
		}
	})
}
