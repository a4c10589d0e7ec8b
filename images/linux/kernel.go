package linux

import (
	"encoding/binary"
	"fmt"
)

// Format is the container a kernel image comes in.
type Format int

const (
	// FormatBzImage is a bzImage: setup header, real-mode setup code,
	// protected-mode decompressor and a compressed vmlinux payload.
	FormatBzImage Format = iota + 1
	// FormatELF is an uncompressed vmlinux ELF.
	FormatELF
)

func (f Format) String() string {
	switch f {
	case FormatBzImage:
		return "bzImage"
	case FormatELF:
		return "vmlinux"
	}
	return "unknown"
}

// MarshalText makes a Format print as its name in JSON.
func (f Format) MarshalText() ([]byte, error) { return []byte(f.String()), nil }

// UnmarshalText parses "bzImage" or "vmlinux".
func (f *Format) UnmarshalText(b []byte) error {
	for _, x := range []Format{FormatBzImage, FormatELF} {
		if x.String() == string(b) {
			*f = x
			return nil
		}
	}
	return fmt.Errorf("unknown kernel format %q", b)
}

// Kernel is a parsed kernel image. Parse fills it; Decompress turns a
// bzImage into the vmlinux ELF that LoadELF places.
type Kernel struct {
	Format Format
	// Data is the whole image as given to Parse.
	Data []byte

	// Header is the bzImage setup header; nil for a bare vmlinux.
	Header *SetupHeader
	// Protected is the protected-mode part of a bzImage (what a boot
	// loader would place at 1 MiB; its 64-bit entry is at offset 0x200).
	Protected []byte
	// Payload is the bzImage's payload bytes (compressed vmlinux).
	Payload []byte
	// Compression is the payload's format, detected by magic number.
	Compression Compression
	// NoPayload marks a bzImage that declares no payload (payload_offset
	// and payload_length 0, protocol 2.12+, XLF_KERNEL_64), such as
	// memtest86+: its protected-mode code is the kernel itself, placed at
	// code32_start and entered at its 64-bit entry (LoadProtected).
	NoPayload bool

	// ELF describes a bare vmlinux; nil for a bzImage until decompressed.
	ELF *ELFInfo
}

// Parse recognises a Linux kernel image: a bzImage (by its "HdrS" setup
// header, which is checked: protocol version, 64-bit entry, payload bounds)
// or an x86-64 vmlinux ELF (program headers checked). It does not
// decompress anything; see Decompress.
func Parse(data []byte) (*Kernel, error) {
	switch {
	case isBzImage(data):
		return parseBzImage(data)
	case isELF(data):
		info, err := parseELF(data)
		if err != nil {
			return nil, err
		}
		return &Kernel{Format: FormatELF, Data: data, ELF: info}, nil
	case len(data) >= offHeaderMagic+4 && binary.LittleEndian.Uint32(data[offHeaderMagic:]) == headerMagic:
		return nil, errorf(ErrNotLinux, "\"HdrS\" magic present but no 0xAA55 boot flag at 0x1fe: a damaged bzImage")
	}
	return nil, errorf(ErrNotLinux, "neither a bzImage (no \"HdrS\" setup header at 0x202) nor an ELF vmlinux")
}

// IsLinux reports whether data is a Linux kernel image: a bzImage (boot
// flag and "HdrS" magic), or an x86-64 ELF that is a vmlinux rather than a
// tiny freestanding guest — it carries Linux or Xen ELF notes, or its entry
// or a segment lies in the kernel's virtual range (0xffffffff80000000 and
// up). It is cheap and never fails; Parse does the full checks.
func IsLinux(data []byte) bool {
	if isBzImage(data) {
		return true
	}
	if !isELF(data) {
		return false
	}
	info, err := parseELF(data)
	if err != nil {
		return false
	}
	return looksLikeVmlinux(info, binary.LittleEndian.Uint64(data[24:]))
}
