package vmm

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/microvm/microvm/devices"
	"github.com/microvm/microvm/kvm"
	"golang.org/x/sys/unix"
)

// loop runs the vCPU on its own OS thread until the machine ends or this
// vCPU halts for good.
func (c *vcpu) loop() {
	defer c.m.running.Done()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c.tid.Store(int32(unix.Gettid()))
	defer c.tid.Store(0)

	for {
		select {
		case <-c.m.done:
			return
		default:
		}
		err := c.Run()
		if errors.Is(err, kvm.ErrInterrupted) {
			c.exits[kvm.ExitIntr]++
			continue // the select above decides whether to go on
		}
		if err != nil {
			c.m.finish(Result{Reason: ReasonHostError, Detail: err.Error()})
			return
		}
		reason := c.ExitReason()
		if int(reason) < len(c.exits) {
			c.exits[reason]++
		}
		if !c.handle(reason) {
			return
		}
	}
}

// handle dispatches one exit; false means this vCPU is done.
func (c *vcpu) handle(reason kvm.ExitReason) bool {
	m := c.m
	switch reason {
	case kvm.ExitIO:
		io, err := c.IO()
		if err != nil {
			m.finish(Result{Reason: ReasonHostError, Detail: err.Error()})
			return false
		}
		size := int(io.Size)
		for i := 0; i < int(io.Count); i++ {
			d := io.Data[i*size : (i+1)*size]
			if io.Out {
				m.bus.Write(devices.PIO, uint64(io.Port), d)
			} else {
				m.bus.Read(devices.PIO, uint64(io.Port), d)
			}
		}
		return true
	case kvm.ExitMMIO:
		mm, err := c.MMIO()
		if err != nil {
			m.finish(Result{Reason: ReasonHostError, Detail: err.Error()})
			return false
		}
		if mm.Write {
			m.bus.Write(devices.MMIO, mm.Addr, mm.Data)
		} else {
			m.bus.Read(devices.MMIO, mm.Addr, mm.Data)
		}
		return true
	case kvm.ExitHLT:
		return c.halted()
	case kvm.ExitShutdown:
		m.finish(c.tripleFault())
		return false
	case kvm.ExitSystemEvent:
		typ, flags := c.SystemEvent()
		switch typ {
		case kvm.SystemEventShutdown:
			m.finish(Result{Reason: ReasonPowerOff})
		case kvm.SystemEventReset:
			m.finish(Result{Reason: ReasonReset})
		default:
			m.finish(c.crash(ReasonCrash, fmt.Sprintf("system event %d (flags %#x)", typ, flags)))
		}
		return false
	case kvm.ExitInternalError:
		sub, data := c.InternalError()
		if sub == kvm.InternalErrorEmulation && c.assist() {
			return true
		}
		r := c.crash(ReasonCrash, internalErrorText(sub, data))
		if n := insnName(r.Instruction); n != "" && sub == kvm.InternalErrorEmulation {
			r.Detail += fmt.Sprintf(": %s at RIP %#x, which this host's emulator lacks and microvm does not assist", n, r.RIP)
		}
		m.finish(r)
		return false
	case kvm.ExitFailEntry:
		m.finish(c.crash(ReasonCrash, fmt.Sprintf("KVM could not enter the guest (hardware entry failure reason %#x)", c.HardwareExitReason())))
		return false
	case kvm.ExitIntr:
		return true
	}
	m.finish(c.crash(ReasonCrash, fmt.Sprintf("unexpected KVM exit %v (%d)", reason, uint32(reason))))
	return false
}

// halted handles hlt. With interrupts off, or with no interrupt controller
// that could ever wake it, the vCPU is finished; the machine ends once every
// vCPU is.
func (c *vcpu) halted() bool {
	m := c.m
	if c.IFFlag() && !m.irqchip {
		m.log.Warn("vCPU halted with interrupts enabled, but nothing can interrupt it", "vcpu", c.ID())
	}
	if m.halts.Add(1) == int32(len(m.cpus)) {
		m.finish(Result{Reason: ReasonHalt})
	}
	return false
}

// crash builds a result for a guest failure, with RIP and the bytes there.
func (c *vcpu) crash(reason Reason, detail string) Result {
	r := Result{Reason: reason, Detail: fmt.Sprintf("vCPU %d: %s", c.ID(), detail)}
	regs, err := c.Regs()
	if err != nil {
		return r
	}
	r.RIP = regs.RIP
	r.Instruction = c.instructionAt(regs.RIP)
	return r
}

// tripleFault reports a KVM_EXIT_SHUTDOWN. On AMD SVM, KVM resets the
// vCPU at a shutdown (the VMCB is undefined after one), so the registers
// then read as the reset vector (CS base 0xffff0000, RIP 0xfff0) and the
// faulting RIP is lost: the report says so instead of naming 0xfff0.
func (c *vcpu) tripleFault() Result {
	r := c.crash(ReasonTripleFault, "the guest triple-faulted (an exception it could not handle)")
	if r.RIP != 0xfff0 {
		return r
	}
	if s, err := c.Sregs(); err == nil && s.CS.Base == 0xffff0000 {
		r.RIP, r.Instruction, r.RIPLost = 0, nil, true
		r.Detail += "; KVM reset the vCPU at the shutdown (as on AMD SVM), so the faulting RIP is lost"
	}
	return r
}

// instructionAt reads up to 15 bytes at guest-virtual rip, translating
// each page through the vCPU's page tables; nil when unreadable.
func (c *vcpu) instructionAt(rip uint64) []byte {
	var b []byte
	var page, gpaPage uint64 = 1, 0 // page 1 is never a page base: forces a lookup
	for va := rip; va < rip+15; va++ {
		if va&^0xfff != page {
			t, err := c.Translate(va)
			if err != nil || t.Valid == 0 {
				break
			}
			page, gpaPage = va&^0xfff, t.PhysicalAddress&^0xfff
		}
		var one [1]byte
		if _, err := c.m.mem.ReadAt(one[:], int64(gpaPage|va&0xfff)); err != nil {
			break
		}
		b = append(b, one[0])
	}
	return b
}

func internalErrorText(sub uint32, data []uint64) string {
	what := map[uint32]string{
		kvm.InternalErrorEmulation:        "KVM could not emulate an instruction",
		kvm.InternalErrorSimulEx:          "exception while delivering an exception",
		kvm.InternalErrorDeliveryEv:       "exit while delivering an event",
		kvm.InternalErrorUnexpectedExitRe: "unexpected exit reason",
	}[sub]
	if what == "" {
		what = fmt.Sprintf("KVM internal error, suberror %d", sub)
	}
	if len(data) > 0 {
		what += fmt.Sprintf(" (data %#x)", data)
	}
	return what
}
