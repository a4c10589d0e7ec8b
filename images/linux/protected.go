package linux

import (
	"fmt"

	"github.com/microvm/microvm/images"
)

// Entry64Offset is where the 64-bit entry (startup_64) lies in a bzImage's
// protected-mode code (boot protocol 2.12+, XLF_KERNEL_64).
const Entry64Offset = 0x200

// LoadProtected places the protected-mode code of a bzImage that declares
// no payload (Kernel.NoPayload: memtest86+ and other stand-alone programs
// that speak the Linux boot protocol) at code32_start (1 MiB when 0) and
// zeroes the memory after it up to init_size, which such a program uses
// for its BSS and stacks. The entry is code32_start + 0x200, the 64-bit
// entry, entered with the zero page in RSI like a vmlinux's startup_64.
// It checks everything before writing anything.
func LoadProtected(mem images.Memory, k *Kernel) (*LoadResult, error) {
	if k == nil || k.Header == nil || !k.NoPayload {
		return nil, fmt.Errorf("load protected-mode code: not a bzImage without a payload")
	}
	h := k.Header
	if h.Xloadflags&XLFKernel64 == 0 {
		return nil, errorf(ErrWrongArch, "bzImage without a payload has no 64-bit entry (xloadflags 0x%x lacks XLF_KERNEL_64)", h.Xloadflags)
	}
	start := uint64(h.Code32Start)
	if start == 0 {
		start = HighMemStart
	}
	size := max(uint64(len(k.Protected)), uint64(h.InitSize))
	if uint64(len(k.Protected)) <= Entry64Offset {
		return nil, errorf(ErrTruncated, "protected-mode code of %d bytes ends before its 64-bit entry at +0x%x", len(k.Protected), Entry64Offset)
	}
	if size > maxSegmentSize {
		return nil, errorf(ErrTooLarge, "protected-mode code needs 0x%x bytes (init_size), over the 1 GiB limit", size)
	}
	if start < HighMemStart {
		return nil, errorf(ErrBadImage, "code32_start 0x%x lies below 1 MiB, where the boot structures live", start)
	}
	regions := mem.Regions()
	if !images.InRAM(regions, start, size) {
		return nil, errorf(ErrDoesNotFit, "protected-mode code [0x%x, 0x%x) (init_size included) is not inside guest RAM (%s): give the VM more memory",
			start, start+size, describeRegions(regions))
	}
	if _, err := mem.WriteAt(k.Protected, int64(start)); err != nil {
		return nil, fmt.Errorf("write protected-mode code at 0x%x: %w", start, err)
	}
	if err := writeZeros(mem, start+uint64(len(k.Protected)), size-uint64(len(k.Protected))); err != nil {
		return nil, fmt.Errorf("zero the memory after the protected-mode code at 0x%x: %w", start+uint64(len(k.Protected)), err)
	}
	return &LoadResult{Entry: start + Entry64Offset, Start: start, End: alignUp(start+size, pageSize), Segments: 1}, nil
}
