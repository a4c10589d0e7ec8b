package linux

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz"
	"github.com/ulikunitz/xz/lzma"

	"github.com/microvm/microvm/images"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// gzipBytes compresses like `gzip -n`.
func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// goCompressed returns payloads (with the kernel's size trailer) made by
// the Go encoders, for the formats that have one. bzip2 has none in Go; the
// CLI-based TestRealKernelRecompressed and TestCodecsWithTools cover it.
func goCompressed(t testing.TB, data []byte) map[Compression][]byte {
	t.Helper()
	out := map[Compression][]byte{}
	out[CompressionGzip] = gzipBytes(t, data)

	var xb bytes.Buffer
	xw, err := xz.WriterConfig{CheckSum: xz.CRC32}.NewWriter(&xb)
	if err != nil {
		t.Fatal(err)
	}
	xw.Write(data)
	xw.Close()
	out[CompressionXZ] = withSize(xb.Bytes(), len(data))

	var lb bytes.Buffer
	lw, err := lzma.WriterConfig{SizeInHeader: false, EOSMarker: true}.NewWriter(&lb)
	if err != nil {
		t.Fatal(err)
	}
	lw.Write(data)
	lw.Close()
	out[CompressionLZMA] = withSize(lb.Bytes(), len(data))

	zw, _ := zstd.NewWriter(nil)
	out[CompressionZstd] = withSize(zw.EncodeAll(data, nil), len(data))
	zw.Close()

	out[CompressionLZ4] = withSize(lz4Legacy(t, data), len(data))
	return out
}

// lz4Legacy builds an lz4 legacy frame (what `lz4 -l` writes).
func lz4Legacy(t testing.TB, data []byte) []byte {
	t.Helper()
	le := binary.LittleEndian
	out := le.AppendUint32(nil, lz4LegacyMagic)
	for len(data) > 0 {
		n := min(len(data), lz4LegacyBlock)
		dst := make([]byte, lz4.CompressBlockBound(n))
		k, err := lz4.CompressBlock(data[:n], dst, nil)
		if err != nil {
			t.Fatal(err)
		}
		if k == 0 { // incompressible: lz4 block API returns 0; store as a literal-only block
			t.Fatalf("lz4: incompressible test data")
		}
		out = le.AppendUint32(out, uint32(k))
		out = append(out, dst[:k]...)
		data = data[n:]
	}
	return out
}

func TestParseTestKernel(t *testing.T) {
	elf := readTestdata(t, "testkernel.elf")
	tests := []struct {
		file        string
		format      Format
		compression Compression
	}{
		{"testkernel.elf", FormatELF, CompressionUnknown},
		{"testkernel-gzip.bzImage", FormatBzImage, CompressionGzip},
		{"testkernel-none.bzImage", FormatBzImage, CompressionNone},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data := readTestdata(t, tt.file)
			if !IsLinux(data) {
				t.Fatal("IsLinux = false")
			}
			k, err := Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			if k.Format != tt.format {
				t.Fatalf("format %v, want %v", k.Format, tt.format)
			}
			if k.Format == FormatBzImage {
				if k.Compression != tt.compression {
					t.Errorf("compression %v, want %v", k.Compression, tt.compression)
				}
				h := k.Header
				if h.Version != 0x020f || h.ProtocolString() != "2.15" {
					t.Errorf("version %#x %s", h.Version, h.ProtocolString())
				}
				if h.Xloadflags&XLFKernel64 == 0 || h.Loadflags&LoadedHigh == 0 || h.CmdlineSize != 2047 {
					t.Errorf("header %+v", h)
				}
				if !strings.HasPrefix(h.KernelVersion, "microvm testkernel") {
					t.Errorf("kernel version %q", h.KernelVersion)
				}
				if h.SetupSects != 1 || len(k.Protected) != len(data)-1024 {
					t.Errorf("setup_sects %d, protected %d bytes", h.SetupSects, len(k.Protected))
				}
				if int(h.Syssize) != (len(k.Protected)+15)/16 {
					t.Errorf("syssize %d for %d protected bytes", h.Syssize, len(k.Protected))
				}
			}
			vmlinux, info, err := Decompress(context.Background(), k, t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(vmlinux, elf) {
				t.Fatalf("vmlinux differs from testkernel.elf (%d vs %d bytes)", len(vmlinux), len(elf))
			}
			if info.Size != len(elf) {
				t.Errorf("info.Size %d", info.Size)
			}
			ei, err := parseELF(vmlinux)
			if err != nil {
				t.Fatal(err)
			}
			if ei.Entry != 0x1000000 || ei.Start != 0x1000000 || len(ei.Segments) != 2 {
				t.Errorf("ELF entry %#x start %#x segments %d", ei.Entry, ei.Start, len(ei.Segments))
			}
			if ei.PVHEntry < 0x1000000 || ei.PVHEntry >= ei.End || !ei.LinuxNotes {
				t.Errorf("PVH entry %#x (kernel [%#x, %#x)), notes %v", ei.PVHEntry, ei.Start, ei.End, ei.LinuxNotes)
			}
		})
	}
}

