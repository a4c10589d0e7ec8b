// Package sandbox confines a running VMM the way Firecracker's jailer and
// seccomp filters do: a seccomp-BPF allowlist of the system calls the run
// loop needs (Install), and a jail — new mount, PID, network, IPC and UTS
// namespaces, a pivot into an otherwise empty root, cgroup limits and an
// unprivileged uid/gid (StartJailed, JailChild).
//
// Seccomp is process-wide in Go (the filter is synchronised to every thread
// and inherited by threads the runtime starts later), so installing it is a
// decision for a program's main, never for a library: package vmm does not
// call into this package.
package sandbox

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"time"

	"github.com/microvm/microvm/kvm"
	"golang.org/x/sys/unix"
)

// Mode says what a filter does with a system call that is not allowed.
type Mode int

const (
	// ModeOff installs no filter.
	ModeOff Mode = iota
	// ModeKill kills the whole process with SIGSYS (SECCOMP_RET_KILL_PROCESS):
	// nothing of the offending thread or its siblings runs on. The default.
	ModeKill
	// ModeTrap raises SIGSYS in the offending thread (SECCOMP_RET_TRAP). The
	// call does not happen; the Go runtime then crashes with "SIGSYS: bad
	// system call" and a goroutine trace that shows where the call came
	// from. For debugging the allowlist.
	ModeTrap
	// ModeLog allows the call but has the kernel log it (SECCOMP_RET_LOG,
	// in the audit log / dmesg). For finding what a new code path needs.
	ModeLog
)

// ParseMode parses a --seccomp value: on or kill, trap, log, off.
func ParseMode(s string) (Mode, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "on", "kill", "true", "1":
		return ModeKill, nil
	case "trap":
		return ModeTrap, nil
	case "log":
		return ModeLog, nil
	case "off", "false", "0":
		return ModeOff, nil
	}
	return ModeOff, fmt.Errorf("seccomp mode %q: want on (= kill), trap, log or off", s)
}

