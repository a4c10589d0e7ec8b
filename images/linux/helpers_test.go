package linux

import (
	"bytes"
	"encoding/binary"
	"os/exec"
	"testing"
)

// codecCommand compresses like the kernel build does (scripts/Makefile.lib):
// the tool's output, then (sizeAppend) the input size as a u32 LE.
type codecCommand struct {
	name       string
	tool       string
	args       []string
	sizeAppend bool
}

// codecCommands are the kernel build's exact command lines.
var codecCommands = []codecCommand{
	{"gzip", "gzip", []string{"-n", "-9", "-c"}, false},
	{"bzip2", "bzip2", []string{"-9", "-c"}, true},
	{"lzma", "lzma", []string{"-9", "-c"}, true},
	{"xz", "xz", []string{"--check=crc32", "--x86", "--lzma2=,dict=32MiB", "-c"}, true},
	{"lz4", "lz4", []string{"-l", "-9", "-c"}, true},
	{"zstd", "zstd", []string{"-22", "--ultra", "-c", "-q"}, true},
}

// quickCodecCommands are the same formats and filters (x86 BCJ, legacy
// lz4 frame, size trailers) with small dictionaries and windows, which set
// up in milliseconds instead of seconds: for small inputs.
var quickCodecCommands = []codecCommand{
	{"gzip", "gzip", []string{"-n", "-9", "-c"}, false},
	{"bzip2", "bzip2", []string{"-9", "-c"}, true},
	{"lzma", "lzma", []string{"-6", "-c"}, true},
	{"xz", "xz", []string{"--check=crc32", "--x86", "--lzma2=,dict=1MiB", "-c"}, true},
	{"lz4", "lz4", []string{"-l", "-9", "-c"}, true},
	{"zstd", "zstd", []string{"-19", "-c", "-q"}, true},
}

func compressWithTool(t testing.TB, c codecCommand, data []byte) []byte {
	t.Helper()
	cmd := exec.Command(c.tool, c.args...)
	cmd.Stdin = bytes.NewReader(data)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v: %s", c.tool, c.args, err, errb.String())
	}
	b := out.Bytes()
	if c.sizeAppend {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	}
	return b
}

// makeBzImage wraps a payload in a minimal bzImage: one boot sector, one
// setup sector holding nothing, then the protected-mode part (a 0x200-byte
// 32-bit stub area, then the payload). The header is like a modern
// kernel's.
func makeBzImage(t testing.TB, payload []byte, version uint16, xlf uint16) []byte {
	t.Helper()
	const setupSects = 1
	pm := (setupSects + 1) * 512
	payloadOff := 0x200
	img := make([]byte, pm+payloadOff+len(payload))
	le := binary.LittleEndian
	img[offSetupSects] = setupSects
	le.PutUint32(img[offSyssize:], uint32((len(img)-pm+15)/16))
	le.PutUint16(img[offBootFlag:], bootFlagMagic)
	img[offJump] = 0xeb
	img[offJump+1] = offKernelInfoOff + 4 - (offJump + 2)
	le.PutUint32(img[offHeaderMagic:], headerMagic)
	le.PutUint16(img[offVersion:], version)
	img[offLoadflags] = LoadedHigh
	le.PutUint32(img[offCode32Start:], 0x100000)
	le.PutUint32(img[offInitrdAddrMax:], 0x7fffffff)
	le.PutUint32(img[offKernelAlignment:], 0x200000)
	img[offMinAlignment] = 21
	le.PutUint16(img[offXloadflags:], xlf)
	le.PutUint32(img[offCmdlineSize:], 2047)
	le.PutUint32(img[offPayloadOffset:], uint32(payloadOff))
	le.PutUint32(img[offPayloadLength:], uint32(len(payload)))
	le.PutUint64(img[offPrefAddress:], 0x1000000)
	le.PutUint32(img[offInitSize:], 0x400000)
	copy(img[pm+payloadOff:], payload)
	return img
}

// makeELF builds a small x86-64 vmlinux-like ELF: a text segment linked at
// vaddr 0xffffffff81000000 / paddr 0x1000000 with e_entry physical, and a
// data+BSS segment after it, plus a Xen PVH note.
func makeELF(t testing.TB, text []byte, bss uint64) []byte {
	t.Helper()
	le := binary.LittleEndian
	const (
		phoff   = 64
		nph     = 3
		textOff = 0x1000
		vbase   = 0xffffffff81000000
		pbase   = 0x1000000
	)
	note := []byte{}
	note = le.AppendUint32(note, 4)  // namesz
	note = le.AppendUint32(note, 8)  // descsz
	note = le.AppendUint32(note, 18) // XEN_ELFNOTE_PHYS32_ENTRY
	note = append(note, "Xen\x00"...)
	note = le.AppendUint64(note, pbase+0x40)
	dataOff := textOff + uint64(len(text))
	data := []byte("data segment")
	noteOff := dataOff + uint64(len(data))
	out := make([]byte, noteOff+uint64(len(note)))
	copy(out, "\x7fELF")
	out[4], out[5], out[6] = elfClass64, elfData2LSB, 1
	le.PutUint16(out[16:], etExec)
	le.PutUint16(out[18:], emX8664)
	le.PutUint32(out[20:], 1)
	le.PutUint64(out[24:], pbase) // physical e_entry, as x86-64 vmlinux has
	le.PutUint64(out[32:], phoff)
	le.PutUint16(out[52:], 64)
	le.PutUint16(out[54:], elfPhdrSize)
	le.PutUint16(out[56:], nph)
	ph := func(i int, typ, flags uint32, off, vaddr, paddr, filesz, memsz uint64) {
		b := out[phoff+i*elfPhdrSize:]
		le.PutUint32(b[0:], typ)
		le.PutUint32(b[4:], flags)
		le.PutUint64(b[8:], off)
		le.PutUint64(b[16:], vaddr)
		le.PutUint64(b[24:], paddr)
		le.PutUint64(b[32:], filesz)
		le.PutUint64(b[40:], memsz)
	}
	ph(0, ptLoad, 5, textOff, vbase, pbase, uint64(len(text)), uint64(len(text)))
	dataP := uint64(pbase + 0x200000)
	ph(1, ptLoad, 6, dataOff, vbase+0x200000, dataP, uint64(len(data)), uint64(len(data))+bss)
	ph(2, ptNote, 4, noteOff, 0, 0, uint64(len(note)), uint64(len(note)))
	copy(out[textOff:], text)
	copy(out[dataOff:], data)
	copy(out[noteOff:], note)
	return out
}

// withSize appends the kernel build's u32 LE size trailer.
func withSize(stream []byte, n int) []byte {
	return binary.LittleEndian.AppendUint32(bytes.Clone(stream), uint32(n))
}