func TestLoadTestKernel(t *testing.T) {
	data := readTestdata(t, "testkernel-gzip.bzImage")
	elf := readTestdata(t, "testkernel.elf")
	mem := newFakeMemory(64 << 20)
	// Dirty the BSS so that zeroing is observable.
	mem.WriteAt(bytes.Repeat([]byte{0xcc}, 0x400), 0x1001000)
	initrd := []byte("hello-initrd\n")
	boot, err := Load(context.Background(), mem, Config{Kernel: data, Initrd: initrd, Cmdline: "console=ttyS0 hello=world", CPUs: 2})
	if err != nil {
		t.Fatal(err)
	}
	if boot.Entry != 0x1000000 || boot.ZeroPage != ZeroPageAddr {
		t.Fatalf("entry %#x zero page %#x", boot.Entry, boot.ZeroPage)
	}
	lr := boot.Loaded
	if lr.Start != 0x1000000 || lr.End != 0x1002000 || lr.Segments != 2 || lr.PVHEntry == 0 {
		t.Errorf("load result %+v", lr)
	}
	ei, _ := parseELF(elf)
	text := ei.Segments[0]
	if got := mem.read(text.Paddr, int(text.Filesz)); !bytes.Equal(got, elf[text.Offset:text.Offset+text.Filesz]) {
		t.Errorf("text segment not placed at %#x", text.Paddr)
	}
	if got := mem.read(0x1001000, 0x400); !bytes.Equal(got, make([]byte, 0x400)) {
		t.Errorf("BSS not zeroed")
	}
	l := boot.Layout
	if l.InitrdAddr != 64<<20-4096 || l.InitrdSize != uint64(len(initrd)) {
		t.Errorf("initrd at %#x size %d", l.InitrdAddr, l.InitrdSize)
	}
	if got := mem.read(CmdlineAddr, 26); string(got) != "console=ttyS0 hello=world\x00" {
		t.Errorf("cmdline in memory %q", got)
	}
	wantE820 := []E820Entry{
		{0, 0x9fc00, E820RAM},
		{0x9fc00, 0x100000 - 0x9fc00, E820Reserved},
		{0x100000, 64<<20 - 0x100000, E820RAM},
	}
	if !equalE820(l.E820, wantE820) {
		t.Errorf("e820 %+v, want %+v", l.E820, wantE820)
	}
	k, _ := Parse(data)
	checkZeroPage(t, mem, k.Header, "console=ttyS0 hello=world", l, len(initrd))
	if got := mem.read(MPTableAddr, 4); string(got) != "_MP_" {
		t.Errorf("no MP table at %#x: %q", MPTableAddr, got)
	}
}

func equalE820(a, b []E820Entry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestE820(t *testing.T) {
	const gib = 1 << 30
	tests := []struct {
		name    string
		regions []images.Region
		want    []E820Entry
	}{
		{"256MiB", []images.Region{{Start: 0, Size: 256 << 20}}, []E820Entry{
			{0, 0x9fc00, E820RAM}, {0x9fc00, 0x60400, E820Reserved}, {0x100000, 255 << 20, E820RAM}}},
		{"3GiB", []images.Region{{Start: 0, Size: 3 * gib}}, []E820Entry{
			{0, 0x9fc00, E820RAM}, {0x9fc00, 0x60400, E820Reserved}, {0x100000, 3*gib - 0x100000, E820RAM}}},
		{"5GiB split at the hole", []images.Region{{Start: 0, Size: 3 * gib}, {Start: 4 * gib, Size: 2 * gib}}, []E820Entry{
			{0, 0x9fc00, E820RAM}, {0x9fc00, 0x60400, E820Reserved}, {0x100000, 3*gib - 0x100000, E820RAM},
			{4 * gib, 2 * gib, E820RAM}}},
		{"no RAM", nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := E820(tt.regions); !equalE820(got, tt.want) {
				t.Errorf("E820 = %+v\nwant   %+v", got, tt.want)
			}
		})
	}
}

