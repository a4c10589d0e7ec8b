package pvh

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
func (m *flatMem) u64(a uint64) uint64 { return binary.LittleEndian.Uint64(m.b[a:]) }
func (m *flatMem) cstr(a uint64) string {
	s := m.b[a:]
	return string(s[:bytes.IndexByte(s, 0)])
}

// note builds one ELF note.
func note(owner string, typ uint32, desc []byte) []byte {
	le := binary.LittleEndian
	name := append([]byte(owner), 0)
	b := le.AppendUint32(nil, uint32(len(name)))
	b = le.AppendUint32(b, uint32(len(desc)))
	b = le.AppendUint32(b, typ)
	b = append(b, name...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	b = append(b, desc...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func entryNote(entry uint32) []byte {
	return note("Xen", NotePhys32Entry, binary.LittleEndian.AppendUint32(nil, entry))
}

// elf32 builds an ELF32 i386 executable: code at paddr (memsz = len(code)
// + bss) and a PT_NOTE holding notes.
func elf32(paddr uint32, code []byte, bss uint32, notes []byte) []byte {
	le := binary.LittleEndian
	const codeOff = 0x1000
	h := make([]byte, codeOff)
	copy(h, []byte{0x7f, 'E', 'L', 'F', 1, 1, 1})
	le.PutUint16(h[16:], 2) // ET_EXEC
	le.PutUint16(h[18:], 3) // EM_386
	le.PutUint32(h[20:], 1)
	le.PutUint32(h[24:], paddr)
	le.PutUint32(h[28:], 52)
	le.PutUint16(h[40:], 52)
	le.PutUint16(h[42:], 32)
	le.PutUint16(h[44:], 2)
	le.PutUint16(h[46:], 40)
	ph := func(i int, typ, off, addr, filesz, memsz, flags uint32) {
		p := h[52+32*i:]
		for j, v := range []uint32{typ, off, addr, addr, filesz, memsz, flags, 4} {
			le.PutUint32(p[4*j:], v)
		}
	}
	noteOff := uint32(52 + 64)
	copy(h[noteOff:], notes)
	ph(0, 1, codeOff, paddr, uint32(len(code)), uint32(len(code))+bss, 5)
	ph(1, 4, noteOff, 0, uint32(len(notes)), uint32(len(notes)), 4)
	return append(h, code...)
}

func TestParseNotes(t *testing.T) {
	le := binary.LittleEndian
	for _, tc := range []struct {
		name  string
		notes []byte
		entry uint32
		found bool
		err   string
	}{
		{"none", nil, 0, false, ""},
		{"other notes only", append(note("GNU", 3, []byte{1, 2, 3, 4, 5}), note("Xen", 7, []byte("x"))...), 0, false, ""},
		{"4-byte", entryNote(0x1000200), 0x1000200, true, ""},
		{"8-byte as Linux writes it", note("Xen", NotePhys32Entry, le.AppendUint64(nil, 0x10004a0)), 0x10004a0, true, ""},
		{"after others", append(note("Linux", 1, []byte{0}), entryNote(0x200000)...), 0x200000, true, ""},
		{"too short", note("Xen", NotePhys32Entry, []byte{1, 2}), 0, false, "2-byte descriptor"},
		{"above 4 GiB", note("Xen", NotePhys32Entry, le.AppendUint64(nil, 1<<32)), 0, false, "above 4 GiB"},
		{"cut header", []byte{4, 0, 0, 0, 4}, 0, false, "a note header takes 12"},
		{"name past end", []byte{200, 0, 0, 0, 4, 0, 0, 0, 18, 0, 0, 0, 'X', 'e', 'n', 0}, 0, false, "runs past"},
		{"desc past end", []byte{4, 0, 0, 0, 64, 0, 0, 0, 18, 0, 0, 0, 'X', 'e', 'n', 0, 1, 2, 3, 4}, 0, false, "runs past"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, found, err := ParseNotes(tc.notes)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, images.ErrBadImage) {
					t.Fatalf("err %v, want ErrBadImage containing %q", err, tc.err)
				}
				return
			}
			if err != nil || e != tc.entry || found != tc.found {
				t.Fatalf("= %#x, %v, %v; want %#x, %v, nil", e, found, err, tc.entry, tc.found)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	mem := &flatMem{make([]byte, 64<<20)}
	code := []byte{0xf4, 0xeb, 0xfd}
	img := elf32(0x200000, code, 0x1000, append(note("Linux", 1, []byte{0}), entryNote(0x200001)...))
	mods := []Module{{Name: "initrd", Data: []byte("INITRD")}, {Name: "b", Data: []byte("bb"), Cmdline: "mod b args"}}
	l, err := Load(mem, img, Config{Cmdline: "console=ttyS0", Modules: mods, RSDP: 0xe0000})
	if err != nil {
		t.Fatal(err)
	}
	if l.Entry != 0x200001 || l.StartInfo != StartInfoAddr || !l.Linux || l.KernelStart != 0x200000 || l.KernelEnd != 0x201003 {
		t.Errorf("loaded %+v", l)
	}
	if !bytes.Equal(mem.b[0x200000:0x200003], code) {
		t.Errorf("code not placed")
	}
	si := uint64(StartInfoAddr)
	if mem.u32(si) != StartMagic || mem.u32(si+4) != 1 || mem.u32(si+8) != 0 || mem.u32(si+12) != 2 {
		t.Errorf("start info header % x", mem.b[si:si+16])
	}
	if got := mem.cstr(mem.u64(si + 24)); got != "console=ttyS0" {
		t.Errorf("cmdline %q", got)
	}
	if mem.u64(si+32) != 0xe0000 {
		t.Errorf("rsdp %#x", mem.u64(si+32))
	}
	ml := mem.u64(si + 16)
	m0, m1 := mem.u64(ml), mem.u64(ml+32)
	if m0 != 0x202000 || string(mem.b[m0:m0+6]) != "INITRD" || mem.u64(ml+8) != 6 || mem.u64(ml+16) != 0 {
		t.Errorf("module 0 at %#x size %d cmdline %#x", m0, mem.u64(ml+8), mem.u64(ml+16))
	}
	if m1 != 0x203000 || string(mem.b[m1:m1+2]) != "bb" || mem.cstr(mem.u64(ml+48)) != "mod b args" {
		t.Errorf("module 1 at %#x", m1)
	}
	mm, n := mem.u64(si+40), mem.u32(si+48)
	want := []MemmapEntry{{0, 0x9fc00, MemRAM}, {0x9fc00, 0x100000 - 0x9fc00, MemReserved}, {0x100000, 63 << 20, MemRAM}}
	if int(n) != len(want) {
		t.Fatalf("%d memmap entries, want %d", n, len(want))
	}
	for i, w := range want {
		p := mm + uint64(i)*24
		got := MemmapEntry{mem.u64(p), mem.u64(p + 8), mem.u32(p + 16)}
		if got != w {
			t.Errorf("memmap[%d] = %+v, want %+v", i, got, w)
		}
	}
}

func TestLoadBad(t *testing.T) {
	code := []byte{0xf4}
	good := entryNote(0x200000)
	big := make([]Module, MaxModules+1)
	for _, tc := range []struct {
		name string
		img  []byte
		cfg  Config
		err  string
	}{
		{"not elf", []byte("MZ nothing"), Config{}, "not an ELF"},
		{"no note", elf32(0x200000, code, 0, note("Linux", 1, []byte{0})), Config{}, "no Xen XEN_ELFNOTE_PHYS32_ENTRY"},
		{"note too short", elf32(0x200000, code, 0, note("Xen", NotePhys32Entry, []byte{0})), Config{}, "1-byte descriptor"},
		{"entry outside the image", elf32(0x200000, code, 0, entryNote(0x300000)), Config{}, "outside the loaded segments"},
		{"segment outside RAM", elf32(0x8000000, code, 0, entryNote(0x8000000)), Config{}, "outside guest RAM"},
		{"segment over the VMM's pages", elf32(0x2000, code, 0, entryNote(0x2000)), Config{}, "VMM's pages"},
		{"segment over the reserved area", elf32(0xa0000, code, 0, entryNote(0xa0000)), Config{}, "reserved area"},
		{"bss past 4 GiB", elf32(0xfffff000, code, 0x2000, entryNote(0xfffff000)), Config{}, "past 4 GiB"},
		{"module too big", elf32(0x200000, code, 0, good), Config{Modules: []Module{{Name: "huge", Data: make([]byte, 64<<20)}}}, "module 1 (huge"},
		{"too many modules", elf32(0x200000, code, 0, good), Config{Modules: big}, "at most 32"},
		{"cmdline NUL", elf32(0x200000, code, 0, good), Config{Cmdline: "a\x00b"}, "NUL"},
		{"cmdline too long", elf32(0x200000, code, 0, good), Config{Cmdline: strings.Repeat("x", 0x10000)}, "does not fit"},
		{"truncated", elf32(0x200000, code, 0, good)[:0x800], Config{}, "runs past"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := &flatMem{make([]byte, 64<<20)}
			_, err := Load(mem, tc.img, tc.cfg)
			if err == nil || !errors.Is(err, images.ErrBadImage) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("err %v, want ErrBadImage containing %q", err, tc.err)
			}
		})
	}
}

func TestEntryAndIsLinux(t *testing.T) {
	plain := elf32(0x200000, []byte{0xf4}, 0, entryNote(0x200000))
	if e, err := Entry(plain); err != nil || e != 0x200000 {
		t.Errorf("Entry = %#x, %v", e, err)
	}
	if IsLinux(plain) {
		t.Errorf("IsLinux without a Linux note")
	}
	if !IsLinux(elf32(0x200000, []byte{0xf4}, 0, append(note("Linux", 6, []byte{0}), entryNote(0x200000)...))) {
		t.Errorf("IsLinux false with a Linux note")
	}
	if !images.HasPVHNote(plain) {
		t.Errorf("images.HasPVHNote false")
	}
	if f, err := images.Detect(plain); err != nil || f != images.FormatPVH {
		t.Errorf("Detect = %v, %v; want pvh", f, err)
	}
}

// FuzzPVHNotes fuzzes the note parser: never a panic, and a found entry
// comes with no error.
func FuzzPVHNotes(f *testing.F) {
	f.Add(entryNote(0x1000000))
	f.Add(note("Xen", NotePhys32Entry, []byte{1, 2, 3, 4, 5, 6, 7, 8}))
	f.Add(append(note("GNU", 3, []byte{1}), note("Xen", NotePhys32Entry, []byte{1})...))
	f.Add([]byte{4, 0, 0, 0, 4, 0, 0, 0, 18, 0, 0, 0, 'X', 'e', 'n', 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_, found, err := ParseNotes(b)
		if found && err != nil {
			t.Fatalf("found and error %v", err)
		}
	})
}

// FuzzPVHLoad fuzzes the whole loader on 32 MiB of RAM: never a panic,
// every failure an images.ErrBadImage.
func FuzzPVHLoad(f *testing.F) {
	f.Add(elf32(0x200000, []byte{0xf4}, 0x100, entryNote(0x200000)))
	f.Add(elf32(0x200000, []byte{0xf4}, 0, note("Xen", NotePhys32Entry, []byte{0, 0, 0x20})))
	f.Fuzz(func(t *testing.T, b []byte) {
		mem := &flatMem{make([]byte, 32<<20)}
		if _, err := Load(mem, b, Config{Cmdline: "x", Modules: []Module{{Name: "m", Data: []byte{1}}}}); err != nil && !errors.Is(err, images.ErrBadImage) {
			t.Fatalf("error %v is not ErrBadImage", err)
		}
	})
}
