package linux

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"testing"
)

// Real kernels come from the make targets (mk/kernel.mk): `make
// debian-kernel` sets MICROVM_DEBIAN_KERNEL (Debian's cloud bzImage, lz4),
// `make kernel` sets MICROVM_KERNEL_BZIMAGE and MICROVM_KERNEL_VMLINUX (the
// lean kernel, xz). Without them these tests skip, loudly.

type realKernel struct {
	name, env string
}

var realKernels = []realKernel{
	{"debian-cloud-bzImage", "MICROVM_DEBIAN_KERNEL"},
	{"lean-bzImage", "MICROVM_KERNEL_BZIMAGE"},
	{"lean-vmlinux", "MICROVM_KERNEL_VMLINUX"},
}

func readRealKernel(t testing.TB, env string) []byte {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		t.Skipf("SKIPPED: %s is not set: run `make test` (or `make debian-kernel kernel`) to build/fetch the real kernel", env)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("%s=%s: %v", env, p, err)
	}
	return data
}

func TestRealKernels(t *testing.T) {
	for _, rk := range realKernels {
		t.Run(rk.name, func(t *testing.T) {
			data := readRealKernel(t, rk.env)
			if !IsLinux(data) {
				t.Fatalf("IsLinux = false")
			}
			k, err := Parse(data)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if k.Format == FormatBzImage {
				h := k.Header
				if h.Version < 0x020c || h.Xloadflags&XLFKernel64 == 0 {
					t.Errorf("header version %s xloadflags %#x", h.ProtocolString(), h.Xloadflags)
				}
				if h.CmdlineSize < 255 {
					t.Errorf("cmdline_size = %d", h.CmdlineSize)
				}
				if h.KernelVersion == "" {
					t.Errorf("no kernel version string")
				}
				t.Logf("%s: protocol %s, %s payload %d bytes, init_size %#x, version %q",
					rk.name, h.ProtocolString(), k.Compression, len(k.Payload), h.InitSize, h.KernelVersion)
			}
			cache := t.TempDir()
			vmlinux, info, err := Decompress(context.Background(), k, cache)
			if err != nil {
				t.Fatalf("Decompress: %v", err)
			}
			t.Logf("%s: %s → %d bytes in %v", rk.name, info.Compression, info.Size, info.Duration)
			if k.Format == FormatBzImage {
				if info.Cached || info.CacheFile == "" {
					t.Errorf("first Decompress: cached=%v file=%q", info.Cached, info.CacheFile)
				}
				again, info2, err := Decompress(context.Background(), k, cache)
				if err != nil || !info2.Cached || !bytes.Equal(again, vmlinux) {
					t.Fatalf("second Decompress: cached=%v equal=%v err=%v", info2 != nil && info2.Cached, bytes.Equal(again, vmlinux), err)
				}
				t.Logf("%s: cache hit in %v", rk.name, info2.Duration)
			}

			mem := newFakeMemory(512 << 20)
			initrd := bytes.Repeat([]byte("initrd!\n"), 4096)
			boot, err := Load(context.Background(), mem, Config{
				Kernel: data, Initrd: initrd, Cmdline: "console=ttyS0 panic=-1", CPUs: 2, CacheDir: cache,
			})
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if boot.Entry != 0x1000000 {
				t.Errorf("entry = %#x, want 0x1000000 (startup_64 at CONFIG_PHYSICAL_START)", boot.Entry)
			}
			// startup_64 must be there: the vmlinux's first text bytes.
			lr := boot.Loaded
			if lr.Start != 0x1000000 || lr.End <= lr.Start {
				t.Errorf("kernel at [%#x, %#x)", lr.Start, lr.End)
			}
			einfo, err := parseELF(vmlinux)
			if err != nil {
				t.Fatal(err)
			}
			seg := einfo.Segments[0]
			want := vmlinux[seg.Offset : seg.Offset+64]
			if got := mem.read(seg.Paddr, 64); !bytes.Equal(got, want) {
				t.Errorf("first segment bytes differ in memory")
			}
			checkZeroPage(t, mem, k.Header, "console=ttyS0 panic=-1", boot.Layout, len(initrd))
			if got := mem.read(boot.Layout.InitrdAddr, len(initrd)); !bytes.Equal(got, initrd) {
				t.Errorf("initrd bytes differ in memory")
			}
			if boot.Layout.InitrdAddr < lr.End || boot.Layout.InitrdAddr+uint64(len(initrd)) > 512<<20 {
				t.Errorf("initrd at %#x overlaps kernel end %#x or RAM end", boot.Layout.InitrdAddr, lr.End)
			}
		})
	}
}