func TestLoadHighMemory(t *testing.T) {
	// 5 GiB: RAM [0, 3 GiB) + [4 GiB, 6 GiB). The initrd stays below
	// initrd_addr_max (2 GiB - 1).
	mem := newFakeMemory(5 << 30)
	data := readTestdata(t, "testkernel.elf")
	initrd := bytes.Repeat([]byte{7}, 3*4096+5)
	boot, err := Load(context.Background(), mem, Config{Kernel: data, Initrd: initrd, Cmdline: "x", CPUs: 1})
	if err != nil {
		t.Fatal(err)
	}
	want := uint64(0x80000000 - 4*4096)
	if boot.Layout.InitrdAddr != want {
		t.Errorf("initrd at %#x, want %#x (top of RAM below initrd_addr_max)", boot.Layout.InitrdAddr, want)
	}
	if n := len(boot.Layout.E820); n != 4 || boot.Layout.E820[3].Addr != 4<<30 {
		t.Errorf("e820 %+v", boot.Layout.E820)
	}
	zp := mem.read(ZeroPageAddr, ZeroPageSize)
	// A bare vmlinux gets a synthesised header.
	if string(zp[0x202:0x206]) != "HdrS" || binary.LittleEndian.Uint16(zp[0x206:]) != 0x020f ||
		binary.LittleEndian.Uint32(zp[0x238:]) != DefaultCmdlineSize {
		t.Errorf("synthesised header wrong: % x", zp[0x1f1:0x240])
	}
}

func TestMPTable(t *testing.T) {
	for _, cpus := range []int{1, 2, 4, 64, MaxCPUs} {
		b := MPTable(MPTableAddr, cpus)
		if len(b) != MPTableSize(cpus) {
			t.Fatalf("cpus=%d: %d bytes, MPTableSize %d", cpus, len(b), MPTableSize(cpus))
		}
		le := binary.LittleEndian
		// Floating pointer: signature, checksum, pointer to the table.
		if string(b[:4]) != "_MP_" || sum(b[:16]) != 0 || b[8] != 1 || b[9] != 4 {
			t.Fatalf("cpus=%d: bad floating pointer % x", cpus, b[:16])
		}
		if ptr := le.Uint32(b[4:]); ptr != MPTableAddr+16 {
			t.Fatalf("physptr %#x", ptr)
		}
		tab := b[16:]
		n := int(le.Uint16(tab[4:]))
		if string(tab[:4]) != "PCMP" || n != len(tab) || sum(tab[:n]) != 0 || tab[6] != 4 {
			t.Fatalf("cpus=%d: bad table header % x", cpus, tab[:44])
		}
		if le.Uint32(tab[36:]) != LAPICAddr {
			t.Errorf("lapic %#x", le.Uint32(tab[36:]))
		}
		// Walk the entries as Linux's smp_read_mpc does.
		counts := map[byte]int{}
		var bsp, ioapicID = -1, -1
		irqs := map[int]int{}
		for off := 44; off < n; {
			typ := tab[off]
			counts[typ]++
			switch typ {
			case mpProcessor:
				if tab[off+1] != byte(counts[typ]-1) || tab[off+3]&cpuEnabled == 0 {
					t.Errorf("cpu entry %d: % x", counts[typ]-1, tab[off:off+20])
				}
				if tab[off+3]&cpuBSP != 0 {
					bsp = int(tab[off+1])
				}
				off += 20
			case mpIOAPIC:
				ioapicID = int(tab[off+1])
				if le.Uint32(tab[off+4:]) != IOAPICAddr || tab[off+3]&1 == 0 {
					t.Errorf("ioapic entry % x", tab[off:off+8])
				}
				off += 8
			case mpIntSrc:
				if int(tab[off+6]) != ioapicID {
					t.Errorf("intsrc for ioapic %d, ioapic is %d", tab[off+6], ioapicID)
				}
				irqs[int(tab[off+5])] = int(tab[off+7])
				off += 8
			case mpBus:
				if string(tab[off+2:off+8]) != "ISA   " {
					t.Errorf("bus %q", tab[off+2:off+8])
				}
				off += 8
			case mpLIntSrc:
				off += 8
			default:
				t.Fatalf("unknown entry type %d at %d", typ, off)
			}
		}
		if counts[mpProcessor] != cpus || counts[mpBus] != 1 || counts[mpIOAPIC] != 1 || counts[mpIntSrc] != MPIRQs || counts[mpLIntSrc] != 2 {
			t.Errorf("cpus=%d: entry counts %v", cpus, counts)
		}
		if int(le.Uint16(tab[34:])) != cpus+1+1+MPIRQs+2 {
			t.Errorf("entry count field %d", le.Uint16(tab[34:]))
		}
		if bsp != 0 || ioapicID != cpus {
			t.Errorf("bsp %d ioapic id %d", bsp, ioapicID)
		}
		for irq := 0; irq < 16; irq++ {
			if pin, ok := irqs[irq]; !ok || pin != irq {
				t.Errorf("ISA IRQ %d → pin %d (present %v)", irq, pin, ok)
			}
		}
	}
}

