package vmm

import (
	"fmt"
	"strings"

	"github.com/microvm/microvm/kvm"
)

// On kvm_pvm hosts unmodified guest code is emulated, and the emulator
// lacks some instructions. A Linux guest is adapted so that it never
// executes them: CPUID hides the features that would lead the kernel to
// them, the command line turns the rest off, and the few it executes anyway
// are assisted when KVM reports an emulation failure (see assist).

// pvmCPUIDMask lists, per CPUID leaf and register, the feature bits hidden
// from Linux guests on kvm_pvm hosts.
var pvmCPUIDMask = []struct {
	leaf, index uint32
	ecx, ebx    uint32
}{
	// Leaf 1 ECX: SSE3 0, PCLMULQDQ 1, SSSE3 9, FMA 12, CX16 13, SSE4.1 19,
	// SSE4.2 20, MOVBE 22, POPCNT 23, AES 25, XSAVE 26, OSXSAVE 27, AVX 28,
	// F16C 29, RDRAND 30.
	{leaf: 1, ecx: 1<<0 | 1<<1 | 1<<9 | 1<<12 | 1<<13 | 1<<19 | 1<<20 | 1<<22 | 1<<23 |
		1<<25 | 1<<26 | 1<<27 | 1<<28 | 1<<29 | 1<<30},
	// Leaf 7.0 EBX: FSGSBASE 0, BMI1 3, AVX2 5, BMI2 8, INVPCID 10,
	// AVX512F 16, AVX512DQ 17, RDSEED 18, ADX 19, SMAP 20, AVX512IFMA 21,
	// AVX512CD 28, SHA 29, AVX512BW 30, AVX512VL 31.
	{leaf: 7, index: 0, ebx: 1<<0 | 1<<3 | 1<<5 | 1<<8 | 1<<10 | 1<<16 | 1<<17 | 1<<18 |
		1<<19 | 1<<20 | 1<<21 | 1<<28 | 1<<29 | 1<<30 | 1<<31,
		// ECX: AVX512VBMI 1, UMIP 2, AVX512_VBMI2 6, GFNI 8, VAES 9,
		// VPCLMULQDQ 10, AVX512_VNNI 11, AVX512_BITALG 12, AVX512_VPOPCNTDQ 14.
		ecx: 1<<1 | 1<<2 | 1<<6 | 1<<8 | 1<<9 | 1<<10 | 1<<11 | 1<<12 | 1<<14},
	// Leaf 0x80000001 ECX: ABM/LZCNT 5.
	{leaf: 0x80000001, ecx: 1 << 5},
}

// pvmCmdline is what a Linux guest needs on its command line on kvm_pvm
// hosts: no XSAVE, SMAP or PTI (instructions the emulator lacks), no APIC
// (its timer calibration crawls under emulation), a fixed loops-per-jiffy
// and a trusted TSC (calibration loops would take minutes), no soft-lockup
// watchdog (an emulated kernel looks stuck to it, and its reports cost
// minutes of console output), and the CPUID bits above cleared inside the
// kernel too (clearcpuid= takes the kernel's X86_FEATURE numbers:
// 32*word+bit).
const pvmCmdline = "noxsave nosmap nopti noapic nolapic nowatchdog lpj=5000000 tsc=reliable no_timer_check " +
	"clearcpuid=128,129,137,141,147,148,150,151,153,154,156,158,288,291,293,296,298,306,308"

// hostCmdline returns what this host needs appended to a Linux command line.
func (m *Machine) hostCmdline() string {
	if m.host == HostPVM {
		return pvmCmdline
	}
	return ""
}

// hostACPI reports whether a Linux guest gets ACPI tables on this host.
// Not on kvm_pvm: the tables describe a hardware-reduced platform, on
// which Linux drops the 8259 PIC and the PIT and takes its timer from the
// local APIC — which pvmCmdline turns off.
func (m *Machine) hostACPI() bool {
	if m.host == HostPVM {
		m.note("host adaptation: kvm_pvm host, no ACPI tables (the guest keeps the PIT and 8259 timer; devices come from the MP table and the command line)")
		return false
	}
	return true
}

// hostCPUID adapts the supported CPUID to this host.
func (m *Machine) hostCPUID(entries []kvm.CPUIDEntry) []kvm.CPUIDEntry {
	if m.host != HostPVM {
		return entries
	}
	for i := range entries {
		e := &entries[i]
		for _, mask := range pvmCPUIDMask {
			if e.Function == mask.leaf && (e.Index == mask.index || e.Flags&kvm.CPUIDFlagSignificantIndex == 0) {
				e.ECX &^= mask.ecx
				e.EBX &^= mask.ebx
			}
		}
	}
	return entries // verifyCPUID notes whether the masks reach the guest
}

// assist handles an emulation failure (KVM_EXIT_INTERNAL_ERROR, suberror
// emulation) at an instruction the host's emulator lacks but whose effect
// the VMM can supply. It reports whether it did; the vCPU then goes on.
func (c *vcpu) assist() bool {
	if c.m.host != HostPVM {
		return false
	}
	regs, err := c.Regs()
	if err != nil {
		return false
	}
	insn := c.instructionAt(regs.RIP)
	if len(insn) == 0 {
		return false
	}
	var name string
	switch insn[0] {
	case 0xcc: // int3: deliver the #BP it raises, as a trap (after the int3)
		ev, err := c.VCPUEvents()
		if err != nil {
			return false
		}
		ev.Exception.Injected = 1
		ev.Exception.Nr = 3
		ev.Exception.HasErrorCode = 0
		ev.Exception.Pending = 0
		regs.RIP++
		if c.SetRegs(&regs) != nil || c.SetVCPUEvents(&ev) != nil {
			return false
		}
		name = "int3"
	case 0x9b: // fwait: with no x87 exception pending it does nothing
		regs.RIP++
		if c.SetRegs(&regs) != nil {
			return false
		}
		name = "fwait"
	default:
		return false
	}
	c.m.assisted(name, regs.RIP)
	return true
}

// assisted records an instruction assist; the first of each kind is noted.
func (m *Machine) assisted(name string, rip uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.assists == nil {
		m.assists = map[string]uint64{}
	}
	m.assists[name]++
	if m.assists[name] == 1 {
		m.notes = append(m.notes, fmt.Sprintf("host adaptation: assisted %s at %#x (the kvm_pvm emulator lacks it)", name, rip))
		m.log.Info("instruction assist", "insn", name, "rip", fmt.Sprintf("%#x", rip))
	}
}

// note records an adaptation or warning for the result.
func (m *Machine) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range m.notes {
		if n == s {
			return
		}
	}
	m.notes = append(m.notes, s)
	m.log.Info(strings.TrimPrefix(s, "host adaptation: "))
}
