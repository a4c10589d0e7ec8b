// Package qemuguest makes a microvm tiny guest (ABI v1) bootable by QEMU's
// microvm machine, unchanged, so that QEMU and microvm's VMM can be timed
// on the very same guest bytes.
//
// QEMU cannot enter an ELF in 64-bit long mode as microvm's VMM does; with
// `-kernel` it boots an ELF that carries a Xen PVH note by entering the
// note's address in 32-bit protected mode (through its qboot firmware on
// -M microvm). Wrap builds such an ELF: the guest's PT_LOAD segments at
// their own addresses, plus a prebuilt ~20-instruction stub (stub.S) at
// STUB_BASE that does what microvm's VMM does from the host — long mode, an
// identity map of the low 4 GiB (prebuilt page tables), the flat GDT, RDI =
// boot info, RSI = 0, RSP, RFLAGS — and jumps to the guest's entry.
//
// The guest's port writes reach QEMU devices: 0x502 (ready) an
// isa-debugcon whose chardev is the benchmark's ready pipe, 0x501 (exit)
// an isa-debug-exit device (QEMU then exits with status (v<<1)|1).
package qemuguest

import (
	"bytes"
	"debug/elf"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
)

// StubBase is where the stub (page tables, code, boot info, stack) lives.
const StubBase = 0x1000000

const (
	stubEntrySlot = 0x6000 // u64: the guest's entry point
	stubMagicOff  = 0x6008 // "MVMPVH01"
	stubPVHEntry  = 0x6010 // 32-bit PVH entry
	stubBootInfo  = 0x7000 // boot info block (mem_size at +16)
)

//go:embed stub.bin
var stub []byte

// Stub returns the prebuilt stub (a copy).
func Stub() []byte { return bytes.Clone(stub) }

// maxCmdline is the room for the command line after the boot info block.
const maxCmdline = 0x1000 - 0x100 - 1

// segment is one PT_LOAD of a wrapped image.
type segment struct {
	addr, memsz uint64
	data        []byte
	flags       elf.ProgFlag
}

// Wrap returns an ELF64 image with a PVH note that QEMU boots with
// `-M microvm -kernel`, running guest (a tiny-guest ELF64) unchanged on a
// machine of memBytes RAM, with cmdline in its boot info.
func Wrap(guest []byte, memBytes uint64, cmdline string) ([]byte, error) {
	segs, err := segments(guest, memBytes, cmdline)
	if err != nil {
		return nil, err
	}
	// Note: namesz 4 "Xen\0", descsz 4, type XEN_ELFNOTE_PHYS32_ENTRY (18).
	var note bytes.Buffer
	le := binary.LittleEndian
	_ = binary.Write(&note, le, [3]uint32{4, 4, 18})
	note.WriteString("Xen\x00")
	_ = binary.Write(&note, le, uint32(StubBase+stubPVHEntry))

	const ehSize, phSize = 64, 56
	nph := len(segs) + 1
	off := uint64(ehSize + phSize*nph)
	noteOff := off
	off += uint64(note.Len())
	var out bytes.Buffer
	hdr := elf.Header64{
		Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_X86_64), Version: uint32(elf.EV_CURRENT),
		Entry: StubBase + stubPVHEntry, Phoff: ehSize, Ehsize: ehSize, Phentsize: phSize, Phnum: uint16(nph),
		Shentsize: 64,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS64)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	_ = binary.Write(&out, le, hdr)
	_ = binary.Write(&out, le, elf.Prog64{Type: uint32(elf.PT_NOTE), Flags: uint32(elf.PF_R), Off: noteOff, Filesz: uint64(note.Len()), Memsz: uint64(note.Len()), Align: 4})
	offs := layout(segs, off)
	for i, s := range segs {
		_ = binary.Write(&out, le, elf.Prog64{
			Type: uint32(elf.PT_LOAD), Flags: uint32(s.flags), Off: offs[i], Vaddr: s.addr, Paddr: s.addr,
			Filesz: uint64(len(s.data)), Memsz: s.memsz, Align: 16,
		})
	}
	out.Write(note.Bytes())
	writeSegments(&out, segs, offs)
	return out.Bytes(), nil
}

// Multiboot header magic and the flags WrapMultiboot asks for: bit 0
// (page-aligned modules) and bit 1 (memory information); no a.out kludge,
// the loader reads the ELF's program headers.
const (
	multibootMagic = 0x1BADB002
	multibootFlags = 0x3
)

