package linux

import (
	"bytes"
	"encoding/binary"
)

// ELF constants used here (System V gABI, x86-64 psABI).
const (
	elfHeaderSize = 64
	elfPhdrSize   = 56
	elfClass32    = 1
	elfClass64    = 2
	elfData2LSB   = 1
	etExec        = 2
	etDyn         = 3
	emX8664       = 62
	ptLoad        = 1
	ptNote        = 4

	// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit PVH
	// entry point (pvh_start_xen) of a kernel built with CONFIG_PVH.
	xenElfnotePhys32Entry = 18

	// maxSegments bounds the program header table; a vmlinux has < 10.
	maxSegments = 64
	// maxSegmentSize bounds one PT_LOAD's memory size (1 GiB); a kernel's
	// largest segment is tens of MiB.
	maxSegmentSize = 1 << 30
	// kernelVirtBase is where x86-64 kernels map themselves
	// (__START_KERNEL_map); an ELF entry or segment up there marks a vmlinux.
	kernelVirtBase = 0xffffffff80000000
)

// Segment is one PT_LOAD program header.
type Segment struct {
	Offset uint64 // file offset of the bytes
	Vaddr  uint64 // virtual address (0xffffffff8... in a vmlinux)
	Paddr  uint64 // physical address: where the loader places it
	Filesz uint64 // bytes taken from the file
	Memsz  uint64 // bytes occupied in memory; the rest past Filesz is zeroed
	Flags  uint32 // PF_X=1, PF_W=2, PF_R=4
}

// ELFInfo is what the loader needs from a vmlinux ELF.
type ELFInfo struct {
	// Entry is the physical 64-bit entry point (startup_64). x86-64
	// vmlinux files set e_entry to the physical address already
	// (ENTRY(phys_startup_64)); a virtual e_entry is translated through
	// the PT_LOAD that contains it.
	Entry uint64
	// Segments are the PT_LOAD segments with a non-zero memory size.
	Segments []Segment
	// Start and End bound the physical memory the segments occupy.
	Start, End uint64
	// PVHEntry is the 32-bit PVH entry point from the Xen ELF note
	// XEN_ELFNOTE_PHYS32_ENTRY, or 0 when the kernel has none. Recorded for
	// information: this loader boots the 64-bit entry.
	PVHEntry uint64
	// LinuxNotes reports whether the ELF carries "Linux" or "Xen" notes.
	LinuxNotes bool
}

// ParseELF checks an x86-64 vmlinux ELF (as Decompress returns it) and
// describes it without placing anything: entry point, segments, the
// physical range they occupy, and the PVH note.
func ParseELF(vmlinux []byte) (*ELFInfo, error) { return parseELF(vmlinux) }

// isELF reports whether data starts with the ELF magic.
func isELF(data []byte) bool {
	return len(data) >= 4 && data[0] == 0x7f && data[1] == 'E' && data[2] == 'L' && data[3] == 'F'
}

