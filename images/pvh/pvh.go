// Package pvh loads ELF kernels through the PVH boot protocol: the entry
// that Xen defines for HVM guests without firmware and that QEMU and
// Firecracker use for "direct kernel boot" (xen/include/public/arch-x86/
// hvm/start_info.h; Linux's arch/x86/platform/pvh/head.S).
//
// A PVH kernel is an ELF32 or ELF64 image whose "Xen" ELF note of type
// XEN_ELFNOTE_PHYS32_ENTRY (18) gives the physical address of a 32-bit
// entry point. The loader places the PT_LOAD segments at their physical
// addresses, the modules after the kernel, and struct hvm_start_info with
// the module list, command lines and memory map below 1 MiB. Like every
// loader it places bytes only: the VMM enters the kernel in 32-bit
// protected mode, paging off, with EBX = Loaded.StartInfo.
package pvh

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"

	"github.com/microvm/microvm/images"
	"github.com/microvm/microvm/images/linux"
)

// PVH protocol constants.
const (
	// StartMagic is hvm_start_info.magic (XEN_HVM_START_MAGIC_VALUE).
	StartMagic = 0x336ec578
	// StartVersion is the hvm_start_info version written: 1 has the
	// memory map fields.
	StartVersion = 1
	// NotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY.
	NotePhys32Entry = 18
	// NoteOwner is the owner name of Xen ELF notes.
	NoteOwner = "Xen"
)

// Memory types of hvm_memmap_table_entry (XEN_HVM_MEMMAP_TYPE_*), the same
// numbers as e820's.
const (
	MemRAM      = 1
	MemReserved = 2
)

// Guest-physical layout this loader uses. [VMMPagesStart, StartInfoAddr)
// is left to the VMM (its GDT); everything in [0, ReservedEnd) and the
// area [linux.EBDAStart, linux.HighMemStart) (MP table, ACPI tables,
// reported reserved in the memory map) is off limits to the kernel's
// segments and the modules.
const (
	VMMPagesStart = 0x1000
	StartInfoAddr = 0x2000 // struct hvm_start_info, 56 bytes
	startInfoSize = 56
	modlistAddr   = 0x2040 // hvm_modlist_entry[MaxModules], 32 bytes each
	modEntSize    = 32
	// MaxModules is the most modules a kernel can be given.
	MaxModules  = 32
	memmapAddr  = 0x3000 // hvm_memmap_table_entry[], 24 bytes each
	memmapEnt   = 24
	maxMemmap   = 128
	stringsAddr = 0x20000 // the command line, then the modules' command lines
	// ReservedEnd ends the loader's own pages.
	ReservedEnd = 0x30000
)

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: pvh: %s", images.ErrBadImage, fmt.Sprintf(format, args...))
}

// ParseNotes walks an ELF note area (one PT_NOTE segment's bytes) and
// returns the entry of a "Xen" XEN_ELFNOTE_PHYS32_ENTRY note; found is
// false when the area has none. A PHYS32_ENTRY note whose descriptor is
// not a 32-bit address (4 bytes, or 8 with the upper half zero, as Linux
// writes it) is an error, as is a note that runs past the area.
func ParseNotes(b []byte) (entry uint32, found bool, err error) {
	le := binary.LittleEndian
	align4 := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for off := 0; len(b) > 0; {
		if len(b) < 12 {
			return 0, false, bad("ELF note at +%#x: %d bytes left, a note header takes 12", off, len(b))
		}
		namesz := uint64(le.Uint32(b[0:]))
		descsz := uint64(le.Uint32(b[4:]))
		ntype := le.Uint32(b[8:])
		rest := uint64(len(b) - 12)
		if align4(namesz) > rest || descsz > rest-align4(namesz) {
			return 0, false, bad("ELF note at +%#x (name %d bytes, descriptor %d bytes) runs past its segment's %d bytes", off, namesz, descsz, len(b))
		}
		name := string(bytes.TrimRight(b[12:12+namesz], "\x00"))
		desc := b[12+align4(namesz) : 12+align4(namesz)+descsz]
		if name == NoteOwner && ntype == NotePhys32Entry {
			switch len(desc) {
			case 4:
				return le.Uint32(desc), true, nil
			case 8:
				v := le.Uint64(desc)
				if v > 0xffffffff {
					return 0, false, bad("XEN_ELFNOTE_PHYS32_ENTRY %#x is above 4 GiB: a 32-bit entry cannot reach it", v)
				}
				return uint32(v), true, nil
			default:
				return 0, false, bad("XEN_ELFNOTE_PHYS32_ENTRY note has a %d-byte descriptor; want a 4- or 8-byte address", len(desc))
			}
		}
		step := 12 + align4(namesz) + align4(descsz)
		if step > uint64(len(b)) {
			break // the last note's padding may be cut off
		}
		b = b[step:]
		off += int(step)
	}
	return 0, false, nil
}

