package linux

import (
	"bytes"
	"encoding/binary"
	"fmt"

	"github.com/microvm/microvm/images"
)

// Zero page (struct boot_params) offsets outside the setup header
// (Documentation/arch/x86/zero-page.rst).
const (
	bpExtRamdiskImage = 0x0c0
	bpExtRamdiskSize  = 0x0c4
	bpExtCmdLinePtr   = 0x0c8
	bpE820Entries     = 0x1e8
	bpSentinel        = 0x1ef
	bpE820Table       = 0x2d0
	e820EntrySize     = 20
)

// BootParams is what the zero page tells the kernel besides its own setup
// header: command line, initrd and memory map. Write places them.
type BootParams struct {
	// Header is the kernel's setup header (Kernel.Header); nil for a bare
	// vmlinux, for which a minimal protocol-2.15 header is synthesised.
	Header *SetupHeader
	// Cmdline is the kernel command line, without a terminating NUL.
	Cmdline string
	// Initrd is the initial ramdisk (e.g. a gzip'd newc cpio); may be empty.
	Initrd []byte
}

// Layout is where Write put things.
type Layout struct {
	ZeroPage    uint64      `json:"zero_page"`
	CmdlineAddr uint64      `json:"cmdline_addr"`
	CmdlineLen  int         `json:"cmdline_len"`
	InitrdAddr  uint64      `json:"initrd_addr"` // 0 when there is no initrd
	InitrdSize  uint64      `json:"initrd_size"`
	E820        []E820Entry `json:"e820"`
}

// Write fills guest memory for a kernel that LoadELF placed (kernel
// describes it): the command line at CmdlineAddr, the initrd at the top of
// the RAM below min(initrd_addr_max, end of the RAM region above 1 MiB),
// page-aligned and above the kernel, and the zero page at ZeroPageAddr —
// a copy of the setup header with type_of_loader = 0xff (undefined),
// LOADED_HIGH set, cmd_line_ptr, ramdisk_image/ramdisk_size (and their
// ext_ high halves) filled in, and an e820 map from E820(mem.Regions()).
// It checks everything before writing anything.
func (p *BootParams) Write(mem images.Memory, kernel *LoadResult) (*Layout, error) {
	if kernel == nil {
		return nil, fmt.Errorf("boot params: no loaded kernel (call LoadELF first)")
	}
	regions := mem.Regions()
	hdr := p.Header
	cmdlineSize := uint64(DefaultCmdlineSize)
	initrdMax := uint64(DefaultInitrdAddrMax)
	if hdr != nil {
		cmdlineSize = uint64(hdr.CmdlineSize)
		if hdr.InitrdAddrMax != 0 {
			initrdMax = uint64(hdr.InitrdAddrMax)
		}
	}

	// Command line.
	if i := bytes.IndexByte([]byte(p.Cmdline), 0); i >= 0 {
		return nil, errorf(ErrBadCmdline, "command line has a NUL byte at offset %d", i)
	}
	if uint64(len(p.Cmdline)) > cmdlineSize {
		return nil, errorf(ErrCmdlineTooLong, "command line is %d bytes; this kernel accepts at most %d (cmdline_size)", len(p.Cmdline), cmdlineSize)
	}
	if len(p.Cmdline)+1 > CmdlineMax {
		return nil, errorf(ErrCmdlineTooLong, "command line is %d bytes; at most %d fit at 0x%x", len(p.Cmdline), CmdlineMax-1, CmdlineAddr)
	}
	for _, a := range []struct {
		what       string
		addr, size uint64
	}{
		{"zero page", ZeroPageAddr, ZeroPageSize},
		{"command line", CmdlineAddr, uint64(len(p.Cmdline)) + 1},
	} {
		if !images.InRAM(regions, a.addr, a.size) {
			return nil, errorf(ErrDoesNotFit, "%s [0x%x, 0x%x) is not in guest RAM (%s)", a.what, a.addr, a.addr+a.size, describeRegions(regions))
		}
	}

	// Initrd placement.
	var initrdAddr uint64
	initrdSize := uint64(len(p.Initrd))
	if initrdSize > 0 {
		addr, err := placeInitrd(regions, kernel, initrdSize, initrdMax)
		if err != nil {
			return nil, err
		}
		initrdAddr = addr
	}

	e820 := E820(regions)
	if len(e820) > maxE820 {
		return nil, errorf(ErrDoesNotFit, "memory map has %d entries; the zero page holds %d", len(e820), maxE820)
	}

	// Zero page.
	zp := make([]byte, ZeroPageSize)
	le := binary.LittleEndian
	if hdr != nil {
		copy(zp[offSetupSects:], hdr.Raw)
	} else {
		synthHeader(zp)
	}
	zp[bpSentinel] = 0
	zp[offTypeOfLoader] = LoaderTypeUndefined
	zp[offLoadflags] |= LoadedHigh
	le.PutUint32(zp[offCmdLinePtr:], uint32(CmdlineAddr))
	le.PutUint32(zp[bpExtCmdLinePtr:], uint32(uint64(CmdlineAddr)>>32))
	le.PutUint32(zp[offRamdiskImage:], uint32(initrdAddr))
	le.PutUint32(zp[offRamdiskSize:], uint32(initrdSize))
	le.PutUint32(zp[bpExtRamdiskImage:], uint32(initrdAddr>>32))
	le.PutUint32(zp[bpExtRamdiskSize:], uint32(initrdSize>>32))
	zp[bpE820Entries] = byte(len(e820))
	for i, e := range e820 {
		b := zp[bpE820Table+i*e820EntrySize:]
		le.PutUint64(b[0:], e.Addr)
		le.PutUint64(b[8:], e.Size)
		le.PutUint32(b[16:], e.Type)
	}

	cmd := append([]byte(p.Cmdline), 0)
	if _, err := mem.WriteAt(cmd, CmdlineAddr); err != nil {
		return nil, fmt.Errorf("write command line at 0x%x: %w", CmdlineAddr, err)
	}
	if initrdSize > 0 {
		if _, err := mem.WriteAt(p.Initrd, int64(initrdAddr)); err != nil {
			return nil, fmt.Errorf("write initrd at 0x%x: %w", initrdAddr, err)
		}
	}
	if _, err := mem.WriteAt(zp, ZeroPageAddr); err != nil {
		return nil, fmt.Errorf("write zero page at 0x%x: %w", ZeroPageAddr, err)
	}
	return &Layout{
		ZeroPage:    ZeroPageAddr,
		CmdlineAddr: CmdlineAddr,
		CmdlineLen:  len(p.Cmdline),
		InitrdAddr:  initrdAddr,
		InitrdSize:  initrdSize,
		E820:        e820,
	}, nil
}