// parseELF checks an x86-64 vmlinux ELF and collects its PT_LOAD segments,
// entry point and notes. Bytes after the last segment (the relocation table
// that a bzImage payload appends) are ignored.
func parseELF(data []byte) (*ELFInfo, error) {
	if !isELF(data) {
		return nil, errorf(ErrNotLinux, "no ELF magic")
	}
	if len(data) < elfHeaderSize {
		return nil, errorf(ErrTruncated, "ELF of %d bytes is shorter than its header", len(data))
	}
	switch data[4] {
	case elfClass64:
	case elfClass32:
		return nil, errorf(ErrWrongArch, "32-bit ELF: this loader boots x86-64 kernels only")
	default:
		return nil, errorf(ErrBadImage, "ELF class %d is neither 32- nor 64-bit", data[4])
	}
	if data[5] != elfData2LSB {
		return nil, errorf(ErrWrongArch, "big-endian ELF: not an x86-64 kernel")
	}
	le := binary.LittleEndian
	etype := le.Uint16(data[16:])
	machine := le.Uint16(data[18:])
	if machine != emX8664 {
		return nil, errorf(ErrWrongArch, "ELF machine %d (%s) is not x86-64 (62)", machine, machineName(machine))
	}
	if etype != etExec && etype != etDyn {
		return nil, errorf(ErrBadImage, "ELF type %d is not an executable", etype)
	}
	entry := le.Uint64(data[24:])
	phoff := le.Uint64(data[32:])
	phentsize := le.Uint16(data[54:])
	phnum := le.Uint16(data[56:])
	if phnum == 0 {
		return nil, errorf(ErrBadImage, "ELF has no program headers")
	}
	if phnum > maxSegments {
		return nil, errorf(ErrBadImage, "ELF has %d program headers, more than %d", phnum, maxSegments)
	}
	if phentsize != elfPhdrSize {
		return nil, errorf(ErrBadImage, "ELF program header size %d, want %d", phentsize, elfPhdrSize)
	}
	tableEnd := phoff + uint64(phnum)*elfPhdrSize
	if phoff > uint64(len(data)) || tableEnd > uint64(len(data)) || tableEnd < phoff {
		return nil, errorf(ErrTruncated, "ELF program headers [0x%x, 0x%x) lie outside the %d-byte file", phoff, tableEnd, len(data))
	}

	info := &ELFInfo{Start: ^uint64(0)}
	for i := range int(phnum) {
		ph := data[phoff+uint64(i)*elfPhdrSize:]
		ptype := le.Uint32(ph[0:])
		s := Segment{
			Flags:  le.Uint32(ph[4:]),
			Offset: le.Uint64(ph[8:]),
			Vaddr:  le.Uint64(ph[16:]),
			Paddr:  le.Uint64(ph[24:]),
			Filesz: le.Uint64(ph[32:]),
			Memsz:  le.Uint64(ph[40:]),
		}
		// Only PT_LOAD and PT_NOTE bytes are read: other headers (PT_TLS,
		// PT_GNU_STACK, PT_DYNAMIC ...) are ignored, whatever their offsets.
		if (ptype == ptNote || ptype == ptLoad) && (s.Offset > uint64(len(data)) || s.Filesz > uint64(len(data))-s.Offset) {
			return nil, errorf(ErrTruncated, "ELF segment %d (file bytes [0x%x, +0x%x)) runs past the end of the %d-byte file", i, s.Offset, s.Filesz, len(data))
		}
		switch ptype {
		case ptNote:
			notes := data[s.Offset : s.Offset+s.Filesz]
			pvh, linux := scanNotes(notes)
			if pvh != 0 {
				info.PVHEntry = pvh
			}
			info.LinuxNotes = info.LinuxNotes || linux
		case ptLoad:
			if s.Memsz == 0 {
				continue
			}
			if s.Filesz > s.Memsz {
				return nil, errorf(ErrBadImage, "ELF segment %d has file size 0x%x above its memory size 0x%x", i, s.Filesz, s.Memsz)
			}
			if s.Memsz > maxSegmentSize {
				return nil, errorf(ErrTooLarge, "ELF segment %d is 0x%x bytes, over the 1 GiB limit", i, s.Memsz)
			}
			if s.Paddr+s.Memsz < s.Paddr || s.Paddr+s.Memsz > 1<<52 {
				return nil, errorf(ErrBadImage, "ELF segment %d [0x%x, +0x%x) is beyond any physical address", i, s.Paddr, s.Memsz)
			}
			info.Segments = append(info.Segments, s)
			info.Start = min(info.Start, s.Paddr)
			info.End = max(info.End, s.Paddr+s.Memsz)
		}
	}
	if len(info.Segments) == 0 {
		return nil, errorf(ErrBadImage, "ELF has no loadable segment")
	}
	phys, ok := entryToPhys(entry, info.Segments)
	if !ok {
		return nil, errorf(ErrBadImage, "ELF entry point 0x%x lies in no loadable segment", entry)
	}
	info.Entry = phys
	return info, nil
}

// entryToPhys finds the physical address of an ELF entry point: e_entry
// itself when it lies in a segment's physical range (x86-64 vmlinux), else
// its translation through the segment whose virtual range holds it.
func entryToPhys(entry uint64, segs []Segment) (uint64, bool) {
	for _, s := range segs {
		if entry >= s.Paddr && entry-s.Paddr < s.Memsz {
			return entry, true
		}
	}
	for _, s := range segs {
		if entry >= s.Vaddr && entry-s.Vaddr < s.Memsz {
			return entry - s.Vaddr + s.Paddr, true
		}
	}
	return 0, false
}

// scanNotes walks an ELF note area. It returns the PVH entry from a "Xen"
// XEN_ELFNOTE_PHYS32_ENTRY note (0 if none) and whether any "Linux" or
// "Xen" note is present. Malformed notes end the walk.
func scanNotes(b []byte) (pvh uint64, linux bool) {
	le := binary.LittleEndian
	align4 := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		namesz := uint64(le.Uint32(b[0:]))
		descsz := uint64(le.Uint32(b[4:]))
		ntype := le.Uint32(b[8:])
		rest := uint64(len(b) - 12)
		if align4(namesz) > rest || align4(descsz) > rest-align4(namesz) {
			return pvh, linux
		}
		name := bytes.TrimRight(b[12:12+namesz], "\x00")
		desc := b[12+align4(namesz) : 12+align4(namesz)+descsz]
		switch string(name) {
		case "Linux":
			linux = true
		case "Xen":
			linux = true
			if ntype == xenElfnotePhys32Entry {
				switch len(desc) {
				case 4:
					pvh = uint64(le.Uint32(desc))
				case 8:
					pvh = le.Uint64(desc)
				}
			}
		}
		b = b[12+align4(namesz)+align4(descsz):]
	}
	return pvh, linux
}

// machineName names a few ELF machines that people mistake for x86-64.
func machineName(m uint16) string {
	switch m {
	case 3:
		return "i386"
	case 40:
		return "ARM"
	case 183:
		return "AArch64"
	case 243:
		return "RISC-V"
	case 62:
		return "x86-64"
	}
	return "unknown"
}

// looksLikeVmlinux reports whether a parsed x86-64 ELF is a Linux kernel
// rather than a tiny freestanding guest: it carries Linux/Xen notes, or
// maps itself into the kernel's virtual range.
func looksLikeVmlinux(info *ELFInfo, entry uint64) bool {
	if info.LinuxNotes || entry >= kernelVirtBase {
		return true
	}
	for _, s := range info.Segments {
		if s.Vaddr >= kernelVirtBase {
			return true
		}
	}
	return false
}