// WrapMultiboot returns the same guest and stub as Wrap in an ELF32 i386
// image with a Multiboot v1 header (QEMU refuses ELF64 Multiboot kernels):
// what `qemu-system-x86_64 -kernel` boots through its Multiboot loader and
// `microvm boot` through images/multiboot. The stub's 32-bit entry is the
// ELF entry; it ignores EAX/EBX (the tiny guest's boot info is the stub's).
func WrapMultiboot(guest []byte, memBytes uint64, cmdline string) ([]byte, error) {
	segs, err := segments(guest, memBytes, cmdline)
	if err != nil {
		return nil, err
	}
	for _, s := range segs {
		if s.addr+s.memsz > 1<<32 {
			return nil, fmt.Errorf("qemuguest: segment at %#x does not fit an ELF32", s.addr)
		}
	}
	le := binary.LittleEndian
	const ehSize, phSize = 52, 32
	mbOff := uint64(ehSize + phSize*len(segs))
	var out bytes.Buffer
	hdr := elf.Header32{
		Type: uint16(elf.ET_EXEC), Machine: uint16(elf.EM_386), Version: uint32(elf.EV_CURRENT),
		Entry: StubBase + stubPVHEntry, Phoff: ehSize, Ehsize: ehSize, Phentsize: phSize, Phnum: uint16(len(segs)),
		Shentsize: 40,
	}
	copy(hdr.Ident[:], elf.ELFMAG)
	hdr.Ident[elf.EI_CLASS] = byte(elf.ELFCLASS32)
	hdr.Ident[elf.EI_DATA] = byte(elf.ELFDATA2LSB)
	hdr.Ident[elf.EI_VERSION] = byte(elf.EV_CURRENT)
	_ = binary.Write(&out, le, hdr)
	offs := layout(segs, mbOff+12)
	for i, s := range segs {
		_ = binary.Write(&out, le, elf.Prog32{
			Type: uint32(elf.PT_LOAD), Flags: uint32(s.flags), Off: uint32(offs[i]), Vaddr: uint32(s.addr), Paddr: uint32(s.addr),
			Filesz: uint32(len(s.data)), Memsz: uint32(s.memsz), Align: 16,
		})
	}
	sum := uint32(multibootMagic + multibootFlags)
	_ = binary.Write(&out, le, [3]uint32{multibootMagic, multibootFlags, -sum})
	writeSegments(&out, segs, offs)
	return out.Bytes(), nil
}

// layout gives each segment a 16-byte aligned file offset from off on.
func layout(segs []segment, off uint64) []uint64 {
	offs := make([]uint64, len(segs))
	for i, s := range segs {
		off = (off + 15) &^ 15
		offs[i] = off
		off += uint64(len(s.data))
	}
	return offs
}

// writeSegments pads out to each segment's offset and writes its bytes.
func writeSegments(out *bytes.Buffer, segs []segment, offs []uint64) {
	for i, s := range segs {
		out.Write(make([]byte, int(offs[i])-out.Len()))
		out.Write(s.data)
	}
}

// segments reads the guest's PT_LOAD segments and appends the stub, its
// entry and boot info patched in.
func segments(guest []byte, memBytes uint64, cmdline string) ([]segment, error) {
	if len(cmdline) > maxCmdline {
		return nil, fmt.Errorf("qemuguest: command line longer than %d bytes", maxCmdline)
	}
	if len(stub) < stubBootInfo+0x1000 || string(stub[stubMagicOff:stubMagicOff+8]) != "MVMPVH01" {
		return nil, errors.New("qemuguest: the embedded stub is damaged")
	}
	f, err := elf.NewFile(bytes.NewReader(guest))
	if err != nil {
		return nil, fmt.Errorf("qemuguest: guest is not an ELF: %w", err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		return nil, errors.New("qemuguest: guest is not an x86-64 ELF64 executable")
	}
	stubEnd := uint64(StubBase + len(stub))
	if memBytes < stubEnd {
		return nil, fmt.Errorf("qemuguest: %d bytes of RAM do not reach the stub at %#x", memBytes, StubBase)
	}
	var segs []segment
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Memsz == 0 {
			continue
		}
		if p.Filesz > p.Memsz || p.Memsz > 1<<30 {
			return nil, fmt.Errorf("qemuguest: bad segment at %#x", p.Paddr)
		}
		data := make([]byte, p.Filesz)
		if _, err := p.ReadAt(data, 0); err != nil {
			return nil, fmt.Errorf("qemuguest: read segment at %#x: %w", p.Paddr, err)
		}
		addr := p.Paddr
		if addr < 0x100000 || addr+p.Memsz > memBytes {
			return nil, fmt.Errorf("qemuguest: segment at %#x is outside [1 MiB, RAM)", addr)
		}
		if addr < stubEnd && addr+p.Memsz > StubBase {
			return nil, fmt.Errorf("qemuguest: segment at %#x overlaps the stub at %#x", addr, StubBase)
		}
		segs = append(segs, segment{addr, p.Memsz, data, p.Flags})
	}
	if len(segs) == 0 {
		return nil, errors.New("qemuguest: guest has no loadable segment")
	}
	st := Stub()
	binary.LittleEndian.PutUint64(st[stubEntrySlot:], f.Entry)
	binary.LittleEndian.PutUint64(st[stubBootInfo+16:], memBytes)
	if cmdline != "" {
		copy(st[stubBootInfo+0x100:], cmdline)
		binary.LittleEndian.PutUint64(st[stubBootInfo+24:], StubBase+stubBootInfo+0x100)
		binary.LittleEndian.PutUint32(st[stubBootInfo+32:], uint32(len(cmdline)))
	}
	return append(segs, segment{StubBase, uint64(len(st)), st, elf.PF_R | elf.PF_W | elf.PF_X}), nil
}
