package vmm

import (
	"fmt"
	"hash/fnv"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/microvm/microvm/images"
	"github.com/microvm/microvm/images/guests"
)

// TestLinuxBootParams boots the synthetic test kernel (images/linux/testkernel:
// a tiny 64-bit program packaged as a bzImage or vmlinux) through the Linux
// path: it prints the boot_params it got, which must match what the VMM
// placed — cmdline, e820 and the initrd (address, size and an FNV-1a of its
// bytes read inside the guest).
func TestLinuxBootParams(t *testing.T) {
	initrd, err := guests.Get("hello") // any bytes will do
	if err != nil {
		t.Fatal(err)
	}
	h := fnv.New32a()
	h.Write(initrd)
	for _, tc := range []struct{ file, format string }{
		{"testkernel-gzip.bzImage", "bzImage"},
		{"testkernel-none.bzImage", "bzImage"},
		{"testkernel.elf", "vmlinux"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			img, err := os.ReadFile("../images/linux/testdata/" + tc.file)
			if err != nil {
				t.Fatal(err)
			}
			res, out := boot(t, Config{
				Image: img, Initrd: initrd, Cmdline: "console=ttyS0 marker=xyzzy",
				MemoryBytes: 64 << 20, KernelCacheDir: t.TempDir(),
			}, 0)
			if res.Reason != ReasonExit || res.Status != 0 {
				t.Fatalf("%s; console:\n%s", res.Summary(), out)
			}
			k := res.Kernel
			if k == nil || !strings.EqualFold(k.Format, tc.format) || k.Layout == nil {
				t.Fatalf("kernel info %+v", k)
			}
			wants := []string{
				"cmdline: console=ttyS0 marker=xyzzy",
				fmt.Sprintf("boot_params: %#016x", k.Layout.ZeroPage),
				fmt.Sprintf("initrd: %#016x %#016x fnv1a %#08x", k.Layout.InitrdAddr, len(initrd), h.Sum32()),
			}
			for _, e := range k.Layout.E820 {
				wants = append(wants, fmt.Sprintf("e820: %#016x %#016x %d", e.Addr, e.Size, e.Type))
			}
			for _, w := range wants {
				if !strings.Contains(out, w) {
					t.Errorf("console lacks %q:\n%s", w, out)
				}
			}
			if len(k.Layout.E820) < 3 {
				t.Errorf("e820 has %d entries: %+v", len(k.Layout.E820), k.Layout.E820)
			}
		})
	}
}

func TestLinuxBadInput(t *testing.T) {
	img, err := os.ReadFile("../images/linux/testdata/testkernel-gzip.bzImage")
	if err != nil {
		t.Fatal(err)
	}
	sys := openKVM(t)
	for _, tc := range []struct {
		name   string
		cfg    Config
		config bool // a ConfigError, else ErrBadImage
	}{
		{"truncated bzImage", Config{Image: img[:len(img)-100]}, false},
		{"initrd does not fit", Config{Image: img, MemoryBytes: 4 << 20, Initrd: make([]byte, 8<<20)}, false},
		{"cmdline too long", Config{Image: img, Cmdline: strings.Repeat("x", 70000)}, true},
		{"cpus 300", Config{Image: img, CPUs: 300}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.System = sys
			_, err := New(tc.cfg)
			var ce *ConfigError
			if tc.config && !errorsAs(err, &ce) || !tc.config && !errorsIs(err, images.ErrBadImage) {
				t.Fatalf("New = %v (config error wanted: %v)", err, tc.config)
			}
		})
	}
}

// TestLinuxKernel boots a real Linux kernel — the lean kernel `make kernel`
// builds — without a root filesystem: it must get through its whole boot to
// the "VFS: Unable to mount root fs" panic, which must end the VM with
// ReasonPanic. On kvm_pvm hosts this is instruction-emulated (~30 s); the
// nested-KVM rig runs the user-space half.
func TestLinuxKernel(t *testing.T) {
	path := os.Getenv("MICROVM_KERNEL_VMLINUX")
	if path == "" {
		t.Skip("SKIP: MICROVM_KERNEL_VMLINUX is not set; `make test` builds the lean kernel and sets it")
	}
	if testing.Short() {
		t.Skip("SKIP: -short: booting Linux takes half a minute on kvm_pvm hosts")
	}
	img, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	res, out := boot(t, Config{Image: img, MemoryBytes: 256 << 20}, 5*time.Minute)
	if res.Reason != ReasonPanic || !strings.Contains(res.Detail, "Unable to mount root fs") {
		t.Fatalf("%s; console tail:\n%s", res.Summary(), tail(out, 2000))
	}
	for _, w := range []string{"Linux version", "Command line:", "console [ttyS0] enabled"} {
		if !strings.Contains(out, w) {
			t.Errorf("console lacks %q", w)
		}
	}
	t.Logf("lean kernel on %s: boot to the root-fs panic in %v, %d exits (%v)", res.Host, res.ExitAfter, sum(res.Exits), res.Exits)
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func sum(m map[string]uint64) (n uint64) {
	for _, v := range m {
		n += v
	}
	return n
}
