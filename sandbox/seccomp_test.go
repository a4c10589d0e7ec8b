package sandbox

import (
	"encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/microvm/microvm/kvm"
	"golang.org/x/sys/unix"
)

// childEnv makes the test binary act as a child for the subprocess tests.
const childEnv = "SANDBOX_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode, ok := os.LookupEnv(childEnv); ok {
		os.Exit(childMain(mode))
	}
	os.Exit(m.Run())
}

// seccompData is struct seccomp_data.
type seccompData struct {
	nr   uint32
	arch uint32
	args [6]uint64
}

func (d seccompData) bytes() []byte {
	b := make([]byte, 64)
	binary.LittleEndian.PutUint32(b[0:], d.nr)
	binary.LittleEndian.PutUint32(b[4:], d.arch)
	for i, a := range d.args {
		binary.LittleEndian.PutUint64(b[16+8*i:], a)
	}
	return b
}

// runBPF interprets the subset of classic BPF that Filter emits.
func runBPF(t *testing.T, prog []unix.SockFilter, d seccompData) uint32 {
	t.Helper()
	ret, _ := runBPFSteps(t, prog, d)
	return ret
}

// runBPFSteps is runBPF that also says how many instructions ran.
func runBPFSteps(t *testing.T, prog []unix.SockFilter, d seccompData) (ret uint32, steps int) {
	t.Helper()
	data := d.bytes()
	var a uint32
	for pc := 0; pc < len(prog); pc++ {
		steps++
		in := prog[pc]
		switch in.Code {
		case bpfLD | bpfW | bpfABS:
			if int(in.K)+4 > len(data) {
				t.Fatalf("pc %d: load at %d outside seccomp_data", pc, in.K)
			}
			a = binary.LittleEndian.Uint32(data[in.K:])
		case bpfJMP | bpfJA:
			pc += int(in.K)
		case bpfJMP | bpfJEQ | bpfK, bpfJMP | bpfJGE | bpfK, bpfJMP | bpfJSET | bpfK:
			var cond bool
			switch in.Code &^ (bpfJMP | bpfK) {
			case bpfJEQ:
				cond = a == in.K
			case bpfJGE:
				cond = a >= in.K
			case bpfJSET:
				cond = a&in.K != 0
			}
			if cond {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case bpfRET | bpfK:
			return in.K, steps
		default:
			t.Fatalf("pc %d: unexpected opcode %#x", pc, in.Code)
		}
	}
	t.Fatalf("program fell off its end")
	return 0, steps
}

func vmmRules(t *testing.T, pid int, cgo bool) []Rule {
	t.Helper()
	p, err := VMMPolicy(Devices{})
	if err != nil {
		t.Fatal(err)
	}
	p.Pid, p.Cgo = pid, cgo
	return p.Rules()
}

func TestFilterDecisions(t *testing.T) {
	const pid = 4242
	kvmRun, _ := kvm.IoctlNumber("KVM_RUN")
	kvmCreateVM, _ := kvm.IoctlNumber("KVM_CREATE_VM")
	kvmSetUserMem, _ := kvm.IoctlNumber("KVM_SET_USER_MEMORY_REGION")
	x86 := uint32(unix.AUDIT_ARCH_X86_64)
	call := func(nr uintptr, args ...uint64) seccompData {
		d := seccompData{nr: uint32(nr), arch: x86}
		copy(d.args[:], args)
		return d
	}
	enosys := uint32(unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS))
	for _, tc := range []struct {
		name  string
		d     seccompData
		allow bool
		cgo   bool   // with the glibc additions
		ret   uint32 // neither allow nor deny
	}{
		{"KVM_RUN", call(unix.SYS_IOCTL, 7, uint64(kvmRun)), true, false, 0},
		{"KVM_RUN with junk in the high bits", call(unix.SYS_IOCTL, 7, uint64(kvmRun)|0xdead<<32), true, false, 0},
		{"TCSETS", call(unix.SYS_IOCTL, 0, unix.TCSETS), true, false, 0},
		{"KVM_CREATE_VM", call(unix.SYS_IOCTL, 3, uint64(kvmCreateVM)), false, false, 0},
		{"KVM_SET_USER_MEMORY_REGION", call(unix.SYS_IOCTL, 4, uint64(kvmSetUserMem)), false, false, 0},
		{"TIOCSTI", call(unix.SYS_IOCTL, 0, unix.TIOCSTI), false, false, 0},
		{"write", call(unix.SYS_WRITE, 1, 0, 5), true, false, 0},
		{"futex", call(unix.SYS_FUTEX), true, false, 0},
		{"Go thread clone", call(unix.SYS_CLONE, goCloneFlags), true, false, 0},
		{"fork-like clone", call(unix.SYS_CLONE, uint64(unix.SIGCHLD)), false, false, 0},
		{"clone into a new user namespace", call(unix.SYS_CLONE, goCloneFlags|unix.CLONE_NEWUSER), false, false, 0},
		{"clone3", call(unix.SYS_CLONE3), false, false, 0},
		{"clone3 with cgo", call(unix.SYS_CLONE3), false, true, enosys},
		{"glibc thread clone", call(unix.SYS_CLONE, glibcCloneFlags), false, false, 0},
		{"glibc thread clone with cgo", call(unix.SYS_CLONE, glibcCloneFlags), true, true, 0},
		{"Go thread clone with cgo", call(unix.SYS_CLONE, goCloneFlags), true, true, 0},
		{"fork with cgo", call(unix.SYS_CLONE, uint64(unix.SIGCHLD)), false, true, 0},
		{"mprotect guard page with cgo", call(unix.SYS_MPROTECT, 0, 4096, unix.PROT_NONE), true, true, 0},
		{"mprotect executable with cgo", call(unix.SYS_MPROTECT, 0, 4096, unix.PROT_READ|unix.PROT_EXEC), false, true, 0},
		{"rseq with cgo", call(unix.SYS_RSEQ), true, true, 0},
		{"rseq", call(unix.SYS_RSEQ), false, false, 0},
		{"pread64 without a disk", call(unix.SYS_PREAD64), false, false, 0},
		{"getrandom without an rng", call(unix.SYS_GETRANDOM), false, false, 0},
		{"mmap read-write", call(unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_WRITE), true, false, 0},
		{"mmap executable", call(unix.SYS_MMAP, 0, 4096, unix.PROT_READ|unix.PROT_EXEC), false, false, 0},
		{"mprotect", call(unix.SYS_MPROTECT, 0, 4096, unix.PROT_EXEC), false, false, 0},
		{"tgkill self", call(unix.SYS_TGKILL, pid, 99, uint64(unix.SIGURG)), true, false, 0},
		{"tgkill another process", call(unix.SYS_TGKILL, 1, 1, uint64(unix.SIGKILL)), false, false, 0},
		{"kill self", call(unix.SYS_KILL, pid, uint64(unix.SIGABRT)), true, false, 0},
		{"kill another process", call(unix.SYS_KILL, 1, uint64(unix.SIGKILL)), false, false, 0},
		{"openat", call(unix.SYS_OPENAT), false, false, 0},
		{"open", call(unix.SYS_OPEN), false, false, 0},
		{"execve", call(unix.SYS_EXECVE), false, false, 0},
		{"socket", call(unix.SYS_SOCKET), false, false, 0},
		{"ptrace", call(unix.SYS_PTRACE), false, false, 0},
		{"setuid", call(unix.SYS_SETUID), false, false, 0},
		{"x32 write", call(unix.SYS_WRITE | x32SyscallBit), false, false, 0},
		{"i386 ABI", seccompData{nr: unix.SYS_WRITE, arch: unix.AUDIT_ARCH_I386}, false, false, 0},
	} {
		for _, mode := range []Mode{ModeKill, ModeTrap, ModeLog} {
			t.Run(tc.name+"/"+mode.String(), func(t *testing.T) {
				prog, err := Filter(vmmRules(t, pid, tc.cgo), mode)
				if err != nil {
					t.Fatal(err)
				}
				deny, _ := mode.action()
				want := deny
				switch {
				case tc.ret != 0:
					want = tc.ret
				case tc.allow:
					want = unix.SECCOMP_RET_ALLOW
				}
				if got := runBPF(t, prog, tc.d); got != want {
					t.Errorf("filter returned %#x, want %#x", got, want)
				}
			})
		}
	}
}

