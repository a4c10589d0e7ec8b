package vmm

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/microvm/microvm/images/guests"
	"github.com/microvm/microvm/kvm"
)

// On kvm_pvm hosts KVM_SET_CPUID2 is accepted, but what the guest's own
// CPUID instruction returns need not follow it (issue #15: clearing leaf 1
// ECX hid only CX16). So the masks are checked, not assumed: the embedded
// cpuid guest runs with the same CPUID a Linux guest gets, and the notes
// say which masked bits it still saw.

// CPUIDKey names a CPUID leaf and subleaf.
type CPUIDKey struct{ Leaf, Sub uint32 }

// CPUIDRegs is what CPUID returned for one leaf.
type CPUIDRegs struct{ EAX, EBX, ECX, EDX uint32 }

// MaskedBit is one feature bit microvm asks KVM to hide on kvm_pvm hosts.
type MaskedBit struct {
	Leaf, Sub uint32
	Reg       string // "ebx" or "ecx"
	Bit       uint
	Name      string
}

// pvmMaskedBits lists pvmCPUIDMask's bits by name.
func pvmMaskedBits() []MaskedBit {
	names := map[CPUIDKey]map[string]map[uint]string{
		{1, 0}: {"ecx": {0: "SSE3", 1: "PCLMULQDQ", 9: "SSSE3", 12: "FMA", 13: "CX16", 19: "SSE4.1", 20: "SSE4.2",
			22: "MOVBE", 23: "POPCNT", 25: "AES", 26: "XSAVE", 27: "OSXSAVE", 28: "AVX", 29: "F16C", 30: "RDRAND"}},
		{7, 0}: {"ebx": {0: "FSGSBASE", 3: "BMI1", 5: "AVX2", 8: "BMI2", 10: "INVPCID", 16: "AVX512F", 17: "AVX512DQ",
			18: "RDSEED", 19: "ADX", 20: "SMAP", 21: "AVX512IFMA", 28: "AVX512CD", 29: "SHA", 30: "AVX512BW", 31: "AVX512VL"},
			"ecx": {1: "AVX512VBMI", 2: "UMIP", 6: "AVX512_VBMI2", 8: "GFNI", 9: "VAES", 10: "VPCLMULQDQ", 11: "AVX512_VNNI",
				12: "AVX512_BITALG", 14: "AVX512_VPOPCNTDQ"}},
		{0x80000001, 0}: {"ecx": {5: "ABM"}},
	}
	var out []MaskedBit
	for _, m := range pvmCPUIDMask {
		k := CPUIDKey{m.leaf, m.index}
		for _, r := range []struct {
			reg  string
			mask uint32
		}{{"ebx", m.ebx}, {"ecx", m.ecx}} {
			for b := uint(0); b < 32; b++ {
				if r.mask&(1<<b) != 0 {
					name := names[k][r.reg][b]
					if name == "" {
						name = fmt.Sprintf("bit %d", b)
					}
					out = append(out, MaskedBit{Leaf: k.Leaf, Sub: k.Sub, Reg: r.reg, Bit: b, Name: name})
				}
			}
		}
	}
	return out
}

// In reports whether the bit is set in regs.
func (b MaskedBit) In(regs CPUIDRegs) bool {
	v := regs.ECX
	if b.Reg == "ebx" {
		v = regs.EBX
	}
	return v&(1<<b.Bit) != 0
}

// CPUIDReport is what the cpuid guest saw next to what KVM was asked for.
type CPUIDReport struct {
	// Requested is vCPU 0's CPUID as handed to KVM_SET_CPUID2.
	Requested map[CPUIDKey]CPUIDRegs
	// Seen is what the guest's CPUID instruction returned.
	Seen map[CPUIDKey]CPUIDRegs
	// Masked lists the bits microvm asked to hide (none off kvm_pvm).
	Masked []MaskedBit
	// Console is the guest's output.
	Console string
}

// Leaked returns the masked bits the guest still saw.
func (r *CPUIDReport) Leaked() []MaskedBit {
	var out []MaskedBit
	for _, b := range r.Masked {
		if seen, ok := r.Seen[CPUIDKey{b.Leaf, b.Sub}]; ok && b.In(seen) {
			out = append(out, b)
		}
	}
	return out
}

