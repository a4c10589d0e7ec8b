package vmm

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/microvm/microvm/bench/qemuguest"
	"github.com/microvm/microvm/images"
	"github.com/microvm/microvm/images/multiboot"
	"github.com/microvm/microvm/images/pvh"
)

// pvhELF32 builds an ELF32 i386 executable loaded at paddr whose Xen
// PHYS32_ENTRY note (a descriptor of the given bytes) names the entry.
func pvhELF32(paddr uint32, code, desc []byte) []byte {
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
	note = le.AppendUint32(note, pvh.NotePhys32Entry)
	note = append(append(note, "Xen\x00"...), desc...)
	const noteOff = 52 + 64
	copy(h[noteOff:], note)
	ph := func(i int, vals ...uint32) {
		for j, v := range vals {
			le.PutUint32(h[52+32*i+4*j:], v)
		}
	}
	ph(0, 1, codeOff, paddr, paddr, uint32(len(code)), uint32(len(code)), 5, 4)
	ph(1, 4, noteOff, 0, 0, uint32(len(note)), uint32(len(note)), 4, 4)
	return append(h, code...)
}

// pvhGuest is a 32-bit PVH kernel at 1 MiB that exits with nr_modules +
// the first byte of module 0 + memmap_entries when EBX points at a start
// info with the PVH magic, and with 1 when it does not.
func pvhGuest() []byte {
	code := prog(
		[]byte{0x81, 0x3b, 0x78, 0xc5, 0x6e, 0x33}, // cmp dword [ebx], 0x336ec578
		[]byte{0x75, 0x12},                         // jne bad
		[]byte{0x8b, 0x43, 0x0c},                   // mov eax, [ebx+12]  nr_modules
		[]byte{0x8b, 0x73, 0x10},                   // mov esi, [ebx+16]  modlist_paddr
		[]byte{0x8b, 0x36},                         // mov esi, [esi]     module 0's paddr
		[]byte{0x0f, 0xb6, 0x0e},                   // movzx ecx, byte [esi]
		[]byte{0x01, 0xc8},                         // add eax, ecx
		[]byte{0x03, 0x43, 0x30},                   // add eax, [ebx+48]  memmap_entries
		[]byte{0xeb, 0x02},                         // jmp out
		movAL(1),                                   // bad:
		exitWithAL,                                 // out:
	)
	return pvhELF32(0x100000, code, binary.LittleEndian.AppendUint32(nil, 0x100000))
}

// TestPVHGuest enters a PVH kernel per start_info.h: 32-bit protected
// mode, EBX = struct hvm_start_info with the magic, the modules (the
// initrd first) and the memory map.
func TestPVHGuest(t *testing.T) {
	mods := []multiboot.Module{{Name: "b", Data: []byte{9}, Cmdline: "second"}}
	for _, format := range []images.Format{images.FormatUnknown, images.FormatPVH} {
		res, _ := boot(t, Config{Image: pvhGuest(), Format: format, MemoryBytes: 64 << 20,
			Initrd: []byte{5, 1, 2}, Modules: mods, Cmdline: "pvh test"}, 0)
		// 2 modules + the initrd's first byte 5 + 3 memory map entries.
		if res.Reason != ReasonExit || res.Status != 2+5+3 {
			t.Errorf("format %v: %s, want exit status 10", format, res.Summary())
		}
		if res.Kernel == nil || res.Kernel.Format != "pvh" || res.Kernel.Entry != 0x100000 {
			t.Errorf("format %v: kernel info %+v", format, res.Kernel)
		}
	}
}