func sum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

func TestWriteMPTableErrors(t *testing.T) {
	tests := []struct {
		name string
		mem  *fakeMemory
		cpus int
		want error
	}{
		{"zero cpus", newFakeMemory(64 << 20), 0, nil},
		{"too many cpus", newFakeMemory(64 << 20), MaxCPUs + 1, nil},
		{"no RAM there", &fakeMemory{regions: []images.Region{{Start: 1 << 20, Size: 64 << 20}}, pages: map[uint64][]byte{}}, 1, ErrDoesNotFit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := WriteMPTable(tt.mem, tt.cpus)
			if err == nil {
				t.Fatal("no error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if tt.mem.writes != 0 {
				t.Errorf("wrote memory despite the error")
			}
		})
	}
	mem := newFakeMemory(64 << 20)
	if err := WriteMPTable(mem, 4); err != nil {
		t.Fatal(err)
	}
	if got := mem.read(MPTableAddr, MPTableSize(4)); !bytes.Equal(got, MPTable(MPTableAddr, 4)) {
		t.Errorf("memory differs from MPTable()")
	}
}

// TestLZ4MultiBlock: a payload of several 8 MiB legacy-frame blocks, and
// a concatenated second frame (a repeated magic), decode in order.
func TestLZ4MultiBlock(t *testing.T) {
	data := bytes.Repeat([]byte("microvm kernel payload "), 500000) // 11.5 MB: two blocks
	frame := lz4Legacy(t, data)
	twice := append(bytes.Clone(frame), frame...)
	for name, tc := range map[string]struct {
		payload []byte
		want    []byte
	}{
		"one frame":  {withSize(frame, len(data)), data},
		"two frames": {withSize(twice, 2*len(data)), append(bytes.Clone(data), data...)},
	} {
		out, c, err := DecompressPayload(context.Background(), tc.payload)
		if err != nil || c != CompressionLZ4 || !bytes.Equal(out, tc.want) {
			t.Errorf("%s: %v %v equal=%v", name, c, err, bytes.Equal(out, tc.want))
		}
	}
}

func TestCodecsWithGoEncoders(t *testing.T) {
	vmlinux := readTestdata(t, "testkernel.elf")
	for _, data := range [][]byte{vmlinux} {
		for c, payload := range goCompressed(t, data) {
			t.Run(c.String(), func(t *testing.T) {
				if got := DetectCompression(payload); got != c {
					t.Fatalf("DetectCompression = %v", got)
				}
				out, gotC, err := DecompressPayload(context.Background(), payload)
				if err != nil {
					t.Fatal(err)
				}
				if gotC != c || !bytes.Equal(out, data) {
					t.Fatalf("round trip: %v, equal %v (%d vs %d)", gotC, bytes.Equal(out, data), len(out), len(data))
				}
				// A bzImage around it decompresses to the same ELF.
				if len(data) == len(vmlinux) {
					k, err := Parse(makeBzImage(t, payload, 0x020f, XLFKernel64))
					if err != nil {
						t.Fatal(err)
					}
					v, _, err := Decompress(context.Background(), k, "")
					if err != nil || !bytes.Equal(v, vmlinux) {
						t.Fatalf("Decompress: %v", err)
					}
				}
			})
		}
	}
}

// TestCodecsWithTools compresses the test kernel with the CLI tools exactly
// as the kernel build does (x86 BCJ for xz, legacy frame for lz4, size
// trailers) — including bzip2, which Go cannot write.
func TestCodecsWithTools(t *testing.T) {
	vmlinux := readTestdata(t, "testkernel.elf")
	for _, c := range quickCodecCommands {
		t.Run(c.name, func(t *testing.T) {
			if _, err := exec.LookPath(c.tool); err != nil {
				t.Skipf("SKIPPED: %s not installed (make deps installs it)", c.tool)
			}
			payload := compressWithTool(t, c, vmlinux)
			out, got, err := DecompressPayload(context.Background(), payload)
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != c.name || !bytes.Equal(out, vmlinux) {
				t.Fatalf("%v: round trip differs", got)
			}
		})
	}
}