// TestFilterLookup checks the filter's binary search against the rules for
// every system call number, and that none takes more than a few
// instructions to decide: the kernel runs the filter for every number when
// it is installed, and the run loop's calls go through it.
func TestFilterLookup(t *testing.T) {
	for _, cgo := range []bool{false, true} {
		p, err := VMMPolicy(Devices{Block: true, Net: true, RNG: true})
		if err != nil {
			t.Fatal(err)
		}
		p.Cgo = cgo
		rules := p.Rules()
		prog, err := Filter(rules, ModeKill)
		if err != nil {
			t.Fatal(err)
		}
		byNr := map[uint32]Rule{}
		for _, r := range rules {
			byNr[r.Nr] = r
		}
		longest := 0
		for nr := uint32(0); nr < 1024; nr++ {
			r, listed := byNr[nr]
			if listed && r.Arg != nil {
				continue // decided by the argument (TestFilterDecisions)
			}
			got, steps := runBPFSteps(t, prog, seccompData{nr: nr, arch: unix.AUDIT_ARCH_X86_64})
			want := uint32(unix.SECCOMP_RET_KILL_PROCESS)
			switch {
			case listed && r.Errno != 0:
				want = unix.SECCOMP_RET_ERRNO | uint32(r.Errno)
			case listed:
				want = unix.SECCOMP_RET_ALLOW
			}
			if got != want {
				t.Errorf("cgo %v: system call %d: filter returned %#x, want %#x", cgo, nr, got, want)
			}
			longest = max(longest, steps)
		}
		if longest > 16 {
			t.Errorf("cgo %v: %d rules: a system call number takes up to %d instructions to decide, want a binary search (≤ 16)", cgo, len(rules), longest)
		}
	}
}

