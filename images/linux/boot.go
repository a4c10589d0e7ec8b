package linux

import (
	"context"
	"fmt"

	"github.com/microvm/microvm/images"
)

// Config is what Load needs to prepare a Linux boot.
type Config struct {
	// Kernel is the image: a bzImage or a vmlinux ELF.
	Kernel []byte
	// Initrd is the initial ramdisk; may be empty.
	Initrd []byte
	// Cmdline is the kernel command line.
	Cmdline string
	// CPUs is the number of vCPUs the MP table describes; 0 writes no MP
	// table.
	CPUs int
	// CacheDir holds decompressed kernels keyed by image SHA-256; "" means
	// no cache.
	CacheDir string
	// ACPI writes ACPI tables (WriteACPI) for CPUs CPUs and Devices as
	// well as the MP table; needs CPUs > 0.
	ACPI bool
	// Devices are the virtio-mmio transports the DSDT describes.
	Devices []MMIODevice
}

// Boot is the result of Load: everything the VMM needs to start vCPU 0.
type Boot struct {
	// Entry is RIP for the 64-bit entry; ZeroPage is RSI.
	Entry    uint64
	ZeroPage uint64
	// Kernel is the parsed image (Kernel.Header is nil for a vmlinux).
	Kernel *Kernel
	// Loaded is where the kernel went.
	Loaded *LoadResult
	// Layout is where the zero page, command line and initrd went.
	Layout *Layout
	// Decompress says how the vmlinux was obtained and how long it took.
	Decompress *DecompressInfo
}

// Load parses the kernel, decompresses it on the host when it is a bzImage
// (cached in cfg.CacheDir), places the vmlinux, writes the zero page,
// command line, initrd and e820 map, and — when cfg.CPUs > 0 — the MP
// table and, with cfg.ACPI, the ACPI tables. See the package documentation
// for the CPU state the VMM must set.
func Load(ctx context.Context, mem images.Memory, cfg Config) (*Boot, error) {
	if cfg.CPUs < 0 || cfg.CPUs > MaxCPUs {
		return nil, fmt.Errorf("linux boot: %d CPUs: want 1 to %d", cfg.CPUs, MaxCPUs)
	}
	k, err := Parse(cfg.Kernel)
	if err != nil {
		return nil, err
	}
	var lr *LoadResult
	var dinfo *DecompressInfo
	if k.NoPayload {
		lr, err = LoadProtected(mem, k) // protected.go
	} else {
		var vmlinux []byte
		if vmlinux, dinfo, err = Decompress(ctx, k, cfg.CacheDir); err != nil {
			return nil, err
		}
		lr, err = LoadELF(mem, vmlinux)
	}
	if err != nil {
		return nil, err
	}
	bp := BootParams{Header: k.Header, Cmdline: cfg.Cmdline, Initrd: cfg.Initrd}
	layout, err := bp.Write(mem, lr)
	if err != nil {
		return nil, err
	}
	if cfg.CPUs > 0 {
		if err := WriteMPTable(mem, cfg.CPUs); err != nil {
			return nil, fmt.Errorf("linux boot: %w", err)
		}
	}
	if cfg.ACPI {
		if cfg.CPUs == 0 {
			return nil, fmt.Errorf("linux boot: ACPI tables need the CPU count")
		}
		if err := WriteACPI(mem, cfg.CPUs, cfg.Devices); err != nil {
			return nil, fmt.Errorf("linux boot: %w", err)
		}
	}
	return &Boot{
		Entry:      lr.Entry,
		ZeroPage:   layout.ZeroPage,
		Kernel:     k,
		Loaded:     lr,
		Layout:     layout,
		Decompress: dinfo,
	}, nil
}
