package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// ExitReason is kvm_run.exit_reason.
type ExitReason uint32

// Exit reasons (linux/kvm.h KVM_EXIT_*).
const (
	ExitUnknown       ExitReason = 0
	ExitException     ExitReason = 1
	ExitIO            ExitReason = 2
	ExitHypercall     ExitReason = 3
	ExitDebug         ExitReason = 4
	ExitHLT           ExitReason = 5
	ExitMMIO          ExitReason = 6
	ExitIRQWindowOpen ExitReason = 7
	ExitShutdown      ExitReason = 8
	ExitFailEntry     ExitReason = 9
	ExitIntr          ExitReason = 10
	ExitSetTPR        ExitReason = 11
	ExitTPRAccess     ExitReason = 12
	ExitNMI           ExitReason = 16
	ExitInternalError ExitReason = 17
	ExitSystemEvent   ExitReason = 24
)

var exitNames = map[ExitReason]string{
	ExitUnknown: "unknown", ExitException: "exception", ExitIO: "io",
	ExitHypercall: "hypercall", ExitDebug: "debug", ExitHLT: "hlt", ExitMMIO: "mmio",
	ExitIRQWindowOpen: "irq-window-open", ExitShutdown: "shutdown",
	ExitFailEntry: "fail-entry", ExitIntr: "intr", ExitSetTPR: "set-tpr",
	ExitTPRAccess: "tpr-access", ExitNMI: "nmi", ExitInternalError: "internal-error",
	ExitSystemEvent: "system-event",
}

// String names the exit reason in lower-case words ("io", "mmio", "hlt").
func (r ExitReason) String() string {
	if s, ok := exitNames[r]; ok {
		return s
	}
	return fmt.Sprintf("exit-%d", uint32(r))
}

// System event types (kvm_run.system_event.type).
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
)

// Internal error suberrors (kvm_run.internal.suberror).
const (
	InternalErrorEmulation        = 1
	InternalErrorSimulEx          = 2
	InternalErrorDeliveryEv       = 3
	InternalErrorUnexpectedExitRe = 4
)

// Offsets into struct kvm_run.
const (
	runImmediateExit = 1
	runExitReason    = 8
	runIfFlag        = 13
	runExit          = 32 // the exit-reason union
)

// ErrInterrupted is returned by Run when KVM_RUN returned before the guest
// exited on its own: a signal or an immediate-exit request stopped it
// (EINTR), or a halted application processor was woken by INIT/SIPI and
// KVM asks to be called again (EAGAIN). Either way: check for a stop, then
// run again.
var ErrInterrupted = errors.New("KVM_RUN interrupted")

// VCPU is a virtual CPU fd with its mmapped kvm_run area.
type VCPU struct {
	fd     int
	id     int
	run    []byte
	rawRun bool
}

// ID returns the vCPU index it was created with.
func (c *VCPU) ID() int { return c.id }

// FD returns the raw file descriptor.
func (c *VCPU) FD() int { return c.fd }

// Close unmaps kvm_run and closes the fd.
func (c *VCPU) Close() error {
	var errs []error
	if c.run != nil {
		errs = append(errs, unix.Munmap(c.run))
		c.run = nil
	}
	if c.fd >= 0 {
		errs = append(errs, unix.Close(c.fd))
		c.fd = -1
	}
	return errors.Join(errs...)
}

// Run enters the guest until it exits to user space. It returns
// ErrInterrupted when a signal or SetImmediateExit stopped it.
func (c *VCPU) Run() error {
	if err := runOnce(c.fd, c.rawRun); err != nil {
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.EAGAIN) {
			return ErrInterrupted
		}
		return fmt.Errorf("KVM_RUN on vCPU %d: %w", c.id, err)
	}
	return nil
}

// SetRawRun makes Run enter the guest with a raw system call, which the Go
// scheduler does not see: the thread keeps its P while the guest runs and
// each exit is cheaper, but that P serves no other goroutine meanwhile. Use
// it only with a vCPU locked to its thread and Ps to spare
// (runtime.GOMAXPROCS above the number of vCPUs).
func (c *VCPU) SetRawRun(on bool) { c.rawRun = on }

// SetImmediateExit sets kvm_run.immediate_exit: while it is set, KVM_RUN
// returns ErrInterrupted at once. Together with a signal to the vCPU's
// thread this stops a running vCPU without a race.
func (c *VCPU) SetImmediateExit(on bool) {
	var v byte
	if on {
		v = 1
	}
	c.run[runImmediateExit] = v
}

// ExitReason returns why the last Run returned.
func (c *VCPU) ExitReason() ExitReason {
	return ExitReason(binary.LittleEndian.Uint32(c.run[runExitReason:]))
}

// IFFlag reports kvm_run.if_flag: whether guest interrupts were enabled at exit.
func (c *VCPU) IFFlag() bool { return c.run[runIfFlag] != 0 }

// IO describes an ExitIO. Data holds Size*Count bytes inside kvm_run: the
// bytes written by an OUT, or the place to put the bytes for an IN.
type IO struct {
	Out   bool
	Size  uint8
	Port  uint16
	Count uint32
	Data  []byte
}

