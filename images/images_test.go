package images

import (
	"bytes"
	"cmp"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fakeMem is guest RAM backed by byte slices, for loader tests.
type fakeMem struct {
	regions []Region
	bufs    [][]byte
}

func newFakeMem(regions ...Region) *fakeMem {
	m := &fakeMem{regions: regions}
	for _, r := range regions {
		m.bufs = append(m.bufs, make([]byte, r.Size))
	}
	return m
}

func (m *fakeMem) Regions() []Region { return m.regions }

func (m *fakeMem) slice(off int64, n int) ([]byte, error) {
	for i, r := range m.regions {
		if off >= 0 && r.Contains(uint64(off), uint64(n)) {
			o := uint64(off) - r.Start
			return m.bufs[i][o : o+uint64(n)], nil
		}
	}
	return nil, fmt.Errorf("address %#x+%d outside RAM", off, n)
}

func (m *fakeMem) ReadAt(p []byte, off int64) (int, error) {
	b, err := m.slice(off, len(p))
	if err != nil {
		return 0, err
	}
	return copy(p, b), nil
}

func (m *fakeMem) WriteAt(p []byte, off int64) (int, error) {
	b, err := m.slice(off, len(p))
	if err != nil {
		return 0, err
	}
	return copy(b, p), nil
}

// seg describes a PT_LOAD segment for mkELF.
type seg struct {
	vaddr  uint64 // 0: paddr
	paddr  uint64
	flags  elf.ProgFlag
	data   []byte
	memsz  uint64 // 0: len(data)
	ptype  elf.ProgType
	offset int64 // -1: place the data after the headers
}

// mkELF builds a little x86-64 ELF64 executable.
func mkELF(typ elf.Type, entry uint64, segs ...seg) []byte {
	le := binary.LittleEndian
	hdr := make([]byte, 64)
	copy(hdr, elf.ELFMAG)
	hdr[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	le.PutUint16(hdr[16:], uint16(typ))
	le.PutUint16(hdr[18:], uint16(elf.EM_X86_64))
	le.PutUint32(hdr[20:], 1)
	le.PutUint64(hdr[24:], entry)
	le.PutUint64(hdr[32:], 64)
	le.PutUint16(hdr[52:], 64)
	le.PutUint16(hdr[54:], 56)
	le.PutUint16(hdr[56:], uint16(len(segs)))
	phdrs := make([]byte, 56*len(segs))
	var body []byte
	dataStart := uint64(64 + len(phdrs))
	for i, s := range segs {
		p := phdrs[56*i:]
		t := s.ptype
		if t == 0 {
			t = elf.PT_LOAD
		}
		memsz := s.memsz
		if memsz == 0 {
			memsz = uint64(len(s.data))
		}
		off := dataStart + uint64(len(body))
		if s.offset != 0 {
			off = uint64(s.offset)
		}
		le.PutUint32(p[0:], uint32(t))
		le.PutUint32(p[4:], uint32(s.flags))
		le.PutUint64(p[8:], off)
		le.PutUint64(p[16:], cmp.Or(s.vaddr, s.paddr))
		le.PutUint64(p[24:], s.paddr)
		le.PutUint64(p[32:], uint64(len(s.data)))
		le.PutUint64(p[40:], memsz)
		le.PutUint64(p[48:], 0x1000)
		body = append(body, s.data...)
	}
	return append(append(hdr, phdrs...), body...)
}

var code = []byte{0x90, 0x90, 0xf4}

// mbHeader is a Multiboot v1 header with its checksum off by delta.
func mbHeader(flags, delta uint32) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 0x1BADB002)
	b = binary.LittleEndian.AppendUint32(b, flags)
	return binary.LittleEndian.AppendUint32(b, -(0x1BADB002+flags)+delta)
}