func TestDeviceRules(t *testing.T) {
	for _, tc := range []struct {
		d          Devices
		allow, not []uintptr
	}{
		{Devices{}, nil, []uintptr{unix.SYS_PREAD64, unix.SYS_PWRITE64, unix.SYS_FSYNC, unix.SYS_GETRANDOM}},
		{Devices{Block: true}, []uintptr{unix.SYS_PREAD64, unix.SYS_PWRITE64, unix.SYS_FSYNC}, []uintptr{unix.SYS_GETRANDOM}},
		{Devices{RNG: true}, []uintptr{unix.SYS_GETRANDOM}, []uintptr{unix.SYS_PREAD64}},
		{Devices{Net: true}, []uintptr{unix.SYS_READ, unix.SYS_WRITE, unix.SYS_EPOLL_CTL}, []uintptr{unix.SYS_SENDTO, unix.SYS_PREAD64}},
	} {
		p, err := VMMPolicy(tc.d)
		if err != nil {
			t.Fatal(err)
		}
		p.Cgo = false
		prog, err := Filter(p.Rules(), ModeKill)
		if err != nil {
			t.Fatal(err)
		}
		for _, nr := range tc.allow {
			if got := runBPF(t, prog, seccompData{nr: uint32(nr), arch: unix.AUDIT_ARCH_X86_64}); got != unix.SECCOMP_RET_ALLOW {
				t.Errorf("%+v: syscall %d refused", tc.d, nr)
			}
		}
		for _, nr := range tc.not {
			if got := runBPF(t, prog, seccompData{nr: uint32(nr), arch: unix.AUDIT_ARCH_X86_64}); got == unix.SECCOMP_RET_ALLOW {
				t.Errorf("%+v: syscall %d allowed", tc.d, nr)
			}
		}
	}
}

