package linux

import (
	"fmt"

	"github.com/microvm/microvm/images"
)

// LoadResult is what LoadELF placed.
type LoadResult struct {
	// Entry is the guest-physical 64-bit entry point (startup_64): RIP at
	// the first instruction.
	Entry uint64
	// Start and End bound the guest-physical memory the kernel occupies
	// ([Start, End), page-aligned End), BSS included.
	Start, End uint64
	// PVHEntry is the kernel's 32-bit PVH entry, 0 if it has none
	// (informational; this loader boots Entry).
	PVHEntry uint64
	// Segments is the number of PT_LOAD segments placed.
	Segments int
}

// LoadELF places the PT_LOAD segments of an x86-64 vmlinux ELF at their
// physical addresses (p_paddr), zeroing each segment's memory past its file
// bytes (the BSS), and returns the physical entry point. Segments must lie
// in RAM at or above 1 MiB; the low megabyte belongs to the zero page,
// command line, MP table and the VMM's own structures. Nothing is written
// unless every segment fits.
func LoadELF(mem images.Memory, vmlinux []byte) (*LoadResult, error) {
	info, err := parseELF(vmlinux)
	if err != nil {
		return nil, err
	}
	regions := mem.Regions()
	for i, s := range info.Segments {
		if s.Paddr < HighMemStart {
			return nil, errorf(ErrBadImage, "kernel segment %d at 0x%x lies below 1 MiB, where the boot structures live", i, s.Paddr)
		}
		if !images.InRAM(regions, s.Paddr, s.Memsz) {
			return nil, errorf(ErrDoesNotFit, "kernel segment %d [0x%x, 0x%x) is not inside guest RAM (%s): give the VM more memory",
				i, s.Paddr, s.Paddr+s.Memsz, describeRegions(regions))
		}
	}
	for i, s := range info.Segments {
		if _, err := mem.WriteAt(vmlinux[s.Offset:s.Offset+s.Filesz], int64(s.Paddr)); err != nil {
			return nil, fmt.Errorf("write kernel segment %d at 0x%x: %w", i, s.Paddr, err)
		}
		if err := writeZeros(mem, s.Paddr+s.Filesz, s.Memsz-s.Filesz); err != nil {
			return nil, fmt.Errorf("zero kernel segment %d BSS at 0x%x: %w", i, s.Paddr+s.Filesz, err)
		}
	}
	return &LoadResult{
		Entry:    info.Entry,
		Start:    info.Start,
		End:      alignUp(info.End, pageSize),
		PVHEntry: info.PVHEntry,
		Segments: len(info.Segments),
	}, nil
}

const pageSize = 4096

func alignUp(v, a uint64) uint64   { return (v + a - 1) &^ (a - 1) }
func alignDown(v, a uint64) uint64 { return v &^ (a - 1) }

// writeZeros clears [addr, addr+n) in guest memory.
func writeZeros(mem images.Memory, addr, n uint64) error {
	zero := make([]byte, min(n, 64<<10))
	for n > 0 {
		k := min(n, uint64(len(zero)))
		if _, err := mem.WriteAt(zero[:k], int64(addr)); err != nil {
			return err
		}
		addr += k
		n -= k
	}
	return nil
}

func describeRegions(rs []images.Region) string {
	s := ""
	for i, r := range rs {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("[0x%x, 0x%x)", r.Start, r.End())
	}
	if s == "" {
		return "no RAM"
	}
	return "RAM " + s
}
