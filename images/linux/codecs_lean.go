//go:build microvm_lean

package linux

import "context"

// The lean build (the microvm_lean tag, cmd/microvm-vmm) has no payload
// codecs: see codecs.go. An uncompressed kernel (a vmlinux, or a bzImage
// with CONFIG_KERNEL_UNCOMPRESSED) still boots.

func errLean(c Compression) error {
	return errorf(ErrUnsupportedCompression, "%s payload: this lean build (microvm-vmm) has no decompressors; boot compressed kernels with microvm boot", c)
}

func decodeGzip(context.Context, []byte, uint64) ([]byte, error) {
	return nil, errLean(CompressionGzip)
}
func decodeBzip2(context.Context, []byte, uint64) ([]byte, error) {
	return nil, errLean(CompressionBzip2)
}
func decodeLZMA(context.Context, []byte, uint64) ([]byte, error) {
	return nil, errLean(CompressionLZMA)
}
func decodeXZ(context.Context, []byte, uint64) ([]byte, error) { return nil, errLean(CompressionXZ) }
func decodeZstd(context.Context, []byte, uint64) ([]byte, error) {
	return nil, errLean(CompressionZstd)
}
func decodeLZ4Legacy(context.Context, []byte, uint64) ([]byte, error) {
	return nil, errLean(CompressionLZ4)
}