// image is a parsed PVH kernel.
type image struct {
	entry uint32
	segs  []segment
	linux bool // it carries a "Linux" ELF note
}

type segment struct {
	addr, memsz uint64
	data        []byte
}

// parse reads an ELF32/ELF64 x86 image's PT_NOTE and PT_LOAD headers.
func parse(data []byte) (*image, error) {
	if len(data) < 4 || string(data[:4]) != elf.ELFMAG {
		return nil, bad("not an ELF file: a PVH kernel is an ELF with a Xen PHYS32_ENTRY note")
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return nil, bad("parse ELF: %v", err)
	}
	if f.Machine != elf.EM_386 && f.Machine != elf.EM_X86_64 {
		return nil, bad("ELF machine %v; want EM_386 or EM_X86_64", f.Machine)
	}
	img := &image{}
	found := false
	for i, p := range f.Progs {
		if p.Type != elf.PT_NOTE && p.Type != elf.PT_LOAD {
			continue // PT_TLS, PT_GNU_STACK ...: nothing to place or read
		}
		if p.Off > uint64(len(data)) || p.Filesz > uint64(len(data))-p.Off {
			return nil, bad("program header %d: file range [%#x, +%#x) runs past the image's %d bytes", i, p.Off, p.Filesz, len(data))
		}
		b := data[p.Off : p.Off+p.Filesz]
		if p.Type == elf.PT_NOTE {
			e, ok, err := ParseNotes(b)
			if err != nil {
				return nil, err
			}
			if ok && !found {
				img.entry, found = e, true
			}
			img.linux = img.linux || hasOwner(b, "Linux")
			continue
		}
		if p.Memsz == 0 {
			continue
		}
		if p.Filesz > p.Memsz {
			return nil, bad("PT_LOAD at %#x: file size %#x exceeds memory size %#x", p.Paddr, p.Filesz, p.Memsz)
		}
		img.segs = append(img.segs, segment{addr: p.Paddr, memsz: p.Memsz, data: b})
	}
	if !found {
		return nil, bad("the ELF has no Xen XEN_ELFNOTE_PHYS32_ENTRY (type %d) note: not a PVH kernel", NotePhys32Entry)
	}
	if len(img.segs) == 0 {
		return nil, bad("the ELF has no loadable segment")
	}
	return img, nil
}

// hasOwner reports whether a note area holds a note of the given owner.
func hasOwner(b []byte, owner string) bool {
	le := binary.LittleEndian
	align4 := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		namesz, descsz := uint64(le.Uint32(b[0:])), uint64(le.Uint32(b[4:]))
		if align4(namesz) > uint64(len(b)-12) {
			return false
		}
		if string(bytes.TrimRight(b[12:12+namesz], "\x00")) == owner {
			return true
		}
		step := 12 + align4(namesz) + align4(descsz)
		if step > uint64(len(b)) {
			return false
		}
		b = b[step:]
	}
	return false
}

// Entry returns the PVH entry point of an ELF image, or an error saying
// why it has none.
func Entry(data []byte) (uint32, error) {
	img, err := parse(data)
	if err != nil {
		return 0, err
	}
	return img.entry, nil
}

// IsLinux reports whether data is a PVH ELF that also carries a "Linux"
// ELF note (a Linux vmlinux built with CONFIG_PVH).
func IsLinux(data []byte) bool {
	img, err := parse(data)
	return err == nil && img.linux
}

// Module is a file handed to the kernel, with its command line. For a
// Linux kernel the first module is the initrd.
type Module struct {
	Name    string // for error messages
	Data    []byte
	Cmdline string
}

// Config is what the kernel is given besides its image.
type Config struct {
	Cmdline string
	Modules []Module
	// RSDP is the guest-physical address of the ACPI RSDP, or 0 for none.
	RSDP uint64
}

// Placed says where a module landed.
type Placed struct {
	Start, End uint64 // [Start, End) in guest memory
	Cmdline    uint64 // address of its NUL-terminated cmdline, 0 for none
}