// String names the mode as ParseMode takes it.
func (m Mode) String() string {
	switch m {
	case ModeOff:
		return "off"
	case ModeKill:
		return "kill"
	case ModeTrap:
		return "trap"
	case ModeLog:
		return "log"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// action is the filter's return value for calls off the list.
func (m Mode) action() (uint32, error) {
	switch m {
	case ModeKill:
		return unix.SECCOMP_RET_KILL_PROCESS, nil
	case ModeTrap:
		return unix.SECCOMP_RET_TRAP, nil
	case ModeLog:
		return unix.SECCOMP_RET_LOG, nil
	}
	return 0, fmt.Errorf("seccomp mode %v has no filter", m)
}

// ArgCheck narrows a rule to calls whose argument Index (0-5) passes: its
// low 32 bits equal one of Values (when Values is set), and have none of
// the bits in Forbid set. Only the low 32 bits are compared; every argument
// checked here is an int or unsigned int in the kernel (ioctl's request,
// clone's flags below CLONE_* bit 32, mmap's prot, a pid, arch_prctl's code).
type ArgCheck struct {
	Index  int
	Values []uint32
	Names  []string // what Values mean, for the documentation
	Forbid uint32
}

// Rule allows one system call, perhaps only with certain arguments, or
// (Errno) refuses it with an error instead of the mode's action.
type Rule struct {
	Name string
	Nr   uint32
	Why  string
	Arg  *ArgCheck
	// Errno, when set, makes the call fail with this error: for calls a
	// library probes and then does without (clone3 → ENOSYS → clone).
	Errno unix.Errno
}

// Policy is the input to the filter: who we are and what we may do.
type Policy struct {
	// Pid is the process's own pid (as seen in its PID namespace):
	// tgkill and kill are allowed only towards it.
	Pid int
	// Ioctls are the ioctl requests allowed, by name.
	Ioctls []Ioctl
	// Cgo adds what glibc's pthread_create needs, for a binary built
	// with cgo (its runtime starts threads through libc).
	Cgo bool
	// Devices adds what the VM's virtio device backends need at run time.
	Devices Devices
}

// Devices says which virtio backends a VM has: each adds the calls its I/O
// makes at run time, so a VM without them does without the calls.
type Devices struct {
	Block bool // virtio-blk: pread64, pwrite64, fsync on the image file
	Net   bool // virtio-net: read/write on the tap (already on the list)
	RNG   bool // virtio-rng: getrandom
	// Snapshot: the VMM writes a snapshot after the run (boot
	// --snapshot-on-ready) into files opened before the filter: the KVM
	// state getters, ftruncate and pwrite64.
	Snapshot bool
}

// snapshotKVMIoctls are what vmm.SnapshotFiles.Write issues.
var snapshotKVMIoctls = []struct{ name, why string }{
	{"KVM_GET_SUPPORTED_CPUID", "snapshot: the host CPU model recorded in it"},
	{"KVM_GET_MSR_INDEX_LIST", "snapshot: which MSRs to save"},
	{"KVM_CHECK_EXTENSION", "snapshot: XSAVE and XCR support"},
	{"KVM_GET_FPU", "snapshot: FPU state"},
	{"KVM_GET_XSAVE", "snapshot: XSAVE area"},
	{"KVM_GET_XSAVE2", "snapshot: XSAVE area larger than 4 KiB"},
	{"KVM_GET_XCRS", "snapshot: XCR0"},
	{"KVM_GET_MSRS", "snapshot: MSRs"},
	{"KVM_GET_LAPIC", "snapshot: local APIC"},
	{"KVM_GET_MP_STATE", "snapshot: MP state"},
	{"KVM_GET_DEBUGREGS", "snapshot: debug registers"},
	{"KVM_GET_IRQCHIP", "snapshot: PIC and IOAPIC"},
	{"KVM_GET_PIT2", "snapshot: PIT"},
	{"KVM_GET_CLOCK", "snapshot: kvmclock"},
}

// Ioctl is an allowed ioctl request.
type Ioctl struct {
	Name string
	Nr   uint32
	Why  string
}

// runLoopKVMIoctls are the KVM ioctls vmm issues once a machine is built:
// the run loop, crash reports and the kvm_pvm instruction assists.
var runLoopKVMIoctls = []struct{ name, why string }{
	{"KVM_RUN", "enter the guest (every vCPU thread, in a loop)"},
	{"KVM_GET_REGS", "RIP for a crash report; instruction assists read RIP"},
	{"KVM_SET_REGS", "instruction assists step RIP past int3/fwait"},
	{"KVM_GET_SREGS", "a triple-fault report tells a vCPU that KVM reset (AMD SVM) from one that faulted at the reset vector"},
	{"KVM_TRANSLATE", "a crash report reads the bytes at RIP through the guest's page tables"},
	{"KVM_GET_VCPU_EVENTS", "int3 assist: read pending events before injecting #BP"},
	{"KVM_SET_VCPU_EVENTS", "int3 assist: inject #BP"},
}

// terminalIoctls restore the console when a run ends.
var terminalIoctls = []Ioctl{
	{"TCGETS", unix.TCGETS, "read the terminal settings (x/term)"},
	{"TCSETS", unix.TCSETS, "restore the terminal from raw mode when the VM ends"},
}

// VMMPolicy is the policy of `microvm boot` after its VM is built, for a
// VM with the devices d.
func VMMPolicy(d Devices) (Policy, error) {
	p := Policy{Pid: os.Getpid(), Cgo: builtWithCgo, Devices: d}
	for _, k := range runLoopKVMIoctls {
		nr, ok := kvm.IoctlNumber(k.name)
		if !ok {
			return p, fmt.Errorf("seccomp: package kvm does not know %s", k.name)
		}
		p.Ioctls = append(p.Ioctls, Ioctl{Name: k.name, Nr: uint32(nr), Why: k.why})
	}
	if d.Snapshot {
		for _, k := range snapshotKVMIoctls {
			nr, ok := kvm.IoctlNumber(k.name)
			if !ok {
				return p, fmt.Errorf("seccomp: package kvm does not know %s", k.name)
			}
			p.Ioctls = append(p.Ioctls, Ioctl{Name: k.name, Nr: uint32(nr), Why: k.why})
		}
	}
	p.Ioctls = append(p.Ioctls, terminalIoctls...)
	return p, nil
}

// goCloneFlags is the flags word the Go runtime passes to clone for a new
// thread: runtime/os_linux.go's cloneFlags (CLONE_VM|CLONE_FS|CLONE_FILES|
// CLONE_SIGHAND|CLONE_SYSVSEM|CLONE_THREAD) plus CLONE_SETTLS, which its
// clone stub adds. Nothing else may be cloned: no fork, no new namespaces.
const goCloneFlags = unix.CLONE_VM | unix.CLONE_FS | unix.CLONE_FILES | unix.CLONE_SIGHAND |
	unix.CLONE_SYSVSEM | unix.CLONE_THREAD | unix.CLONE_SETTLS

// glibcCloneFlags is what glibc's pthread_create passes (to clone3, and
// to clone when clone3 fails with ENOSYS).
const glibcCloneFlags = goCloneFlags | unix.CLONE_PARENT_SETTID | unix.CLONE_CHILD_CLEARTID

// Rules returns the allowlist for p, one rule per system call, sorted by
// name. Every entry says why it is there.
func (p Policy) Rules() []Rule {
	pid := uint32(p.Pid)
	var ioctlNrs []uint32
	var ioctlNames []string
	for _, io := range p.Ioctls {
		ioctlNrs = append(ioctlNrs, io.Nr)
		ioctlNames = append(ioctlNames, io.Name)
	}
	rules := []Rule{
		// The run loop and devices.
		{Name: "ioctl", Nr: unix.SYS_IOCTL, Why: "KVM_RUN and the few vCPU ioctls of the run loop; terminal restore",
			Arg: &ArgCheck{Index: 1, Values: ioctlNrs, Names: ioctlNames}},
		{Name: "read", Nr: unix.SYS_READ, Why: "console input (stdin pump)"},
		{Name: "write", Nr: unix.SYS_WRITE, Why: "console output and diagnostics (stdout/stderr); raising an irqfd (eventfd)"},
		{Name: "close", Nr: unix.SYS_CLOSE, Why: "tear-down: vCPU, VM and eventfd descriptors"},
		{Name: "munmap", Nr: unix.SYS_MUNMAP, Why: "tear-down: guest memory and kvm_run; Go heap"},
		// Stopping a vCPU: a signal to its thread, pid and tid to aim it.
		{Name: "tgkill", Nr: unix.SYS_TGKILL, Why: "kick a vCPU out of KVM_RUN (SIGURG); Go preemption; only to this process",
			Arg: &ArgCheck{Index: 0, Values: []uint32{pid}, Names: []string{"own pid"}}},
		{Name: "getpid", Nr: unix.SYS_GETPID, Why: "aim tgkill at this process"},
		{Name: "gettid", Nr: unix.SYS_GETTID, Why: "a vCPU thread records its tid for kicks; Go runtime"},
		// The Go runtime: threads, memory, scheduling, signals, time.
		{Name: "clone", Nr: unix.SYS_CLONE, Why: "Go starts OS threads (vCPU threads are locked to theirs); thread flags only, no fork or namespaces",
			Arg: &ArgCheck{Index: 0, Values: []uint32{goCloneFlags}, Names: []string{"CLONE_VM|FS|FILES|SIGHAND|SYSVSEM|THREAD|SETTLS"}}},
		{Name: "mmap", Nr: unix.SYS_MMAP, Why: "Go heap and stacks; never executable",
			Arg: &ArgCheck{Index: 2, Forbid: unix.PROT_EXEC}},
		{Name: "madvise", Nr: unix.SYS_MADVISE, Why: "Go returns free memory to the kernel"},
		{Name: "futex", Nr: unix.SYS_FUTEX, Why: "Go runtime locks and sleeps"},
		{Name: "sched_yield", Nr: unix.SYS_SCHED_YIELD, Why: "Go runtime spinning"},
		{Name: "nanosleep", Nr: unix.SYS_NANOSLEEP, Why: "Go runtime usleep"},
		{Name: "clock_gettime", Nr: unix.SYS_CLOCK_GETTIME, Why: "time, when the vDSO is not used"},
		{Name: "epoll_pwait", Nr: unix.SYS_EPOLL_PWAIT, Why: "Go netpoller: timers and pollable descriptors"},
		{Name: "epoll_ctl", Nr: unix.SYS_EPOLL_CTL, Why: "Go netpoller: a pollable descriptor (a tap, a non-blocking pipe) leaves the poller when closed"},
		{Name: "rt_sigaction", Nr: unix.SYS_RT_SIGACTION, Why: "signal.Stop restores a handler when the run ends"},
		{Name: "rt_sigprocmask", Nr: unix.SYS_RT_SIGPROCMASK, Why: "Go masks signals around thread start"},
		{Name: "rt_sigreturn", Nr: unix.SYS_RT_SIGRETURN, Why: "return from a signal handler (every kick, every preemption)"},
		{Name: "sigaltstack", Nr: unix.SYS_SIGALTSTACK, Why: "a new Go thread sets its signal stack"},
		{Name: "restart_syscall", Nr: unix.SYS_RESTART_SYSCALL, Why: "the kernel restarts a sleep a signal interrupted"},
		{Name: "kill", Nr: unix.SYS_KILL, Why: "Go re-raises a fatal signal at itself to die by it; only to this process",
			Arg: &ArgCheck{Index: 0, Values: []uint32{pid}, Names: []string{"own pid"}}},
		{Name: "mincore", Nr: unix.SYS_MINCORE, Why: "--json reports how much guest memory is resident"},
		{Name: "exit", Nr: unix.SYS_EXIT, Why: "a thread ends"},
		{Name: "exit_group", Nr: unix.SYS_EXIT_GROUP, Why: "the process ends with the guest's status"},
	}
	if p.Devices.Block {
		rules = append(rules,
			Rule{Name: "pread64", Nr: unix.SYS_PREAD64, Why: "virtio-blk: read sectors from the disk image"},
			Rule{Name: "pwrite64", Nr: unix.SYS_PWRITE64, Why: "virtio-blk: write sectors to the disk image"},
			Rule{Name: "fsync", Nr: unix.SYS_FSYNC, Why: "virtio-blk: a flush request"},
		)
	}
	if p.Devices.Snapshot {
		if !p.Devices.Block {
			rules = append(rules, Rule{Name: "pwrite64", Nr: unix.SYS_PWRITE64, Why: "snapshot: guest memory into the memory file"})
		}
		rules = append(rules, Rule{Name: "ftruncate", Nr: unix.SYS_FTRUNCATE, Why: "snapshot: size the sparse memory file"})
	}
	if p.Devices.RNG {
		rules = append(rules, Rule{Name: "getrandom", Nr: unix.SYS_GETRANDOM, Why: "virtio-rng: the host's entropy for the guest"})
	}
	if p.Cgo {
		for i := range rules {
			if rules[i].Name == "clone" {
				rules[i].Arg.Values = append(rules[i].Arg.Values, glibcCloneFlags)
				rules[i].Arg.Names = append(rules[i].Arg.Names, "glibc pthread_create: the same | PARENT_SETTID|CHILD_CLEARTID")
			}
		}
		rules = append(rules,
			Rule{Name: "clone3", Nr: unix.SYS_CLONE3, Errno: unix.ENOSYS,
				Why: "cgo: glibc tries clone3 first; its flags sit in memory where a filter cannot check them, so it fails with ENOSYS and glibc falls back to clone"},
			Rule{Name: "mprotect", Nr: unix.SYS_MPROTECT, Why: "cgo: glibc makes a new thread's stack guard page; never executable",
				Arg: &ArgCheck{Index: 2, Forbid: unix.PROT_EXEC}},
			Rule{Name: "set_robust_list", Nr: unix.SYS_SET_ROBUST_LIST, Why: "cgo: a new glibc thread registers its robust futex list"},
			Rule{Name: "rseq", Nr: unix.SYS_RSEQ, Why: "cgo: a new glibc thread registers restartable sequences"},
		)
	}
	sort.Slice(rules, func(i, j int) bool { return rules[i].Name < rules[j].Name })
	return rules
}

// Filter assembles the BPF program for rules. Calls off the list get
// mode's action; so do calls from another architecture's ABI (the program
// checks AUDIT_ARCH_X86_64 first) and x32 calls (nr ≥ 0x40000000).
//
// The system call number is looked up by binary search (a tree of JGE
// jumps over the rules sorted by number, short JEQ chains at its leaves),
// not by one long chain: every call then runs about 11 instructions, not
// about 31, and so does the kernel, which on installing a filter runs it
// for every system call number to find those it may allow without running
// it. On the development host that halves the cost of the seccomp call
// (~0.15 ms with one chain, ~0.065 ms with the tree).
func Filter(rules []Rule, mode Mode) ([]unix.SockFilter, error) {
	deny, err := mode.action()
	if err != nil {
		return nil, err
	}
	byNr := make([]int, len(rules)) // indices into rules, by system call number
	for i := range byNr {
		byNr[i] = i
	}
	sort.Slice(byNr, func(i, j int) bool { return rules[byNr[i]].Nr < rules[byNr[j]].Nr })
	for k := 1; k < len(byNr); k++ {
		if a, b := rules[byNr[k-1]], rules[byNr[k]]; a.Nr == b.Nr {
			return nil, fmt.Errorf("seccomp: rules %s and %s are both for system call %d", a.Name, b.Name, a.Nr)
		}
	}
	var a asm
	a.stmt(bpfLD|bpfW|bpfABS, offArch)
	a.jump(bpfJMP|bpfJEQ|bpfK, unix.AUDIT_ARCH_X86_64, "", "deny")
	a.stmt(bpfLD|bpfW|bpfABS, offNr)
	a.jump(bpfJMP|bpfJGE|bpfK, x32SyscallBit, "deny", "")
	a.dispatch(rules, byNr)
	for i, r := range rules {
		if r.Errno != 0 {
			if r.Arg != nil {
				return nil, fmt.Errorf("seccomp: %s: an errno rule takes no argument check", r.Name)
			}
			a.label(ruleLabel(i))
			a.stmt(bpfRET|bpfK, unix.SECCOMP_RET_ERRNO|uint32(r.Errno)&unix.SECCOMP_RET_DATA)
			continue
		}
		if r.Arg == nil {
			continue
		}
		c := r.Arg
		if c.Index < 0 || c.Index > 5 {
			return nil, fmt.Errorf("seccomp: %s: argument index %d out of 0-5", r.Name, c.Index)
		}
		if len(c.Values) == 0 && c.Forbid == 0 {
			return nil, fmt.Errorf("seccomp: %s: argument check with nothing to check", r.Name)
		}
		a.label(ruleLabel(i))
		a.stmt(bpfLD|bpfW|bpfABS, offArgs+8*uint32(c.Index)) // low 32 bits (little-endian)
		if c.Forbid != 0 {
			a.jump(bpfJMP|bpfJSET|bpfK, c.Forbid, "deny", "")
		}
		if len(c.Values) == 0 {
			a.ja("allow")
			continue
		}
		for _, v := range c.Values {
			a.jump(bpfJMP|bpfJEQ|bpfK, v, "allow", "")
		}
		a.ja("deny")
	}
	a.label("deny")
	a.stmt(bpfRET|bpfK, deny)
	a.label("allow")
	a.stmt(bpfRET|bpfK, unix.SECCOMP_RET_ALLOW)
	return a.assemble()
}

// leafRules is how many rules a leaf of the dispatch tree compares in a row.
const leafRules = 3

// dispatch emits the lookup of the system call number (in A) among
// rules[idx...], idx sorted by number: a match jumps to "allow" or to the
// rule's own checks, anything else to "deny".
func (a *asm) dispatch(rules []Rule, idx []int) {
	if len(idx) <= leafRules {
		if len(idx) == 0 {
			a.ja("deny")
			return
		}
		for k, i := range idx {
			target, other := "allow", "" // no match: the next compare
			if rules[i].Arg != nil || rules[i].Errno != 0 {
				target = ruleLabel(i)
			}
			if k == len(idx)-1 {
				other = "deny"
			}
			a.jump(bpfJMP|bpfJEQ|bpfK, rules[i].Nr, target, other)
		}
		return
	}
	mid := len(idx) / 2
	upper := fmt.Sprintf("ge%d", rules[idx[mid]].Nr)
	a.jump(bpfJMP|bpfJGE|bpfK, rules[idx[mid]].Nr, upper, "")
	a.dispatch(rules, idx[:mid])
	a.label(upper)
	a.dispatch(rules, idx[mid:])
}

func ruleLabel(i int) string { return fmt.Sprintf("rule%d", i) }

// Install puts the filter for rules in place for every thread of the
// process (SECCOMP_FILTER_FLAG_TSYNC), after setting no_new_privs. There is
// no way back. Lazily initialised state that would need a system call the
// list lacks (the local time zone, read on the first log line) is set up
// first. ModeOff installs nothing.
func Install(rules []Rule, mode Mode) error {
	if mode == ModeOff {
		return nil
	}
	prog, err := Filter(rules, mode)
	if err != nil {
		return err
	}
	prewarm()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("seccomp: prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	if err := seccompSetFilter(prog, unix.SECCOMP_FILTER_FLAG_TSYNC); err != nil {
		return err
	}
	return nil
}

// InstallVMM installs the VMM policy (VMMPolicy) for a VM with devices d
// in mode.
func InstallVMM(mode Mode, d Devices) error {
	if mode == ModeOff {
		return nil
	}
	p, err := VMMPolicy(d)
	if err != nil {
		return err
	}
	return Install(p.Rules(), mode)
}

// prewarm runs lazy initialisations that would otherwise make system calls
// off the list later.
func prewarm() {
	_ = time.Local.String() // loads /etc/localtime (slog prints local time)
	// Since Go 1.25 sysmon re-reads the CPU affinity and the cgroup CPU
	// limit every second to adjust GOMAXPROCS (sched_getaffinity, reads of
	// cgroup files). Setting GOMAXPROCS explicitly, to what it is, turns
	// that off without a system call (the runtime's own advice for
	// sandboxes is GODEBUG=updatemaxprocs=0, which this matches).
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))
	// The first timer a program starts opens the runtime's netpoller
	// (epoll_create1, eventfd2, epoll_ctl); open it now.
	time.AfterFunc(time.Hour, func() {}).Stop()
}

