package vmm

import (
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/microvm/microvm/bench/qemuguest"
	"github.com/microvm/microvm/images"
	"github.com/microvm/microvm/images/multiboot"
)

// multibootGuest is an a.out-kludge Multiboot kernel loaded at 1 MiB that
// exits with status mods_count + the first byte of module 1 when EAX holds
// the boot-loader magic, and with 1 when it does not.
func multibootGuest(checksumDelta uint32) []byte {
	le := binary.LittleEndian
	const load = 0x100000
	flags := uint32(1<<16 | 1<<1 | 1<<0)
	img := le.AppendUint32(nil, multiboot.HeaderMagic)
	img = le.AppendUint32(img, flags)
	img = le.AppendUint32(img, -(multiboot.HeaderMagic+flags)+checksumDelta)
	for _, v := range []uint32{load, load, 0, 0, load + 32} {
		img = le.AppendUint32(img, v)
	}
	return append(img, prog(
		[]byte{0x3d, 0x02, 0xb0, 0xad, 0x2b}, // cmp eax, 0x2BADB002
		[]byte{0x75, 0x0f},                   // jne bad
		[]byte{0x8b, 0x43, 0x14},             // mov eax, [ebx+20]  mods_count
		[]byte{0x8b, 0x73, 0x18},             // mov esi, [ebx+24]  mods_addr
		[]byte{0x8b, 0x36},                   // mov esi, [esi]     mod_start
		[]byte{0x0f, 0xb6, 0x0e},             // movzx ecx, byte [esi]
		[]byte{0x01, 0xc8},                   // add eax, ecx
		[]byte{0xeb, 0x02},                   // jmp out
		movAL(1),                             // bad:
		exitWithAL,                           // out:
	)...)
}

func TestMultibootGuest(t *testing.T) {
	mods := []multiboot.Module{{Name: "a", Data: []byte{5, 1, 2}, Cmdline: "first"}, {Name: "b", Data: []byte("x"), Cmdline: "second"}}
	for _, format := range []images.Format{images.FormatUnknown, images.FormatMultiboot} {
		res, _ := boot(t, Config{Image: multibootGuest(0), Format: format, Modules: mods, Cmdline: "mb test"}, 0)
		if res.Reason != ReasonExit || res.Status != 2+5 {
			t.Errorf("format %v: %v status %d, want exit status 7 (2 modules + first byte 5)", format, res.Reason, res.Status)
		}
	}
}

func TestMultibootBadImage(t *testing.T) {
	sys := openKVM(t)
	_, err := New(Config{System: sys, Image: multibootGuest(1), Format: images.FormatMultiboot})
	if !errors.Is(err, images.ErrBadImage) {
		t.Errorf("bad checksum: error %v, want ErrBadImage", err)
	}
}

// TestMultibootWrappedTinyGuest boots the image that bench paths
// vm-multiboot and qemu-multiboot boot (bench/qemuguest.WrapMultiboot: the
// tiny guest behind a stub in an ELF32 Multiboot kernel).
func TestMultibootWrappedTinyGuest(t *testing.T) {
	const mem = 64 << 20
	img, err := qemuguest.WrapMultiboot(guest(t, "exit"), mem, "42")
	if err != nil {
		t.Fatal(err)
	}
	if f, err := images.Detect(img); err != nil || f != images.FormatMultiboot {
		t.Fatalf("Detect = %v, %v; want multiboot", f, err)
	}
	res, out := boot(t, Config{Image: img, MemoryBytes: mem}, 0)
	if res.Reason != ReasonExit || res.Status != 42 || !strings.Contains(out, "exit: status 42") {
		t.Errorf("%s; console %q", res.Summary(), out)
	}
	if res.Kernel == nil || res.Kernel.Format != "multiboot" {
		t.Errorf("kernel info %+v", res.Kernel)
	}
}