// MemmapEntry is an entry of the memory map handed to the kernel.
type MemmapEntry struct {
	Addr, Size uint64
	Type       uint32
}

// Loaded is the result of Load.
type Loaded struct {
	// Entry is the 32-bit entry point (EIP); StartInfo goes in EBX.
	Entry     uint32
	StartInfo uint64
	// Linux reports whether the kernel carries a "Linux" ELF note.
	Linux bool
	// KernelStart and KernelEnd bound what the segments occupy.
	KernelStart, KernelEnd uint64
	Modules                []Placed
	MemoryMap              []MemmapEntry
	CmdlineAddr            uint64
}

// Load places a PVH kernel, its modules and struct hvm_start_info in mem.
// Segments and modules must lie in guest RAM below 4 GiB, clear of the
// loader's pages [0, ReservedEnd) and of [0x9fc00, 1 MiB); the entry point
// must lie inside a loaded segment. Every failure about the image or its
// placement wraps images.ErrBadImage.
func Load(mem images.Memory, data []byte, cfg Config) (*Loaded, error) {
	img, err := parse(data)
	if err != nil {
		return nil, err
	}
	regions := mem.Regions()
	l := &Loaded{Entry: img.entry, StartInfo: StartInfoAddr, Linux: img.linux, KernelStart: ^uint64(0)}
	for _, s := range img.segs {
		if err := checkRange(regions, s.addr, s.memsz, "kernel segment"); err != nil {
			return nil, err
		}
		l.KernelStart, l.KernelEnd = min(l.KernelStart, s.addr), max(l.KernelEnd, s.addr+s.memsz)
	}
	inSeg := false
	for _, s := range img.segs {
		inSeg = inSeg || (uint64(img.entry) >= s.addr && uint64(img.entry)-s.addr < s.memsz)
	}
	if !inSeg {
		return nil, bad("PVH entry %#x lies outside the loaded segments [%#x, %#x)", img.entry, l.KernelStart, l.KernelEnd)
	}
	for _, s := range img.segs {
		if err := place(mem, s); err != nil {
			return nil, err
		}
	}
	if err := l.placeModules(mem, regions, cfg.Modules); err != nil {
		return nil, err
	}
	if err := l.writeStartInfo(mem, regions, cfg); err != nil {
		return nil, err
	}
	return l, nil
}

// checkRange refuses [addr, addr+n) unless it lies in RAM below 4 GiB,
// clear of the loader's pages and the reserved area below 1 MiB.
func checkRange(regions []images.Region, addr, n uint64, what string) error {
	end := addr + n
	switch {
	case end < addr || end > 1<<32:
		return bad("%s [%#x, +%#x) runs past 4 GiB", what, addr, n)
	case addr < ReservedEnd:
		return bad("%s [%#x, %#x) overlaps the VMM's pages [0, %#x)", what, addr, end, ReservedEnd)
	case addr < linux.HighMemStart && end > linux.EBDAStart:
		return bad("%s [%#x, %#x) overlaps the reserved area [%#x, %#x)", what, addr, end, linux.EBDAStart, linux.HighMemStart)
	case !images.InRAM(regions, addr, n):
		return bad("%s [%#x, %#x) lies outside guest RAM (%s); give the guest more --memory", what, addr, end, describe(regions))
	}
	return nil
}

func describe(regions []images.Region) string {
	var b bytes.Buffer
	for i, r := range regions {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "[%#x, %#x)", r.Start, r.End())
	}
	return b.String()
}

func place(mem images.Memory, s segment) error {
	if len(s.data) > 0 {
		if _, err := mem.WriteAt(s.data, int64(s.addr)); err != nil {
			return fmt.Errorf("pvh: write segment at %#x: %w", s.addr, err)
		}
	}
	zero := make([]byte, min(s.memsz-uint64(len(s.data)), 1<<20))
	for a := s.addr + uint64(len(s.data)); a < s.addr+s.memsz; a += uint64(len(zero)) {
		n := min(uint64(len(zero)), s.addr+s.memsz-a)
		if _, err := mem.WriteAt(zero[:n], int64(a)); err != nil {
			return fmt.Errorf("pvh: clear bss at %#x: %w", a, err)
		}
	}
	return nil
}

