package kvm

import "strconv"

// ioctl request numbers for x86-64 (linux/kvm.h), checked against the
// kernel headers by TestIoctlNumbers.
const (
	kvmio = 0xAE

	iocNone  = 0
	iocWrite = 1
	iocRead  = 2
)

func ioc(dir, nr, size uintptr) uintptr { return dir<<30 | size<<16 | kvmio<<8 | nr }
func ion(nr uintptr) uintptr            { return ioc(iocNone, nr, 0) }
func iow(nr, size uintptr) uintptr      { return ioc(iocWrite, nr, size) }
func ior(nr, size uintptr) uintptr      { return ioc(iocRead, nr, size) }
func iowr(nr, size uintptr) uintptr     { return ioc(iocRead|iocWrite, nr, size) }

var (
	// System ioctls (on the /dev/kvm fd).
	kvmGetAPIVersion     = ion(0x00)
	kvmCreateVM          = ion(0x01)
	kvmGetMSRIndexList   = iowr(0x02, 4)
	kvmCheckExtension    = ion(0x03)
	kvmGetVCPUMmapSize   = ion(0x04)
	kvmGetSupportedCPUID = iowr(0x05, 8)

	// VM ioctls.
	kvmCreateVCPU          = ion(0x41)
	kvmSetUserMemoryRegion = iow(0x46, 32)
	kvmSetTSSAddr          = ion(0x47)
	kvmSetIdentityMapAddr  = iow(0x48, 8)
	kvmCreateIRQChip       = ion(0x60)
	kvmIRQLine             = iow(0x61, 8)
	kvmIRQFD               = iow(0x76, 32)
	kvmCreatePIT2          = iow(0x77, 64)
	kvmIOEventFD           = iow(0x79, 64)

	// vCPU ioctls.
	kvmRun           = ion(0x80)
	kvmGetRegs       = ior(0x81, 144)
	kvmSetRegs       = iow(0x82, 144)
	kvmGetSregs      = ior(0x83, 312)
	kvmSetSregs      = iow(0x84, 312)
	kvmTranslate     = iowr(0x85, 24)
	kvmGetMSRs       = iowr(0x88, 8)
	kvmSetMSRs       = iow(0x89, 8)
	kvmSetCPUID2     = iow(0x90, 8)
	kvmGetFPU        = ior(0x8c, 416)
	kvmSetFPU        = iow(0x8d, 416)
	kvmGetMPState    = ior(0x98, 4)
	kvmSetMPState    = iow(0x99, 4)
	kvmGetVCPUEvents = ior(0x9f, 64)
	kvmSetVCPUEvents = iow(0xa0, 64)
	kvmGetTSCKHz     = ion(0xa3)
	kvmGetLAPIC      = ior(0x8e, 1024)
	kvmSetLAPIC      = iow(0x8f, 1024)
	kvmSetGSIRouting = iow(0x6a, 8)
	kvmIRQLineStatus = iowr(0x67, 8)
)

// Cap is a KVM capability number for CheckExtension.
type Cap uintptr

// Capabilities microvm asks about (linux/kvm.h KVM_CAP_*).
const (
	CapIRQChip           Cap = 0
	CapHLT               Cap = 1
	CapUserMemory        Cap = 3
	CapSetTSSAddr        Cap = 4
	CapExtCPUID          Cap = 7
	CapNrVCPUs           Cap = 9
	CapNrMemSlots        Cap = 10
	CapMPState           Cap = 14
	CapIRQRouting        Cap = 25
	CapIRQFD             Cap = 32
	CapPIT2              Cap = 33
	CapIOEventFD         Cap = 36
	CapSetIdentityMapAdr Cap = 37
	CapAdjustClock       Cap = 39
	CapVCPUEvents        Cap = 41
	CapXSave             Cap = 55
	CapGetTSCKHz         Cap = 61
	CapMaxVCPUs          Cap = 66
	CapImmediateExit     Cap = 136
)

// String names the capability the way linux/kvm.h does.
func (c Cap) String() string {
	switch c {
	case CapIRQChip:
		return "KVM_CAP_IRQCHIP"
	case CapHLT:
		return "KVM_CAP_HLT"
	case CapUserMemory:
		return "KVM_CAP_USER_MEMORY"
	case CapSetTSSAddr:
		return "KVM_CAP_SET_TSS_ADDR"
	case CapExtCPUID:
		return "KVM_CAP_EXT_CPUID"
	case CapNrVCPUs:
		return "KVM_CAP_NR_VCPUS"
	case CapNrMemSlots:
		return "KVM_CAP_NR_MEMSLOTS"
	case CapMPState:
		return "KVM_CAP_MP_STATE"
	case CapIRQRouting:
		return "KVM_CAP_IRQ_ROUTING"
	case CapIRQFD:
		return "KVM_CAP_IRQFD"
	case CapPIT2:
		return "KVM_CAP_PIT2"
	case CapIOEventFD:
		return "KVM_CAP_IOEVENTFD"
	case CapSetIdentityMapAdr:
		return "KVM_CAP_SET_IDENTITY_MAP_ADDR"
	case CapAdjustClock:
		return "KVM_CAP_ADJUST_CLOCK"
	case CapVCPUEvents:
		return "KVM_CAP_VCPU_EVENTS"
	case CapXSave:
		return "KVM_CAP_XSAVE"
	case CapGetTSCKHz:
		return "KVM_CAP_GET_TSC_KHZ"
	case CapMaxVCPUs:
		return "KVM_CAP_MAX_VCPUS"
	case CapImmediateExit:
		return "KVM_CAP_IMMEDIATE_EXIT"
	}
	return "KVM_CAP_" + strconv.Itoa(int(c))
}
