package kvm

import "sort"

// ioctlNames maps linux/kvm.h names to the request numbers above. It is ABI
// data, not policy: a seccomp allowlist (package sandbox) picks from it the
// requests a running VMM may issue.
var ioctlNames = map[string]uintptr{
	"KVM_GET_API_VERSION":        kvmGetAPIVersion,
	"KVM_CREATE_VM":              kvmCreateVM,
	"KVM_GET_MSR_INDEX_LIST":     kvmGetMSRIndexList,
	"KVM_CHECK_EXTENSION":        kvmCheckExtension,
	"KVM_GET_VCPU_MMAP_SIZE":     kvmGetVCPUMmapSize,
	"KVM_GET_SUPPORTED_CPUID":    kvmGetSupportedCPUID,
	"KVM_CREATE_VCPU":            kvmCreateVCPU,
	"KVM_SET_USER_MEMORY_REGION": kvmSetUserMemoryRegion,
	"KVM_SET_TSS_ADDR":           kvmSetTSSAddr,
	"KVM_SET_IDENTITY_MAP_ADDR":  kvmSetIdentityMapAddr,
	"KVM_CREATE_IRQCHIP":         kvmCreateIRQChip,
	"KVM_IRQ_LINE":               kvmIRQLine,
	"KVM_IRQFD":                  kvmIRQFD,
	"KVM_CREATE_PIT2":            kvmCreatePIT2,
	"KVM_IOEVENTFD":              kvmIOEventFD,
	"KVM_RUN":                    kvmRun,
	"KVM_GET_REGS":               kvmGetRegs,
	"KVM_SET_REGS":               kvmSetRegs,
	"KVM_GET_SREGS":              kvmGetSregs,
	"KVM_SET_SREGS":              kvmSetSregs,
	"KVM_TRANSLATE":              kvmTranslate,
	"KVM_GET_MSRS":               kvmGetMSRs,
	"KVM_SET_MSRS":               kvmSetMSRs,
	"KVM_SET_CPUID2":             kvmSetCPUID2,
	"KVM_GET_FPU":                kvmGetFPU,
	"KVM_SET_FPU":                kvmSetFPU,
	"KVM_GET_MP_STATE":           kvmGetMPState,
	"KVM_SET_MP_STATE":           kvmSetMPState,
	"KVM_GET_VCPU_EVENTS":        kvmGetVCPUEvents,
	"KVM_SET_VCPU_EVENTS":        kvmSetVCPUEvents,
	"KVM_GET_TSC_KHZ":            kvmGetTSCKHz,
	"KVM_GET_LAPIC":              kvmGetLAPIC,
	"KVM_SET_LAPIC":              kvmSetLAPIC,
	"KVM_SET_GSI_ROUTING":        kvmSetGSIRouting,
	"KVM_IRQ_LINE_STATUS":        kvmIRQLineStatus,
	"KVM_GET_XSAVE":              kvmGetXSave,
	"KVM_SET_XSAVE":              kvmSetXSave,
	"KVM_GET_XSAVE2":             kvmGetXSave2,
	"KVM_GET_XCRS":               kvmGetXCRs,
	"KVM_SET_XCRS":               kvmSetXCRs,
	"KVM_GET_DEBUGREGS":          kvmGetDebugRegs,
	"KVM_SET_DEBUGREGS":          kvmSetDebugRegs,
	"KVM_GET_IRQCHIP":            kvmGetIRQChip,
	"KVM_SET_IRQCHIP":            kvmSetIRQChip,
	"KVM_GET_PIT2":               kvmGetPIT2,
	"KVM_SET_PIT2":               kvmSetPIT2,
	"KVM_GET_CLOCK":              kvmGetClock,
	"KVM_SET_CLOCK":              kvmSetClock,
}

// IoctlNumber returns the request number of the KVM ioctl named as in
// linux/kvm.h ("KVM_RUN"), and whether this package knows it.
func IoctlNumber(name string) (uintptr, bool) {
	n, ok := ioctlNames[name]
	return n, ok
}

// IoctlNames lists the KVM ioctls this package issues, sorted by name.
func IoctlNames() []string {
	names := make([]string, 0, len(ioctlNames))
	for n := range ioctlNames {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