// placeModules puts the modules after the kernel, each page aligned.
func (l *Loaded) placeModules(mem images.Memory, regions []images.Region, mods []Module) error {
	if len(mods) > MaxModules {
		return bad("%d modules; at most %d", len(mods), MaxModules)
	}
	next := max((l.KernelEnd+0xfff)&^0xfff, linux.HighMemStart)
	for i, m := range mods {
		n := max(uint64(len(m.Data)), 1) // an empty module still occupies its start
		if err := checkRange(regions, next, n, fmt.Sprintf("module %d (%s, %d bytes)", i+1, m.Name, len(m.Data))); err != nil {
			return err
		}
		if _, err := mem.WriteAt(m.Data, int64(next)); err != nil {
			return fmt.Errorf("pvh: write module %s: %w", m.Name, err)
		}
		l.Modules = append(l.Modules, Placed{Start: next, End: next + uint64(len(m.Data))})
		next = (next + n + 0xfff) &^ 0xfff
	}
	return nil
}

// MemoryMap describes guest RAM as the kernel is told it: all RAM usable
// except [0x9fc00, 1 MiB), reserved (the MP and ACPI tables live there),
// the same map a Linux boot's e820 gets.
func MemoryMap(regions []images.Region) []MemmapEntry {
	var out []MemmapEntry
	for _, e := range linux.E820(regions) {
		out = append(out, MemmapEntry{Addr: e.Addr, Size: e.Size, Type: e.Type})
	}
	return out
}

// writeStartInfo writes hvm_start_info, the module list, the memory map
// and the command lines.
func (l *Loaded) writeStartInfo(mem images.Memory, regions []images.Region, cfg Config) error {
	le := binary.LittleEndian
	l.MemoryMap = MemoryMap(regions)
	if len(l.MemoryMap) > maxMemmap {
		return bad("memory map of %d entries; at most %d", len(l.MemoryMap), maxMemmap)
	}
	var strs []byte
	addString := func(s, what string) (uint64, error) {
		if bytes.IndexByte([]byte(s), 0) >= 0 {
			return 0, bad("%s contains a NUL byte", what)
		}
		if stringsAddr+uint64(len(strs)+len(s))+1 > ReservedEnd {
			return 0, bad("%s does not fit: the command lines together may take %d bytes", what, ReservedEnd-stringsAddr)
		}
		a := stringsAddr + uint64(len(strs))
		strs = append(append(strs, s...), 0)
		return a, nil
	}
	cmd, err := addString(cfg.Cmdline, "cmdline")
	if err != nil {
		return err
	}
	l.CmdlineAddr = cmd
	mods := make([]byte, modEntSize*len(l.Modules))
	for i := range l.Modules {
		m := &l.Modules[i]
		if c := cfg.Modules[i].Cmdline; c != "" {
			if m.Cmdline, err = addString(c, fmt.Sprintf("module %d's cmdline", i+1)); err != nil {
				return err
			}
		}
		p := mods[i*modEntSize:]
		le.PutUint64(p[0:], m.Start)
		le.PutUint64(p[8:], m.End-m.Start)
		le.PutUint64(p[16:], m.Cmdline)
	}
	mm := make([]byte, memmapEnt*len(l.MemoryMap))
	for i, e := range l.MemoryMap {
		p := mm[i*memmapEnt:]
		le.PutUint64(p[0:], e.Addr)
		le.PutUint64(p[8:], e.Size)
		le.PutUint32(p[16:], e.Type)
	}
	si := make([]byte, startInfoSize)
	le.PutUint32(si[0:], StartMagic)
	le.PutUint32(si[4:], StartVersion)
	le.PutUint32(si[8:], 0) // flags
	le.PutUint32(si[12:], uint32(len(l.Modules)))
	if len(l.Modules) > 0 {
		le.PutUint64(si[16:], modlistAddr)
	}
	le.PutUint64(si[24:], cmd)
	le.PutUint64(si[32:], cfg.RSDP)
	le.PutUint64(si[40:], memmapAddr)
	le.PutUint32(si[48:], uint32(len(l.MemoryMap)))
	for _, w := range []struct {
		addr uint64
		b    []byte
	}{{StartInfoAddr, si}, {modlistAddr, mods}, {memmapAddr, mm}, {stringsAddr, strs}} {
		if len(w.b) == 0 {
			continue
		}
		if _, err := mem.WriteAt(w.b, int64(w.addr)); err != nil {
			return fmt.Errorf("pvh: write start info at %#x: %w", w.addr, err)
		}
	}
	return nil
}
