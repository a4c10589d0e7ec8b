package kvm

import "fmt"

// This file holds the get/set wrappers that a snapshot needs beyond the run
// loop's: XSAVE, XCRs, debug registers, batched MSRs (vCPU) and the
// in-kernel irqchip, PIT and clock (VM). Layouts follow linux/kvm.h for
// x86-64 and are checked by TestStructSizes and TestIoctlNumbers.

var (
	kvmGetXSave     = ior(0xa4, 4096)
	kvmSetXSave     = iow(0xa5, 4096)
	kvmGetXSave2    = ior(0xcf, 4096)
	kvmGetXCRs      = ior(0xa6, 392)
	kvmSetXCRs      = iow(0xa7, 392)
	kvmGetDebugRegs = ior(0xa1, 128)
	kvmSetDebugRegs = iow(0xa2, 128)
	kvmGetIRQChip   = iowr(0x62, 520)
	kvmSetIRQChip   = ior(0x63, 520) // _IOR in linux/kvm.h, though it writes
	kvmGetPIT2      = ior(0x9f, 112)
	kvmSetPIT2      = iow(0xa0, 112)
	kvmGetClock     = ior(0x7c, 48)
	kvmSetClock     = iow(0x7b, 48)
)

// Capabilities the snapshot path asks about.
const (
	CapDebugRegs Cap = 50
	CapXCRs      Cap = 56
	CapXSave2    Cap = 208
)

// XSaveSize is the size of struct kvm_xsave, the buffer of KVM_GET_XSAVE.
const XSaveSize = 4096

// XSave is the XSAVE area of a vCPU (struct kvm_xsave and, when
// KVM_CAP_XSAVE2 reports more than 4096 bytes, its larger variant).
type XSave struct {
	Region []byte
}

// XCR is struct kvm_xcr: one extended control register (XCR0 is index 0).
type XCR struct {
	XCR   uint32
	_     uint32
	Value uint64
}

// MaxXCRs is KVM_MAX_XCRS.
const MaxXCRs = 16

// XCRs is struct kvm_xcrs.
type XCRs struct {
	N     uint32
	Flags uint32
	XCRs  [MaxXCRs]XCR
	_     [16]uint64
}

// DebugRegs is struct kvm_debugregs: DR0-3, DR6, DR7.
type DebugRegs struct {
	DB    [4]uint64
	DR6   uint64
	DR7   uint64
	Flags uint64
	_     [9]uint64
}

// IRQChip ids for KVM_GET/SET_IRQCHIP.
const (
	IRQChipPICMaster = 0
	IRQChipPICSlave  = 1
	IRQChipIOAPIC    = 2
)

// IRQChip is struct kvm_irqchip: one in-kernel interrupt controller's
// state, kept as the raw 512-byte union (kvm_pic_state or
// kvm_ioapic_state) so that it round-trips unchanged.
type IRQChip struct {
	ChipID uint32
	_      uint32
	Chip   [512]byte
}

// PITChannel is struct kvm_pit_channel_state.
type PITChannel struct {
	Count         uint32
	LatchedCount  uint16
	CountLatched  uint8
	StatusLatched uint8
	Status        uint8
	ReadState     uint8
	WriteState    uint8
	WriteLatch    uint8
	RWMode        uint8
	Mode          uint8
	BCD           uint8
	Gate          uint8
	CountLoadTime int64
}

// PITState2 is struct kvm_pit_state2.
type PITState2 struct {
	Channels [3]PITChannel
	Flags    uint32
	_        [9]uint32
}

// ClockData is struct kvm_clock_data (KVM_GET/SET_CLOCK).
type ClockData struct {
	Clock    uint64
	Flags    uint32
	_        uint32
	Realtime uint64
	HostTSC  uint64
	_        [4]uint32
}

// XSave returns the vCPU's XSAVE area. size is the buffer size:
// XSaveSize, or the larger answer of CheckExtension(CapXSave2) (then
// KVM_GET_XSAVE2 is used).
func (c *VCPU) XSave(size int) (XSave, error) {
	if size < XSaveSize {
		size = XSaveSize
	}
	buf := make([]byte, size)
	req, name := kvmGetXSave, "KVM_GET_XSAVE"
	if size > XSaveSize {
		req, name = kvmGetXSave2, "KVM_GET_XSAVE2"
	}
	if err := ioctlPtr(c.fd, req, &buf[0]); err != nil {
		return XSave{}, fmt.Errorf("%s: %w", name, err)
	}
	return XSave{Region: buf}, nil
}

// SetXSave issues KVM_SET_XSAVE. The region must be at least XSaveSize
// bytes; a larger one must match what KVM_CAP_XSAVE2 reports.
func (c *VCPU) SetXSave(x XSave) error {
	if len(x.Region) < XSaveSize {
		return fmt.Errorf("KVM_SET_XSAVE: region of %d bytes, want at least %d", len(x.Region), XSaveSize)
	}
	if err := ioctlPtr(c.fd, kvmSetXSave, &x.Region[0]); err != nil {
		return fmt.Errorf("KVM_SET_XSAVE: %w", err)
	}
	return nil
}

