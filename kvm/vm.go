package kvm

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// VM is a KVM virtual machine fd.
type VM struct {
	fd       int
	mmapSize int
}

// FD returns the raw file descriptor.
func (v *VM) FD() int { return v.fd }

// Close closes the VM fd. The kernel frees the VM once its vCPUs are closed too.
func (v *VM) Close() error {
	if v.fd < 0 {
		return nil
	}
	err := unix.Close(v.fd)
	v.fd = -1
	return err
}

// CheckExtension asks the VM (rather than the system) about a capability;
// some answers, like the vCPU limits, are per VM.
func (v *VM) CheckExtension(c Cap) (int, error) {
	r, err := ioctl(v.fd, kvmCheckExtension, uintptr(c))
	if err != nil {
		return 0, fmt.Errorf("KVM_CHECK_EXTENSION %v: %w", c, err)
	}
	return int(r), nil
}

// SetUserMemoryRegion maps mem at guest-physical address gpa in slot. mem
// must stay mapped for as long as the region is registered (use an mmap).
func (v *VM) SetUserMemoryRegion(slot uint32, gpa uint64, mem []byte) error {
	r := userspaceMemoryRegion{
		Slot:          slot,
		GuestPhysAddr: gpa,
		MemorySize:    uint64(len(mem)),
		UserspaceAddr: uint64(hostAddr(mem)),
	}
	if err := ioctlPtr(v.fd, kvmSetUserMemoryRegion, &r); err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION slot %d at %#x (%d bytes): %w", slot, gpa, len(mem), err)
	}
	return nil
}

// SetTSSAddr places the three-page TSS region KVM needs on Intel hosts.
func (v *VM) SetTSSAddr(addr uint64) error {
	if _, err := ioctl(v.fd, kvmSetTSSAddr, uintptr(addr)); err != nil {
		return fmt.Errorf("KVM_SET_TSS_ADDR %#x: %w", addr, err)
	}
	return nil
}

// SetIdentityMapAddr places the one-page identity map KVM needs on Intel hosts.
func (v *VM) SetIdentityMapAddr(addr uint64) error {
	if err := ioctlPtr(v.fd, kvmSetIdentityMapAddr, &addr); err != nil {
		return fmt.Errorf("KVM_SET_IDENTITY_MAP_ADDR %#x: %w", addr, err)
	}
	return nil
}

// CreateIRQChip creates the in-kernel PIC, IOAPIC and local APICs.
func (v *VM) CreateIRQChip() error {
	if _, err := ioctl(v.fd, kvmCreateIRQChip, 0); err != nil {
		return fmt.Errorf("KVM_CREATE_IRQCHIP: %w", err)
	}
	return nil
}

// CreatePIT2 creates the in-kernel i8254 timer (flags: PITSpeakerDummy).
func (v *VM) CreatePIT2(flags uint32) error {
	c := pitConfig{Flags: flags}
	if err := ioctlPtr(v.fd, kvmCreatePIT2, &c); err != nil {
		return fmt.Errorf("KVM_CREATE_PIT2: %w", err)
	}
	return nil
}

// IRQLine sets the level of an in-kernel irqchip input (GSI).
func (v *VM) IRQLine(irq uint32, high bool) error {
	l := irqLevel{IRQ: irq}
	if high {
		l.Level = 1
	}
	if err := ioctlPtr(v.fd, kvmIRQLine, &l); err != nil {
		return fmt.Errorf("KVM_IRQ_LINE %d: %w", irq, err)
	}
	return nil
}

// IRQFD makes a write to eventfd efd raise GSI gsi (edge).
func (v *VM) IRQFD(efd int, gsi uint32) error {
	r := irqfd{FD: uint32(efd), GSI: gsi}
	if err := ioctlPtr(v.fd, kvmIRQFD, &r); err != nil {
		return fmt.Errorf("KVM_IRQFD gsi %d: %w", gsi, err)
	}
	return nil
}

// RemoveIRQFD undoes IRQFD.
func (v *VM) RemoveIRQFD(efd int, gsi uint32) error {
	r := irqfd{FD: uint32(efd), GSI: gsi, Flags: irqfdFlagDeassign}
	if err := ioctlPtr(v.fd, kvmIRQFD, &r); err != nil {
		return fmt.Errorf("KVM_IRQFD deassign gsi %d: %w", gsi, err)
	}
	return nil
}

// IOEvent describes a guest write that KVM turns into an eventfd signal
// without leaving the kernel.
type IOEvent struct {
	Addr      uint64 // guest-physical MMIO address or I/O port
	Len       uint32 // access width in bytes: 0 (any), 1, 2, 4 or 8
	PIO       bool   // Addr is an I/O port
	DataMatch *uint64
}

func (e IOEvent) raw(efd int, flags uint32) ioeventfd {
	r := ioeventfd{Addr: e.Addr, Len: e.Len, FD: int32(efd), Flags: flags}
	if e.PIO {
		r.Flags |= ioeventfdFlagPIO
	}
	if e.DataMatch != nil {
		r.Flags |= ioeventfdFlagDataMatch
		r.DataMatch = *e.DataMatch
	}
	return r
}

// IOEventFD registers e to signal eventfd efd.
func (v *VM) IOEventFD(efd int, e IOEvent) error {
	r := e.raw(efd, 0)
	if err := ioctlPtr(v.fd, kvmIOEventFD, &r); err != nil {
		return fmt.Errorf("KVM_IOEVENTFD %#x: %w", e.Addr, err)
	}
	return nil
}

// RemoveIOEventFD undoes IOEventFD.
func (v *VM) RemoveIOEventFD(efd int, e IOEvent) error {
	r := e.raw(efd, ioeventfdFlagDeassign)
	if err := ioctlPtr(v.fd, kvmIOEventFD, &r); err != nil {
		return fmt.Errorf("KVM_IOEVENTFD deassign %#x: %w", e.Addr, err)
	}
	return nil
}

// CreateVCPU creates vCPU id and maps its kvm_run area.
func (v *VM) CreateVCPU(id int) (*VCPU, error) {
	fd, err := ioctl(v.fd, kvmCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VCPU %d: %w", id, err)
	}
	unix.CloseOnExec(int(fd))
	run, err := unix.Mmap(int(fd), 0, v.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("mmap kvm_run of vCPU %d: %w", id, err)
	}
	return &VCPU{fd: int(fd), id: id, run: run}, nil
}