// ErrTSync is returned when another thread could not take the filter.
var ErrTSync = errors.New("seccomp: a thread could not be synchronised to the filter")

// Offsets into struct seccomp_data.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16

	x32SyscallBit = 0x40000000
)

// Classic BPF opcodes (linux/bpf_common.h).
const (
	bpfLD   = 0x00
	bpfJMP  = 0x05
	bpfRET  = 0x06
	bpfW    = 0x00
	bpfABS  = 0x20
	bpfJA   = 0x00
	bpfJEQ  = 0x10
	bpfJGE  = 0x30
	bpfJSET = 0x40
	bpfK    = 0x00
)

// asm is a tiny forward-only BPF assembler with symbolic jump targets.
type asm struct {
	insns  []unix.SockFilter
	refs   []ref
	labels map[string]int
}

type ref struct {
	at     int
	jt, jf string // conditional targets ("" = next instruction)
	always bool   // BPF_JA: jt is the target, the offset goes in K
}

func (a *asm) stmt(code uint16, k uint32) {
	a.insns = append(a.insns, unix.SockFilter{Code: code, K: k})
}

// jump adds a conditional jump comparing A with k.
func (a *asm) jump(code uint16, k uint32, jt, jf string) {
	a.refs = append(a.refs, ref{at: len(a.insns), jt: jt, jf: jf})
	a.insns = append(a.insns, unix.SockFilter{Code: code, K: k})
}