// IO decodes the io member of the exit union.
func (c *VCPU) IO() (IO, error) {
	u := c.run[runExit:]
	io := IO{
		Out:   u[0] == 1,
		Size:  u[1],
		Port:  binary.LittleEndian.Uint16(u[2:]),
		Count: binary.LittleEndian.Uint32(u[4:]),
	}
	off := binary.LittleEndian.Uint64(u[8:])
	n := uint64(io.Size) * uint64(io.Count)
	if off > uint64(len(c.run)) || n > uint64(len(c.run))-off {
		return IO{}, fmt.Errorf("kvm_run io data [%#x+%d] outside the %d-byte run area", off, n, len(c.run))
	}
	io.Data = c.run[off : off+n]
	return io, nil
}

// MMIO describes an ExitMMIO. Data is the slice of kvm_run holding the
// written bytes, or where the read result goes.
type MMIO struct {
	Addr  uint64
	Data  []byte
	Write bool
}

// MMIO decodes the mmio member of the exit union.
func (c *VCPU) MMIO() (MMIO, error) {
	u := c.run[runExit:]
	n := binary.LittleEndian.Uint32(u[16:])
	if n > 8 {
		return MMIO{}, fmt.Errorf("kvm_run mmio length %d > 8", n)
	}
	return MMIO{
		Addr:  binary.LittleEndian.Uint64(u[0:]),
		Data:  u[8 : 8+n],
		Write: u[20] != 0,
	}, nil
}

// InternalError decodes the internal member: the suberror and its data words.
func (c *VCPU) InternalError() (suberror uint32, data []uint64) {
	u := c.run[runExit:]
	suberror = binary.LittleEndian.Uint32(u[0:])
	n := binary.LittleEndian.Uint32(u[4:])
	if n > 16 {
		n = 16
	}
	for i := uint32(0); i < n; i++ {
		data = append(data, binary.LittleEndian.Uint64(u[8+8*i:]))
	}
	return suberror, data
}

// SystemEvent decodes the system_event member: its type and flags.
func (c *VCPU) SystemEvent() (typ uint32, flags uint64) {
	u := c.run[runExit:]
	return binary.LittleEndian.Uint32(u[0:]), binary.LittleEndian.Uint64(u[8:])
}

// HardwareExitReason decodes the hw or fail_entry member.
func (c *VCPU) HardwareExitReason() uint64 {
	return binary.LittleEndian.Uint64(c.run[runExit:])
}

// Regs returns KVM_GET_REGS.
func (c *VCPU) Regs() (Regs, error) {
	var r Regs
	if err := ioctlPtr(c.fd, kvmGetRegs, &r); err != nil {
		return r, fmt.Errorf("KVM_GET_REGS: %w", err)
	}
	return r, nil
}

// SetRegs issues KVM_SET_REGS.
func (c *VCPU) SetRegs(r *Regs) error {
	if err := ioctlPtr(c.fd, kvmSetRegs, r); err != nil {
		return fmt.Errorf("KVM_SET_REGS: %w", err)
	}
	return nil
}

// Sregs returns KVM_GET_SREGS.
func (c *VCPU) Sregs() (Sregs, error) {
	var s Sregs
	if err := ioctlPtr(c.fd, kvmGetSregs, &s); err != nil {
		return s, fmt.Errorf("KVM_GET_SREGS: %w", err)
	}
	return s, nil
}

