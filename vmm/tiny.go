package vmm

import (
	"encoding/binary"
	"fmt"

	"github.com/microvm/microvm/images"
)

// Tiny-guest ABI v1: the VMM's pages below 1 MiB. The README documents this
// map; guests rely only on what the boot info and registers tell them.
const (
	pageSize = 0x1000

	tinyBootInfoAddr = 0x1000 // boot info, mapped read-only
	tinyCmdlineAddr  = 0x2000 // cmdline, NUL-terminated, mapped read-only
	tinyGDTAddr      = 0x3000
	tinyPML4Addr     = 0x4000
	tinyPDPTAddr     = 0x5000
	tinyPT0Addr      = 0x6000  // 4 KiB pages for the first 2 MiB
	tinyPDAddr       = 0x7000  // one page directory per GiB of address space
	tinyPDEnd        = 0x47000 // room for 64 of them
	tinyStackBase    = 0x60000 // vCPU stacks, tinyStackSize each
	tinyStackEnd     = 0xa0000
	tinyStackSize    = 0x1000

	// TinyMaxCmdline is the longest cmdline a tiny guest gets (one page
	// with its terminating NUL).
	TinyMaxCmdline = pageSize - 1
	// TinyMaxCPUs is the most vCPUs a tiny guest can have (one stack each).
	TinyMaxCPUs = (tinyStackEnd - tinyStackBase) / tinyStackSize
	// TinyMaxMemory is the most RAM the identity map covers.
	TinyMaxMemory = (tinyPDEnd-tinyPDAddr)/pageSize<<30 - (MMIOGapEnd - MMIOGapStart)

	// Selectors of the flat GDT (ABI v1).
	tinyCodeSel = 0x08
	tinyDataSel = 0x10

	bootInfoMagic   = 0x31544f4f424d564d // "MVMBOOT1"
	bootInfoVersion = 2                  // v2 adds the device table; v1 guests read on
	bootInfoSize    = 64                 // v1's 48 bytes, devices_addr u64, devices_count u32, pad u32
	bootDeviceSize  = 24                 // type u32, irq u32, mmio_base u64, mmio_size u64
)

// Page-table entry bits.
const (
	ptePresent = 1 << 0
	pteWrite   = 1 << 1
	ptePS      = 1 << 7 // 2 MiB page in a PD entry
)

// bootInfo is the boot-info block (ABI v2): v1's fields, then a table of
// devices that follows the block in the same page.
type bootInfo struct {
	cpus        uint32
	memSize     uint64
	cmdlineAddr uint64
	cmdlineLen  uint32
	tscKHz      uint64
	devices     []bootDevice
}

// bootDevice is an entry of the ABI v2 device table.
type bootDevice struct {
	typ, irq   uint32 // virtio device id (1 net, 2 blk, 4 rng); interrupt GSI
	base, size uint64 // MMIO register window
}

func (b bootInfo) marshal() []byte {
	p := make([]byte, bootInfoSize+bootDeviceSize*len(b.devices))
	le := binary.LittleEndian
	le.PutUint64(p[0:], bootInfoMagic)
	le.PutUint32(p[8:], bootInfoVersion)
	le.PutUint32(p[12:], b.cpus)
	le.PutUint64(p[16:], b.memSize)
	le.PutUint64(p[24:], b.cmdlineAddr)
	le.PutUint32(p[32:], b.cmdlineLen)
	le.PutUint64(p[40:], b.tscKHz)
	if len(b.devices) > 0 {
		le.PutUint64(p[48:], tinyBootInfoAddr+bootInfoSize)
		le.PutUint32(p[56:], uint32(len(b.devices)))
	}
	for i, d := range b.devices {
		e := p[bootInfoSize+bootDeviceSize*i:]
		le.PutUint32(e[0:], d.typ)
		le.PutUint32(e[4:], d.irq)
		le.PutUint64(e[8:], d.base)
		le.PutUint64(e[16:], d.size)
	}
	return p
}

// tinyStackTop returns the initial RSP of vCPU i: the top of its stack,
// 16-byte aligned, minus 8 (as if a call had pushed a return address).
func tinyStackTop(i int) uint64 {
	return tinyStackBase + uint64(i+1)*tinyStackSize - 8
}

// writeTinyPageTables identity-maps the low 4 GiB and all RAM: 2 MiB pages,
// except the first 2 MiB, mapped with 4 KiB pages so that page 0 is absent
// and the boot-info and cmdline pages are read-only.
func writeTinyPageTables(mem *Memory) error {
	top := uint64(MMIOGapEnd)
	for _, r := range mem.Regions() {
		top = max(top, r.End())
	}
	gibs := (top + 1<<30 - 1) >> 30
	if tinyPDAddr+gibs*pageSize > tinyPDEnd {
		return fmt.Errorf("guest address space of %d GiB exceeds the tiny-guest identity map (%d GiB)", gibs, (tinyPDEnd-tinyPDAddr)/pageSize)
	}
	le := binary.LittleEndian
	put := func(table, index, entry uint64) error {
		var b [8]byte
		le.PutUint64(b[:], entry)
		_, err := mem.WriteAt(b[:], int64(table+index*8))
		return err
	}
	if err := put(tinyPML4Addr, 0, tinyPDPTAddr|ptePresent|pteWrite); err != nil {
		return err
	}
	// Each page directory is written in one go: 512 entries.
	pd := make([]byte, pageSize)
	for g := uint64(0); g < gibs; g++ {
		pdAddr := tinyPDAddr + g*pageSize
		if err := put(tinyPDPTAddr, g, pdAddr|ptePresent|pteWrite); err != nil {
			return err
		}
		for i := uint64(0); i < 512; i++ {
			le.PutUint64(pd[i*8:], (g<<30+i<<21)|ptePresent|pteWrite|ptePS)
		}
		if g == 0 {
			le.PutUint64(pd[0:], tinyPT0Addr|ptePresent|pteWrite)
		}
		if _, err := mem.WriteAt(pd, int64(pdAddr)); err != nil {
			return err
		}
	}
	pt := make([]byte, pageSize)
	for i := uint64(1); i < 512; i++ { // entry 0 stays absent: no page 0
		e := i<<12 | ptePresent | pteWrite
		if a := i << 12; a == tinyBootInfoAddr || a == tinyCmdlineAddr {
			e &^= pteWrite
		}
		le.PutUint64(pt[i*8:], e)
	}
	_, err := mem.WriteAt(pt, tinyPT0Addr)
	return err
}

// gdtEntry encodes a flat segment descriptor with the given access byte and
// flags nibble (G, D/B, L, AVL).
func gdtEntry(access, flags uint64) uint64 {
	return 0xffff | 0xf<<48 | access<<40 | flags<<52
}

// Descriptor access bytes and flags.
const (
	gdtCode64 = 0x9b // present, DPL 0, code, execute/read, accessed
	gdtData   = 0x93 // present, DPL 0, data, read/write, accessed
	gdtFlagsL = 0xa  // G, L
	gdtFlagsD = 0xc  // G, D/B
)

// writeGDT writes descriptors at addr and returns the GDTR limit.
func writeGDT(mem images.Memory, addr uint64, entries []uint64) (uint16, error) {
	b := make([]byte, 8*len(entries))
	for i, e := range entries {
		binary.LittleEndian.PutUint64(b[8*i:], e)
	}
	if _, err := mem.WriteAt(b, int64(addr)); err != nil {
		return 0, err
	}
	return uint16(len(b) - 1), nil
}
