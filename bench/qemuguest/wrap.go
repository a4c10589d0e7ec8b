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

// Wrap returns an ELF64 image with a PVH note that QEMU boots with
// `-M microvm -kernel`, running guest (a tiny-guest ELF64) unchanged on a
// machine of memBytes RAM, with cmdline in its boot info.
func Wrap(guest []byte, memBytes uint64, cmdline string) ([]byte, error) {
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
	type seg struct {
		addr, memsz uint64
		data        []byte
		flags       elf.ProgFlag
	}
	var segs []seg
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
		segs = append(segs, seg{addr, p.Memsz, data, p.Flags})
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
	segs = append(segs, seg{StubBase, uint64(len(st)), st, elf.PF_R | elf.PF_W | elf.PF_X})

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
	offs := make([]uint64, len(segs))
	for i, s := range segs {
		off = (off + 15) &^ 15
		offs[i] = off
		_ = binary.Write(&out, le, elf.Prog64{
			Type: uint32(elf.PT_LOAD), Flags: uint32(s.flags), Off: off, Vaddr: s.addr, Paddr: s.addr,
			Filesz: uint64(len(s.data)), Memsz: s.memsz, Align: 16,
		})
		off += uint64(len(s.data))
	}
	out.Write(note.Bytes())
	for i, s := range segs {
		out.Write(make([]byte, int(offs[i])-out.Len()))
		out.Write(s.data)
	}
	return out.Bytes(), nil
}
