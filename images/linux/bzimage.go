package linux

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Setup header layout (Documentation/arch/x86/boot.rst, "The Real-Mode
// Kernel Header"). Offsets are from the start of the image file, which are
// also the offsets inside struct boot_params (the zero page).
const (
	offSetupSects      = 0x1f1
	offSyssize         = 0x1f4
	offVidMode         = 0x1fa
	offBootFlag        = 0x1fe
	offJump            = 0x200
	offHeaderMagic     = 0x202
	offVersion         = 0x206
	offKernelVersion   = 0x20e
	offTypeOfLoader    = 0x210
	offLoadflags       = 0x211
	offCode32Start     = 0x214
	offRamdiskImage    = 0x218
	offRamdiskSize     = 0x21c
	offHeapEndPtr      = 0x224
	offCmdLinePtr      = 0x228
	offInitrdAddrMax   = 0x22c
	offKernelAlignment = 0x230
	offRelocatable     = 0x234
	offMinAlignment    = 0x235
	offXloadflags      = 0x236
	offCmdlineSize     = 0x238
	offPayloadOffset   = 0x248
	offPayloadLength   = 0x24c
	offSetupData       = 0x250
	offPrefAddress     = 0x258
	offInitSize        = 0x260
	offHandoverOffset  = 0x264
	offKernelInfoOff   = 0x268

	// hdrMaxEnd bounds the setup header inside boot_params: struct
	// boot_params continues at 0x290 (edd_mbr_sig_buffer).
	hdrMaxEnd = 0x290

	bootFlagMagic = 0xaa55
	headerMagic   = 0x53726448 // "HdrS"
)

// Boot protocol constants.
const (
	// MinProtocol is the oldest boot protocol accepted: 2.06 added
	// cmdline_size (needed to bound the command line); every x86-64 kernel
	// speaks 2.10 or later anyway.
	MinProtocol = 0x0206

	// LoadedHigh (loadflags bit 0): the protected-mode code loads at 1 MiB.
	LoadedHigh = 1 << 0
	// CanUseHeap (loadflags bit 7): heap_end_ptr is valid.
	CanUseHeap = 1 << 7

	// XLFKernel64 (xloadflags bit 0): the image has the 64-bit entry point
	// at offset 0x200 of the protected-mode code.
	XLFKernel64 = 1 << 0
	// XLFCanBeLoadedAbove4G (xloadflags bit 1).
	XLFCanBeLoadedAbove4G = 1 << 1

	// LoaderTypeUndefined is type_of_loader for a boot loader without an
	// assigned id.
	LoaderTypeUndefined = 0xff

	// DefaultCmdlineSize is cmdline_size assumed for a bare vmlinux, which
	// carries no setup header (x86 COMMAND_LINE_SIZE is 2048, including
	// the terminating NUL).
	DefaultCmdlineSize = 2047
	// DefaultInitrdAddrMax is initrd_addr_max assumed for a bare vmlinux
	// (the value every x86-64 kernel declares).
	DefaultInitrdAddrMax = 0x7fffffff
)

// SetupHeader is the bzImage setup header (struct setup_header), the part of
// the zero page that the kernel image itself supplies.
type SetupHeader struct {
	SetupSects       uint8  // sectors of real-mode setup code after the boot sector
	Syssize          uint32 // protected-mode code size in 16-byte paragraphs
	Version          uint16 // boot protocol version, e.g. 0x020f for 2.15
	KernelVersion    string // kernel version string ("6.1.0-... (builder) #1 SMP ..."), may be empty
	Loadflags        uint8
	Code32Start      uint32
	InitrdAddrMax    uint32 // highest address the initrd may occupy
	KernelAlignment  uint32
	Relocatable      bool
	MinAlignment     uint8
	Xloadflags       uint16
	CmdlineSize      uint32 // longest command line, without its terminating NUL
	PayloadOffset    uint32 // from the start of the protected-mode code
	PayloadLength    uint32
	PrefAddress      uint64
	InitSize         uint32 // memory the kernel needs from its start before it sees the memory map
	HandoverOffset   uint32
	KernelInfoOffset uint32

	// Raw is the header exactly as in the image, from offset 0x1f1 to its
	// end (0x202 + the byte at 0x201). The zero page starts as a copy.
	Raw []byte
}

// ProtocolString formats the boot protocol version as "2.15".
func (h *SetupHeader) ProtocolString() string {
	return fmt.Sprintf("%d.%02d", h.Version>>8, h.Version&0xff)
}

// isBzImage reports whether data starts like a bzImage: the 0xAA55 boot
// flag and the "HdrS" magic.
func isBzImage(data []byte) bool {
	return len(data) >= offHeaderMagic+4 &&
		binary.LittleEndian.Uint16(data[offBootFlag:]) == bootFlagMagic &&
		binary.LittleEndian.Uint32(data[offHeaderMagic:]) == headerMagic
}

// parseBzImage checks the setup header and locates the protected-mode code
// and the payload.
func parseBzImage(data []byte) (*Kernel, error) {
	if len(data) < offHeaderMagic+4 {
		return nil, errorf(ErrTruncated, "bzImage of %d bytes ends inside the setup header", len(data))
	}
	le := binary.LittleEndian
	if le.Uint16(data[offBootFlag:]) != bootFlagMagic {
		return nil, errorf(ErrNotLinux, "no boot flag 0xAA55 at offset 0x1fe")
	}
	if le.Uint32(data[offHeaderMagic:]) != headerMagic {
		return nil, errorf(ErrNotLinux, "no \"HdrS\" magic at offset 0x202 (a pre-2.00 zImage or not a kernel)")
	}
	h := &SetupHeader{Version: le.Uint16(data[offVersion:])}
	if h.Version < MinProtocol {
		return nil, errorf(ErrProtocolVersion,
			"bzImage speaks boot protocol %s; at least 2.06 is needed (cmdline_size, 64-bit entry): the kernel is too old for this loader",
			h.ProtocolString())
	}
	end := offJump + 2 + int(data[offJump+1])
	if end > hdrMaxEnd {
		end = hdrMaxEnd
	}
	if end < offCmdlineSize+4 {
		return nil, errorf(ErrBadImage, "setup header ends at 0x%x, before cmdline_size although protocol %s has it", end, h.ProtocolString())
	}
	if len(data) < end {
		return nil, errorf(ErrTruncated, "bzImage of %d bytes ends inside the setup header (which ends at 0x%x)", len(data), end)
	}
	field := func(off, size int) bool { return off+size <= end }
	h.Raw = bytes.Clone(data[offSetupSects:end])
	h.SetupSects = data[offSetupSects]
	h.Syssize = le.Uint32(data[offSyssize:])
	h.Loadflags = data[offLoadflags]
	h.Code32Start = le.Uint32(data[offCode32Start:])
	h.InitrdAddrMax = le.Uint32(data[offInitrdAddrMax:])
	h.KernelAlignment = le.Uint32(data[offKernelAlignment:])
	h.Relocatable = data[offRelocatable] != 0
	h.CmdlineSize = le.Uint32(data[offCmdlineSize:])
	if h.Version >= 0x020a && field(offMinAlignment, 1) {
		h.MinAlignment = data[offMinAlignment]
	}
	if h.Version >= 0x020c && field(offXloadflags, 2) {
		h.Xloadflags = le.Uint16(data[offXloadflags:])
	}
	if h.Version >= 0x0208 && field(offPayloadLength, 4) {
		h.PayloadOffset = le.Uint32(data[offPayloadOffset:])
		h.PayloadLength = le.Uint32(data[offPayloadLength:])
	}
	if h.Version >= 0x020a && field(offInitSize, 4) {
		h.PrefAddress = le.Uint64(data[offPrefAddress:])
		h.InitSize = le.Uint32(data[offInitSize:])
	}
	if h.Version >= 0x020b && field(offHandoverOffset, 4) {
		h.HandoverOffset = le.Uint32(data[offHandoverOffset:])
	}
	if h.Version >= 0x020f && field(offKernelInfoOff, 4) {
		h.KernelInfoOffset = le.Uint32(data[offKernelInfoOff:])
	}

	setupSects := int(h.SetupSects)
	if setupSects == 0 {
		setupSects = 4
	}
	pmStart := (setupSects + 1) * 512
	if pmStart > len(data) {
		return nil, errorf(ErrTruncated, "bzImage of %d bytes ends inside its %d setup sectors", len(data), setupSects)
	}
	h.KernelVersion = kernelVersionString(data, pmStart)

	if h.Version < 0x0208 {
		return nil, errorf(ErrProtocolVersion,
			"bzImage speaks boot protocol %s, which has no payload_offset/payload_length (2.08+): its kernel cannot be extracted on the host; use its vmlinux instead",
			h.ProtocolString())
	}
	if h.Version >= 0x020c && h.Xloadflags&XLFKernel64 == 0 {
		return nil, errorf(ErrWrongArch,
			"bzImage (protocol %s, xloadflags 0x%x) has no 64-bit entry point (XLF_KERNEL_64): a 32-bit kernel, which this x86-64 loader cannot boot",
			h.ProtocolString(), h.Xloadflags)
	}
	if h.Loadflags&LoadedHigh == 0 {
		return nil, errorf(ErrBadImage, "bzImage is not LOADED_HIGH (a zImage): cannot boot it")
	}
	if h.PayloadLength == 0 && h.PayloadOffset == 0 && h.Version >= 0x020c {
		// No payload at all (memtest86+'s bzImage): the protected-mode
		// code is the whole kernel, entered at its 64-bit entry (protected.go).
		return &Kernel{Format: FormatBzImage, Header: h, Data: data, Protected: data[pmStart:], NoPayload: true}, nil
	}
	if h.PayloadLength == 0 {
		return nil, errorf(ErrBadImage, "bzImage (protocol %s) declares no payload (payload_length 0) but a payload_offset 0x%x: a damaged image (a kernel without a payload has both 0 and protocol 2.12+)", h.ProtocolString(), h.PayloadOffset)
	}
	pOff := uint64(pmStart) + uint64(h.PayloadOffset)
	pEnd := pOff + uint64(h.PayloadLength)
	if pEnd > uint64(len(data)) {
		return nil, errorf(ErrTruncated,
			"payload [0x%x, 0x%x) runs past the end of the %d-byte image: the file is cut short",
			pOff, pEnd, len(data))
	}
	payload := data[pOff:pEnd]
	k := &Kernel{
		Format:      FormatBzImage,
		Header:      h,
		Data:        data,
		Protected:   data[pmStart:],
		Payload:     payload,
		Compression: DetectCompression(payload),
	}
	return k, nil
}

// kernelVersionString reads the NUL-terminated version string that
// kernel_version points to (offset +0x200 in the file), when it is sane.
func kernelVersionString(data []byte, pmStart int) string {
	ptr := int(binary.LittleEndian.Uint16(data[offKernelVersion:]))
	if ptr == 0 {
		return ""
	}
	off := ptr + 0x200
	if off >= pmStart || off >= len(data) {
		return ""
	}
	s := data[off:min(len(data), pmStart, off+256)]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		s = s[:i]
	}
	for _, c := range s {
		if c < 0x20 || c > 0x7e {
			return ""
		}
	}
	return string(s)
}
