package linux

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/microvm/microvm/images"
)

// TestParseErrors feeds damaged images and checks each is refused with the
// right sentinel and a message that says what is wrong.
func TestParseErrors(t *testing.T) {
	good := readTestdata(t, "testkernel-gzip.bzImage")
	elf := readTestdata(t, "testkernel.elf")
	le := binary.LittleEndian
	mod := func(b []byte, f func([]byte)) []byte { c := bytes.Clone(b); f(c); return c }
	tests := []struct {
		name string
		data []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrNotLinux, "neither a bzImage"},
		{"text", []byte("hello world, this is not a kernel"), ErrNotLinux, "neither"},
		{"no boot flag", mod(good, func(b []byte) { b[0x1fe] = 0 }), ErrNotLinux, "0xAA55"},
		{"truncated header", good[:0x210], ErrTruncated, "setup header"},
		{"protocol 2.04", mod(good, func(b []byte) { le.PutUint16(b[0x206:], 0x0204) }), ErrProtocolVersion, "2.04"},
		{"protocol 2.07", mod(good, func(b []byte) { le.PutUint16(b[0x206:], 0x0207) }), ErrProtocolVersion, "payload_offset"},
		{"32-bit bzImage", mod(good, func(b []byte) { le.PutUint16(b[0x236:], 0) }), ErrWrongArch, "XLF_KERNEL_64"},
		{"zImage", mod(good, func(b []byte) { b[0x211] = 0 }), ErrBadImage, "LOADED_HIGH"},
		{"no payload", mod(good, func(b []byte) { le.PutUint32(b[0x24c:], 0) }), ErrBadImage, "no payload"},
		{"payload past end", mod(good, func(b []byte) { le.PutUint32(b[0x24c:], 1<<30) }), ErrTruncated, "past the end"},
		{"truncated file", good[:len(good)-100], ErrTruncated, "cut short"},
		{"setup sectors past end", mod(good[:0x400], func(b []byte) { b[0x1f1] = 60 }), ErrTruncated, "setup sectors"},
		{"ELF arm64", mod(elf, func(b []byte) { le.PutUint16(b[18:], 183) }), ErrWrongArch, "AArch64"},
		{"ELF 32-bit", mod(elf, func(b []byte) { b[4] = 1 }), ErrWrongArch, "32-bit"},
		{"ELF big-endian", mod(elf, func(b []byte) { b[5] = 2 }), ErrWrongArch, "big-endian"},
		{"ELF truncated", elf[:40], ErrTruncated, "shorter than its header"},
		{"ELF no phdrs", mod(elf, func(b []byte) { le.PutUint16(b[56:], 0) }), ErrBadImage, "no program headers"},
		{"ELF phdrs past end", mod(elf, func(b []byte) { le.PutUint64(b[32:], uint64(len(elf))) }), ErrTruncated, "outside"},
		{"ELF segment past end", mod(elf, func(b []byte) { le.PutUint64(b[64+32:], 1<<20) }), ErrTruncated, "runs past"},
		{"ELF filesz > memsz", mod(elf, func(b []byte) { le.PutUint64(b[64+40:], 1) }), ErrBadImage, "above its memory size"},
		{"ELF huge segment", mod(elf, func(b []byte) { le.PutUint64(b[64+40:], 1<<40) }), ErrTooLarge, "1 GiB"},
		{"ELF entry nowhere", mod(elf, func(b []byte) { le.PutUint64(b[24:], 0x42) }), ErrBadImage, "entry point"},
		{"ELF not executable", mod(elf, func(b []byte) { le.PutUint16(b[16:], 1) }), ErrBadImage, "not an executable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := Parse(tt.data)
			if err == nil {
				t.Fatalf("Parse accepted it: %+v", k)
			}
			if !errors.Is(err, tt.want) || !errors.Is(err, ErrBadImage) {
				t.Fatalf("error %q: want %v (and ErrBadImage)", err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q does not mention %q", err, tt.msg)
			}
			if IsLinux(tt.data) && tt.want == ErrNotLinux {
				t.Errorf("IsLinux = true")
			}
		})
	}
}

