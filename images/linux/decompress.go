package linux

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// DecompressInfo reports how the vmlinux behind a kernel image was obtained.
type DecompressInfo struct {
	// Compression of the bzImage payload; CompressionNone for a vmlinux
	// or an uncompressed payload.
	Compression Compression `json:"compression"`
	// CompressedSize and Size are the payload and vmlinux sizes in bytes.
	CompressedSize int `json:"compressed_size"`
	Size           int `json:"size"`
	// Duration is the time spent decompressing (or reading and verifying
	// the cache entry when Cached).
	Duration time.Duration `json:"duration_ns"`
	// Cached is true when the result came from the cache directory.
	Cached bool `json:"cached"`
	// CacheFile is the cache entry used or written ("" without a cache).
	CacheFile string `json:"cache_file,omitempty"`
	// ImageSHA256 is the hex SHA-256 of the whole kernel image: the cache key.
	ImageSHA256 string `json:"image_sha256,omitempty"`
}

// Decompress returns the vmlinux ELF behind k and what it took. A bare
// vmlinux is returned as is. A bzImage's payload is decompressed on the
// host (gzip, bzip2, lzma, xz, lz4 or zstd, detected by magic), checked to
// be an x86-64 ELF, and — when cacheDir is not empty — cached there under
// the SHA-256 of the whole image, so the next boot of the same image skips
// the work. Cache entries are written atomically (temporary file + rename)
// and carry the SHA-256 of their content; an entry that fails that check is
// decompressed again and rewritten. A cache that cannot be written is not
// an error (the result is still returned).
func Decompress(ctx context.Context, k *Kernel, cacheDir string) ([]byte, *DecompressInfo, error) {
	start := time.Now()
	if k.Format == FormatELF {
		return k.Data, &DecompressInfo{Compression: CompressionNone, CompressedSize: len(k.Data), Size: len(k.Data)}, nil
	}
	if k.NoPayload {
		return nil, nil, errorf(ErrBadImage, "bzImage declares no payload: there is no vmlinux inside; its protected-mode code is the kernel (Load places it with LoadProtected)")
	}
	info := &DecompressInfo{Compression: k.Compression, CompressedSize: len(k.Payload)}
	if k.Compression == CompressionNone {
		// An uncompressed ELF payload: nothing to decompress or cache.
		if _, err := parseELF(k.Payload); err != nil {
			return nil, nil, fmt.Errorf("vmlinux inside the bzImage: %w", err)
		}
		info.Size = len(k.Payload)
		info.Duration = time.Since(start)
		return k.Payload, info, nil
	}
	var path string
	if cacheDir != "" {
		sum := sha256.Sum256(k.Data)
		info.ImageSHA256 = hex.EncodeToString(sum[:])
		path = filepath.Join(cacheDir, "vmlinux-"+info.ImageSHA256)
		if out, ok := readCacheEntry(path); ok {
			if _, err := parseELF(out); err == nil {
				info.Cached, info.CacheFile = true, path
				info.Size = len(out)
				info.Duration = time.Since(start)
				return out, info, nil
			}
		}
	}
	out, c, err := DecompressPayload(ctx, k.Payload)
	if err != nil {
		return nil, nil, err
	}
	info.Compression = c
	if !isELF(out) {
		return nil, nil, errorf(ErrCorruptPayload, "%s payload decoded to %d bytes that are not an ELF (start % x)", c, len(out), out[:min(len(out), 4)])
	}
	if _, err := parseELF(out); err != nil {
		return nil, nil, fmt.Errorf("vmlinux inside the bzImage: %w", err)
	}
	info.Size = len(out)
	info.Duration = time.Since(start)
	if path != "" {
		if err := writeCacheEntry(path, out); err == nil {
			info.CacheFile = path
		}
	}
	return out, info, nil
}

// Cache entry format: magic, the SHA-256 of the content, the content length
// (u64 LE), then the content.
var cacheMagic = []byte("microvm-vmlinux-cache-1\n")

const cacheHeaderLen = 24 + sha256.Size + 8

func readCacheEntry(path string) ([]byte, bool) {
	b, err := os.ReadFile(path)
	if err != nil || len(b) < cacheHeaderLen || !bytes.HasPrefix(b, cacheMagic) {
		return nil, false
	}
	sum := b[len(cacheMagic) : len(cacheMagic)+sha256.Size]
	n := binary.LittleEndian.Uint64(b[len(cacheMagic)+sha256.Size:])
	body := b[cacheHeaderLen:]
	if uint64(len(body)) != n {
		return nil, false
	}
	got := sha256.Sum256(body)
	if !bytes.Equal(got[:], sum) {
		return nil, false
	}
	return body, true
}

func writeCacheEntry(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".vmlinux-*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	sum := sha256.Sum256(data)
	hdr := make([]byte, 0, cacheHeaderLen)
	hdr = append(hdr, cacheMagic...)
	hdr = append(hdr, sum[:]...)
	hdr = binary.LittleEndian.AppendUint64(hdr, uint64(len(data)))
	if _, err = f.Write(hdr); err != nil {
		return err
	}
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
