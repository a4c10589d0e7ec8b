package images

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Format is a kind of bootable image.
type Format int

// Formats microvm knows.
const (
	FormatUnknown   Format = iota
	FormatELF              // tiny-guest ELF64 (ABI v1)
	FormatFlat             // flat binary entered at FlatLoadAddr
	FormatBzImage          // Linux bzImage
	FormatVmlinux          // Linux vmlinux ELF
	FormatMultiboot        // Multiboot v1 kernel (ELF or a.out kludge)
	FormatPVH              // ELF kernel entered through the Xen PVH 32-bit entry
)

var formatNames = []string{"unknown", "elf", "flat", "bzimage", "vmlinux", "multiboot", "pvh"}

// String returns the format's name as the --format flag spells it.
func (f Format) String() string {
	if int(f) < len(formatNames) {
		return formatNames[f]
	}
	return fmt.Sprintf("format-%d", int(f))
}

// ParseFormat maps a --format value to a Format; "auto" gives FormatUnknown.
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(s) {
	case "", "auto":
		return FormatUnknown, nil
	case "elf":
		return FormatELF, nil
	case "flat", "bin", "raw":
		return FormatFlat, nil
	case "bzimage":
		return FormatBzImage, nil
	case "vmlinux":
		return FormatVmlinux, nil
	case "multiboot":
		return FormatMultiboot, nil
	case "pvh":
		return FormatPVH, nil
	}
	return FormatUnknown, fmt.Errorf("unknown image format %q (want auto, elf, flat, bzimage, vmlinux, multiboot or pvh)", s)
}

// ErrBadImage wraps every error about the contents of an image, so callers
// can tell "the image is wrong" from "the host failed".
var ErrBadImage = errors.New("bad image")

func badImagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadImage, fmt.Sprintf(format, args...))
}

// Detect tells what data is. A flat binary has no signature, so Detect
// never returns FormatFlat: data it cannot recognise is an error that says
// how to boot it as flat anyway.
func Detect(data []byte) (Format, error) {
	switch {
	case len(data) == 0:
		return FormatUnknown, badImagef("the image is empty (0 bytes)")
	case IsBzImage(data):
		return FormatBzImage, nil
	case bytes.HasPrefix(data, []byte(elf.ELFMAG)):
		// A Linux vmlinux keeps its 64-bit Linux path even when built
		// with CONFIG_PVH (--format pvh takes the PVH entry); any other
		// ELF with a Xen PHYS32_ENTRY note is PVH, ahead of Multiboot, as
		// QEMU's -kernel decides.
		if IsLinuxELF(data) {
			return FormatVmlinux, nil
		}
		if HasPVHNote(data) {
			return FormatPVH, nil
		}
		if IsVmlinux(data) {
			return FormatVmlinux, nil
		}
		if HasMultibootHeader(data) {
			return FormatMultiboot, nil
		}
		return FormatELF, nil
	case HasMultibootHeader(data):
		return FormatMultiboot, nil
	}
	return FormatUnknown, badImagef("unrecognised image format (%d bytes, starts % x); not ELF64 or a Linux bzImage — use --format flat to boot a flat binary at %#x",
		len(data), data[:min(len(data), 8)], FlatLoadAddr)
}

// IsBzImage reports whether data carries a Linux boot-protocol setup header
// ("HdrS" at 0x202, boot flag 0xAA55 at 0x1FE).
func IsBzImage(data []byte) bool {
	return len(data) >= 0x206 &&
		binary.LittleEndian.Uint16(data[0x1fe:]) == 0xaa55 &&
		string(data[0x202:0x206]) == "HdrS"
}

// kernelVirtBase is where x86-64 Linux maps its text (__START_KERNEL_map).
const kernelVirtBase = 0xffffffff80000000

// IsVmlinux reports whether data is a Linux kernel ELF: an x86-64 ELF64
// whose entry lies in the kernel's virtual address range, or which carries
// a Linux or Xen (PVH) ELF note.
func IsVmlinux(data []byte) bool {
	f, err := ParseELF64(data)
	if err != nil {
		return false
	}
	if f.Entry >= kernelVirtBase {
		return true
	}
	for _, n := range f.Notes() {
		if n.Name == "Xen" || n.Name == "Linux" {
			return true
		}
	}
	return false
}

// HasMultibootHeader reports whether data carries a Multiboot v1 header
// (magic 0x1BADB002 with a valid checksum, 4-byte aligned in the first
// 8 KiB). A Linux kernel is detected before this is asked; package
// images/multiboot parses the header for real.
func HasMultibootHeader(data []byte) bool {
	const magic = 0x1BADB002
	le := binary.LittleEndian
	for off := 0; off+12 <= min(len(data), 8192); off += 4 {
		if le.Uint32(data[off:]) == magic && magic+le.Uint32(data[off+4:])+le.Uint32(data[off+8:]) == 0 {
			return true
		}
	}
	return false
}

// IsLinuxELF reports whether data is a Linux kernel ELF by Linux's own
// marks: an x86-64 ELF64 whose entry lies in the kernel's virtual range, or
// with a loadable segment linked there but loaded at a low physical
// address (a vmlinux is linked at __START_KERNEL_map; a PVH unikernel is
// identity-mapped), or which carries a "Linux" ELF note. (IsVmlinux also
// counts Xen notes.)
func IsLinuxELF(data []byte) bool {
	f, err := ParseELF64(data)
	if err != nil {
		return false
	}
	if f.Entry >= kernelVirtBase {
		return true
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Vaddr >= kernelVirtBase && p.Paddr < kernelVirtBase {
			return true
		}
	}
	for _, n := range f.Notes() {
		if n.Name == "Linux" {
			return true
		}
	}
	return false
}

// HasPVHNote reports whether data is an ELF (32- or 64-bit) with a PT_NOTE
// holding a "Xen" note of type XEN_ELFNOTE_PHYS32_ENTRY (18): a kernel with
// a PVH entry point. Package images/pvh parses and checks the note.
func HasPVHNote(data []byte) bool {
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return false
	}
	le := binary.LittleEndian
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE || p.Off > uint64(len(data)) || p.Filesz > uint64(len(data))-p.Off {
			continue
		}
		b := data[p.Off : p.Off+p.Filesz]
		for len(b) >= 12 {
			namesz, descsz := uint64(le.Uint32(b)), uint64(le.Uint32(b[4:]))
			step := 12 + (namesz+3)&^3 + (descsz+3)&^3
			if 12+namesz > uint64(len(b)) {
				break
			}
			if string(bytes.TrimRight(b[12:12+namesz], "\x00")) == "Xen" && le.Uint32(b[8:]) == 18 {
				return true
			}
			if step > uint64(len(b)) {
				break
			}
			b = b[step:]
		}
	}
	return false
}
