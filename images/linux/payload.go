package linux

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Compression is a bzImage payload format.
type Compression int

// Payload formats, detected by their magic numbers as boot.rst lists them.
const (
	CompressionUnknown Compression = iota
	CompressionNone                // an uncompressed ELF (CONFIG_KERNEL_UNCOMPRESSED)
	CompressionGzip                // 1F 8B
	CompressionBzip2               // 42 5A 68 ("BZh")
	CompressionLZMA                // 5D 00 00 (.lzma "alone" header)
	CompressionXZ                  // FD 37 7A 58 5A 00
	CompressionLZ4                 // 02 21 4C 18 (the legacy frame, lz4 -l)
	CompressionZstd                // 28 B5 2F FD
	CompressionLZO                 // 89 4C 5A 4F (lzop): recognised, not supported
)

func (c Compression) String() string {
	switch c {
	case CompressionNone:
		return "none"
	case CompressionGzip:
		return "gzip"
	case CompressionBzip2:
		return "bzip2"
	case CompressionLZMA:
		return "lzma"
	case CompressionXZ:
		return "xz"
	case CompressionLZ4:
		return "lz4"
	case CompressionZstd:
		return "zstd"
	case CompressionLZO:
		return "lzo"
	}
	return "unknown"
}

// MarshalText makes a Compression print as its name in JSON.
func (c Compression) MarshalText() ([]byte, error) { return []byte(c.String()), nil }

// UnmarshalText parses a Compression name ("gzip", "xz", ...).
func (c *Compression) UnmarshalText(b []byte) error {
	for x := CompressionUnknown; x <= CompressionLZO; x++ {
		if x.String() == string(b) {
			*c = x
			return nil
		}
	}
	return fmt.Errorf("unknown compression %q", b)
}

// MaxDecompressed bounds a decompressed kernel (512 MiB). A vmlinux is tens
// of MiB; anything claiming more is refused before any work is done.
const MaxDecompressed = 512 << 20

// DetectCompression identifies a payload by its magic number.
func DetectCompression(p []byte) Compression {
	has := func(m ...byte) bool { return bytes.HasPrefix(p, m) }
	switch {
	case isELF(p):
		return CompressionNone
	case has(0x1f, 0x8b):
		return CompressionGzip
	case has('B', 'Z', 'h'):
		return CompressionBzip2
	case has(0x5d, 0x00, 0x00):
		return CompressionLZMA
	case has(0xfd, '7', 'z', 'X', 'Z', 0x00):
		return CompressionXZ
	case has(0x02, 0x21, 0x4c, 0x18):
		return CompressionLZ4
	case has(0x28, 0xb5, 0x2f, 0xfd):
		return CompressionZstd
	case has(0x89, 'L', 'Z', 'O'):
		return CompressionLZO
	}
	return CompressionUnknown
}

// DecompressPayload decodes a bzImage payload into the vmlinux bytes it
// holds, following the kernel build's conventions: the payload is the
// compressed stream followed by the uncompressed size as a little-endian
// u32 (gzip's own trailer plays that role; scripts/Makefile.lib appends it
// for the other formats). The decoded size must match that trailer.
// Output beyond MaxDecompressed is refused. The result is not checked to
// be an ELF; Decompress does that.
func DecompressPayload(ctx context.Context, p []byte) ([]byte, Compression, error) {
	c := DetectCompression(p)
	switch c {
	case CompressionNone:
		return p, c, nil
	case CompressionUnknown:
		n := min(len(p), 6)
		return nil, c, errorf(ErrUnsupportedCompression, "payload starts with % x, which is no known compression magic (gzip, bzip2, lzma, xz, lz4, zstd) nor an ELF", p[:n])
	case CompressionLZO:
		return nil, c, errorf(ErrUnsupportedCompression, "LZO-compressed kernels are not supported: rebuild with CONFIG_KERNEL_GZIP, _XZ, _LZ4 or _ZSTD")
	}
	if len(p) < 8 {
		return nil, c, errorf(ErrCorruptPayload, "%s payload of %d bytes is too short", c, len(p))
	}
	declared := uint64(binary.LittleEndian.Uint32(p[len(p)-4:]))
	if declared > MaxDecompressed {
		return nil, c, errorf(ErrTooLarge, "%s payload declares %d bytes uncompressed (its last 4 bytes), over the %d MiB limit: the payload is damaged or not a kernel", c, declared, MaxDecompressed>>20)
	}
	if declared == 0 {
		return nil, c, errorf(ErrCorruptPayload, "%s payload declares an uncompressed size of 0", c)
	}
	stream := p[:len(p)-4] // the compressed stream without the size trailer
	var (
		out []byte
		err error
	)
	switch c {
	case CompressionGzip:
		out, err = decodeGzip(ctx, p, declared)
	case CompressionBzip2:
		out, err = decodeBzip2(ctx, stream, declared)
	case CompressionLZMA:
		out, err = decodeLZMA(ctx, stream, declared)
	case CompressionXZ:
		out, err = decodeXZ(ctx, stream, declared)
	case CompressionLZ4:
		out, err = decodeLZ4Legacy(ctx, stream, declared)
	case CompressionZstd:
		out, err = decodeZstd(ctx, stream, declared)
	}
	if err != nil {
		var e *Error
		if errors.As(err, &e) || ctx.Err() != nil {
			return nil, c, err
		}
		return nil, c, wrapf(ErrCorruptPayload, err, "decode %s payload", c)
	}
	if uint64(len(out)) != declared {
		return nil, c, errorf(ErrCorruptPayload, "%s payload decoded to %d bytes but declares %d", c, len(out), declared)
	}
	return out, c, nil
}

// readAllLimited reads r to EOF, refusing more than limit bytes. hint is
// the compressed size: the buffer starts at a modest multiple of it so that
// a tiny input claiming a huge size does not allocate that size up front.
func readAllLimited(ctx context.Context, r io.Reader, limit uint64, hint int) ([]byte, error) {
	// +MinRead: ReadFrom wants that much room for its final, empty read;
	// without it an exactly-sized buffer would be reallocated at the end.
	capacity := min(limit, uint64(hint)*16+(1<<20)) + bytes.MinRead
	buf := bytes.NewBuffer(make([]byte, 0, capacity))
	cr := &ctxReader{ctx: ctx, r: r}
	n, err := buf.ReadFrom(io.LimitReader(cr, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if uint64(n) > limit {
		return nil, errorf(ErrCorruptPayload, "payload decodes to more than the %d bytes it declares", limit)
	}
	return buf.Bytes(), nil
}

// ctxReader makes a long decode stop when its context is cancelled.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// lz4LegacyMagic starts each legacy-format lz4 frame (lz4 -l), which is
// what the kernel build produces and lib/decompress_unlz4.c reads.
const lz4LegacyMagic = 0x184c2102

// lz4LegacyBlock is the uncompressed size of each block in a legacy frame.
const lz4LegacyBlock = 8 << 20

// growTo extends b to length n, reallocating when needed.
func growTo(b []byte, n int) []byte {
	if n <= cap(b) {
		return b[:n]
	}
	nb := make([]byte, n, max(n, 2*cap(b)))
	copy(nb, b)
	return nb
}