func TestDetect(t *testing.T) {
	bz := make([]byte, 0x300)
	binary.LittleEndian.PutUint16(bz[0x1fe:], 0xaa55)
	copy(bz[0x202:], "HdrS")
	tiny := mkELF(elf.ET_EXEC, 0x100000, seg{paddr: 0x100000, flags: elf.PF_R | elf.PF_X, data: code})
	vmlinux := mkELF(elf.ET_EXEC, 0xffffffff81000000, seg{paddr: 0x1000000, flags: elf.PF_R | elf.PF_X, data: code})
	note := []byte{4, 0, 0, 0, 4, 0, 0, 0, 18, 0, 0, 0, 'X', 'e', 'n', 0, 1, 2, 3, 4}
	pvh := mkELF(elf.ET_EXEC, 0x1000000, seg{paddr: 0x1000000, flags: elf.PF_R | elf.PF_X, data: code},
		seg{ptype: elf.PT_NOTE, data: note})
	// A Linux note keeps a PVH-capable vmlinux on the Linux path; a Xen
	// note other than PHYS32_ENTRY (type 18) is not PVH.
	linuxNote := []byte{6, 0, 0, 0, 1, 0, 0, 0, 6, 0, 0, 0, 'L', 'i', 'n', 'u', 'x', 0, 0, 0, 0, 0, 0, 0}
	linuxPVH := mkELF(elf.ET_EXEC, 0x1000000, seg{paddr: 0x1000000, flags: elf.PF_R | elf.PF_X, data: code},
		seg{ptype: elf.PT_NOTE, data: append(append([]byte{}, linuxNote...), note...)})
	xenOnly := mkELF(elf.ET_EXEC, 0x1000000, seg{paddr: 0x1000000, flags: elf.PF_R | elf.PF_X, data: code},
		seg{ptype: elf.PT_NOTE, data: []byte{4, 0, 0, 0, 4, 0, 0, 0, 7, 0, 0, 0, 'X', 'e', 'n', 0, 1, 2, 3, 4}})
	for _, tc := range []struct {
		name string
		data []byte
		want Format
		err  string
	}{
		{"empty", nil, FormatUnknown, "empty"},
		{"random", []byte("not an image at all"), FormatUnknown, "unrecognised image format"},
		{"bzimage", bz, FormatBzImage, ""},
		{"tiny elf", tiny, FormatELF, ""},
		{"vmlinux by entry", vmlinux, FormatVmlinux, ""},
		{"pvh by xen phys32 note", pvh, FormatPVH, ""},
		{"vmlinux with a pvh note", linuxPVH, FormatVmlinux, ""},
		{"vmlinux linked high with a pvh note", mkELF(elf.ET_EXEC, 0x1000000, seg{vaddr: kernelVirtBase + 0x1000000, paddr: 0x1000000, flags: elf.PF_R | elf.PF_X, data: code},
			seg{ptype: elf.PT_NOTE, data: note}), FormatVmlinux, ""},
		{"vmlinux by xen note", xenOnly, FormatVmlinux, ""},
		{"multiboot a.out", mbHeader(0x10002, 0), FormatMultiboot, ""},
		{"multiboot elf", mkELF(elf.ET_EXEC, 0x100000, seg{paddr: 0x100000, flags: elf.PF_R | elf.PF_X, data: mbHeader(2, 0)}), FormatMultiboot, ""},
		{"multiboot bad checksum", mbHeader(0x10002, 1), FormatUnknown, "unrecognised image format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Detect(tc.data)
			if got != tc.want {
				t.Errorf("Detect = %v, want %v", got, tc.want)
			}
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("err = %v, want %q", err, tc.err)
			}
			if err != nil && !errors.Is(err, ErrBadImage) {
				t.Errorf("error does not wrap ErrBadImage: %v", err)
			}
		})
	}
}

func TestParseFormat(t *testing.T) {
	for in, want := range map[string]Format{"auto": FormatUnknown, "": FormatUnknown, "ELF": FormatELF, "flat": FormatFlat, "bzimage": FormatBzImage, "vmlinux": FormatVmlinux, "multiboot": FormatMultiboot} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseFormat("pe"); err == nil {
		t.Error("ParseFormat(pe) succeeded")
	}
	if FormatFlat.String() != "flat" || Format(42).String() != "format-42" {
		t.Error("Format.String")
	}
}