// SetSregs issues KVM_SET_SREGS.
func (c *VCPU) SetSregs(s *Sregs) error {
	if err := ioctlPtr(c.fd, kvmSetSregs, s); err != nil {
		return fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	return nil
}

// FPU returns KVM_GET_FPU.
func (c *VCPU) FPU() (FPU, error) {
	var f FPU
	if err := ioctlPtr(c.fd, kvmGetFPU, &f); err != nil {
		return f, fmt.Errorf("KVM_GET_FPU: %w", err)
	}
	return f, nil
}

// SetFPU issues KVM_SET_FPU.
func (c *VCPU) SetFPU(f *FPU) error {
	if err := ioctlPtr(c.fd, kvmSetFPU, f); err != nil {
		return fmt.Errorf("KVM_SET_FPU: %w", err)
	}
	return nil
}

// SetCPUID2 issues KVM_SET_CPUID2 with the given entries.
func (c *VCPU) SetCPUID2(entries []CPUIDEntry) error {
	if len(entries) > maxCPUIDEntries {
		return fmt.Errorf("KVM_SET_CPUID2: %d entries, at most %d", len(entries), maxCPUIDEntries)
	}
	var b cpuid2
	b.Nent = uint32(len(entries))
	copy(b.Entries[:], entries)
	if err := ioctlPtr(c.fd, kvmSetCPUID2, &b); err != nil {
		return fmt.Errorf("KVM_SET_CPUID2: %w", err)
	}
	return nil
}

// msrs is struct kvm_msrs with room for maxMSRs entries.
type msrs struct {
	N       uint32
	_       uint32
	Entries [maxMSRs]MSREntry
}

const maxMSRs = 64

// SetMSRs issues KVM_SET_MSRS; all entries must be accepted.
func (c *VCPU) SetMSRs(entries []MSREntry) error {
	if len(entries) > maxMSRs {
		return fmt.Errorf("KVM_SET_MSRS: %d entries, at most %d", len(entries), maxMSRs)
	}
	var b msrs
	b.N = uint32(len(entries))
	copy(b.Entries[:], entries)
	n, err := c.msrIoctl(kvmSetMSRs, &b)
	if err != nil {
		return fmt.Errorf("KVM_SET_MSRS: %w", err)
	}
	if n != len(entries) {
		return &MSRRefusedError{Index: entries[n].Index, Set: n, Total: len(entries)}
	}
	return nil
}

// MSRRefusedError is SetMSRs' error when KVM set only the first Set of
// Total entries: it refused the MSR Index (KVM_SET_MSRS stops there).
type MSRRefusedError struct {
	Index      uint32
	Set, Total int
}

func (e *MSRRefusedError) Error() string {
	return fmt.Sprintf("KVM_SET_MSRS: MSR %#x refused (%d of %d set)", e.Index, e.Set, e.Total)
}

// MSRs reads the MSRs named by indices with KVM_GET_MSRS.
func (c *VCPU) MSRs(indices ...uint32) ([]MSREntry, error) {
	if len(indices) > maxMSRs {
		return nil, fmt.Errorf("KVM_GET_MSRS: %d entries, at most %d", len(indices), maxMSRs)
	}
	var b msrs
	b.N = uint32(len(indices))
	for i, idx := range indices {
		b.Entries[i].Index = idx
	}
	n, err := c.msrIoctl(kvmGetMSRs, &b)
	if err != nil {
		return nil, fmt.Errorf("KVM_GET_MSRS: %w", err)
	}
	if n != len(indices) {
		return nil, fmt.Errorf("KVM_GET_MSRS: MSR %#x unreadable", indices[n])
	}
	return append([]MSREntry(nil), b.Entries[:n]...), nil
}

// VCPUEvents returns KVM_GET_VCPU_EVENTS.
func (c *VCPU) VCPUEvents() (VCPUEvents, error) {
	var e VCPUEvents
	if err := ioctlPtr(c.fd, kvmGetVCPUEvents, &e); err != nil {
		return e, fmt.Errorf("KVM_GET_VCPU_EVENTS: %w", err)
	}
	return e, nil
}

// SetVCPUEvents issues KVM_SET_VCPU_EVENTS.
func (c *VCPU) SetVCPUEvents(e *VCPUEvents) error {
	if err := ioctlPtr(c.fd, kvmSetVCPUEvents, e); err != nil {
		return fmt.Errorf("KVM_SET_VCPU_EVENTS: %w", err)
	}
	return nil
}

// MPState returns KVM_GET_MP_STATE.
func (c *VCPU) MPState() (uint32, error) {
	var s uint32
	if err := ioctlPtr(c.fd, kvmGetMPState, &s); err != nil {
		return 0, fmt.Errorf("KVM_GET_MP_STATE: %w", err)
	}
	return s, nil
}

// SetMPState issues KVM_SET_MP_STATE.
func (c *VCPU) SetMPState(s uint32) error {
	if err := ioctlPtr(c.fd, kvmSetMPState, &s); err != nil {
		return fmt.Errorf("KVM_SET_MP_STATE: %w", err)
	}
	return nil
}

// Translate asks KVM to translate a guest-virtual address through the
// vCPU's current page tables (KVM_TRANSLATE).
func (c *VCPU) Translate(gva uint64) (Translation, error) {
	t := Translation{LinearAddress: gva}
	if err := ioctlPtr(c.fd, kvmTranslate, &t); err != nil {
		return t, fmt.Errorf("KVM_TRANSLATE %#x: %w", gva, err)
	}
	return t, nil
}

// TSCKHz returns the guest TSC frequency (KVM_GET_TSC_KHZ).
func (c *VCPU) TSCKHz() (uint64, error) {
	v, err := ioctl(c.fd, kvmGetTSCKHz, 0)
	if err != nil {
		return 0, fmt.Errorf("KVM_GET_TSC_KHZ: %w", err)
	}
	return uint64(v), nil
}

// LAPIC returns KVM_GET_LAPIC (needs an in-kernel irqchip).
func (c *VCPU) LAPIC() (LAPICState, error) {
	var l LAPICState
	if err := ioctlPtr(c.fd, kvmGetLAPIC, &l); err != nil {
		return l, fmt.Errorf("KVM_GET_LAPIC: %w", err)
	}
	return l, nil
}

// SetLAPIC issues KVM_SET_LAPIC.
func (c *VCPU) SetLAPIC(l *LAPICState) error {
	if err := ioctlPtr(c.fd, kvmSetLAPIC, l); err != nil {
		return fmt.Errorf("KVM_SET_LAPIC: %w", err)
	}
	return nil
}