func TestFilterErrors(t *testing.T) {
	if _, err := Filter(nil, ModeOff); err == nil {
		t.Error("ModeOff built a filter")
	}
	bad := []Rule{{Name: "x", Nr: 1, Arg: &ArgCheck{Index: 6, Values: []uint32{1}}}}
	if _, err := Filter(bad, ModeKill); err == nil || !strings.Contains(err.Error(), "argument index") {
		t.Errorf("index 6: err %v", err)
	}
	empty := []Rule{{Name: "x", Nr: 1, Arg: &ArgCheck{Index: 0}}}
	if _, err := Filter(empty, ModeKill); err == nil {
		t.Error("an argument check with nothing to check was accepted")
	}
	twice := []Rule{{Name: "read", Nr: unix.SYS_READ}, {Name: "read again", Nr: unix.SYS_READ}}
	if _, err := Filter(twice, ModeKill); err == nil || !strings.Contains(err.Error(), "both for system call") {
		t.Errorf("two rules for one call: err %v", err)
	}
	// More rules than a conditional jump can span.
	var many []Rule
	for i := 0; i < 300; i++ {
		many = append(many, Rule{Name: fmt.Sprint(i), Nr: uint32(i)})
	}
	if _, err := Filter(many, ModeKill); err == nil || !strings.Contains(err.Error(), "too long") {
		t.Errorf("300 rules: err %v", err)
	}
}

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"on": ModeKill, "kill": ModeKill, "trap": ModeTrap, "log": ModeLog, "off": ModeOff, " OFF ": ModeOff} {
		got, err := ParseMode(in)
		if err != nil || got != want {
			t.Errorf("ParseMode(%q) = %v, %v; want %v", in, got, err, want)
		}
		if back, err := ParseMode(got.String()); err != nil || back != got {
			t.Errorf("round trip of %v: %v %v", got, back, err)
		}
	}
	if _, err := ParseMode("maybe"); err == nil {
		t.Error(`ParseMode("maybe") succeeded`)
	}
}

func TestPolicy(t *testing.T) {
	p, err := VMMPolicy(Devices{})
	if err != nil {
		t.Fatal(err)
	}
	if p.Pid != os.Getpid() {
		t.Errorf("pid %d, want %d", p.Pid, os.Getpid())
	}
	rules := p.Rules()
	seen := map[string]bool{}
	for _, r := range rules {
		if r.Why == "" {
			t.Errorf("%s: no reason given", r.Name)
		}
		if seen[r.Name] {
			t.Errorf("%s listed twice", r.Name)
		}
		seen[r.Name] = true
	}
	for _, io := range p.Ioctls {
		if io.Why == "" || io.Nr == 0 {
			t.Errorf("ioctl %s: %+v", io.Name, io)
		}
	}
	// The numbers come from package kvm, checked there against the headers.
	for name, want := range map[string]uintptr{"KVM_RUN": 0xae80, "KVM_GET_REGS": 0x8090ae81, "KVM_TRANSLATE": 0xc018ae85} {
		if got, ok := kvm.IoctlNumber(name); !ok || got != want {
			t.Errorf("kvm.IoctlNumber(%s) = %#x, %v", name, got, ok)
		}
	}
	t.Logf("allowlist: %d system calls, ioctl limited to %d requests", len(rules), len(p.Ioctls))
}

// TestAllowlistDocumented keeps docs/isolation.md in step with the code.
func TestAllowlistDocumented(t *testing.T) {
	b, err := os.ReadFile("../docs/isolation.md")
	if err != nil {
		t.Fatalf("read the isolation docs: %v", err)
	}
	doc := string(b)
	p, err := VMMPolicy(Devices{})
	if err != nil {
		t.Fatal(err)
	}
	p.Cgo, p.Devices = true, Devices{Block: true, Net: true, RNG: true} // the superset
	for _, r := range p.Rules() {
		if !strings.Contains(doc, "| `"+r.Name+"`") {
			t.Errorf("docs/isolation.md does not list %s in its allowlist table", r.Name)
		}
	}
	for _, io := range p.Ioctls {
		if !strings.Contains(doc, io.Name) {
			t.Errorf("docs/isolation.md does not mention ioctl %s", io.Name)
		}
	}
}

// child runs the test binary as a child in mode and returns how it ended.
func child(t *testing.T, mode string, extraEnv ...string) (ws syscall.WaitStatus, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command("/proc/self/exe", "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"="+mode), extraEnv...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("child %s did not end within 60s; stderr:\n%s", mode, errb.String())
	}
	return cmd.ProcessState.Sys().(syscall.WaitStatus), out.String(), errb.String()
}