// TestPayloadErrors damages payloads.
func TestPayloadErrors(t *testing.T) {
	vmlinux := readTestdata(t, "testkernel.elf")
	gz := gzipBytes(t, vmlinux)
	le := binary.LittleEndian
	tests := []struct {
		name    string
		payload []byte
		want    error
	}{
		{"unknown magic", []byte("\x00\x01\x02\x03\x04\x05\x06\x07"), ErrUnsupportedCompression},
		{"lzo", []byte("\x89LZO\x00\x0d\x0a\x1a\x0a1234"), ErrUnsupportedCompression},
		{"gzip truncated", withSize(gz[:len(gz)/2], len(vmlinux)), ErrCorruptPayload},
		{"gzip cut, garbage size", gz[:len(gz)/2], ErrBadImage},
		{"gzip flipped", func() []byte { b := bytes.Clone(gz); b[len(b)/2] ^= 0x55; return b }(), ErrCorruptPayload},
		{"gzip tiny", gz[:6], ErrCorruptPayload},
		{"declares 0", withSize([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0}, 0), ErrCorruptPayload},
		{"declares 4 GiB", func() []byte {
			b := withSize([]byte{0x02, 0x21, 0x4c, 0x18, 1, 2, 3, 4}, 0)
			le.PutUint32(b[len(b)-4:], 0xffffffff)
			return b
		}(), ErrTooLarge},
		{"size mismatch", func() []byte {
			p := goCompressed(t, vmlinux)[CompressionZstd]
			le.PutUint32(p[len(p)-4:], uint32(len(vmlinux)+1))
			return p
		}(), ErrCorruptPayload},
		{"lz4 block past end", withSize([]byte{0x02, 0x21, 0x4c, 0x18, 0xff, 0xff, 0, 0, 1}, 100), ErrCorruptPayload},
		{"xz bad header crc", withSize([]byte("\xfd7zXZ\x00\x00\x01\x00\x00\x00\x00"), 100), ErrCorruptPayload},
		{"lzma huge dict, tiny data", withSize([]byte{0x5d, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 1, 2}, 50), ErrCorruptPayload},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := DecompressPayload(context.Background(), tt.payload)
			if !errors.Is(err, tt.want) || !errors.Is(err, ErrBadImage) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
		})
	}
	// A payload that decompresses to something other than an x86-64 ELF.
	for name, inner := range map[string][]byte{
		"not an ELF": bytes.Repeat([]byte("x"), 1000),
		"arm64 ELF":  func() []byte { b := bytes.Clone(vmlinux); le.PutUint16(b[18:], 183); return b }(),
	} {
		t.Run(name, func(t *testing.T) {
			k, err := Parse(makeBzImage(t, gzipBytes(t, inner), 0x020f, XLFKernel64))
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := Decompress(context.Background(), k, ""); !errors.Is(err, ErrBadImage) {
				t.Fatalf("error %v", err)
			}
		})
	}
}

