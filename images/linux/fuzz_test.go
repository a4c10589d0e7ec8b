package linux

import (
	"context"
	"testing"
	"time"
)

// FuzzParse: Parse, IsLinux and — for what parses — loading and boot
// params must never panic, and must stay within small memory.
func FuzzParse(f *testing.F) {
	for _, name := range []string{"testkernel.elf", "testkernel-gzip.bzImage", "testkernel-none.bzImage"} {
		f.Add(readTestdata(f, name), "console=ttyS0")
	}
	f.Add(makeTinyELF(), "")
	f.Add([]byte("\x7fELF\x02\x01\x01"), "x")
	f.Fuzz(func(t *testing.T, data []byte, cmdline string) {
		IsLinux(data)
		DetectCompression(data)
		k, err := Parse(data)
		if err != nil {
			return
		}
		mem := newFakeMemory(64 << 20)
		var lr *LoadResult
		switch k.Format {
		case FormatELF:
			var total uint64
			for _, s := range k.ELF.Segments {
				total += s.Memsz
			}
			if total > 64<<20 {
				return
			}
			if lr, err = LoadELF(mem, data); err != nil {
				return
			}
			if lr.Entry < lr.Start || lr.Entry >= lr.End {
				t.Fatalf("entry %#x outside [%#x, %#x)", lr.Entry, lr.Start, lr.End)
			}
		case FormatBzImage:
			if k.Header == nil || len(k.Payload) == 0 {
				t.Fatal("bzImage without header or payload")
			}
			lr = &LoadResult{Entry: 0x1000000, Start: 0x1000000, End: 0x1100000}
		}
		bp := BootParams{Header: k.Header, Cmdline: cmdline, Initrd: data[:min(len(data), 4096)]}
		bp.Write(mem, lr)
	})
}

// FuzzDecompressPayload: every codec path with hostile input — bounded
// memory and time, no panic, and a decoded result always has the size the
// payload declares.
func FuzzDecompressPayload(f *testing.F) {
	vmlinux := readTestdata(f, "testkernel.elf")
	for _, p := range goCompressed(f, vmlinux) {
		f.Add(p)
	}
	for _, c := range codecCommands[:1] { // gzip, always present
		f.Add(compressWithTool(f, c, vmlinux))
	}
	f.Add([]byte{0x5d, 0, 0, 0x80, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 1, 2, 3, 0x10, 0, 0, 0})
	f.Add([]byte("\xfd7zXZ\x00\x00\x01\x69\x22\xde\x36\x02\x00\x21\x01\x16\x00\x00\x00\x74\x2f\xe5\xa3\x01\x00\x00"))
	f.Fuzz(func(t *testing.T, payload []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		out, c, err := DecompressPayload(ctx, payload)
		if err != nil {
			return
		}
		if c != CompressionNone && len(payload) >= 4 {
			declared := int(uint32(payload[len(payload)-4]) | uint32(payload[len(payload)-3])<<8 | uint32(payload[len(payload)-2])<<16 | uint32(payload[len(payload)-1])<<24)
			if len(out) != declared {
				t.Fatalf("%v: %d bytes out, %d declared", c, len(out), declared)
			}
		}
	})
}
