package images

import (
	"debug/elf"
	"fmt"
)

// Tiny-guest ABI v1 placement rules.
const (
	// MinLoadAddr is the lowest guest-physical address a tiny-guest segment
	// may occupy: everything below 1 MiB belongs to the VMM (boot info,
	// page tables, stacks).
	MinLoadAddr = 0x100000
	// FlatLoadAddr is where a flat binary is loaded and entered.
	FlatLoadAddr = 0x100000
)

// Loaded says what a loader placed.
type Loaded struct {
	Entry uint64 // guest-physical entry point
	Start uint64 // lowest address written
	End   uint64 // first address past the highest byte written
}

// LoadTiny places a tiny guest (ABI v1) into mem: an ELF64 ET_EXEC whose
// PT_LOAD segments lie at or above MinLoadAddr inside RAM and are never both
// writable and executable, or, with format FormatFlat, a flat binary at
// FlatLoadAddr. format FormatUnknown means detect.
func LoadTiny(mem Memory, data []byte, format Format) (*Loaded, error) {
	if format == FormatUnknown {
		f, err := Detect(data)
		if err != nil {
			return nil, err
		}
		format = f
	}
	switch format {
	case FormatELF:
		return loadTinyELF(mem, data)
	case FormatFlat:
		return loadFlat(mem, data)
	case FormatBzImage, FormatVmlinux:
		return nil, badImagef("this is a Linux kernel (%v), not a tiny guest", format)
	}
	return nil, badImagef("cannot load format %v as a tiny guest", format)
}

func loadFlat(mem Memory, data []byte) (*Loaded, error) {
	if len(data) == 0 {
		return nil, badImagef("the flat image is empty (0 bytes)")
	}
	n := uint64(len(data))
	if !InRAM(mem.Regions(), FlatLoadAddr, n) {
		return nil, badImagef("flat image of %d bytes at %#x does not fit in guest RAM (%s)", n, FlatLoadAddr, describeRAM(mem.Regions()))
	}
	if _, err := mem.WriteAt(data, FlatLoadAddr); err != nil {
		return nil, fmt.Errorf("load flat image: %w", err)
	}
	return &Loaded{Entry: FlatLoadAddr, Start: FlatLoadAddr, End: FlatLoadAddr + n}, nil
}

func loadTinyELF(mem Memory, data []byte) (*Loaded, error) {
	f, err := ParseELF64(data)
	if err != nil {
		return nil, err
	}
	if f.Type != elf.ET_EXEC {
		return nil, badImagef("ELF type %v: a tiny guest must be ET_EXEC (statically linked at fixed addresses)", f.Type)
	}
	regions := mem.Regions()
	var loads []Prog
	for _, p := range f.Progs {
		if p.Type != elf.PT_LOAD || p.Memsz == 0 {
			continue
		}
		if p.Flags&elf.PF_W != 0 && p.Flags&elf.PF_X != 0 {
			return nil, badImagef("ELF segment at %#x is both writable and executable; the tiny-guest ABI refuses W+X segments", p.Paddr)
		}
		if p.Paddr < MinLoadAddr {
			return nil, badImagef("ELF segment at %#x lies below 1 MiB (%#x), which belongs to the VMM", p.Paddr, MinLoadAddr)
		}
		if !InRAM(regions, p.Paddr, p.Memsz) {
			return nil, badImagef("ELF segment %#x+%#x lies outside guest RAM (%s); give the guest more --memory", p.Paddr, p.Memsz, describeRAM(regions))
		}
		for _, q := range loads {
			if p.Paddr < q.Paddr+q.Memsz && q.Paddr < p.Paddr+p.Memsz {
				return nil, badImagef("ELF segments at %#x and %#x overlap", q.Paddr, p.Paddr)
			}
		}
		loads = append(loads, p)
	}
	if len(loads) == 0 {
		return nil, badImagef("ELF has no loadable segments")
	}
	entryOK := false
	for _, p := range loads {
		if p.Flags&elf.PF_X != 0 && f.Entry >= p.Paddr && f.Entry < p.Paddr+p.Memsz {
			entryOK = true
		}
	}
	if !entryOK {
		return nil, badImagef("ELF entry point %#x is not inside an executable segment", f.Entry)
	}
	l := &Loaded{Entry: f.Entry, Start: ^uint64(0)}
	for _, p := range loads {
		if _, err := mem.WriteAt(p.Data, int64(p.Paddr)); err != nil {
			return nil, fmt.Errorf("load ELF segment at %#x: %w", p.Paddr, err)
		}
		if err := zero(mem, p.Paddr+p.Filesz, p.Memsz-p.Filesz); err != nil {
			return nil, fmt.Errorf("zero ELF segment tail at %#x: %w", p.Paddr+p.Filesz, err)
		}
		l.Start = min(l.Start, p.Paddr)
		l.End = max(l.End, p.Paddr+p.Memsz)
	}
	return l, nil
}

func describeRAM(regions []Region) string {
	s := ""
	for i, r := range regions {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%#x-%#x", r.Start, r.End())
	}
	if s == "" {
		return "none"
	}
	return s
}

// zero clears [addr, addr+n) in chunks of at most 64 KiB. The buffer
// escapes to the heap (mem is an interface): allocate none for an empty
// range and no more than the range needs.
func zero(mem Memory, addr, n uint64) error {
	if n == 0 {
		return nil
	}
	buf := make([]byte, min(n, 64<<10))
	for n > 0 {
		c := min(n, uint64(len(buf)))
		if _, err := mem.WriteAt(buf[:c], int64(addr)); err != nil {
			return err
		}
		addr += c
		n -= c
	}
	return nil
}