// TestBootParamsErrors: command lines and initrds that do not fit, and
// kernels outside RAM. Nothing may be written when Write fails.
func TestBootParamsErrors(t *testing.T) {
	elf := readTestdata(t, "testkernel.elf")
	data := readTestdata(t, "testkernel-gzip.bzImage")
	k, _ := Parse(data)
	tests := []struct {
		name    string
		memSize uint64
		bp      BootParams
		want    error
		notBad  bool // not an ErrBadImage
	}{
		{"cmdline over cmdline_size", 64 << 20, BootParams{Header: k.Header, Cmdline: strings.Repeat("a", 2048)}, ErrCmdlineTooLong, true},
		{"cmdline over default for vmlinux", 64 << 20, BootParams{Cmdline: strings.Repeat("a", DefaultCmdlineSize+1)}, ErrCmdlineTooLong, true},
		{"cmdline with NUL", 64 << 20, BootParams{Cmdline: "a\x00b"}, ErrBadCmdline, true},
		{"initrd too big", 64 << 20, BootParams{Initrd: make([]byte, 60<<20)}, ErrDoesNotFit, false},
		{"initrd above initrd_addr_max", 64 << 20, BootParams{Header: &SetupHeader{CmdlineSize: 255, InitrdAddrMax: 0x1000fff, Raw: k.Header.Raw}, Initrd: make([]byte, 8192)}, ErrDoesNotFit, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := newFakeMemory(tt.memSize)
			lr, err := LoadELF(mem, elf)
			if err != nil {
				t.Fatal(err)
			}
			before := mem.writes
			_, err = tt.bp.Write(mem, lr)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if errors.Is(err, ErrBadImage) == tt.notBad {
				t.Errorf("errors.Is(ErrBadImage) = %v", !tt.notBad)
			}
			if mem.writes != before {
				t.Errorf("Write wrote memory before failing")
			}
		})
	}
	// Exactly cmdline_size bytes is fine.
	mem := newFakeMemory(64 << 20)
	lr, _ := LoadELF(mem, elf)
	if _, err := (&BootParams{Header: k.Header, Cmdline: strings.Repeat("a", int(k.Header.CmdlineSize))}).Write(mem, lr); err != nil {
		t.Errorf("cmdline of exactly cmdline_size: %v", err)
	}
}

func TestLoadELFErrors(t *testing.T) {
	elf := readTestdata(t, "testkernel.elf")
	tests := []struct {
		name string
		mem  *fakeMemory
		elf  []byte
		want error
	}{
		{"RAM too small", newFakeMemory(8 << 20), elf, ErrDoesNotFit},
		{"segment below 1 MiB", newFakeMemory(64 << 20), func() []byte {
			b := bytes.Clone(elf)
			binary.LittleEndian.PutUint64(b[64+24:], 0x8000) // p_paddr of the text segment
			binary.LittleEndian.PutUint64(b[24:], 0x8000)
			return b
		}(), ErrBadImage},
		{"hole in RAM", &fakeMemory{regions: []images.Region{{Start: 0, Size: 16 << 20}, {Start: 32 << 20, Size: 16 << 20}}, pages: map[uint64][]byte{}}, elf, ErrDoesNotFit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := LoadELF(tt.mem, tt.elf)
			if !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if tt.mem.writes != 0 {
				t.Errorf("wrote memory before failing")
			}
		})
	}
}

func TestIsLinux(t *testing.T) {
	tinyGuest := makeTinyELF()
	tests := []struct {
		name string
		data []byte
		want bool
	}{
		{"bzImage", readTestdata(t, "testkernel-gzip.bzImage"), true},
		{"vmlinux-like ELF", readTestdata(t, "testkernel.elf"), true},
		{"tiny guest ELF at 1 MiB", tinyGuest, false},
		{"flat binary", []byte{0xf4, 0xeb, 0xfd}, false},
		{"nothing", nil, false},
	}
	for _, tt := range tests {
		if got := IsLinux(tt.data); got != tt.want {
			t.Errorf("%s: IsLinux = %v", tt.name, got)
		}
	}
}

// makeTinyELF is an x86-64 ELF like the tiny guests: one segment at
// 0x100000, identity-linked, no notes.
func makeTinyELF() []byte {
	le := binary.LittleEndian
	out := make([]byte, 0x1010)
	copy(out, "\x7fELF")
	out[4], out[5], out[6] = elfClass64, elfData2LSB, 1
	le.PutUint16(out[16:], etExec)
	le.PutUint16(out[18:], emX8664)
	le.PutUint64(out[24:], 0x100000)
	le.PutUint64(out[32:], 64)
	le.PutUint16(out[54:], elfPhdrSize)
	le.PutUint16(out[56:], 1)
	ph := out[64:]
	le.PutUint32(ph[0:], ptLoad)
	le.PutUint32(ph[4:], 5)
	le.PutUint64(ph[8:], 0x1000)
	le.PutUint64(ph[16:], 0x100000)
	le.PutUint64(ph[24:], 0x100000)
	le.PutUint64(ph[32:], 16)
	le.PutUint64(ph[40:], 16)
	copy(out[0x1000:], []byte{0xf4})
	return out
}
