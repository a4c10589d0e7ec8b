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
	"github.com/microvm/microvm/images/guests"
	"github.com/microvm/microvm/images/multiboot"
	"github.com/microvm/microvm/images/pvh"
)

// TestPVHGuest enters a PVH kernel per start_info.h: 32-bit protected
// mode, EBX = struct hvm_start_info with the magic, the modules (the
// initrd first) and the memory map.
func TestPVHGuest(t *testing.T) {
	mods := []multiboot.Module{{Name: "b", Data: []byte{9}, Cmdline: "second"}}
	for _, format := range []images.Format{images.FormatUnknown, images.FormatPVH} {
		res, _ := boot(t, Config{Image: guests.PVH(), Format: format, MemoryBytes: 64 << 20,
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
		{"note too short", guests.PVHImage(0x100000, code, []byte{0, 0}), "2-byte descriptor"},
		{"entry outside the image", guests.PVHImage(0x100000, code, binary.LittleEndian.AppendUint32(nil, 0x400000)), "outside the loaded segments"},
		{"entry outside RAM", guests.PVHImage(0x10000000, code, binary.LittleEndian.AppendUint32(nil, 0x10000000)), "outside guest RAM"},
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
