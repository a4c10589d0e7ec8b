// Package multiboot loads Multiboot v1 kernels (specification 0.6.96): it
// finds and checks the header, places ELF and a.out-kludge images, the
// modules and the Multiboot information block in guest memory. Like every
// loader it places bytes only; the VMM sets up the vCPU (32-bit protected
// mode, EAX = BootloaderMagic, EBX = Loaded.InfoAddr).
package multiboot

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"

	"github.com/microvm/microvm/images"
)

// Multiboot v1 constants.
const (
	HeaderMagic     = 0x1BADB002 // in the image's header
	BootloaderMagic = 0x2BADB002 // in EAX at entry
	searchLimit     = 8192       // the header lies in the first 8 KiB
	headerSize      = 12         // magic, flags, checksum
	aoutHeaderSize  = 32         // plus header_addr .. entry_addr

	flagPageAlign = 1 << 0  // modules page aligned
	flagMemInfo   = 1 << 1  // mem_* fields wanted
	flagVideo     = 1 << 2  // video mode table wanted (not offered; optional here)
	flagAout      = 1 << 16 // address fields valid (a.out kludge)
	knownRequired = flagPageAlign | flagMemInfo | flagVideo
)

// Memory layout this loader uses. The VMM may use [VMMPagesStart, InfoBase)
// for its own tables (its GDT); the information block, memory map, module
// list and strings live in [InfoBase, ReservedEnd). Kernel segments and
// modules may not overlap [0, ReservedEnd) nor the legacy hole
// [0xa0000, 0x100000), which the memory map reports as reserved.
const (
	VMMPagesStart = 0x1000
	InfoBase      = 0x8000
	ReservedEnd   = 0x10000
	holeStart     = 0xa0000
	holeEnd       = 0x100000

	infoSize    = 128
	mmapAddr    = InfoBase + infoSize // 0x8080
	mmapEntSize = 24                  // size u32 + base u64 + length u64 + type u32
	maxMmap     = 8
	modsAddr    = mmapAddr + mmapEntSize*maxMmap // 0x8140
	modEntSize  = 16
	// MaxModules is the most modules a kernel can be given.
	MaxModules  = 32
	stringsAddr = modsAddr + modEntSize*MaxModules // 0x8340
	// BootloaderName is what boot_loader_name points at.
	BootloaderName = "microvm"
)

// Info-block flags bits set by this loader.
const (
	InfoMem        = 1 << 0
	InfoCmdline    = 1 << 2
	InfoMods       = 1 << 3
	InfoMmap       = 1 << 6
	InfoLoaderName = 1 << 9
)

// Header is a Multiboot v1 header found in an image.
type Header struct {
	Offset     int // file offset of the magic
	Flags      uint32
	HeaderAddr uint32 // a.out kludge fields (Flags bit 16)
	LoadAddr   uint32
	LoadEnd    uint32
	BSSEnd     uint32
	Entry      uint32
}

// Aout reports whether the header's address fields are to be used.
func (h Header) Aout() bool { return h.Flags&flagAout != 0 }

func bad(format string, args ...any) error {
	return fmt.Errorf("%w: multiboot: %s", images.ErrBadImage, fmt.Sprintf(format, args...))
}

// FindHeader looks for a Multiboot v1 header in the first 8 KiB of data,
// 4-byte aligned, and checks it: checksum, known required flags, a full
// a.out-kludge field set when bit 16 is set.
func FindHeader(data []byte) (Header, error) {
	le := binary.LittleEndian
	limit := min(len(data), searchLimit)
	var magic [4]byte
	le.PutUint32(magic[:], HeaderMagic)
	for off := 0; off+headerSize <= limit; off += 4 {
		if !bytes.Equal(data[off:off+4], magic[:]) {
			continue
		}
		flags := le.Uint32(data[off+4:])
		sum := le.Uint32(data[off+8:])
		if HeaderMagic+flags+sum != 0 {
			return Header{}, bad("header at %#x has a bad checksum (magic+flags+checksum = %#x, want 0)", off, uint32(HeaderMagic+flags+sum))
		}
		if unknown := flags & 0xffff &^ knownRequired; unknown != 0 {
			return Header{}, bad("header at %#x requires features this loader does not know (flags %#x)", off, unknown)
		}
		h := Header{Offset: off, Flags: flags}
		if h.Aout() {
			if off+aoutHeaderSize > len(data) {
				return Header{}, bad("header at %#x sets the a.out kludge (flag 16) but the image ends before its address fields", off)
			}
			h.HeaderAddr = le.Uint32(data[off+12:])
			h.LoadAddr = le.Uint32(data[off+16:])
			h.LoadEnd = le.Uint32(data[off+20:])
			h.BSSEnd = le.Uint32(data[off+24:])
			h.Entry = le.Uint32(data[off+28:])
		}
		return h, nil
	}
	return Header{}, bad("no Multiboot header (magic %#x) in the first %d bytes", HeaderMagic, searchLimit)
}

