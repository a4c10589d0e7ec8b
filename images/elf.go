package images

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
)

// ELF64 is the part of an ELF64 little-endian file a loader needs, parsed
// with every offset and size checked against the file.
type ELF64 struct {
	Type    elf.Type
	Machine elf.Machine
	Entry   uint64
	Progs   []Prog
}

// Prog is one program header, with its file bytes.
type Prog struct {
	Type   elf.ProgType
	Flags  elf.ProgFlag
	Vaddr  uint64
	Paddr  uint64
	Memsz  uint64
	Filesz uint64
	Align  uint64
	Data   []byte // the Filesz bytes at the segment's file offset
}

const (
	elfHeaderSize  = 64
	elfPhdrSize    = 56
	elfMaxPhdrs    = 256
	elfMaxNoteSize = 1 << 20
)

// ParseELF64 parses the header and program headers of an x86-64 ELF64
// little-endian file. Truncated or inconsistent files are errors wrapping
// ErrBadImage.
func ParseELF64(data []byte) (*ELF64, error) {
	if len(data) < elfHeaderSize {
		return nil, badImagef("ELF file truncated: %d bytes, the header alone is %d", len(data), elfHeaderSize)
	}
	if !bytes.HasPrefix(data, []byte(elf.ELFMAG)) {
		return nil, badImagef("not an ELF file (no \\x7fELF magic)")
	}
	if c := elf.Class(data[elf.EI_CLASS]); c != elf.ELFCLASS64 {
		return nil, badImagef("ELF class %v: only 64-bit ELF images boot", c)
	}
	if d := elf.Data(data[elf.EI_DATA]); d != elf.ELFDATA2LSB {
		return nil, badImagef("ELF data encoding %v: want little-endian", d)
	}
	le := binary.LittleEndian
	f := &ELF64{
		Type:    elf.Type(le.Uint16(data[16:])),
		Machine: elf.Machine(le.Uint16(data[18:])),
		Entry:   le.Uint64(data[24:]),
	}
	if f.Machine != elf.EM_X86_64 {
		return nil, badImagef("ELF machine %v: this VMM boots x86-64 (EM_X86_64) images only", f.Machine)
	}
	phoff := le.Uint64(data[32:])
	phentsize := uint64(le.Uint16(data[54:]))
	phnum := uint64(le.Uint16(data[56:]))
	if phnum == 0 {
		return nil, badImagef("ELF has no program headers")
	}
	if phnum > elfMaxPhdrs {
		return nil, badImagef("ELF has %d program headers, at most %d accepted", phnum, elfMaxPhdrs)
	}
	if phentsize != elfPhdrSize {
		return nil, badImagef("ELF program header size %d, want %d", phentsize, elfPhdrSize)
	}
	size := uint64(len(data))
	if phoff > size || phnum*phentsize > size-phoff {
		return nil, badImagef("ELF truncated: program headers at %#x+%d lie past the end of the %d-byte file", phoff, phnum*phentsize, size)
	}
	for i := uint64(0); i < phnum; i++ {
		h := data[phoff+i*phentsize:]
		p := Prog{
			Type:   elf.ProgType(le.Uint32(h[0:])),
			Flags:  elf.ProgFlag(le.Uint32(h[4:])),
			Vaddr:  le.Uint64(h[16:]),
			Paddr:  le.Uint64(h[24:]),
			Filesz: le.Uint64(h[32:]),
			Memsz:  le.Uint64(h[40:]),
			Align:  le.Uint64(h[48:]),
		}
		off := le.Uint64(h[8:])
		if p.Type == elf.PT_LOAD || p.Type == elf.PT_NOTE {
			if off > size || p.Filesz > size-off {
				return nil, badImagef("ELF truncated: segment %d (%v) wants bytes %#x+%#x of a %d-byte file", i, p.Type, off, p.Filesz, size)
			}
			p.Data = data[off : off+p.Filesz]
		}
		if p.Type == elf.PT_LOAD && p.Filesz > p.Memsz {
			return nil, badImagef("ELF segment %d: file size %#x exceeds memory size %#x", i, p.Filesz, p.Memsz)
		}
		f.Progs = append(f.Progs, p)
	}
	return f, nil
}

// Note is an ELF note.
type Note struct {
	Name string
	Type uint32
	Desc []byte
}

// Notes returns the notes of every PT_NOTE segment; malformed ones end the
// walk of their segment.
func (f *ELF64) Notes() []Note {
	var notes []Note
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE || len(p.Data) > elfMaxNoteSize {
			continue
		}
		b := p.Data
		for len(b) >= 12 {
			namesz := uint64(binary.LittleEndian.Uint32(b[0:]))
			descsz := uint64(binary.LittleEndian.Uint32(b[4:]))
			typ := binary.LittleEndian.Uint32(b[8:])
			nameEnd := 12 + align4(namesz)
			descEnd := nameEnd + align4(descsz)
			if namesz > uint64(len(b)) || descsz > uint64(len(b)) || descEnd > uint64(len(b)) {
				break
			}
			name := b[12 : 12+namesz]
			name = bytes.TrimRight(name, "\x00")
			notes = append(notes, Note{Name: string(name), Type: typ, Desc: b[nameEnd : nameEnd+descsz]})
			b = b[descEnd:]
		}
	}
	return notes
}

func align4(n uint64) uint64 { return (n + 3) &^ 3 }