// placeInitrd picks the initrd address: as high as possible in the RAM
// region that holds the kernel, below min(initrd_addr_max+1, region end),
// page-aligned, and above the kernel's end.
func placeInitrd(regions []images.Region, kernel *LoadResult, size, initrdMax uint64) (uint64, error) {
	var region images.Region
	found := false
	for _, r := range regions {
		if r.Contains(kernel.Start, kernel.End-kernel.Start) || r.Contains(HighMemStart, 1) {
			region, found = r, true
			break
		}
	}
	if !found {
		return 0, errorf(ErrDoesNotFit, "no RAM region above 1 MiB for the initrd (%s)", describeRegions(regions))
	}
	top := min(region.End(), initrdMax+1)
	floor := max(kernel.End, region.Start, HighMemStart)
	if size > top || alignDown(top-size, pageSize) < floor {
		room := uint64(0)
		if top > floor {
			room = top - floor
		}
		return 0, errorf(ErrDoesNotFit,
			"initrd of %d bytes does not fit between the kernel's end 0x%x and 0x%x (%d bytes free; min of RAM end and initrd_addr_max+1): give the VM more memory or use a smaller initrd",
			size, floor, top, room)
	}
	return alignDown(top-size, pageSize), nil
}

// synthHeader writes the setup header fields a bare vmlinux lacks: boot
// flag, "HdrS", protocol 2.15, cmdline_size and initrd_addr_max defaults.
func synthHeader(zp []byte) {
	le := binary.LittleEndian
	le.PutUint16(zp[offBootFlag:], bootFlagMagic)
	zp[offJump+1] = offKernelInfoOff + 4 - (offJump + 2)
	le.PutUint32(zp[offHeaderMagic:], headerMagic)
	le.PutUint16(zp[offVersion:], 0x020f)
	zp[offLoadflags] = LoadedHigh
	le.PutUint32(zp[offInitrdAddrMax:], DefaultInitrdAddrMax)
	le.PutUint32(zp[offKernelAlignment:], 0x200000)
	le.PutUint16(zp[offXloadflags:], XLFKernel64)
	le.PutUint32(zp[offCmdlineSize:], DefaultCmdlineSize)
}