// Module is a file handed to the kernel, with its command line.
type Module struct {
	Name    string // for error messages
	Data    []byte
	Cmdline string
}

// Config is what the kernel is given besides its image.
type Config struct {
	Cmdline string
	Modules []Module
}

// Placed says where a module landed.
type Placed struct {
	Start, End uint32 // [Start, End) in guest memory
	String     uint32 // address of its NUL-terminated cmdline
}

// Loaded is the result of Load.
type Loaded struct {
	Header   Header
	Entry    uint32
	InfoAddr uint32
	// KernelStart and KernelEnd bound what the image occupies (bss included).
	KernelStart, KernelEnd uint64
	Modules                []Placed
	MemLower, MemUpper     uint32 // KiB, as in the info block
	MemoryMap              []MmapEntry
}

// MmapEntry is an entry of the memory map handed to the kernel.
type MmapEntry struct {
	Base, Length uint64
	Type         uint32 // 1 available, 2 reserved
}

// segment is a piece of the image to place: data then zeroes up to memsz.
type segment struct {
	addr, memsz uint64
	data        []byte
}

// Load places a Multiboot v1 image, its modules and the information block
// in mem. Every address is checked against guest RAM below 4 GiB and the
// reserved areas; an image that does not fit is an images.ErrBadImage.
func Load(mem images.Memory, image []byte, cfg Config) (*Loaded, error) {
	h, err := FindHeader(image)
	if err != nil {
		return nil, err
	}
	var segs []segment
	var entry uint64
	if h.Aout() {
		segs, entry, err = aoutSegments(image, h)
	} else {
		segs, entry, err = elfSegments(image)
	}
	if err != nil {
		return nil, err
	}
	regions := mem.Regions()
	lo, hi := uint64(1<<63), uint64(0)
	for _, s := range segs {
		if err := checkRange(regions, s.addr, s.memsz, "kernel segment"); err != nil {
			return nil, err
		}
		lo, hi = min(lo, s.addr), max(hi, s.addr+s.memsz)
	}
	if len(segs) == 0 {
		return nil, bad("the image has nothing to load")
	}
	if !inAny(segs, entry) {
		return nil, bad("entry point %#x lies outside the loaded image [%#x, %#x)", entry, lo, hi)
	}
	for _, s := range segs {
		if err := place(mem, s); err != nil {
			return nil, err
		}
	}
	l := &Loaded{Header: h, Entry: uint32(entry), InfoAddr: InfoBase, KernelStart: lo, KernelEnd: hi}
	if err := l.placeModules(mem, regions, cfg.Modules, hi); err != nil {
		return nil, err
	}
	if err := l.writeInfo(mem, regions, cfg); err != nil {
		return nil, err
	}
	return l, nil
}

func inAny(segs []segment, a uint64) bool {
	for _, s := range segs {
		if a >= s.addr && a-s.addr < s.memsz {
			return true
		}
	}
	return false
}

// checkRange refuses [addr, addr+n) unless it lies in RAM below 4 GiB and
// clear of the VMM's pages and the legacy hole.
func checkRange(regions []images.Region, addr, n uint64, what string) error {
	end := addr + n
	switch {
	case end < addr || end > 1<<32:
		return bad("%s [%#x, +%#x) runs past 4 GiB", what, addr, n)
	case addr < ReservedEnd:
		return bad("%s [%#x, %#x) overlaps the VMM's pages [0, %#x)", what, addr, end, ReservedEnd)
	case addr < holeEnd && end > holeStart:
		return bad("%s [%#x, %#x) overlaps the legacy hole [%#x, %#x)", what, addr, end, holeStart, holeEnd)
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
			return fmt.Errorf("multiboot: write segment at %#x: %w", s.addr, err)
		}
	}
	zero := make([]byte, min(s.memsz-uint64(len(s.data)), 1<<20))
	for a := s.addr + uint64(len(s.data)); a < s.addr+s.memsz; a += uint64(len(zero)) {
		n := min(uint64(len(zero)), s.addr+s.memsz-a)
		if _, err := mem.WriteAt(zero[:n], int64(a)); err != nil {
			return fmt.Errorf("multiboot: clear bss at %#x: %w", a, err)
		}
	}
	return nil
}