func TestBCJX86(t *testing.T) {
	// E8 (call) with relative target 0x100 at offset 0x10: the encoder
	// stores the absolute target pos+5+rel; the decoder restores rel.
	buf := make([]byte, 64)
	buf[0x10] = 0xe8
	binary.LittleEndian.PutUint32(buf[0x11:], 0x10+5+0x100)
	bcjX86Decode(buf, 0)
	if got := binary.LittleEndian.Uint32(buf[0x11:]); got != 0x100 {
		t.Fatalf("decoded rel %#x, want 0x100", got)
	}
	// Too short to hold an instruction: untouched.
	small := []byte{0xe8, 1, 2, 3}
	bcjX86Decode(small, 0)
	if !bytes.Equal(small, []byte{0xe8, 1, 2, 3}) {
		t.Fatal("short buffer changed")
	}
}

func TestCache(t *testing.T) {
	data := readTestdata(t, "testkernel-gzip.bzImage")
	elf := readTestdata(t, "testkernel.elf")
	k, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "cache") // created on demand
	ctx := context.Background()
	out, info, err := Decompress(ctx, k, dir)
	if err != nil || info.Cached || info.CacheFile == "" || !bytes.Equal(out, elf) {
		t.Fatalf("first: %+v %v", info, err)
	}
	if !strings.Contains(info.CacheFile, info.ImageSHA256) || len(info.ImageSHA256) != 64 {
		t.Errorf("cache file %q not keyed by image SHA-256 %q", info.CacheFile, info.ImageSHA256)
	}
	out, info, err = Decompress(ctx, k, dir)
	if err != nil || !info.Cached || !bytes.Equal(out, elf) {
		t.Fatalf("second: %+v %v", info, err)
	}
	// Corruptions of the entry are detected and the entry is redone.
	corruptions := map[string]func([]byte) []byte{
		"flipped byte":   func(b []byte) []byte { b[len(b)-10] ^= 0xff; return b },
		"truncated":      func(b []byte) []byte { return b[:len(b)/2] },
		"empty":          func(b []byte) []byte { return nil },
		"bad magic":      func(b []byte) []byte { b[0] = 'X'; return b },
		"not an ELF now": func(b []byte) []byte { return rewriteEntry(b, []byte("not an elf")) },
	}
	for name, corrupt := range corruptions {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(info.CacheFile)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(info.CacheFile, corrupt(b), 0o644); err != nil {
				t.Fatal(err)
			}
			out, info2, err := Decompress(ctx, k, dir)
			if err != nil || info2.Cached || !bytes.Equal(out, elf) {
				t.Fatalf("after corruption: cached=%v err=%v", info2 != nil && info2.Cached, err)
			}
			_, info3, err := Decompress(ctx, k, dir)
			if err != nil || !info3.Cached {
				t.Fatalf("entry not rewritten: %+v %v", info3, err)
			}
		})
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("cache dir has %d entries", len(ents))
	}
	// An unwritable cache is not an error.
	if _, info, err := Decompress(ctx, k, "/proc/no-such-dir"); err != nil || info.CacheFile != "" {
		t.Errorf("unwritable cache: %+v %v", info, err)
	}
}

// rewriteEntry makes a well-formed cache entry holding body.
func rewriteEntry(_ []byte, body []byte) []byte {
	dir, _ := os.MkdirTemp("", "entry")
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "e")
	writeCacheEntry(p, body)
	b, _ := os.ReadFile(p)
	return b
}

func TestDecompressCancelled(t *testing.T) {
	vmlinux := readTestdata(t, "testkernel.elf")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for c, payload := range goCompressed(t, vmlinux) {
		if _, _, err := DecompressPayload(ctx, payload); !errors.Is(err, context.Canceled) {
			t.Errorf("%v: error %v, want context.Canceled", c, err)
		}
	}
}

func TestJSONNames(t *testing.T) {
	in := DecompressInfo{Compression: CompressionXZ, Size: 3}
	b, err := json.Marshal(in)
	if err != nil || !strings.Contains(string(b), `"compression":"xz"`) {
		t.Fatalf("marshal: %s %v", b, err)
	}
	var out DecompressInfo
	if err := json.Unmarshal(b, &out); err != nil || out != in {
		t.Fatalf("round trip: %+v %v", out, err)
	}
	if err := json.Unmarshal([]byte(`{"compression":"brotli"}`), &out); err == nil {
		t.Error("unknown compression accepted")
	}
	var f Format
	if err := f.UnmarshalText([]byte("vmlinux")); err != nil || f != FormatELF {
		t.Errorf("format: %v %v", f, err)
	}
}
