package guests

import (
	"bytes"
	"encoding/binary"
)

// Test kernels for the third-party boot protocols (docs/guests.md): tiny
// 32-bit programs, entered in protected mode with paging off, that read
// what the VMM handed them and report it as their exit status (port
// 0x501). They are built here byte by byte (no 32-bit toolchain needed).

// 32-bit machine code.
var (
	exit32 = []byte{0x66, 0xba, 0x01, 0x05, 0xee, 0xfa, 0xf4} // mov dx, 0x501; out dx, al; cli; hlt
	bad32  = []byte{0xb0, 0x01}                               // mov al, 1
)

// Multiboot v1 header constants.
const (
	multibootMagic = 0x1BADB002
	multibootAOut  = 1 << 16
	multibootLoad  = 0x100000
)

// Multiboot returns a Multiboot v1 kernel (a.out kludge, loaded and
// entered at 1 MiB + 32) that checks the boot loader's magic in EAX and
// exits with mods_count + the first byte of module 0 + the number of
// memory-map entries (mmap_length / 24) of the information block at EBX,
// or with 1 without the magic. checksumDelta, when not 0, spoils the
// header's checksum (a bad image).
func Multiboot(checksumDelta uint32) []byte {
	le := binary.LittleEndian
	flags := uint32(multibootAOut | 1<<1 | 1<<0)
	img := le.AppendUint32(nil, multibootMagic)
	img = le.AppendUint32(img, flags)
	img = le.AppendUint32(img, -(multibootMagic+flags)+checksumDelta)
	for _, v := range []uint32{multibootLoad, multibootLoad, 0, 0, multibootLoad + 32} {
		img = le.AppendUint32(img, v) // header, load, load_end (0: file end), bss_end, entry
	}
	body := bytes.Join([][]byte{
		{0x8b, 0x43, 0x14},             // mov eax, [ebx+20]   mods_count
		{0x8b, 0x73, 0x18},             // mov esi, [ebx+24]   mods_addr
		{0x8b, 0x36},                   // mov esi, [esi]      mod_start
		{0x0f, 0xb6, 0x0e},             // movzx ecx, byte [esi]
		{0x01, 0xc8},                   // add eax, ecx
		{0x89, 0xc7},                   // mov edi, eax
		{0x8b, 0x43, 0x2c},             // mov eax, [ebx+44]   mmap_length
		{0x31, 0xd2},                   // xor edx, edx
		{0xb9, 0x18, 0x00, 0x00, 0x00}, // mov ecx, 24
		{0xf7, 0xf1},                   // div ecx
		{0x01, 0xf8},                   // add eax, edi
		{0xeb, byte(len(bad32))},       // jmp out
	}, nil)
	return bytes.Join([][]byte{img,
		{0x3d, 0x02, 0xb0, 0xad, 0x2b}, // cmp eax, 0x2BADB002
		{0x75, byte(len(body))},        // jne bad
		body, bad32, exit32,
	}, nil)
}

// PVH returns an ELF32 PVH kernel at 1 MiB that checks the start info's
// magic at EBX and exits with nr_modules + the first byte of module 0 +
// memmap_entries, or with 1 without the magic.
func PVH() []byte {
	body := bytes.Join([][]byte{
		{0x8b, 0x43, 0x0c},       // mov eax, [ebx+12]  nr_modules
		{0x8b, 0x73, 0x10},       // mov esi, [ebx+16]  modlist_paddr
		{0x8b, 0x36},             // mov esi, [esi]     module 0's paddr
		{0x0f, 0xb6, 0x0e},       // movzx ecx, byte [esi]
		{0x01, 0xc8},             // add eax, ecx
		{0x03, 0x43, 0x30},       // add eax, [ebx+48]  memmap_entries
		{0xeb, byte(len(bad32))}, // jmp out
	}, nil)
	code := bytes.Join([][]byte{
		{0x81, 0x3b, 0x78, 0xc5, 0x6e, 0x33}, // cmp dword [ebx], 0x336ec578
		{0x75, byte(len(body))},              // jne bad
		body, bad32, exit32,
	}, nil)
	return PVHImage(0x100000, code, binary.LittleEndian.AppendUint32(nil, 0x100000))
}

// PVHImage builds an ELF32 i386 executable of code loaded at paddr whose
// Xen XEN_ELFNOTE_PHYS32_ENTRY note has the descriptor desc (a good one is
// the 4-byte entry address).
func PVHImage(paddr uint32, code, desc []byte) []byte {
	le := binary.LittleEndian
	const codeOff = 0x1000
	h := make([]byte, codeOff)
	copy(h, []byte{0x7f, 'E', 'L', 'F', 1, 1, 1})
	le.PutUint16(h[16:], 2) // ET_EXEC
	le.PutUint16(h[18:], 3) // EM_386
	le.PutUint32(h[20:], 1)
	le.PutUint32(h[24:], paddr)
	le.PutUint32(h[28:], 52)
	le.PutUint16(h[40:], 52)
	le.PutUint16(h[42:], 32)
	le.PutUint16(h[44:], 2)
	le.PutUint16(h[46:], 40)
	note := le.AppendUint32(nil, 4)
	note = le.AppendUint32(note, uint32(len(desc)))
	note = le.AppendUint32(note, 18) // XEN_ELFNOTE_PHYS32_ENTRY
	note = append(append(note, "Xen\x00"...), desc...)
	const noteOff = 52 + 64
	copy(h[noteOff:], note)
	ph := func(i int, vals ...uint32) {
		for j, v := range vals {
			le.PutUint32(h[52+32*i+4*j:], v)
		}
	}
	ph(0, 1, codeOff, paddr, paddr, uint32(len(code)), uint32(len(code)), 5, 4) // PT_LOAD, R+X
	ph(1, 4, noteOff, 0, 0, uint32(len(note)), uint32(len(note)), 4, 4)         // PT_NOTE
	return append(h, code...)
}
