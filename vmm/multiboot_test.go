package vmm

import (
	"errors"
	"strings"
	"testing"

	"github.com/microvm/microvm/bench/qemuguest"
	"github.com/microvm/microvm/images"
	"github.com/microvm/microvm/images/guests"
	"github.com/microvm/microvm/images/multiboot"
)

func TestMultibootGuest(t *testing.T) {
	mods := []multiboot.Module{{Name: "a", Data: []byte{5, 1, 2}, Cmdline: "first"}, {Name: "b", Data: []byte("x"), Cmdline: "second"}}
	for _, format := range []images.Format{images.FormatUnknown, images.FormatMultiboot} {
		res, _ := boot(t, Config{Image: guests.Multiboot(0), Format: format, Modules: mods, Cmdline: "mb test"}, 0)
		// 2 modules + module 0's first byte 5 + 3 memory-map entries
		// ([0, 0xa0000), the hole, the rest of the 128 MiB).
		if res.Reason != ReasonExit || res.Status != 2+5+3 {
			t.Errorf("format %v: %v status %d, want exit status 10 (2 modules + first byte 5 + 3 memory-map entries)", format, res.Reason, res.Status)
		}
	}
}

func TestMultibootBadImage(t *testing.T) {
	sys := openKVM(t)
	_, err := New(Config{System: sys, Image: guests.Multiboot(1), Format: images.FormatMultiboot})
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
