//go:build !microvm_lean

package linux

// The payload codecs. A build with the microvm_lean tag (the lean VMM
// binary, cmd/microvm-vmm) leaves them out, and with them the
// initialisers of their packages, which every process start pays for
// (codecs_lean.go; docs/lean.md).

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"context"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz/lzma"
)

func decodeBzip2(ctx context.Context, stream []byte, declared uint64) ([]byte, error) {
	return readAllLimited(ctx, bzip2.NewReader(bytes.NewReader(stream)), declared, len(stream))
}

func decodeGzip(ctx context.Context, p []byte, declared uint64) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(p))
	if err != nil {
		return nil, err
	}
	zr.Multistream(false)
	return readAllLimited(ctx, zr, declared, len(p))
}

// dictFor bounds an LZMA dictionary: no match distance can exceed the
// output, so a dictionary bigger than the output only wastes memory (and a
// damaged header could ask for gigabytes). The output is bounded by the
// declared size and, for anything kernel-like, by 64× the compressed size
// (kernels compress 3–6×).
func dictFor(headerDict, declared uint64, streamLen int) uint64 {
	bound := min(declared, uint64(streamLen)*64+(1<<20))
	d := uint64(lzma.MinDictCap)
	for d < bound && d < headerDict {
		d <<= 1
	}
	return min(d, max(headerDict, lzma.MinDictCap))
}

func decodeLZMA(ctx context.Context, stream []byte, declared uint64) ([]byte, error) {
	if len(stream) < lzma.HeaderLen {
		return nil, errorf(ErrCorruptPayload, "lzma payload of %d bytes is shorter than the 13-byte header", len(stream))
	}
	hdr := bytes.Clone(stream[:lzma.HeaderLen])
	if size := binary.LittleEndian.Uint64(hdr[5:]); size != ^uint64(0) && size != declared {
		return nil, errorf(ErrCorruptPayload, "lzma header says %d bytes uncompressed, the payload trailer %d", size, declared)
	}
	dict := dictFor(uint64(binary.LittleEndian.Uint32(hdr[1:])), declared, len(stream))
	binary.LittleEndian.PutUint32(hdr[1:], uint32(dict))
	r := io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(stream[lzma.HeaderLen:]))
	zr, err := lzma.ReaderConfig{DictCap: int(max(dict, lzma.MinDictCap))}.NewReader(r)
	if err != nil {
		return nil, err
	}
	return readAllLimited(ctx, zr, declared, len(stream))
}

func decodeZstd(ctx context.Context, stream []byte, declared uint64) ([]byte, error) {
	// zstd -22 --ultra (the kernel's zstd22) declares windows up to 128 MiB
	// even for smaller outputs; the library caps the window by the output
	// limit, so that limit must be at least 128 MiB. DecodeAll decodes
	// into the output buffer directly and needs no separate window.
	const maxWindow = 1 << 27
	zd, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(max(declared, maxWindow)),
		zstd.WithDecoderMaxWindow(maxWindow))
	if err != nil {
		return nil, err
	}
	defer zd.Close()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	out, err := zd.DecodeAll(stream, make([]byte, 0, min(declared, uint64(len(stream))*16+(1<<20))))
	if err != nil {
		return nil, err
	}
	return out, nil
}

// decodeLZ4Legacy decodes the legacy lz4 frame format: the magic, then
// blocks of (u32 LE compressed size, lz4 block) each decoding to 8 MiB
// except the last; a repeated magic starts a concatenated frame.
func decodeLZ4Legacy(ctx context.Context, stream []byte, declared uint64) ([]byte, error) {
	le := binary.LittleEndian
	if len(stream) < 4 || le.Uint32(stream) != lz4LegacyMagic {
		return nil, errorf(ErrCorruptPayload, "lz4 payload is not in the legacy frame format (lz4 -l)")
	}
	in := stream[4:]
	out := make([]byte, 0, min(declared, uint64(len(stream))*16+(1<<20)))
	for len(in) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if len(in) < 4 {
			return nil, errorf(ErrCorruptPayload, "lz4 stream ends with %d stray bytes", len(in))
		}
		n := le.Uint32(in)
		in = in[4:]
		if n == lz4LegacyMagic {
			continue
		}
		if n == 0 {
			break
		}
		if uint64(n) > uint64(len(in)) {
			return nil, errorf(ErrCorruptPayload, "lz4 block of %d bytes runs past the %d bytes left", n, len(in))
		}
		room := min(lz4LegacyBlock, declared-uint64(len(out))+1)
		if room == 1 && uint64(len(out)) == declared {
			return nil, errorf(ErrCorruptPayload, "lz4 stream continues after the %d bytes it declares", declared)
		}
		out = growTo(out, len(out)+int(room))
		k, err := lz4.UncompressBlock(in[:n], out[len(out)-int(room):])
		if err != nil {
			return nil, fmt.Errorf("lz4 block at stream offset %d: %w", len(stream)-len(in)-4, err)
		}
		out = out[:len(out)-int(room)+k]
		if uint64(len(out)) > declared {
			return nil, errorf(ErrCorruptPayload, "lz4 payload decodes to more than the %d bytes it declares", declared)
		}
		in = in[n:]
	}
	return out, nil
}
