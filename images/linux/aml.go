package linux

import (
	"encoding/binary"
	"fmt"
)

// A minimal ACPI Machine Language (AML) encoder: the few objects a DSDT
// describing fixed devices needs (ACPI 6.5, chapter 20 "ACPI Machine
// Language Specification" and section 6.4 "Resource Data Types"). Every
// function returns the encoded bytes; nothing here evaluates AML.

// AML opcodes and prefixes.
const (
	amlZeroOp       = 0x00
	amlOneOp        = 0x01
	amlNameOp       = 0x08
	amlBytePrefix   = 0x0a
	amlWordPrefix   = 0x0b
	amlDWordPrefix  = 0x0c
	amlStringPrefix = 0x0d
	amlQWordPrefix  = 0x0e
	amlScopeOp      = 0x10
	amlBufferOp     = 0x11
	amlExtOpPrefix  = 0x5b
	amlDeviceOp     = 0x82 // after amlExtOpPrefix
	amlRootChar     = '\\'
)

// Resource descriptor tags (section 6.4).
const (
	resIO             = 0x47 // small: I/O port descriptor, 8 bytes
	resEndTag         = 0x79 // small: end tag, 2 bytes
	resMemory32Fixed  = 0x86 // large: 32-bit fixed memory range
	resExtendedInterr = 0x89 // large: extended interrupt
)

// amlMaxPkgLength is the largest value a PkgLength can encode (28 bits).
const amlMaxPkgLength = 1<<28 - 1

// nameSeg checks a 4-character ACPI name segment: a leading letter or
// underscore, then letters, digits or underscores.
func nameSeg(s string) ([]byte, error) {
	if len(s) != 4 {
		return nil, fmt.Errorf("aml: name %q: want 4 characters", s)
	}
	for i := 0; i < 4; i++ {
		c := s[i]
		ok := c == '_' || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			return nil, fmt.Errorf("aml: name %q: character %q not allowed", s, c)
		}
	}
	return []byte(s), nil
}

// pkgLength encodes the PkgLength of an object whose contents after the
// PkgLength are n bytes long; the encoded length counts its own bytes.
func pkgLength(n int) ([]byte, error) {
	if n+1 < 0x40 {
		return []byte{byte(n + 1)}, nil
	}
	for size := 2; size <= 4; size++ {
		total := n + size
		if total < 1<<(4+8*(size-1)) {
			b := make([]byte, size)
			b[0] = byte(size-1)<<6 | byte(total&0x0f)
			for i := 1; i < size; i++ {
				b[i] = byte(total >> (4 + 8*(i-1)))
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("aml: object of %d bytes exceeds the largest PkgLength (%d)", n, amlMaxPkgLength)
}

// amlInteger encodes v with the smallest integer encoding.
func amlInteger(v uint64) []byte {
	switch {
	case v == 0:
		return []byte{amlZeroOp}
	case v == 1:
		return []byte{amlOneOp}
	case v <= 0xff:
		return []byte{amlBytePrefix, byte(v)}
	case v <= 0xffff:
		return binary.LittleEndian.AppendUint16([]byte{amlWordPrefix}, uint16(v))
	case v <= 0xffffffff:
		return binary.LittleEndian.AppendUint32([]byte{amlDWordPrefix}, uint32(v))
	}
	return binary.LittleEndian.AppendUint64([]byte{amlQWordPrefix}, v)
}

// amlString encodes a NUL-terminated ASCII string constant.
func amlString(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 || s[i] > 0x7f {
			return nil, fmt.Errorf("aml: string %q: want ASCII without NUL", s)
		}
	}
	b := append([]byte{amlStringPrefix}, s...)
	return append(b, 0), nil
}

// amlName encodes Name(name, value).
func amlName(name string, value []byte) ([]byte, error) {
	seg, err := nameSeg(name)
	if err != nil {
		return nil, err
	}
	b := append([]byte{amlNameOp}, seg...)
	return append(b, value...), nil
}

// amlPackaged encodes op, a PkgLength and the concatenated body.
func amlPackaged(op []byte, head []byte, body [][]byte) ([]byte, error) {
	content := append([]byte(nil), head...)
	for _, b := range body {
		content = append(content, b...)
	}
	pl, err := pkgLength(len(content))
	if err != nil {
		return nil, err
	}
	out := append(append([]byte(nil), op...), pl...)
	return append(out, content...), nil
}

// amlScope encodes Scope(\name) { body }, name a root-relative name
// segment such as "_SB_".
func amlScope(name string, body ...[]byte) ([]byte, error) {
	seg, err := nameSeg(name)
	if err != nil {
		return nil, err
	}
	return amlPackaged([]byte{amlScopeOp}, append([]byte{amlRootChar}, seg...), body)
}

// amlDevice encodes Device(name) { body }.
func amlDevice(name string, body ...[]byte) ([]byte, error) {
	seg, err := nameSeg(name)
	if err != nil {
		return nil, err
	}
	return amlPackaged([]byte{amlExtOpPrefix, amlDeviceOp}, seg, body)
}

// amlResourceTemplate encodes ResourceTemplate() { descriptors }: a
// Buffer holding the descriptors and an end tag (checksum 0: "treat as
// correct").
func amlResourceTemplate(descs ...[]byte) ([]byte, error) {
	var data []byte
	for _, d := range descs {
		data = append(data, d...)
	}
	data = append(data, resEndTag, 0)
	return amlPackaged([]byte{amlBufferOp}, amlInteger(uint64(len(data))), [][]byte{data})
}

// resMemory32 encodes Memory32Fixed(ReadWrite, base, size).
func resMemory32(base, size uint32) []byte {
	b := []byte{resMemory32Fixed, 9, 0, 1} // length 9, read/write
	b = binary.LittleEndian.AppendUint32(b, base)
	return binary.LittleEndian.AppendUint32(b, size)
}

// resIOPort encodes IO(Decode16, base, base, 1, length).
func resIOPort(base uint16, length uint8) []byte {
	b := []byte{resIO, 1} // 16-bit decode
	b = binary.LittleEndian.AppendUint16(b, base)
	b = binary.LittleEndian.AppendUint16(b, base)
	return append(b, 1, length)
}

// resInterrupt encodes Interrupt(ResourceConsumer, Edge, ActiveHigh,
// Exclusive) { gsi }: the edge-triggered line an irqfd drives.
func resInterrupt(gsi uint32) []byte {
	const consumer, edge = 1 << 0, 1 << 1
	b := []byte{resExtendedInterr, 6, 0, consumer | edge, 1}
	return binary.LittleEndian.AppendUint32(b, gsi)
}
