package vmm

import (
	"github.com/microvm/microvm/images/linux"
	"github.com/microvm/microvm/images/pvh"
	"github.com/microvm/microvm/kvm"
)

// PVH entry state (xen/include/public/arch-x86/hvm/start_info.h): 32-bit
// protected mode, paging off, CR4 clear, flat 4 GiB CS (execute/read) and
// DS/ES/SS (read/write), EFLAGS.IF clear, EBX = the guest-physical address
// of struct hvm_start_info. The GDT sits in the VMM's page below it.
const pvhGDTAddr = pvh.VMMPagesStart

// bootPVH loads a PVH kernel (images/pvh) and sets vCPU 0 at its 32-bit
// entry. The in-kernel irqchip exists already (a PVH guest gets a PC's
// PIC, IOAPIC, PIT and local APICs); the other vCPUs wait for INIT/SIPI.
// The MP table (and, where the host allows, ACPI tables whose RSDP the
// start info points to) describe the CPUs and interrupt controllers.
//
// A kernel with a "Linux" ELF note is treated as Linux: the default Linux
// command line when none is given, the virtio-mmio devices on it, the host
// adaptations (CPUID masks, cmdline on kvm_pvm), the console watched for a
// panic or power-off, and --initrd as its first module, which Linux's PVH
// code takes for the initrd. For any PVH kernel --initrd (if given) is the
// first module and each --module follows.
func (m *Machine) bootPVH() error {
	isLinux := pvh.IsLinux(m.cfg.Image)
	cmdline := m.cfg.Cmdline
	if isLinux {
		if cmdline == "" {
			cmdline = DefaultLinuxCmdline
		}
		m.console.onLine = m.watchLinuxConsole
	}
	cmdline = joinCmdline(cmdline, m.cfg.AppendCmdline)
	if isLinux {
		if v := m.virtioCmdline(); v != "" {
			cmdline += " " + v
		}
		if extra := m.hostCmdline(); extra != "" {
			cmdline += " " + extra
			m.note("host adaptation: appended %q to the kernel command line", extra)
		}
	}
	var mods []pvh.Module
	if len(m.cfg.Initrd) > 0 {
		mods = append(mods, pvh.Module{Name: "initrd", Data: m.cfg.Initrd})
	}
	for _, mod := range m.cfg.Modules {
		mods = append(mods, pvh.Module{Name: mod.Name, Data: mod.Data, Cmdline: mod.Cmdline})
	}
	if err := linux.WriteMPTable(m.mem, len(m.cpus)); err != nil {
		return linuxError(err)
	}
	var rsdp uint64
	if isLinux && m.hostACPI() {
		if err := linux.WriteACPI(m.mem, len(m.cpus), m.acpiDevices()); err != nil {
			return linuxError(err)
		}
		rsdp = linux.ACPIAddr
	}
	loaded, err := pvh.Load(m.mem, m.cfg.Image, pvh.Config{Cmdline: cmdline, Modules: mods, RSDP: rsdp})
	if err != nil {
		return err
	}
	m.kernel = &KernelInfo{Format: "pvh", Entry: uint64(loaded.Entry), Cmdline: cmdline}
	limit, err := writeGDT(m.mem, pvhGDTAddr, []uint64{0, gdtEntry(gdtCode32, gdtFlagsD), gdtEntry(gdtData, gdtFlagsD)})
	if err != nil {
		return err
	}
	supported, err := m.sys.SupportedCPUID()
	if err != nil {
		return err
	}
	if isLinux || m.cfg.linuxCPUID {
		supported = m.hostCPUID(supported)
		if isLinux {
			m.verifyCPUID() // vmm/cpuidprobe.go
		}
	}
	for i, c := range m.cpus {
		entries := vcpuCPUID(supported, i, len(m.cpus))
		if i == 0 {
			m.probeCPUID = entries
		}
		if err := c.setCPUID(entries); err != nil {
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
			continue // application processors wait for INIT/SIPI
		}
		if err := setProtectedMode32(c.VCPU, pvhGDTAddr, limit); err != nil {
			return err
		}
		regs := kvm.Regs{RIP: uint64(loaded.Entry), RFLAGS: 0x2, RBX: loaded.StartInfo}
		if err := c.SetRegs(&regs); err != nil {
			return err
		}
	}
	return nil
}