func TestSeccompInSubprocess(t *testing.T) {
	for _, tc := range []struct {
		mode     string
		signal   syscall.Signal // killed by, or 0
		status   int
		stderr   string
		stdoutOK bool // printed "filter installed"
	}{
		// The Go runtime keeps working under the filter: threads, GC,
		// timers, locked threads, signals between threads.
		{mode: "busy", status: 0, stdoutOK: true},
		// A call off the list kills the whole process, at once.
		{mode: "kill-open", signal: syscall.SIGSYS, stdoutOK: true},
		{mode: "kill-exec", signal: syscall.SIGSYS, stdoutOK: true},
		{mode: "kill-ioctl", signal: syscall.SIGSYS, stdoutOK: true},
		{mode: "kill-clone-fork", signal: syscall.SIGSYS, stdoutOK: true},
		{mode: "kill-other-goroutine", signal: syscall.SIGSYS, stdoutOK: true},
		// trap: the Go runtime crashes with a trace of the call.
		{mode: "trap-open", status: 2, stderr: "SIGSYS: bad system call", stdoutOK: true},
		// log: allowed, so the open succeeds.
		{mode: "log-open", status: 0, stdoutOK: true},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			ws, out, errs := child(t, tc.mode)
			switch {
			case tc.signal != 0 && (!ws.Signaled() || ws.Signal() != tc.signal):
				t.Errorf("child ended %v (status %d), want killed by %v; stderr:\n%s", ws, ws.ExitStatus(), tc.signal, errs)
			case tc.signal == 0 && (ws.Signaled() || ws.ExitStatus() != tc.status):
				t.Errorf("child ended %v status %d, want status %d; stderr:\n%s", ws, ws.ExitStatus(), tc.status, errs)
			}
			if tc.stdoutOK && !strings.Contains(out, "filter installed") {
				t.Errorf("child did not report the filter installed; stdout %q stderr:\n%s", out, errs)
			}
			if strings.Contains(out, "forbidden call returned") {
				t.Errorf("a forbidden call returned: %q", out)
			}
			if tc.stderr != "" && !strings.Contains(errs, tc.stderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.stderr, errs)
			}
		})
	}
}

// childMain is the test binary acting as a sandboxed child.
func childMain(mode string) int {
	switch mode {
	case "jail":
		return jailChildMain()
	}
	m := ModeKill
	switch {
	case strings.HasPrefix(mode, "trap-"):
		m = ModeTrap
	case strings.HasPrefix(mode, "log-"):
		m = ModeLog
	}
	if err := InstallVMM(m, Devices{}); err != nil {
		fmt.Fprintln(os.Stderr, "install:", err)
		return 99
	}
	fmt.Println("filter installed")
	switch mode {
	case "busy":
		return busy()
	case "kill-open", "trap-open", "log-open":
		f, err := os.Open("/proc/self/status")
		if err == nil {
			f.Close()
		}
		if m == ModeLog && err == nil {
			return 0
		}
	case "kill-exec":
		exec.Command("/bin/true").Run()
	case "kill-ioctl":
		kvmCreateVM, _ := kvm.IoctlNumber("KVM_CREATE_VM")
		unix.Syscall(unix.SYS_IOCTL, 0, kvmCreateVM, 0)
	case "kill-clone-fork":
		unix.RawSyscall6(unix.SYS_CLONE, uintptr(unix.SIGCHLD), 0, 0, 0, 0, 0)
	case "kill-other-goroutine":
		// A forbidden call on another thread kills this one too.
		go func() {
			runtime.LockOSThread()
			unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		}()
		time.Sleep(10 * time.Second)
	default:
		fmt.Fprintln(os.Stderr, "unknown child mode", mode)
		return 98
	}
	fmt.Println("forbidden call returned")
	return 1
}

// busy exercises the Go runtime under the filter.
func busy() int {
	var wg sync.WaitGroup
	var tids sync.Map
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			runtime.LockOSThread() // forces new OS threads (clone)
			defer runtime.UnlockOSThread()
			tids.Store(unix.Gettid(), true)
			buf := make([][]byte, 0, 64)
			for j := 0; j < 64; j++ {
				buf = append(buf, make([]byte, 64<<10))
			}
			time.Sleep(time.Duration(i) * time.Millisecond)
			_ = buf
		}(i)
	}
	wg.Wait()
	// A goroutine that ends locked takes its thread with it (exit).
	ended := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		close(ended)
	}()
	<-ended
	runtime.GC()
	// A signal to one of our threads, as a vCPU kick does.
	tid := unix.Gettid()
	if err := unix.Tgkill(os.Getpid(), tid, unix.SIGURG); err != nil {
		fmt.Fprintln(os.Stderr, "tgkill:", err)
		return 1
	}
	timer := time.NewTimer(20 * time.Millisecond)
	<-timer.C
	fmt.Fprintln(os.Stderr, "busy: ok") // write to stderr
	return 0
}