// Note says, in one line, whether the masks reached the guest.
func (r *CPUIDReport) Note() string {
	leaked := r.Leaked()
	if len(r.Masked) == 0 {
		return "CPUID: no features masked on this host"
	}
	if len(leaked) == 0 {
		return fmt.Sprintf("host adaptation: kvm_pvm host, %d CPU features the emulator lacks are hidden from the guest (checked with the cpuid probe guest)", len(r.Masked))
	}
	var groups []string
	for i := 0; i < len(leaked); {
		b := leaked[i]
		var names []string
		j := i
		for ; j < len(leaked) && leaked[j].Leaf == b.Leaf && leaked[j].Sub == b.Sub && leaked[j].Reg == b.Reg; j++ {
			names = append(names, leaked[j].Name)
		}
		leaf := fmt.Sprintf("%#x", b.Leaf)
		if b.Leaf == 7 {
			leaf = "7.0"
		}
		groups = append(groups, fmt.Sprintf("leaf %s %s %s", leaf, strings.ToUpper(b.Reg), strings.Join(names, ", ")))
		i = j
	}
	return fmt.Sprintf("kvm_pvm: CPUID masks not honoured for %s: guests see them (%d of %d masked bits hidden; Linux is told by clearcpuid=)",
		strings.Join(groups, "; "), len(r.Masked)-len(leaked), len(r.Masked))
}

// ProbeCPUID boots the embedded cpuid guest on sys with the CPUID a Linux
// guest gets on a host of kind host (HostPVM: with the kvm_pvm masks) and
// reports what the guest saw. It takes a few milliseconds on kvm_pvm.
func ProbeCPUID(ctx context.Context, sys *kvm.System, host HostKind) (*CPUIDReport, error) {
	img, err := guests.Get("cpuid")
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	m, err := New(Config{Image: img, System: sys, Host: host, MemoryBytes: MinMemory, Console: &out, linuxCPUID: true})
	if err != nil {
		return nil, fmt.Errorf("cpuid probe: %w", err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := m.Run(ctx)
	if err != nil {
		return nil, fmt.Errorf("cpuid probe: %w", err)
	}
	if res.Reason != ReasonExit || res.Status != 0 {
		return nil, fmt.Errorf("cpuid probe guest did not finish: %s", res.Summary())
	}
	seen, err := ParseCPUIDDump(out.String())
	if err != nil {
		return nil, fmt.Errorf("cpuid probe: %w", err)
	}
	r := &CPUIDReport{Requested: map[CPUIDKey]CPUIDRegs{}, Seen: seen, Console: out.String()}
	for _, e := range m.probeCPUID {
		r.Requested[CPUIDKey{e.Function, e.Index}] = CPUIDRegs{e.EAX, e.EBX, e.ECX, e.EDX}
	}
	if host == HostPVM {
		r.Masked = pvmMaskedBits()
	}
	return r, nil
}

// ParseCPUIDDump reads the cpuid guest's "cpuid LEAF.SUB eax=X ebx=X
// ecx=X edx=X" lines (hex); other lines are skipped. It needs the final
// "cpuid: done" line, so a cut-off dump is an error.
func ParseCPUIDDump(s string) (map[CPUIDKey]CPUIDRegs, error) {
	out := map[CPUIDKey]CPUIDRegs{}
	done := false
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if line == "cpuid: done" {
			done = true
			continue
		}
		f := strings.Fields(line)
		if len(f) != 6 || f[0] != "cpuid" {
			continue
		}
		leaf, sub, ok := strings.Cut(f[1], ".")
		if !ok {
			return nil, fmt.Errorf("cpuid dump line %q: leaf %q is not LEAF.SUB", line, f[1])
		}
		var v [6]uint64
		var err error
		if v[0], err = strconv.ParseUint(leaf, 16, 32); err != nil {
			return nil, fmt.Errorf("cpuid dump line %q: %w", line, err)
		}
		if v[1], err = strconv.ParseUint(sub, 16, 32); err != nil {
			return nil, fmt.Errorf("cpuid dump line %q: %w", line, err)
		}
		for i, name := range []string{"eax=", "ebx=", "ecx=", "edx="} {
			h, ok := strings.CutPrefix(f[2+i], name)
			if !ok {
				return nil, fmt.Errorf("cpuid dump line %q: want %sX in field %d", line, name, 3+i)
			}
			if v[2+i], err = strconv.ParseUint(h, 16, 32); err != nil {
				return nil, fmt.Errorf("cpuid dump line %q: %w", line, err)
			}
		}
		out[CPUIDKey{uint32(v[0]), uint32(v[1])}] = CPUIDRegs{uint32(v[2]), uint32(v[3]), uint32(v[4]), uint32(v[5])}
	}
	if !done {
		return nil, fmt.Errorf("cpuid dump incomplete (no \"cpuid: done\" line; %d leaves read)", len(out))
	}
	return out, nil
}

// verifyCPUID notes, for a Linux guest on kvm_pvm, whether the CPUID masks
// reach the guest (a probe guest on the same /dev/kvm); if the probe
// fails, the note says the masks were asked for but are unchecked.
func (m *Machine) verifyCPUID() {
	if m.host != HostPVM {
		return
	}
	r, err := ProbeCPUID(context.Background(), m.sys, m.host)
	if err != nil {
		m.note("host adaptation: kvm_pvm host, KVM_SET_CPUID2 asked to hide %d CPU features the emulator lacks; unchecked whether the guest sees them (%v)", len(pvmMaskedBits()), err)
		return
	}
	m.note("%s", r.Note())
}
