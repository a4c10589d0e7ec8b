package linux

import (
	"sort"

	"github.com/microvm/microvm/images"
)

// Guest-physical addresses this package uses. The VMM must keep its own
// structures (page tables, GDT, stack, tiny-guest boot info) out of these
// ranges; the low-memory ranges not listed here (0x500–0x6fff,
// 0x8000–0x1ffff except where the VMM puts its own things, and the space
// between the end of the command line and 0x9fc00) are free for it.
const (
	// ZeroPageAddr is where struct boot_params (4 KiB) goes; RSI must
	// hold this address at the 64-bit entry.
	ZeroPageAddr = 0x7000
	// ZeroPageSize is the size of struct boot_params.
	ZeroPageSize = 0x1000
	// CmdlineAddr is where the NUL-terminated command line goes.
	CmdlineAddr = 0x20000
	// CmdlineMax bounds the command line area [CmdlineAddr,
	// CmdlineAddr+CmdlineMax), whatever a kernel's cmdline_size says.
	CmdlineMax = 0x10000
	// EBDAStart is the start of the area e820 marks reserved below 1 MiB
	// (the BIOS's EBDA, video memory and ROMs on a PC): [EBDAStart,
	// HighMemStart).
	EBDAStart = 0x9fc00
	// MPTableAddr is where WriteMPTable puts the MP floating pointer (the
	// configuration table follows it). Linux scans the last KiB of base
	// memory (639 KiB = 0x9fc00) for it.
	MPTableAddr = EBDAStart
	// HighMemStart is 1 MiB. Kernel segments must lie at or above it.
	HighMemStart = 0x100000

	// IOAPICAddr and LAPICAddr are the APIC MMIO bases the MP table
	// declares (KVM's in-kernel irqchip uses the same defaults).
	IOAPICAddr = 0xfec00000
	LAPICAddr  = 0xfee00000

	// BootCS and BootDS are the segment selectors the 64-bit boot protocol
	// requires (__BOOT_CS and __BOOT_DS): GDT entries 2 and 3.
	BootCS = 0x10
	BootDS = 0x18
)

// E820 entry types.
const (
	E820RAM      = 1
	E820Reserved = 2
)

// E820Entry is one entry of the BIOS memory map handed to the kernel.
type E820Entry struct {
	Addr uint64 `json:"addr"`
	Size uint64 `json:"size"`
	Type uint32 `json:"type"`
}

// maxE820 is the number of e820 entries that fit in the zero page.
const maxE820 = 128

// E820 builds the memory map for the given RAM regions: every byte of RAM
// is usable except [EBDAStart, HighMemStart), which is reported reserved
// (it holds the MP table; on a PC it would be EBDA, VGA and ROM space).
// Gaps between regions (the 3–4 GiB MMIO hole) are simply absent, as on a
// PC. For RAM [0, 3 GiB) + [4 GiB, 4 GiB+n) the result is
//
//	[0, 0x9fc00) usable, [0x9fc00, 0x100000) reserved,
//	[0x100000, 3 GiB) usable, [4 GiB, 4 GiB+n) usable.
func E820(regions []images.Region) []E820Entry {
	var out []E820Entry
	add := func(start, end uint64, typ uint32) {
		if end > start {
			out = append(out, E820Entry{Addr: start, Size: end - start, Type: typ})
		}
	}
	low := false
	for _, r := range regions {
		if r.Size == 0 {
			continue
		}
		start, end := r.Start, r.End()
		if start < HighMemStart {
			low = true
		}
		add(start, min(end, EBDAStart), E820RAM)
		add(max(start, HighMemStart), end, E820RAM)
	}
	if low {
		add(EBDAStart, HighMemStart, E820Reserved)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Addr < out[j].Addr })
	return out
}
