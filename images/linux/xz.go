//go:build !microvm_lean

package linux

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// The kernel compresses with `xz --check=crc32 --x86 --lzma2=dict=32MiB`
// (scripts/xz_wrap.sh): an .xz stream whose block filter chain is the x86
// BCJ filter followed by LZMA2. github.com/ulikunitz/xz decodes LZMA2 but
// not BCJ filter chains, so this file reads the .xz container itself
// (tukaani.org/xz/xz-file-format.txt), decodes each block's LZMA2 data with
// ulikunitz/xz/lzma and undoes the x86 BCJ filter on the result.

const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21
	xzCheckNone   = 0x00
	xzCheckCRC32  = 0x01
	xzCheckCRC64  = 0x04
	xzCheckSHA256 = 0x0a
)

func decodeXZ(ctx context.Context, stream []byte, declared uint64) ([]byte, error) {
	bad := func(format string, args ...any) error {
		return errorf(ErrCorruptPayload, "xz: "+format, args...)
	}
	if len(stream) < 12 {
		return nil, bad("stream of %d bytes is shorter than its header", len(stream))
	}
	flags := stream[6:8]
	if crc32.ChecksumIEEE(flags) != binary.LittleEndian.Uint32(stream[8:]) {
		return nil, bad("stream header CRC mismatch")
	}
	if flags[0] != 0 || flags[1]&0xf0 != 0 {
		return nil, bad("unsupported stream flags % x", flags)
	}
	check := flags[1] & 0x0f
	var checkSize int
	switch check {
	case xzCheckNone:
	case xzCheckCRC32:
		checkSize = 4
	case xzCheckCRC64:
		checkSize = 8
	case xzCheckSHA256:
		checkSize = 32
	default:
		return nil, bad("unsupported check type %d", check)
	}
	in := stream[12:]
	var out []byte
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(in) == 0 {
			return nil, bad("stream ends before its index")
		}
		if in[0] == 0 { // index indicator: no more blocks
			break
		}
		hdrSize := (int(in[0]) + 1) * 4
		if hdrSize > len(in) {
			return nil, bad("block header runs past the stream")
		}
		hdr := in[:hdrSize]
		if crc32.ChecksumIEEE(hdr[:hdrSize-4]) != binary.LittleEndian.Uint32(hdr[hdrSize-4:]) {
			return nil, bad("block header CRC mismatch")
		}
		bf, err := parseXZBlockHeader(hdr[1 : hdrSize-4])
		if err != nil {
			return nil, err
		}
		in = in[hdrSize:]

		dict := dictFor(uint64(bf.dict), declared, len(in))
		br := bytes.NewReader(in)
		zr, err := lzma.Reader2Config{DictCap: int(dict)}.NewReader2(br)
		if err != nil {
			return nil, err
		}
		room := declared - uint64(len(out))
		block, err := readAllLimited(ctx, zr, room, len(in))
		if err != nil {
			return nil, err
		}
		used := len(in) - br.Len()
		if bf.compressed >= 0 && int64(used) != bf.compressed {
			return nil, bad("block compressed size %d, header says %d", used, bf.compressed)
		}
		if bf.uncompressed >= 0 && int64(len(block)) != bf.uncompressed {
			return nil, bad("block uncompressed size %d, header says %d", len(block), bf.uncompressed)
		}
		if bf.x86 {
			bcjX86Decode(block, bf.x86Start)
		}
		in = in[used:]
		pad := (4 - used%4) % 4
		if len(in) < pad+checkSize {
			return nil, bad("stream ends inside block padding or check")
		}
		for _, b := range in[:pad] {
			if b != 0 {
				return nil, bad("non-zero block padding")
			}
		}
		in = in[pad:]
		if !xzCheckOK(check, block, in[:checkSize]) {
			return nil, bad("block check (type %d) mismatch: the data is corrupt", check)
		}
		in = in[checkSize:]
		out = append(out, block...)
	}
	return out, nil
}

type xzBlockFilters struct {
	compressed, uncompressed int64 // -1 when absent
	dict                     uint32
	x86                      bool
	x86Start                 uint32
}

