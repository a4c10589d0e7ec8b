package vmm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/microvm/microvm/images"
	"github.com/microvm/microvm/images/linux"
	"github.com/microvm/microvm/kvm"
)

// DefaultLinuxCmdline is the kernel command line when Config.Cmdline is
// empty: a serial console, reboot through the keyboard controller (which
// ends the VM), reboot one second after a panic, and no hunting for
// hardware a micro-VM does not have. Modules stay allowed (unlike
// Firecracker's default "nomodule"): kernels like Debian's have their
// virtio drivers as modules, which the initramfs loads.
const DefaultLinuxCmdline = "console=ttyS0 reboot=k panic=1 pci=off " +
	"i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"

// The VMM's own pages for a Linux boot, clear of images/linux's layout
// (zero page 0x7000, cmdline 0x20000, MP table 0x9fc00).
const (
	linuxGDTAddr  = 0x500
	linuxStackTop = 0x8ff0
	linuxPML4Addr = 0x9000
	linuxPDPTAddr = 0xa000
	linuxPDAddr   = 0xb000 // four page directories: the low 4 GiB
	// identityMapAddr is KVM_SET_IDENTITY_MAP_ADDR's page (Intel), below the TSS.
	identityMapAddr = 0xfffbc000
)

// KernelInfo describes the Linux kernel a machine booted.
type KernelInfo struct {
	// Format is "bzimage", "vmlinux", "pvh" or "multiboot".
	Format string `json:"format"`
	// Version is the bzImage's version string, when it has one.
	Version string `json:"version,omitempty"`
	// Entry is the entry point used (64-bit for Linux, 32-bit for PVH
	// and Multiboot).
	Entry uint64 `json:"entry"`
	// Cmdline is the command line the kernel got.
	Cmdline string `json:"cmdline"`
	// Decompress says how the vmlinux was obtained (host-side decompression
	// of a bzImage payload, or its cache).
	Decompress *linux.DecompressInfo `json:"decompress,omitempty"`
	// Layout is where the zero page, cmdline, initrd and e820 map went.
	Layout *linux.Layout `json:"layout,omitempty"`
}

// bootLinux loads a Linux kernel, writes its boot parameters and sets every
// vCPU up for the 64-bit boot protocol. The irqchip must exist already.
func (m *Machine) bootLinux() error {
	cmdline := m.cfg.Cmdline
	if cmdline == "" {
		cmdline = DefaultLinuxCmdline
	}
	cmdline = joinCmdline(cmdline, m.cfg.AppendCmdline)
	if v := m.virtioCmdline(); v != "" {
		cmdline += " " + v
	}
	if extra := m.hostCmdline(); extra != "" {
		cmdline += " " + extra
		m.note("host adaptation: appended %q to the kernel command line", extra)
	}
	ctx := context.Background()
	boot, err := linux.Load(ctx, m.mem, linux.Config{
		Kernel: m.cfg.Image, Initrd: m.cfg.Initrd, Cmdline: cmdline,
		CPUs: len(m.cpus), CacheDir: m.cfg.KernelCacheDir,
		ACPI: m.hostACPI(), Devices: m.acpiDevices(),
	})
	if err != nil {
		return linuxError(err)
	}
	m.kernel = &KernelInfo{
		Format: boot.Kernel.Format.String(), Entry: boot.Entry, Cmdline: cmdline,
		Decompress: boot.Decompress, Layout: boot.Layout,
	}
	if boot.Kernel.Header != nil {
		m.kernel.Version = boot.Kernel.Header.KernelVersion
	}
	if err := writeLinuxPageTables(m.mem); err != nil {
		return err
	}
	limit, err := writeGDT(m.mem, linuxGDTAddr, []uint64{0, 0,
		gdtEntry(gdtCode64, gdtFlagsL), gdtEntry(gdtData, gdtFlagsD)})
	if err != nil {
		return err
	}
	supported, err := m.sys.SupportedCPUID()
	if err != nil {
		return err
	}
	supported = m.hostCPUID(supported)
	m.verifyCPUID() // vmm/cpuidprobe.go
	lm := longMode{gdtBase: linuxGDTAddr, gdtLimit: limit, codeSel: linux.BootCS, dataSel: linux.BootDS, cr3: linuxPML4Addr}
	for i, c := range m.cpus {
		if err := c.setCPUID(vcpuCPUID(supported, i, len(m.cpus))); err != nil {
			return err
		}
		if err := setLINT(c.VCPU); err != nil {
			return err
		}
		if err := c.SetMSRs(bootMSRs()); err != nil {
			return err
		}
		if err := setFPU(c.VCPU); err != nil {
			return err
		}
		if i > 0 {
			continue // application processors wait for INIT/SIPI from the kernel
		}
		if err := lm.setSregs(c.VCPU); err != nil {
			return err
		}
		regs := kvm.Regs{RIP: boot.Entry, RSI: boot.ZeroPage, RSP: linuxStackTop, RFLAGS: 0x2}
		if err := c.SetRegs(&regs); err != nil {
			return err
		}
	}
	return nil
}

