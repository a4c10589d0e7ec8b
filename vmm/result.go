package vmm

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Reason says why a machine stopped.
type Reason string

// Reasons a machine ends.
const (
	// ReasonExit: the guest wrote its status to the exit register.
	ReasonExit Reason = "exit"
	// ReasonHalt: every vCPU halted with interrupts off (or with nothing
	// that could ever interrupt it).
	ReasonHalt Reason = "halt"
	// ReasonReset: the guest reset the machine (i8042 or a reset event).
	ReasonReset Reason = "reset"
	// ReasonPowerOff: the guest powered the machine off.
	ReasonPowerOff Reason = "poweroff"
	// ReasonPanic: a Linux guest panicked.
	ReasonPanic Reason = "panic"
	// ReasonTripleFault: the guest triple-faulted (KVM_EXIT_SHUTDOWN).
	ReasonTripleFault Reason = "triple-fault"
	// ReasonCrash: KVM could not go on running the guest (an internal or
	// emulation error, a failed entry, an unknown exit).
	ReasonCrash Reason = "crash"
	// ReasonTimeout: the context's deadline passed.
	ReasonTimeout Reason = "timeout"
	// ReasonStopped: Stop was called or the context was cancelled.
	ReasonStopped Reason = "stopped"
	// ReasonPaused: Config.PauseAtReady stopped the guest at its ready
	// write, or Pause stopped it; the machine can be snapshotted
	// (Machine.Snapshot).
	ReasonPaused Reason = "paused"
	// ReasonHostError: the host failed while the guest ran.
	ReasonHostError Reason = "host-error"
)

// Clean reports whether the guest itself ended the machine in an orderly way.
func (r Reason) Clean() bool {
	switch r {
	case ReasonExit, ReasonHalt, ReasonReset, ReasonPowerOff:
		return true
	}
	return false
}

// Result is what a run of a machine came to.
type Result struct {
	Reason Reason `json:"reason"`
	// Status is the value the guest wrote to the exit register (0 for
	// other clean ends).
	Status uint64 `json:"status"`
	// Detail explains a crash, a host error or an odd ending in words.
	Detail string `json:"detail,omitempty"`
	// RIP is the instruction pointer of the vCPU that crashed.
	RIP uint64 `json:"rip,omitempty"`
	// RIPLost is set when the crashed vCPU's state was reset before it
	// could be read (a triple fault on AMD SVM): RIP is then unknown.
	RIPLost bool `json:"rip_lost,omitempty"`
	// Instruction holds the bytes at RIP when they could be read.
	Instruction []byte `json:"instruction,omitempty"`
	// LastConsoleLine is the guest's last line of serial output.
	LastConsoleLine string `json:"last_console_line,omitempty"`

	// Ready reports whether the guest wrote the ready register.
	Ready bool `json:"ready"`
	// ReadyAfter is launch→ready: from New to the first ready write.
	ReadyAfter time.Duration `json:"ready_after_ns"`
	// SetupTime is launch→first instruction: from New to Run starting the vCPUs.
	SetupTime time.Duration `json:"setup_ns"`
	// ExitAfter is launch→exit: from New to the end of the guest.
	ExitAfter time.Duration `json:"exit_after_ns"`

	// Exits counts VM exits by kind (kvm exit reason names).
	Exits map[string]uint64 `json:"exits"`
	// UnknownReads and UnknownWrites count accesses no device claimed.
	UnknownReads  uint64 `json:"unknown_reads"`
	UnknownWrites uint64 `json:"unknown_writes"`

	// Kernel describes the Linux kernel booted; nil for a tiny guest.
	Kernel *KernelInfo `json:"kernel,omitempty"`
	// Host is the kind of KVM the machine ran on.
	Host HostKind `json:"host_kind"`

	CPUs        int    `json:"cpus"`
	MemoryBytes uint64 `json:"memory_bytes"`
	// Notes lists adaptations and warnings worth telling the user.
	Notes []string `json:"notes,omitempty"`
}

// Summary is a one-line description of how the guest ended.
func (r *Result) Summary() string {
	var b strings.Builder
	switch r.Reason {
	case ReasonExit:
		fmt.Fprintf(&b, "guest exited with status %d", r.Status)
	case ReasonHalt:
		b.WriteString("guest halted")
	case ReasonReset:
		b.WriteString("guest reset the machine")
	case ReasonPowerOff:
		b.WriteString("guest powered off")
	case ReasonPanic:
		b.WriteString("guest kernel panicked")
	case ReasonTripleFault:
		if r.RIPLost {
			b.WriteString("guest triple-faulted (RIP unknown)")
		} else {
			fmt.Fprintf(&b, "guest triple-faulted at RIP %#x", r.RIP)
		}
	case ReasonCrash:
		fmt.Fprintf(&b, "guest crashed at RIP %#x", r.RIP)
	case ReasonTimeout:
		b.WriteString("timed out")
	case ReasonStopped:
		b.WriteString("stopped")
	case ReasonPaused:
		if r.Detail == "" {
			b.WriteString("paused at the guest's ready write")
		} else {
			b.WriteString("paused")
		}
	default:
		b.WriteString(string(r.Reason))
	}
	if r.Detail != "" {
		b.WriteString(": " + r.Detail)
	}
	if len(r.Instruction) > 0 {
		fmt.Fprintf(&b, " (instruction bytes % x)", r.Instruction)
	}
	if !r.Reason.Clean() && r.LastConsoleLine != "" {
		b.WriteString("; last console line: " + strconv.Quote(r.LastConsoleLine))
	}
	return b.String()
}
