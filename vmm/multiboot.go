package vmm

import (
	"github.com/microvm/microvm/images/multiboot"
	"github.com/microvm/microvm/kvm"
)

// Multiboot v1 entry state (specification 0.6.96, section 3.2): 32-bit
// protected mode, paging off, flat CS (execute/read) and DS/ES/FS/GS/SS
// (read/write), interrupts off, EAX = 0x2BADB002, EBX = the information
// block's address. The GDT sits in the VMM's page below the block.
const (
	multibootGDTAddr = multiboot.VMMPagesStart
	multibootCodeSel = 0x08
	multibootDataSel = 0x10
	gdtCode32        = 0x9b // present, DPL 0, code, execute/read, accessed
)

// bootMultiboot loads a Multiboot v1 kernel with its modules and sets
// vCPU 0 at its entry. A Multiboot kernel starts on one CPU.
func (m *Machine) bootMultiboot() error {
	if len(m.cpus) != 1 {
		return configErrorf("cpus %d: a Multiboot kernel starts on one vCPU (use --cpus 1)", len(m.cpus))
	}
	cmdline := joinCmdline(m.cfg.Cmdline, m.cfg.AppendCmdline)
	loaded, err := multiboot.Load(m.mem, m.cfg.Image, multiboot.Config{Cmdline: cmdline, Modules: m.cfg.Modules})
	if err != nil {
		return err
	}
	m.kernel = &KernelInfo{Format: "multiboot", Entry: uint64(loaded.Entry), Cmdline: cmdline}
	limit, err := writeGDT(m.mem, multibootGDTAddr, []uint64{0, gdtEntry(gdtCode32, gdtFlagsD), gdtEntry(gdtData, gdtFlagsD)})
	if err != nil {
		return err
	}
	supported, err := m.sys.SupportedCPUID()
	if err != nil {
		return err
	}
	if m.cfg.linuxCPUID {
		supported = m.hostCPUID(supported)
	}
	c := m.cpus[0]
	entries := vcpuCPUID(supported, 0, 1)
	m.probeCPUID = entries
	if err := c.setCPUID(entries); err != nil {
		return err
	}
	if err := setProtectedMode32(c.VCPU, multibootGDTAddr, limit); err != nil {
		return err
	}
	regs := kvm.Regs{
		RIP:    uint64(loaded.Entry),
		RFLAGS: 0x2,
		RAX:    multiboot.BootloaderMagic,
		RBX:    uint64(loaded.InfoAddr),
	}
	return c.SetRegs(&regs)
}

// setProtectedMode32 puts the vCPU in flat 32-bit protected mode: CR0.PE
// (and ET), no paging, EFER clear, 4 GiB code and data segments.
func setProtectedMode32(cpu *kvm.VCPU, gdtBase uint64, gdtLimit uint16) error {
	s, err := cpu.Sregs()
	if err != nil {
		return err
	}
	code := kvm.Segment{
		Base: 0, Limit: 0xffffffff, Selector: multibootCodeSel,
		Type: 0xb, Present: 1, S: 1, DB: 1, G: 1,
	}
	data := kvm.Segment{
		Base: 0, Limit: 0xffffffff, Selector: multibootDataSel,
		Type: 0x3, Present: 1, S: 1, DB: 1, G: 1,
	}
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.GDT = kvm.DTable{Base: gdtBase, Limit: gdtLimit}
	s.IDT = kvm.DTable{}
	s.CR0 = cr0PE | cr0ET
	s.CR3, s.CR4, s.EFER = 0, 0, 0
	return cpu.SetSregs(&s)
}