// linuxError sorts errors from images/linux: image problems wrap
// images.ErrBadImage, command line problems become ConfigErrors.
func linuxError(err error) error {
	switch {
	case errors.Is(err, linux.ErrCmdlineTooLong), errors.Is(err, linux.ErrBadCmdline):
		return configErrorf("%v", err)
	case errors.Is(err, linux.ErrBadImage):
		return fmt.Errorf("%w: %w", images.ErrBadImage, err)
	}
	return err
}

// writeLinuxPageTables identity-maps the low 4 GiB with 2 MiB pages: what
// the 64-bit boot protocol needs until startup_64 switches to its own.
func writeLinuxPageTables(mem *Memory) error {
	le := binary.LittleEndian
	var pml4, pdpt [pageSize]byte
	le.PutUint64(pml4[:], linuxPDPTAddr|ptePresent|pteWrite)
	pd := make([]byte, 4*pageSize)
	for g := uint64(0); g < 4; g++ {
		le.PutUint64(pdpt[g*8:], (linuxPDAddr+g*pageSize)|ptePresent|pteWrite)
		for i := uint64(0); i < 512; i++ {
			le.PutUint64(pd[(g*512+i)*8:], (g<<30+i<<21)|ptePresent|pteWrite|ptePS)
		}
	}
	for _, w := range []struct {
		addr int64
		b    []byte
	}{{linuxPML4Addr, pml4[:]}, {linuxPDPTAddr, pdpt[:]}, {linuxPDAddr, pd}} {
		if _, err := mem.WriteAt(w.b, w.addr); err != nil {
			return fmt.Errorf("linux page tables: %w", err)
		}
	}
	return nil
}

// Local APIC registers and delivery modes for setLINT.
const (
	apicLVTLINT0   = 0x350
	apicLVTLINT1   = 0x360
	apicModeExtINT = 0x7
	apicModeNMI    = 0x4
)

// setLINT programs LINT0 as ExtINT (the 8259 PIC's output) and LINT1 as NMI,
// the wiring a PC's firmware leaves and Linux expects.
func setLINT(c *kvm.VCPU) error {
	l, err := c.LAPIC()
	if err != nil {
		return err
	}
	set := func(reg int, mode uint32) {
		v := binary.LittleEndian.Uint32(l.Regs[reg:])
		v = v&^0x700 | mode<<8
		binary.LittleEndian.PutUint32(l.Regs[reg:], v)
	}
	set(apicLVTLINT0, apicModeExtINT)
	set(apicLVTLINT1, apicModeNMI)
	return c.SetLAPIC(&l)
}

// MSRs set at boot, as a PC's firmware leaves them.
const (
	msrIA32MiscEnable   = 0x1a0
	miscEnableFastStrng = 1 << 0
)

func bootMSRs() []kvm.MSREntry {
	return []kvm.MSREntry{{Index: msrIA32MiscEnable, Data: miscEnableFastStrng}}
}

// setFPU leaves the x87 and SSE units in their power-on state.
func setFPU(c *kvm.VCPU) error {
	f := kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80}
	return c.SetFPU(&f)
}

// watchLinuxConsole turns the kernel's last words into a reason: a panic,
// a power-off or a halt. (Without ACPI a powered-off or halted kernel just
// idles, which an in-kernel irqchip hides from the VMM.)
func (m *Machine) watchLinuxConsole(line []byte) {
	s := string(line)
	switch {
	case strings.Contains(s, "Kernel panic - not syncing"):
		m.panicLine.Store(&s)
	case strings.Contains(s, "---[ end Kernel panic"):
		m.finish(Result{Reason: ReasonPanic, Detail: m.panicDetail()})
	case strings.Contains(s, "reboot: Power down"):
		m.finish(Result{Reason: ReasonPowerOff})
	case strings.Contains(s, "reboot: System halted"):
		m.finish(Result{Reason: ReasonHalt})
	}
}

func (m *Machine) panicDetail() string {
	if p := m.panicLine.Load(); p != nil {
		return strings.TrimSpace(*p)
	}
	return ""
}

// joinCmdline joins command-line fragments with single spaces.
func joinCmdline(parts ...string) string {
	var nonEmpty []string
	for _, p := range parts {
		if p = strings.TrimSpace(p); p != "" {
			nonEmpty = append(nonEmpty, p)
		}
	}
	return strings.Join(nonEmpty, " ")
}
