package vmm

import (
	"github.com/microvm/microvm/kvm"
)

// Control-register and EFER bits.
const (
	cr0PE = 1 << 0
	cr0MP = 1 << 1
	cr0ET = 1 << 4
	cr0NE = 1 << 5
	cr0WP = 1 << 16
	cr0PG = 1 << 31

	cr4PAE        = 1 << 5
	cr4OSFXSR     = 1 << 9
	cr4OSXMMEXCPT = 1 << 10

	eferSCE = 1 << 0
	eferLME = 1 << 8
	eferLMA = 1 << 10
)

// longMode describes the 64-bit entry state of a vCPU.
type longMode struct {
	gdtBase  uint64
	gdtLimit uint16
	codeSel  uint16
	dataSel  uint16
	cr3      uint64
}

// setSregs puts the vCPU in 64-bit long mode with flat segments, paging on
// (CR3 = lm.cr3), interrupts left to the caller's RFLAGS.
func (lm longMode) setSregs(cpu *kvm.VCPU) error {
	s, err := cpu.Sregs()
	if err != nil {
		return err
	}
	code := kvm.Segment{
		Base: 0, Limit: 0xffffffff, Selector: lm.codeSel,
		Type: 0xb, Present: 1, S: 1, L: 1, G: 1,
	}
	data := kvm.Segment{
		Base: 0, Limit: 0xffffffff, Selector: lm.dataSel,
		Type: 0x3, Present: 1, S: 1, DB: 1, G: 1,
	}
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.GDT = kvm.DTable{Base: lm.gdtBase, Limit: lm.gdtLimit}
	s.IDT = kvm.DTable{}
	s.CR0 = cr0PE | cr0MP | cr0ET | cr0NE | cr0WP | cr0PG
	s.CR3 = lm.cr3
	s.CR4 = cr4PAE | cr4OSFXSR | cr4OSXMMEXCPT
	s.EFER = eferLME | eferLMA | eferSCE
	return cpu.SetSregs(&s)
}

// CPUID leaves and bits the VMM edits.
const (
	cpuidLeafFeatures    = 0x1
	cpuidLeafExtTopology = 0xb
	cpuidLeafV2Topology  = 0x1f
	cpuidLeafStructExt   = 0x7
	cpuidLeafExtFeatures = 0x80000001
	cpuidLeafKVMBase     = 0x40000000

	cpuidECXHypervisor = 1 << 31
)

// vcpuCPUID specialises the host's supported CPUID for vCPU index i of n:
// APIC IDs in leaves 1, 0xB and 0x1F, logical-processor count, and the
// hypervisor bit.
func vcpuCPUID(supported []kvm.CPUIDEntry, i, n int) []kvm.CPUIDEntry {
	out := make([]kvm.CPUIDEntry, len(supported))
	copy(out, supported)
	for j := range out {
		e := &out[j]
		switch e.Function {
		case cpuidLeafFeatures:
			e.EBX = e.EBX&0x0000ffff | uint32(min(n, 255))<<16 | uint32(i)<<24
			e.ECX |= cpuidECXHypervisor
			if n > 1 {
				e.EDX |= 1 << 28 // HTT: more than one logical processor
			}
		case cpuidLeafExtTopology, cpuidLeafV2Topology:
			e.EDX = uint32(i)
		}
	}
	return out
}
