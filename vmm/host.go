package vmm

import (
	"os"
	"strings"
)

// HostKind is the kind of KVM a host offers.
type HostKind string

// Host kinds.
const (
	// HostVMX is Intel VT-x (kvm_intel): guests run natively.
	HostVMX HostKind = "vt-x"
	// HostSVM is AMD-V (kvm_amd): guests run natively.
	HostSVM HostKind = "amd-v"
	// HostPVM is kvm_pvm: a paravirtual KVM for hosts that are themselves
	// guests without nested VT-x/AMD-V. Unmodified guest code is emulated
	// an instruction at a time, and Linux user space cannot run.
	HostPVM HostKind = "pvm"
	// HostUnknown: /dev/kvm exists but its backend module is not known.
	HostUnknown HostKind = "unknown"
)

// DetectHost tells which KVM backend is loaded, from /sys/module.
func DetectHost() HostKind {
	return detectHost(func(p string) bool { _, err := os.Stat(p); return err == nil })
}

func detectHost(exists func(string) bool) HostKind {
	switch {
	case exists("/sys/module/kvm_pvm"):
		return HostPVM
	case exists("/sys/module/kvm_intel"):
		return HostVMX
	case exists("/sys/module/kvm_amd"):
		return HostSVM
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		s := string(b)
		if strings.Contains(s, " vmx") {
			return HostVMX
		}
		if strings.Contains(s, " svm") {
			return HostSVM
		}
	}
	return HostUnknown
}

// HardwareAssisted reports whether guests run natively on this kind of host.
func (k HostKind) HardwareAssisted() bool { return k == HostVMX || k == HostSVM }

// Describe explains the host kind in a sentence.
func (k HostKind) Describe() string {
	switch k {
	case HostVMX:
		return "Intel VT-x (kvm_intel): hardware-assisted, guests run natively"
	case HostSVM:
		return "AMD-V (kvm_amd): hardware-assisted, guests run natively"
	case HostPVM:
		return "kvm_pvm: paravirtual KVM without VT-x/AMD-V; guest code is instruction-emulated " +
			"(~0.6 µs per instruction, ~10 µs per port I/O exit), Linux boots only through the " +
			"64-bit entry with CPU features masked, and Linux user space cannot run"
	}
	return "unknown KVM backend"
}
