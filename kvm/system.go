// Package kvm is a thin, typed layer over the Linux KVM ioctl ABI for
// x86-64: the system fd (/dev/kvm), VM fds and vCPU fds with their mmapped
// kvm_run area. It holds no policy; package vmm builds machines from it.
//
// Raw pointer conversions live in ioctl_unsafe.go; everything else is safe Go.
package kvm

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// DevicePath is where the KVM device normally lives.
const DevicePath = "/dev/kvm"

// StableAPIVersion is the only KVM API version there has ever been.
const StableAPIVersion = 12

// maxCPUIDEntries bounds KVM_GET_SUPPORTED_CPUID and KVM_SET_CPUID2.
const maxCPUIDEntries = 256

// System is an open /dev/kvm.
type System struct {
	fd       int
	mmapSize int
	cpuid    []CPUIDEntry // cached supported CPUID, filled on first use
}

// Open opens the KVM device at path (usually DevicePath) and checks that it
// speaks the stable API.
func Open(path string) (*System, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	s := &System{fd: fd}
	v, err := s.APIVersion()
	if err != nil {
		s.Close()
		return nil, err
	}
	if v != StableAPIVersion {
		s.Close()
		return nil, fmt.Errorf("%s: KVM API version %d, want %d", path, v, StableAPIVersion)
	}
	n, err := ioctl(fd, kvmGetVCPUMmapSize, 0)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("KVM_GET_VCPU_MMAP_SIZE: %w", err)
	}
	s.mmapSize = int(n)
	return s, nil
}

// Close closes the device. VMs created from it stay valid.
func (s *System) Close() error {
	if s.fd < 0 {
		return nil
	}
	err := unix.Close(s.fd)
	s.fd = -1
	return err
}

// FD returns the raw file descriptor.
func (s *System) FD() int { return s.fd }

// APIVersion returns KVM_GET_API_VERSION.
func (s *System) APIVersion() (int, error) {
	v, err := ioctl(s.fd, kvmGetAPIVersion, 0)
	if err != nil {
		return 0, fmt.Errorf("KVM_GET_API_VERSION: %w", err)
	}
	return int(v), nil
}

// CheckExtension returns KVM_CHECK_EXTENSION for c: 0 when unsupported,
// otherwise a capability-specific positive value.
func (s *System) CheckExtension(c Cap) (int, error) {
	v, err := ioctl(s.fd, kvmCheckExtension, uintptr(c))
	if err != nil {
		return 0, fmt.Errorf("KVM_CHECK_EXTENSION %v: %w", c, err)
	}
	return int(v), nil
}

// VCPUMmapSize is the size of each vCPU's kvm_run mapping.
func (s *System) VCPUMmapSize() int { return s.mmapSize }

// SupportedCPUID returns KVM_GET_SUPPORTED_CPUID. The result is cached; the
// caller gets its own copy to modify.
func (s *System) SupportedCPUID() ([]CPUIDEntry, error) {
	if s.cpuid == nil {
		var c cpuid2
		c.Nent = maxCPUIDEntries
		if err := ioctlPtr(s.fd, kvmGetSupportedCPUID, &c); err != nil {
			return nil, fmt.Errorf("KVM_GET_SUPPORTED_CPUID: %w", err)
		}
		s.cpuid = append([]CPUIDEntry(nil), c.Entries[:c.Nent]...)
	}
	return append([]CPUIDEntry(nil), s.cpuid...), nil
}

// PrimeSupportedCPUID sets the cached KVM_GET_SUPPORTED_CPUID answer, e.g.
// from an earlier process's answer saved on disk; SupportedCPUID then
// skips the ioctl. The caller vouches that entries came from this host.
func (s *System) PrimeSupportedCPUID(entries []CPUIDEntry) {
	s.cpuid = append([]CPUIDEntry(nil), entries...)
}

// MSRIndexList returns KVM_GET_MSR_INDEX_LIST: the MSRs KVM saves and restores.
func (s *System) MSRIndexList() ([]uint32, error) {
	var l msrList
	l.N = uint32(len(l.Indices))
	if err := ioctlPtr(s.fd, kvmGetMSRIndexList, &l); err != nil {
		return nil, fmt.Errorf("KVM_GET_MSR_INDEX_LIST: %w", err)
	}
	return append([]uint32(nil), l.Indices[:l.N]...), nil
}

// CreateVM creates a virtual machine.
func (s *System) CreateVM() (*VM, error) {
	fd, err := ioctl(s.fd, kvmCreateVM, 0)
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VM: %w", err)
	}
	unix.CloseOnExec(int(fd))
	return &VM{fd: int(fd), mmapSize: s.mmapSize}, nil
}

// cpuid2 is struct kvm_cpuid2 with room for maxCPUIDEntries entries.
type cpuid2 struct {
	Nent    uint32
	_       uint32
	Entries [maxCPUIDEntries]CPUIDEntry
}

// msrList is struct kvm_msr_list with room for 1024 indices.
type msrList struct {
	N       uint32
	Indices [1024]uint32
}

// IsUnsupported reports whether err says the kernel does not know an ioctl.
func IsUnsupported(err error) bool {
	return errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS)
}