// parseXZBlockHeader reads block flags, optional sizes and the filter
// flags. b excludes the header size byte and the CRC32.
func parseXZBlockHeader(b []byte) (*xzBlockFilters, error) {
	bad := func(format string, args ...any) error {
		return errorf(ErrCorruptPayload, "xz block header: "+format, args...)
	}
	if len(b) < 1 {
		return nil, bad("empty")
	}
	flags := b[0]
	b = b[1:]
	if flags&0x3c != 0 {
		return nil, bad("reserved flags set")
	}
	bf := &xzBlockFilters{compressed: -1, uncompressed: -1}
	r := bytes.NewReader(b)
	if flags&0x40 != 0 {
		v, err := xzVarint(r)
		if err != nil || v == 0 || v > 1<<40 {
			return nil, bad("bad compressed size")
		}
		bf.compressed = int64(v)
	}
	if flags&0x80 != 0 {
		v, err := xzVarint(r)
		if err != nil || v > 1<<40 {
			return nil, bad("bad uncompressed size")
		}
		bf.uncompressed = int64(v)
	}
	nfilters := int(flags&3) + 1
	for i := range nfilters {
		id, err := xzVarint(r)
		if err != nil {
			return nil, bad("truncated filter flags")
		}
		psize, err := xzVarint(r)
		if err != nil || psize > uint64(r.Len()) {
			return nil, bad("truncated filter properties")
		}
		props := make([]byte, psize)
		_, _ = io.ReadFull(r, props)
		last := i == nfilters-1
		switch {
		case id == xzFilterLZMA2 && last:
			if len(props) != 1 || props[0] > 40 {
				return nil, bad("bad LZMA2 properties")
			}
			bits := uint32(props[0])
			if bits == 40 {
				bf.dict = 0xffffffff
			} else {
				bf.dict = (2 | bits&1) << (bits/2 + 11)
			}
		case id == xzFilterX86 && !last && !bf.x86:
			bf.x86 = true
			switch len(props) {
			case 0:
			case 4:
				bf.x86Start = binary.LittleEndian.Uint32(props)
			default:
				return nil, bad("bad x86 BCJ properties")
			}
		default:
			return nil, errorf(ErrUnsupportedCompression,
				"xz filter 0x%x at position %d: only the x86 BCJ and LZMA2 filters (what the kernel build uses) are supported", id, i)
		}
	}
	for r.Len() > 0 {
		if c, _ := r.ReadByte(); c != 0 {
			return nil, bad("non-zero header padding")
		}
	}
	return bf, nil
}

// xzVarint reads the .xz multibyte integer (7 bits per byte, little-endian,
// at most 9 bytes).
func xzVarint(r io.ByteReader) (uint64, error) {
	var v uint64
	for i := 0; i < 9; i++ {
		c, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		v |= uint64(c&0x7f) << (7 * i)
		if c&0x80 == 0 {
			if i > 0 && c == 0 {
				return 0, io.ErrUnexpectedEOF
			}
			return v, nil
		}
	}
	return 0, io.ErrUnexpectedEOF
}

func xzCheckOK(kind byte, data, want []byte) bool {
	switch kind {
	case xzCheckNone:
		return true
	case xzCheckCRC32:
		return crc32.ChecksumIEEE(data) == binary.LittleEndian.Uint32(want)
	case xzCheckCRC64:
		// MakeTable here, not in a package variable: its tables (32 KiB)
		// are built on first use, not in every microvm process's start.
		return crc64.Checksum(data, crc64.MakeTable(crc64.ECMA)) == binary.LittleEndian.Uint64(want)
	case xzCheckSHA256:
		sum := sha256.Sum256(data)
		return bytes.Equal(sum[:], want)
	}
	return false
}

// bcjX86Decode undoes the x86 BCJ filter in place: the encoder turned the
// relative targets of E8 (call) and E9 (jmp) instructions into absolute
// ones to help compression. This is the decoder from xz-embedded
// (linux/lib/xz/xz_dec_bcj.c, public domain), applied to the whole buffer
// in one call; startOffset is the filter's start offset property.
func bcjX86Decode(buf []byte, startOffset uint32) {
	maskToAllowed := [8]bool{true, true, true, false, true, false, false, false}
	maskToBitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	test86MSByte := func(b byte) bool { return b == 0x00 || b == 0xff }

	size := len(buf)
	if size <= 4 {
		return
	}
	prevPos := -1
	prevMask := uint32(0)
	end := size - 4
	i := 0
	for ; i < end; i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		d := i - prevPos
		if d > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << uint(d-1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(maskToBitNum[prevMask])]
				if !maskToAllowed[prevMask] || test86MSByte(b) {
					prevPos = i
					prevMask = (prevMask << 1) | 1
					continue
				}
			}
		}
		prevPos = i
		if test86MSByte(buf[i+4]) {
			src := binary.LittleEndian.Uint32(buf[i+1:])
			var dest uint32
			for {
				dest = src - (startOffset + uint32(i) + 5)
				if prevMask == 0 {
					break
				}
				j := maskToBitNum[prevMask] * 8
				b := byte(dest >> (24 - j))
				if !test86MSByte(b) {
					break
				}
				src = dest ^ ((1 << (32 - j)) - 1)
			}
			dest &= 0x01ffffff
			dest |= 0 - (dest & 0x01000000)
			binary.LittleEndian.PutUint32(buf[i+1:], dest)
			i += 4
		} else {
			prevMask = (prevMask << 1) | 1
		}
	}
}