func TestLoadTinyELF(t *testing.T) {
	ram := Region{Start: 0, Size: 4 << 20}
	data := []byte("rodata!")
	img := mkELF(elf.ET_EXEC, 0x100001,
		seg{paddr: 0x100000, flags: elf.PF_R | elf.PF_X, data: code},
		seg{paddr: 0x101000, flags: elf.PF_R, data: data},
		seg{paddr: 0x102000, flags: elf.PF_R | elf.PF_W, data: []byte{1, 2}, memsz: 0x3000})
	mem := newFakeMem(ram)
	// Dirty the bss area: the loader must zero it.
	mem.bufs[0][0x102005] = 0xee
	l, err := LoadTiny(mem, img, FormatUnknown)
	if err != nil {
		t.Fatal(err)
	}
	if l.Entry != 0x100001 || l.Start != 0x100000 || l.End != 0x105000 {
		t.Errorf("loaded %+v", l)
	}
	if !bytes.Equal(mem.bufs[0][0x100000:0x100003], code) || !bytes.Equal(mem.bufs[0][0x101000:0x101007], data) {
		t.Error("segment bytes not placed")
	}
	if mem.bufs[0][0x102005] != 0 || mem.bufs[0][0x102001] != 2 {
		t.Error("bss not zeroed or data not placed")
	}
}

func TestLoadTinyErrors(t *testing.T) {
	rx := elf.PF_R | elf.PF_X
	good := seg{paddr: 0x100000, flags: rx, data: code}
	valid := mkELF(elf.ET_EXEC, 0x100000, good)
	for _, tc := range []struct {
		name string
		img  []byte
		want string
	}{
		{"W+X segment", mkELF(elf.ET_EXEC, 0x100000, seg{paddr: 0x100000, flags: rx | elf.PF_W, data: code}), "both writable and executable"},
		{"below 1 MiB", mkELF(elf.ET_EXEC, 0xff000, seg{paddr: 0xff000, flags: rx, data: code}), "below 1 MiB"},
		{"outside RAM", mkELF(elf.ET_EXEC, 0x100000, good, seg{paddr: 0x3ff000, flags: elf.PF_R, data: code, memsz: 0x2000}), "outside guest RAM"},
		{"huge memsz", mkELF(elf.ET_EXEC, 0x100000, seg{paddr: 0x100000, flags: rx, data: code, memsz: 1 << 62}), "outside guest RAM"},
		{"wrapping segment", mkELF(elf.ET_EXEC, 0x100000, seg{paddr: ^uint64(0) - 0x10, flags: elf.PF_R, data: code, memsz: 0x100}, good), "outside guest RAM"},
		{"overlap", mkELF(elf.ET_EXEC, 0x100000, good, seg{paddr: 0x100001, flags: elf.PF_R, data: code}), "overlap"},
		{"entry outside code", mkELF(elf.ET_EXEC, 0x200000, good), "not inside an executable segment"},
		{"ET_DYN", mkELF(elf.ET_DYN, 0x100000, good), "must be ET_EXEC"},
		{"no segments", mkELF(elf.ET_EXEC, 0x100000, seg{ptype: elf.PT_NOTE, data: code}), "no loadable segments"},
		{"filesz past EOF", mkELF(elf.ET_EXEC, 0x100000, seg{paddr: 0x100000, flags: rx, data: code, offset: 1 << 20}), "truncated"},
		{"filesz > memsz", func() []byte {
			b := mkELF(elf.ET_EXEC, 0x100000, good)
			binary.LittleEndian.PutUint64(b[64+40:], 1) // memsz 1 < filesz 3
			return b
		}(), "exceeds memory size"},
		{"truncated header", valid[:40], "truncated"},
		{"truncated phdrs", valid[:70], "truncated"},
		{"32-bit", func() []byte { b := bytes.Clone(valid); b[elf.EI_CLASS] = byte(elf.ELFCLASS32); return b }(), "only 64-bit"},
		{"big-endian", func() []byte { b := bytes.Clone(valid); b[elf.EI_DATA] = byte(elf.ELFDATA2MSB); return b }(), "little-endian"},
		{"arm64", func() []byte {
			b := bytes.Clone(valid)
			binary.LittleEndian.PutUint16(b[18:], uint16(elf.EM_AARCH64))
			return b
		}(), "x86-64"},
		{"phentsize", func() []byte { b := bytes.Clone(valid); binary.LittleEndian.PutUint16(b[54:], 32); return b }(), "program header size"},
		{"linux kernel", mkELF(elf.ET_EXEC, 0xffffffff81000000, seg{paddr: 0x100000, flags: rx, data: code}), "Linux kernel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := newFakeMem(Region{Start: 0, Size: 4 << 20})
			_, err := LoadTiny(mem, tc.img, FormatUnknown)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one mentioning %q", err, tc.want)
			}
			if !errors.Is(err, ErrBadImage) {
				t.Errorf("error does not wrap ErrBadImage: %v", err)
			}
		})
	}
}