// aoutSegments reads the a.out-kludge fields: the file from the offset that
// corresponds to load_addr is loaded there, up to load_end_addr (or the end
// of the file when 0), then zeroes up to bss_end_addr (none when 0).
func aoutSegments(image []byte, h Header) ([]segment, uint64, error) {
	if h.HeaderAddr < h.LoadAddr {
		return nil, 0, bad("a.out kludge: header_addr %#x is below load_addr %#x", h.HeaderAddr, h.LoadAddr)
	}
	delta := uint64(h.HeaderAddr - h.LoadAddr)
	if delta > uint64(h.Offset) {
		return nil, 0, bad("a.out kludge: header_addr - load_addr = %#x, more than the header's file offset %#x", delta, h.Offset)
	}
	fileOff := uint64(h.Offset) - delta
	size := uint64(len(image)) - fileOff
	if h.LoadEnd != 0 {
		if h.LoadEnd < h.LoadAddr {
			return nil, 0, bad("a.out kludge: load_end_addr %#x is below load_addr %#x", h.LoadEnd, h.LoadAddr)
		}
		size = uint64(h.LoadEnd - h.LoadAddr)
		if size > uint64(len(image))-fileOff {
			return nil, 0, bad("a.out kludge: load_end_addr %#x asks for %#x bytes from file offset %#x, the image has %#x", h.LoadEnd, size, fileOff, uint64(len(image))-fileOff)
		}
	}
	memsz := size
	if h.BSSEnd != 0 {
		end := uint64(h.LoadAddr) + size
		if uint64(h.BSSEnd) < end {
			return nil, 0, bad("a.out kludge: bss_end_addr %#x is below the end of the loaded text %#x", h.BSSEnd, end)
		}
		memsz = uint64(h.BSSEnd) - uint64(h.LoadAddr)
	}
	return []segment{{addr: uint64(h.LoadAddr), memsz: memsz, data: image[fileOff : fileOff+size]}}, uint64(h.Entry), nil
}

// elfSegments reads an ELF32 or ELF64 image's PT_LOAD segments, placed at
// their physical addresses (p_paddr), as GRUB does.
func elfSegments(image []byte) ([]segment, uint64, error) {
	if len(image) < 4 || string(image[:4]) != elf.ELFMAG {
		return nil, 0, bad("the header does not set the a.out kludge (flag 16) and the image is not ELF")
	}
	f, err := elf.NewFile(bytes.NewReader(image))
	if err != nil {
		return nil, 0, bad("parse ELF: %v", err)
	}
	if f.Machine != elf.EM_386 && f.Machine != elf.EM_X86_64 {
		return nil, 0, bad("ELF machine %v; want EM_386 or EM_X86_64", f.Machine)
	}
	if f.Type != elf.ET_EXEC {
		return nil, 0, bad("ELF type %v; want ET_EXEC", f.Type)
	}
	var segs []segment
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Memsz == 0 {
			continue
		}
		if p.Filesz > p.Memsz {
			return nil, 0, bad("PT_LOAD at %#x: file size %#x exceeds memory size %#x", p.Paddr, p.Filesz, p.Memsz)
		}
		if p.Off > uint64(len(image)) || p.Filesz > uint64(len(image))-p.Off {
			return nil, 0, bad("PT_LOAD at %#x: file range [%#x, +%#x) runs past the image's %d bytes", p.Paddr, p.Off, p.Filesz, len(image))
		}
		segs = append(segs, segment{addr: p.Paddr, memsz: p.Memsz, data: image[p.Off : p.Off+p.Filesz]})
	}
	// The entry is virtual; map it to physical through the segment holding it.
	entry := f.Entry
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && entry >= p.Vaddr && entry-p.Vaddr < p.Memsz {
			entry = entry - p.Vaddr + p.Paddr
			break
		}
	}
	return segs, entry, nil
}