// ja adds an unconditional jump.
func (a *asm) ja(to string) {
	a.refs = append(a.refs, ref{at: len(a.insns), jt: to, always: true})
	a.insns = append(a.insns, unix.SockFilter{Code: bpfJMP | bpfJA})
}

func (a *asm) label(name string) {
	if a.labels == nil {
		a.labels = map[string]int{}
	}
	a.labels[name] = len(a.insns)
}

// maxInsns is BPF_MAXINSNS.
const maxInsns = 4096

func (a *asm) assemble() ([]unix.SockFilter, error) {
	off := func(from int, name string) (int, error) {
		if name == "" {
			return 0, nil
		}
		to, ok := a.labels[name]
		if !ok {
			return 0, fmt.Errorf("seccomp: undefined label %q", name)
		}
		d := to - from - 1
		if d < 0 {
			return 0, fmt.Errorf("seccomp: backward jump to %q", name)
		}
		return d, nil
	}
	for _, r := range a.refs {
		in := &a.insns[r.at]
		jt, err := off(r.at, r.jt)
		if err != nil {
			return nil, err
		}
		jf, err := off(r.at, r.jf)
		if err != nil {
			return nil, err
		}
		if r.always { // BPF_JA: 32-bit offset in K
			in.K = uint32(jt)
			continue
		}
		if jt > 255 || jf > 255 {
			return nil, fmt.Errorf("seccomp: filter too long for a conditional jump (%d, %d)", jt, jf)
		}
		in.Jt, in.Jf = uint8(jt), uint8(jf)
	}
	if len(a.insns) > maxInsns {
		return nil, fmt.Errorf("seccomp: filter has %d instructions, more than %d", len(a.insns), maxInsns)
	}
	return a.insns, nil
}