// TestPVHWrappedTinyGuest boots the very bytes that QEMU boots in the
// benchmarks (bench/qemuguest: a tiny guest behind a PVH stub that goes to
// long mode itself) through microvm's PVH entry.
func TestPVHWrappedTinyGuest(t *testing.T) {
	const mem = 64 << 20
	img, err := qemuguest.Wrap(guest(t, "exit"), mem, "42")
	if err != nil {
		t.Fatal(err)
	}
	if f, err := images.Detect(img); err != nil || f != images.FormatPVH {
		t.Fatalf("Detect = %v, %v; want pvh", f, err)
	}
	res, out := boot(t, Config{Image: img, MemoryBytes: mem}, 0)
	if res.Reason != ReasonExit || res.Status != 42 || !strings.Contains(out, "exit: status 42") {
		t.Errorf("%s; console %q", res.Summary(), out)
	}
}

func TestPVHBadImage(t *testing.T) {
	sys := openKVM(t)
	code := prog(movAL(0), exitWithAL)
	for _, tc := range []struct {
		name string
		img  []byte
		want string
	}{
		{"note too short", pvhELF32(0x100000, code, []byte{0, 0}), "2-byte descriptor"},
		{"entry outside the image", pvhELF32(0x100000, code, binary.LittleEndian.AppendUint32(nil, 0x400000)), "outside the loaded segments"},
		{"entry outside RAM", pvhELF32(0x10000000, code, binary.LittleEndian.AppendUint32(nil, 0x10000000)), "outside guest RAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{System: sys, Image: tc.img, Format: images.FormatPVH, MemoryBytes: 64 << 20})
			if !errors.Is(err, images.ErrBadImage) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want ErrBadImage containing %q", err, tc.want)
			}
		})
	}
}

// TestPVHLinux boots the lean kernel (CONFIG_PVH=y) through its PVH entry
// (pvh_start_xen, a third-party PVH guest) with the guest initramfs as its
// first module: on real KVM (the rig) /init runs the command and exits
// with its status; on kvm_pvm, where Linux user space cannot run, the
// kernel must reach "Run /init".
func TestPVHLinux(t *testing.T) {
	kernel, initrd := os.Getenv("MICROVM_KERNEL_VMLINUX"), os.Getenv("MICROVM_INITRAMFS")
	if kernel == "" || initrd == "" {
		t.Skip("SKIP: MICROVM_KERNEL_VMLINUX and MICROVM_INITRAMFS are not set; `make test` builds the lean kernel and the initramfs and sets them")
	}
	pvm := DetectHost() == HostPVM
	if pvm && testing.Short() {
		t.Skip("SKIP: -short: on kvm_pvm a Linux boot is instruction-emulated (minutes)")
	}
	img, err := os.ReadFile(kernel)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := os.ReadFile(initrd)
	if err != nil {
		t.Fatal(err)
	}
	if f, _ := images.Detect(img); f != images.FormatVmlinux {
		t.Errorf("the lean vmlinux is detected as %v; a Linux vmlinux keeps the Linux path unless --format pvh", f)
	}
	if !pvh.IsLinux(img) {
		t.Fatalf("the lean vmlinux has no PVH note and Linux note: not built with CONFIG_PVH?")
	}
	res, out := boot(t, Config{Image: img, Format: images.FormatPVH, Initrd: rd, MemoryBytes: 256 << 20,
		AppendCmdline: `microvm.cmd="echo pvh-userspace-ok; exit 5"`}, 3*time.Minute)
	if !strings.Contains(out, "Run /init as init process") {
		t.Fatalf("%s: the kernel did not reach /init; console tail:\n%s", res.Summary(), tail(out, 3000))
	}
	if pvm {
		t.Logf("kvm_pvm: reached /init through PVH, %s", res.Summary())
		return
	}
	if res.Reason != ReasonExit || res.Status != 5 || !strings.Contains(out, "pvh-userspace-ok") {
		t.Fatalf("%s, want exit status 5 after pvh-userspace-ok; console tail:\n%s", res.Summary(), tail(out, 3000))
	}
	if res.Kernel == nil || res.Kernel.Format != "pvh" {
		t.Errorf("kernel info %+v", res.Kernel)
	}
	t.Logf("lean kernel through PVH: exit %d after %v", res.Status, res.ExitAfter)
}