// placeModules puts the modules after the kernel, each page aligned.
func (l *Loaded) placeModules(mem images.Memory, regions []images.Region, mods []Module, after uint64) error {
	if len(mods) > MaxModules {
		return bad("%d modules; at most %d", len(mods), MaxModules)
	}
	next := (after + 0xfff) &^ 0xfff
	if next < holeEnd {
		next = holeEnd
	}
	for i, m := range mods {
		n := max(uint64(len(m.Data)), 1) // an empty module still occupies its start
		if err := checkRange(regions, next, n, fmt.Sprintf("module %d (%s, %d bytes)", i+1, m.Name, len(m.Data))); err != nil {
			return err
		}
		if _, err := mem.WriteAt(m.Data, int64(next)); err != nil {
			return fmt.Errorf("multiboot: write module %s: %w", m.Name, err)
		}
		l.Modules = append(l.Modules, Placed{Start: uint32(next), End: uint32(next + uint64(len(m.Data)))})
		next = (next + n + 0xfff) &^ 0xfff
	}
	return nil
}

// memoryMap describes guest RAM: low memory up to the legacy hole, the hole
// as reserved, then each RAM region.
func memoryMap(regions []images.Region) (m []MmapEntry, lower, upper uint32) {
	for _, r := range regions {
		switch {
		case r.Start == 0 && r.End() > holeEnd:
			m = append(m, MmapEntry{0, holeStart, 1}, MmapEntry{holeStart, holeEnd - holeStart, 2},
				MmapEntry{holeEnd, r.End() - holeEnd, 1})
			lower, upper = holeStart/1024, uint32((r.End()-holeEnd)/1024)
		case r.Start == 0:
			m = append(m, MmapEntry{0, min(r.End(), holeStart), 1})
			lower = uint32(min(r.End(), holeStart) / 1024)
		default:
			m = append(m, MmapEntry{r.Start, r.Size, 1})
		}
	}
	if len(m) > maxMmap {
		m = m[:maxMmap]
	}
	return m, lower, upper
}

// writeInfo writes the information block, memory map, module list and
// strings at InfoBase.
func (l *Loaded) writeInfo(mem images.Memory, regions []images.Region, cfg Config) error {
	le := binary.LittleEndian
	area := make([]byte, ReservedEnd-InfoBase)
	at := func(addr uint64) []byte { return area[addr-InfoBase:] }
	str := uint64(stringsAddr)
	addString := func(s, what string) (uint32, error) {
		if bytes.IndexByte([]byte(s), 0) >= 0 {
			return 0, bad("%s contains a NUL byte", what)
		}
		if str+uint64(len(s))+1 > ReservedEnd {
			return 0, bad("%s does not fit: the command lines together may take %d bytes", what, ReservedEnd-stringsAddr)
		}
		a := str
		copy(at(a), s)
		str += uint64(len(s)) + 1
		return uint32(a), nil
	}
	info := at(InfoBase)
	flags := uint32(InfoMem | InfoMmap | InfoLoaderName | InfoCmdline)
	l.MemoryMap, l.MemLower, l.MemUpper = memoryMap(regions)
	le.PutUint32(info[4:], l.MemLower)
	le.PutUint32(info[8:], l.MemUpper)
	name, err := addString(BootloaderName, "boot loader name")
	if err != nil {
		return err
	}
	le.PutUint32(info[64:], name)
	cmd, err := addString(cfg.Cmdline, "cmdline")
	if err != nil {
		return err
	}
	le.PutUint32(info[16:], cmd)
	for i, e := range l.MemoryMap {
		p := at(mmapAddr + uint64(i)*mmapEntSize)
		le.PutUint32(p[0:], mmapEntSize-4)
		le.PutUint64(p[4:], e.Base)
		le.PutUint64(p[12:], e.Length)
		le.PutUint32(p[20:], e.Type)
	}
	le.PutUint32(info[44:], uint32(len(l.MemoryMap)*mmapEntSize))
	le.PutUint32(info[48:], mmapAddr)
	if len(cfg.Modules) > 0 {
		flags |= InfoMods
		le.PutUint32(info[20:], uint32(len(cfg.Modules)))
		le.PutUint32(info[24:], modsAddr)
		for i, m := range cfg.Modules {
			s, err := addString(m.Cmdline, fmt.Sprintf("module %d's cmdline", i+1))
			if err != nil {
				return err
			}
			l.Modules[i].String = s
			p := at(modsAddr + uint64(i)*modEntSize)
			le.PutUint32(p[0:], l.Modules[i].Start)
			le.PutUint32(p[4:], l.Modules[i].End)
			le.PutUint32(p[8:], s)
		}
	}
	le.PutUint32(info[0:], flags)
	if _, err := mem.WriteAt(area, InfoBase); err != nil {
		return fmt.Errorf("multiboot: write the information block at %#x: %w", InfoBase, err)
	}
	return nil
}
