package vmm

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"

	"github.com/microvm/microvm/images"
	"github.com/microvm/microvm/images/multiboot"
	"github.com/microvm/microvm/kvm"
	"golang.org/x/sys/unix"
)

// Defaults and limits of a machine.
const (
	DefaultMemory = 128 << 20
	// MinMemory is the least RAM a guest can have: 1 MiB for the VMM's
	// pages below 1 MiB and 1 MiB for the image.
	MinMemory = 2 << 20
)

// Config describes a machine to build.
type Config struct {
	// Image is the bytes to boot: a tiny-guest ELF64 or flat binary, or a
	// Linux bzImage or vmlinux.
	Image []byte
	// Format of Image; FormatUnknown detects it.
	Format images.Format
	// Cmdline is handed to the guest. For a Linux kernel an empty Cmdline
	// means DefaultLinuxCmdline; host adaptations are appended either way.
	Cmdline string
	// AppendCmdline is appended to Cmdline (to DefaultLinuxCmdline when
	// Cmdline is empty and the guest is Linux), separated by a space.
	AppendCmdline string
	// Initrd is a Linux guest's initial ramdisk (optional).
	Initrd []byte
	// Modules are handed to a Multiboot kernel, in order (vmm/multiboot.go).
	Modules []multiboot.Module
	// KernelCacheDir caches vmlinux images decompressed from bzImages,
	// keyed by the image's SHA-256 ("" disables the cache).
	KernelCacheDir string
	// Host overrides host detection (DetectHost) for the adaptations a
	// Linux guest gets; empty means detect.
	Host HostKind
	// MemoryBytes is the guest RAM size (DefaultMemory when 0), a multiple
	// of 4 KiB.
	MemoryBytes uint64
	// CPUs is the number of vCPUs (1 when 0).
	CPUs int
	// Console receives the guest's serial output (discarded when nil).
	Console io.Writer
	// OnReady, when set, is called once, from the vCPU goroutine, when the
	// guest first writes the ready register. It must not block.
	OnReady func()
	// Logger gets the VMM's diagnostics (discarded when nil).
	Logger *slog.Logger
	// System is an open /dev/kvm to use; when nil, New opens DevicePath
	// (kvm.DevicePath when empty) and Close closes it.
	System     *kvm.System
	DevicePath string
	// CPUIDCacheDir, when set and System is nil, keeps KVM's supported
	// CPUID on disk between processes (see cpuidcache.go): it saves a
	// process that boots one VM about 0.3 ms.
	CPUIDCacheDir string
	// Disks, Nets, RNG and Shares add virtio-mmio devices (vmm/virtio.go);
	// VirtioNoIOEventFD makes their queue notifications exit to user space
	// even where KVM offers ioeventfd (for measurements).
	Disks             []DiskConfig
	Nets              []NetConfig
	RNG               bool
	Shares            []ShareConfig
	VirtioNoIOEventFD bool
	// COM2 adds a second UART at 0x2f8, IRQ 3 (ttyS1 in a Linux guest):
	// a channel into the guest apart from its console, fed through
	// Machine.COM2 (microvm oci sends the workload's signals on it). What
	// the guest writes there is discarded.
	COM2 bool
	// DebugExit adds QEMU's isa-debug-exit at port 0xf4: a write of v
	// ends the VM with status (v<<1)|1 (devices.DebugExit).
	DebugExit bool
	// PauseAtReady stops the machine at the guest's ready write (port
	// 0x502 or its MMIO twin): Run returns ReasonPaused with every vCPU
	// out of the guest, and Machine.Snapshot can then save it
	// (docs/snapshot.md).
	PauseAtReady bool
	// IRQChip gives a tiny guest the in-kernel irqchip (PIC, IOAPIC and a
	// local APIC per vCPU, as Linux guests always get): vCPUs other than
	// 0 then wait for INIT/SIPI from the guest instead of starting at the
	// entry point (see docs/guests.md).
	IRQChip bool

	// linuxCPUID gives a tiny guest the CPUID a Linux guest gets (the
	// host's masks); the cpuid probe (cpuidprobe.go) uses it.
	linuxCPUID bool
	// restore, set by Restore, builds the machine around a snapshot's
	// state instead of booting an image.
	restore *snapshotSource
}

// ConfigError is a problem with a Config: the caller asked for something
// impossible, as opposed to the host failing.
type ConfigError struct{ msg string }

func (e *ConfigError) Error() string { return e.msg }

func configErrorf(format string, args ...any) error {
	return &ConfigError{msg: fmt.Sprintf(format, args...)}
}

// withDefaults fills zero fields and checks the rest.
func (c Config) withDefaults() (Config, error) {
	if c.restore != nil && c.PauseAtReady {
		return c, configErrorf("a restored machine has passed its ready write: it cannot pause at it")
	}
	if c.MemoryBytes == 0 {
		c.MemoryBytes = DefaultMemory
	}
	if c.CPUs == 0 {
		c.CPUs = 1
	}
	if c.Console == nil {
		c.Console = io.Discard
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.DevicePath == "" {
		c.DevicePath = kvm.DevicePath
	}
	switch {
	case c.MemoryBytes < MinMemory:
		return c, configErrorf("memory %s is too small: a guest needs at least %s", FormatBytes(c.MemoryBytes), FormatBytes(MinMemory))
	case c.MemoryBytes%pageSize != 0:
		return c, configErrorf("memory %d bytes is not a multiple of 4 KiB", c.MemoryBytes)
	case c.CPUs < 0:
		return c, configErrorf("cpus %d: must be at least 1", c.CPUs)
	}
	if host := hostMemory(); host > 0 && c.MemoryBytes > host {
		return c, configErrorf("memory %s exceeds this host's RAM (%s)", FormatBytes(c.MemoryBytes), FormatBytes(host))
	}
	return c, nil
}

// hostMemory returns the host's total RAM, or 0 if unknown.
func hostMemory() uint64 {
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) != nil {
		return 0
	}
	return uint64(si.Totalram) * uint64(si.Unit)
}

// FormatBytes renders a size the way --memory takes it (128M, 1G, 4K), or
// rounded to one decimal (23.5G) when it is not a whole number of units.
func FormatBytes(n uint64) string {
	for _, u := range []struct {
		shift  uint
		suffix string
	}{{40, "T"}, {30, "G"}, {20, "M"}, {10, "K"}} {
		if n >= 1<<u.shift {
			if n%(1<<u.shift) == 0 {
				return fmt.Sprintf("%d%s", n>>u.shift, u.suffix)
			}
			return fmt.Sprintf("%.1f%s", float64(n)/float64(uint64(1)<<u.shift), u.suffix)
		}
	}
	return fmt.Sprintf("%dB", n)
}

// ParseBytes parses a memory size: a number with an optional binary suffix
// K, M, G or T (KiB, MiB, GiB and TiB are accepted too; a trailing B is
// optional). A plain number is bytes.
func ParseBytes(s string) (uint64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "I")
	shift := uint(0)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			shift = 10
		case 'M':
			shift = 20
		case 'G':
			shift = 30
		case 'T':
			shift = 40
		}
		if shift > 0 {
			t = t[:n-1]
		}
	}
	v, err := strconv.ParseUint(t, 10, 64)
	if err != nil || t == "" {
		return 0, fmt.Errorf("bad size %q: want a number with an optional K, M, G or T suffix (e.g. 128M)", s)
	}
	if v > (^uint64(0))>>shift {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return v << shift, nil
}