// checkZeroPage checks the fields Write must set in struct boot_params.
func checkZeroPage(t *testing.T, mem *fakeMemory, hdr *SetupHeader, cmdline string, l *Layout, initrdLen int) {
	t.Helper()
	zp := mem.read(ZeroPageAddr, ZeroPageSize)
	if got := mem.read(CmdlineAddr, len(cmdline)+1); string(got) != cmdline+"\x00" {
		t.Errorf("command line in memory = %q, want %q", got, cmdline)
	}
	le := binary.LittleEndian
	if le.Uint16(zp[0x1fe:]) != 0xaa55 || string(zp[0x202:0x206]) != "HdrS" {
		t.Errorf("zero page lacks boot flag / HdrS")
	}
	if hdr != nil && !bytes.Equal(zp[0x1f1:0x210], hdr.Raw[:0x210-0x1f1]) {
		t.Errorf("setup header not copied")
	}
	if zp[0x210] != 0xff {
		t.Errorf("type_of_loader = %#x", zp[0x210])
	}
	if zp[0x211]&LoadedHigh == 0 {
		t.Errorf("loadflags = %#x lacks LOADED_HIGH", zp[0x211])
	}
	if got := le.Uint32(zp[0x228:]); got != CmdlineAddr {
		t.Errorf("cmd_line_ptr = %#x", got)
	}
	if got := uint64(le.Uint32(zp[0x218:])) | uint64(le.Uint32(zp[0xc0:]))<<32; got != l.InitrdAddr {
		t.Errorf("ramdisk_image = %#x, layout says %#x", got, l.InitrdAddr)
	}
	if got := le.Uint32(zp[0x21c:]); got != uint32(initrdLen) {
		t.Errorf("ramdisk_size = %d, want %d", got, initrdLen)
	}
	if l.InitrdAddr%pageSize != 0 {
		t.Errorf("initrd at %#x not page aligned", l.InitrdAddr)
	}
	n := int(zp[0x1e8])
	if n != len(l.E820) || n == 0 {
		t.Fatalf("e820_entries = %d, layout has %d", n, len(l.E820))
	}
	for i, e := range l.E820 {
		b := zp[0x2d0+20*i:]
		if le.Uint64(b) != e.Addr || le.Uint64(b[8:]) != e.Size || le.Uint32(b[16:]) != e.Type {
			t.Errorf("e820[%d] in zero page differs from %+v", i, e)
		}
	}
	if zp[0x1ef] != 0 {
		t.Errorf("sentinel = %#x: the kernel would wipe the zero page", zp[0x1ef])
	}
}

// TestRealKernelRecompressed repacks the lean kernel's vmlinux (the payload
// of its bzImage) with every codec the kernel build supports and our
// decoder reads, using the same command lines as scripts/Makefile.lib, and
// checks each decompresses back to the same bytes.
func TestRealKernelRecompressed(t *testing.T) {
	data := readRealKernel(t, "MICROVM_KERNEL_BZIMAGE")
	k, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	vmlinux, _, err := Decompress(context.Background(), k, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range codecCommands {
		t.Run(c.name, func(t *testing.T) {
			if _, err := exec.LookPath(c.tool); err != nil {
				t.Skipf("SKIPPED: %s not installed (make deps installs it)", c.tool)
			}
			payload := compressWithTool(t, c, vmlinux)
			img := makeBzImage(t, payload, 0x020f, XLFKernel64)
			k2, err := Parse(img)
			if err != nil {
				t.Fatal(err)
			}
			if k2.Compression.String() != c.name {
				t.Fatalf("detected %s", k2.Compression)
			}
			out, info, err := Decompress(context.Background(), k2, "")
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, vmlinux) {
				t.Fatalf("%s round trip differs (%d vs %d bytes)", c.name, len(out), len(vmlinux))
			}
			t.Logf("%s: %d → %d bytes in %v", c.name, len(payload), len(out), info.Duration)
		})
	}
}

// BenchmarkDecompressDebian measures host-side decompression of the Debian
// cloud kernel (no cache).
func BenchmarkDecompressDebian(b *testing.B) {
	data := readRealKernel(b, "MICROVM_DEBIAN_KERNEL")
	k, err := Parse(data)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(k.Payload)))
	for b.Loop() {
		if _, _, err := Decompress(context.Background(), k, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecompressLean measures the lean kernel's xz payload.
func BenchmarkDecompressLean(b *testing.B) {
	data := readRealKernel(b, "MICROVM_KERNEL_BZIMAGE")
	k, err := Parse(data)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(k.Payload)))
	for b.Loop() {
		if _, _, err := Decompress(context.Background(), k, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecompressCached measures a cache hit for the Debian kernel.
func BenchmarkDecompressCached(b *testing.B) {
	data := readRealKernel(b, "MICROVM_DEBIAN_KERNEL")
	k, err := Parse(data)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	if _, _, err := Decompress(context.Background(), k, dir); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		_, info, err := Decompress(context.Background(), k, dir)
		if err != nil || !info.Cached {
			b.Fatalf("cached=%v err=%v", info != nil && info.Cached, err)
		}
	}
}