func TestLoadFlat(t *testing.T) {
	mem := newFakeMem(Region{Start: 0, Size: 2 << 20})
	l, err := LoadTiny(mem, code, FormatFlat)
	if err != nil || l.Entry != FlatLoadAddr || !bytes.Equal(mem.bufs[0][FlatLoadAddr:FlatLoadAddr+3], code) {
		t.Fatalf("flat load: %+v %v", l, err)
	}
	if _, err := LoadTiny(mem, make([]byte, 1<<20+1), FormatFlat); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Errorf("oversized flat image: %v", err)
	}
	if _, err := LoadTiny(mem, nil, FormatFlat); err == nil {
		t.Error("empty flat image loaded")
	}
}

func TestNotes(t *testing.T) {
	notes := []byte{
		4, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 'X', 'e', 'n', 0, 0xaa, 0xbb, 0, 0,
		6, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 'L', 'i', 'n', 'u', 'x', 0, 0, 0,
		0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 0, 0, 0, // namesz past the end: stop
	}
	f, err := ParseELF64(mkELF(elf.ET_EXEC, 0x100000, seg{paddr: 0x100000, flags: elf.PF_R | elf.PF_X, data: code}, seg{ptype: elf.PT_NOTE, data: notes}))
	if err != nil {
		t.Fatal(err)
	}
	ns := f.Notes()
	if len(ns) != 2 || ns[0].Name != "Xen" || ns[0].Type != 7 || !bytes.Equal(ns[0].Desc, []byte{0xaa, 0xbb}) || ns[1].Name != "Linux" {
		t.Errorf("notes = %+v", ns)
	}
}

// FuzzLoadTiny feeds arbitrary bytes to detection and the tiny loaders: no
// panic, no write outside RAM, and every error wraps ErrBadImage.
func FuzzLoadTiny(f *testing.F) {
	f.Add(mkELF(elf.ET_EXEC, 0x100000, seg{paddr: 0x100000, flags: elf.PF_R | elf.PF_X, data: code}), false)
	f.Add(mkELF(elf.ET_EXEC, 0x100000, seg{paddr: 0x100000, flags: elf.PF_R | elf.PF_X, data: code}, seg{ptype: elf.PT_NOTE, data: []byte{4, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 'X', 'e', 'n', 0}}), false)
	f.Add(code, true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, data []byte, flat bool) {
		format := FormatUnknown
		if flat {
			format = FormatFlat
		}
		Detect(data)
		IsVmlinux(data)
		mem := newFakeMem(Region{Start: 0, Size: 2 << 20}, Region{Start: 4 << 30, Size: 1 << 20})
		l, err := LoadTiny(mem, data, format)
		if err != nil {
			if !errors.Is(err, ErrBadImage) {
				t.Fatalf("error not wrapping ErrBadImage: %v", err)
			}
			return
		}
		if !InRAM(mem.Regions(), l.Start, l.End-l.Start) && l.End-l.Start < 4<<30 {
			t.Fatalf("loaded outside RAM: %+v", l)
		}
	})
}