// XCRs returns KVM_GET_XCRS.
func (c *VCPU) XCRs() (XCRs, error) {
	var x XCRs
	if err := ioctlPtr(c.fd, kvmGetXCRs, &x); err != nil {
		return x, fmt.Errorf("KVM_GET_XCRS: %w", err)
	}
	return x, nil
}

// SetXCRs issues KVM_SET_XCRS.
func (c *VCPU) SetXCRs(x *XCRs) error {
	if x.N > MaxXCRs {
		return fmt.Errorf("KVM_SET_XCRS: %d registers, at most %d", x.N, MaxXCRs)
	}
	if err := ioctlPtr(c.fd, kvmSetXCRs, x); err != nil {
		return fmt.Errorf("KVM_SET_XCRS: %w", err)
	}
	return nil
}

// DebugRegs returns KVM_GET_DEBUGREGS.
func (c *VCPU) DebugRegs() (DebugRegs, error) {
	var d DebugRegs
	if err := ioctlPtr(c.fd, kvmGetDebugRegs, &d); err != nil {
		return d, fmt.Errorf("KVM_GET_DEBUGREGS: %w", err)
	}
	return d, nil
}

// SetDebugRegs issues KVM_SET_DEBUGREGS.
func (c *VCPU) SetDebugRegs(d *DebugRegs) error {
	if err := ioctlPtr(c.fd, kvmSetDebugRegs, d); err != nil {
		return fmt.Errorf("KVM_SET_DEBUGREGS: %w", err)
	}
	return nil
}

// AllMSRs reads every MSR in indices (e.g. System.MSRIndexList), in
// batches of the ioctl buffer's size. An MSR that KVM lists but refuses to
// read on this vCPU is left out rather than failing the whole read, so the
// answer may be shorter than indices.
func (c *VCPU) AllMSRs(indices []uint32) ([]MSREntry, error) {
	var out []MSREntry
	for len(indices) > 0 {
		n := min(len(indices), maxMSRs)
		var b msrs
		b.N = uint32(n)
		for i, idx := range indices[:n] {
			b.Entries[i].Index = idx
		}
		got, err := c.msrIoctl(kvmGetMSRs, &b)
		if err != nil {
			return nil, fmt.Errorf("KVM_GET_MSRS: %w", err)
		}
		out = append(out, b.Entries[:got]...)
		if got < n {
			// Skip the refused MSR and go on after it.
			got++
		}
		indices = indices[got:]
	}
	return out, nil
}

// SetAllMSRs writes entries in batches; every one must be accepted.
func (c *VCPU) SetAllMSRs(entries []MSREntry) error {
	for len(entries) > 0 {
		n := min(len(entries), maxMSRs)
		if err := c.SetMSRs(entries[:n]); err != nil {
			return err
		}
		entries = entries[n:]
	}
	return nil
}

// IRQChip returns KVM_GET_IRQCHIP for chip (IRQChipPICMaster, …).
func (v *VM) IRQChip(chip uint32) (IRQChip, error) {
	c := IRQChip{ChipID: chip}
	if err := ioctlPtr(v.fd, kvmGetIRQChip, &c); err != nil {
		return c, fmt.Errorf("KVM_GET_IRQCHIP %d: %w", chip, err)
	}
	return c, nil
}

// SetIRQChip issues KVM_SET_IRQCHIP.
func (v *VM) SetIRQChip(c *IRQChip) error {
	if err := ioctlPtr(v.fd, kvmSetIRQChip, c); err != nil {
		return fmt.Errorf("KVM_SET_IRQCHIP %d: %w", c.ChipID, err)
	}
	return nil
}

// PIT2 returns KVM_GET_PIT2.
func (v *VM) PIT2() (PITState2, error) {
	var p PITState2
	if err := ioctlPtr(v.fd, kvmGetPIT2, &p); err != nil {
		return p, fmt.Errorf("KVM_GET_PIT2: %w", err)
	}
	return p, nil
}

// SetPIT2 issues KVM_SET_PIT2.
func (v *VM) SetPIT2(p *PITState2) error {
	if err := ioctlPtr(v.fd, kvmSetPIT2, p); err != nil {
		return fmt.Errorf("KVM_SET_PIT2: %w", err)
	}
	return nil
}

// Clock returns KVM_GET_CLOCK: the guest's kvmclock base.
func (v *VM) Clock() (ClockData, error) {
	var c ClockData
	if err := ioctlPtr(v.fd, kvmGetClock, &c); err != nil {
		return c, fmt.Errorf("KVM_GET_CLOCK: %w", err)
	}
	return c, nil
}

// SetClock issues KVM_SET_CLOCK with c.Clock (flags other than those KVM
// accepts on set are cleared).
func (v *VM) SetClock(c *ClockData) error {
	s := ClockData{Clock: c.Clock}
	if err := ioctlPtr(v.fd, kvmSetClock, &s); err != nil {
		return fmt.Errorf("KVM_SET_CLOCK: %w", err)
	}
	return nil
}
