package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/microvm/microvm/devices/virtio"
	"github.com/microvm/microvm/kvm"
	"github.com/microvm/microvm/sandbox"
	"github.com/microvm/microvm/vmm"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// sandboxFlags are boot's isolation flags (docs/isolation.md).
type sandboxFlags struct {
	seccomp    string
	jail       string
	uid, gid   int
	jailMemory string
	jailCPUs   float64
	jailPids   int64
	jailCgroup string

	mode     sandbox.Mode // parsed seccomp
	snapshot bool         // the VMM writes a snapshot after its run
}

// addSandboxFlags registers the isolation flags on boot and documents them.
func addSandboxFlags(cmd *cobra.Command, f *sandboxFlags) {
	fl := cmd.Flags()
	fl.StringVar(&f.seccomp, "seccomp", "on", "seccomp filter for the running VMM `MODE`: on (a call off the allowlist kills the process), trap (crash with a Go trace of the call), log (allow, the kernel logs it), off")
	fl.StringVar(&f.jail, "jail", "", "run the VMM jailed in `DIR`: new mount/PID/network/IPC/UTS namespaces, DIR as a read-only root, cgroup limits, unprivileged uid/gid")
	fl.IntVar(&f.uid, "uid", sandbox.Nobody, "with --jail: `UID` the VMM drops to")
	fl.IntVar(&f.gid, "gid", sandbox.Nobody, "with --jail: `GID` the VMM drops to")
	fl.StringVar(&f.jailMemory, "jail-memory", "auto", "with --jail: memory limit `SIZE` (auto = guest RAM + images + 256M; none)")
	fl.Float64Var(&f.jailCPUs, "jail-cpus", 0, "with --jail: CPU time limit in `CPUS` (1.5 = one and a half cores; 0 = none)")
	fl.Int64Var(&f.jailPids, "jail-pids", 256, "with --jail: limit on tasks (`N` threads; 0 = none)")
	fl.StringVar(&f.jailCgroup, "jail-cgroup", "auto", "with --jail: cgroup `HIERARCHY`: auto, v1, v2 or none")
	cmd.Long += `

Isolation (docs/isolation.md): once the VM is built, every VMM thread runs
under a seccomp allowlist of the system calls the run loop needs; a call off
it kills the process with SIGSYS (status 159 in a shell). --seccomp=off turns
it off, --seccomp=trap shows where a call came from. --jail DIR runs the VMM
in new namespaces with DIR as its read-only root, in a cgroup with limits, as
--uid/--gid (nobody) after it opened /dev/kvm and its images.`
	cmd.Example += `
  microvm boot --seccomp=off                 # no seccomp filter (debugging)
  microvm boot --jail /run/microvm/jail1     # jailed: namespaces, pivot_root, cgroups, nobody
  microvm boot --jail /tmp/j --jail-memory 256M --jail-cpus 1 --uid 1000 --gid 1000`
}

// sandboxStart runs before vmm.New. It checks the flags; in a jailed child
// it opens /dev/kvm and enters the jail (cfg gets the open device and the
// host kind, which cannot be detected inside); with --jail in the parent
// it runs the whole boot jailed and returns the child's status (done).
func (a *app) sandboxStart(ctx context.Context, cmd *cobra.Command, cfg *vmm.Config, f *sandboxFlags) (done bool, err error) {
	if f.mode, err = sandbox.ParseMode(f.seccomp); err != nil {
		return true, usageErrorf("--seccomp: %v", err)
	}
	if testing.Testing() && !cmd.Flags().Changed("seccomp") {
		// In a test binary boot runs in the test's own process: a filter
		// would confine the test itself. Tests that want one say so.
		f.mode = sandbox.ModeOff
	}
	spec, err := sandbox.JailChild()
	if err != nil {
		return true, withCode(exitHost, err)
	}
	if spec != nil {
		return false, enterJail(spec, cfg)
	}
	if f.jail == "" {
		for _, name := range []string{"uid", "gid", "jail-memory", "jail-cpus", "jail-pids", "jail-cgroup"} {
			if cmd.Flags().Changed(name) {
				return true, usageErrorf("--%s needs --jail DIR", name)
			}
		}
		return false, nil
	}
	if len(cfg.Nets) > 0 {
		// The jailed VMM starts in a new, empty network namespace: a tap
		// made there reaches nothing, and one made outside would have to be
		// handed in already open. Not done yet.
		return true, usageErrorf("--jail cannot be combined with --net yet: the jail's network namespace is empty")
	}
	jc, err := jailConfig(cfg, f)
	if err != nil {
		return true, err
	}
	return true, a.runJailed(ctx, jc)
}

// enterJail is the jailed child's side: open what the VMM needs while the
// host's files are still in view, then pivot and drop privileges.
func enterJail(spec *sandbox.JailSpec, cfg *vmm.Config) error {
	if cfg.System == nil {
		path := cfg.DevicePath
		if path == "" {
			path = kvm.DevicePath
		}
		sys, err := kvm.Open(path)
		if err != nil {
			return withCode(exitHost, err)
		}
		cfg.System = sys // lives as long as the process
	}
	if cfg.Host == "" {
		cfg.Host = vmm.DetectHost()
	}
	cfg.KernelCacheDir = "" // not reachable from inside the jail
	// Disk images are opened now, while the host's files are in view.
	for i := range cfg.Disks {
		d := &cfg.Disks[i]
		flag := os.O_RDWR
		if d.ReadOnly {
			flag = os.O_RDONLY
		}
		f, err := os.OpenFile(d.Path, flag, 0)
		if err != nil {
			return withCode(exitBadImage, fmt.Errorf("disk %s: %w", d.Path, err))
		}
		d.File = f // lives as long as the process
	}
	if err := spec.Enter(); err != nil {
		return withCode(exitHost, err)
	}
	return nil
}

// jailConfig turns the flags into a jail.
func jailConfig(cfg *vmm.Config, f *sandboxFlags) (sandbox.JailConfig, error) {
	jc := sandbox.JailConfig{Root: f.jail, UID: f.uid, GID: f.gid}
	var err error
	if jc.Cgroup, err = sandbox.ParseCgroupMode(f.jailCgroup); err != nil {
		return jc, usageErrorf("--jail-cgroup: %v", err)
	}
	switch f.jailMemory {
	case "auto":
		mem := cfg.MemoryBytes
		if mem == 0 {
			mem = vmm.DefaultMemory
		}
		jc.Limits.MemoryBytes = int64(mem) + 2*int64(len(cfg.Image)+len(cfg.Initrd)) + 256<<20
	case "none", "0":
	default:
		n, err := vmm.ParseBytes(f.jailMemory)
		if err != nil {
			return jc, usageErrorf("--jail-memory: %v", err)
		}
		if n < 16<<20 || n > 1<<50 {
			return jc, usageErrorf("--jail-memory %s: want between 16M and 1P", f.jailMemory)
		}
		jc.Limits.MemoryBytes = int64(n)
	}
	switch {
	case f.jailCPUs < 0 || f.jailCPUs > 4096:
		return jc, usageErrorf("--jail-cpus %g: want 0 (no limit) to 4096", f.jailCPUs)
	case f.jailCPUs > 0 && f.jailCPUs < 0.01:
		return jc, usageErrorf("--jail-cpus %g: at least 0.01", f.jailCPUs)
	case f.jailPids < 0:
		return jc, usageErrorf("--jail-pids %d: must not be negative", f.jailPids)
	case f.jailPids > 0 && f.jailPids < 16:
		return jc, usageErrorf("--jail-pids %d: the VMM needs at least 16 (Go runtime threads and one per vCPU)", f.jailPids)
	case f.uid < 0 || f.gid < 0:
		return jc, usageErrorf("--uid/--gid: must not be negative")
	}
	jc.Limits.CPUs, jc.Limits.Pids = f.jailCPUs, f.jailPids
	return jc, nil
}

// readyFDEnv names the descriptor boot writes a byte to once the guest is
// ready (boot.go's readyNotifier).
const readyFDEnv = "MICROVM_READY_FD"

// jailGrace is how long the parent waits past --timeout for the jailed
// VMM, which keeps its own timeout, before killing it.
const jailGrace = 5 * time.Second

// runJailed re-executes this command line jailed and passes its status on.
func (a *app) runJailed(ctx context.Context, jc sandbox.JailConfig) error {
	if testing.Testing() {
		return withCode(exitHost, errors.New("--jail re-executes the microvm binary; use MICROVM_BIN in tests"))
	}
	var stdio [3]*os.File
	for i, s := range []any{a.stdin, a.stdout, a.stderr} {
		f, ok := s.(*os.File)
		if !ok {
			return withCode(exitHost, errors.New("--jail needs stdin, stdout and stderr to be files"))
		}
		stdio[i] = f
	}
	env := os.Environ()
	// A ready-fd (microvm bench) goes through to the VMM as descriptor 4.
	if s := os.Getenv(readyFDEnv); s != "" {
		if fd, err := strconv.Atoi(s); err == nil && fd >= 3 {
			// A copy of our own: the original belongs to boot's notifier.
			if dup, err := unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 3); err == nil {
				f := os.NewFile(uintptr(dup), "ready-fd")
				defer f.Close()
				jc.Files = append(jc.Files, f)
				env = append(env, readyFDEnv+"=4") // the last of a duplicate key wins
			}
		}
	}
	// The child dies with the thread that started it (PR_SET_PDEATHSIG).
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	j, err := sandbox.StartJailed(jc, "/proc/self/exe", os.Args, stdio[0], stdio[1], stdio[2], env)
	if err != nil {
		return withCode(exitHost, err)
	}
	type ended struct {
		st  *os.ProcessState
		err error
	}
	waited := make(chan ended, 1)
	go func() {
		st, err := j.Wait()
		waited <- ended{st, err}
	}()
	var e ended
	select {
	case e = <-waited:
	case <-ctx.Done():
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			select {
			case e = <-waited:
			case <-time.After(jailGrace):
				j.Signal(syscall.SIGKILL)
				e = <-waited
			}
		} else {
			j.Signal(syscall.SIGTERM) // SIGINT/SIGTERM reached us: pass it on
			e = <-waited
		}
	}
	if e.err != nil && e.st == nil {
		return withCode(exitHost, e.err)
	}
	if e.err != nil {
		fmt.Fprintf(a.stderr, "microvm: jail clean-up: %v\n", e.err)
	}
	ws, _ := e.st.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		sig := ws.Signal()
		msg := fmt.Sprintf("the jailed VMM was killed by %v", sig)
		if sig == syscall.SIGSYS {
			msg += ": it made a system call off the seccomp allowlist (a microvm bug; rerun with --seccomp=trap to see where)"
		}
		fmt.Fprintf(a.stderr, "microvm: %s\n", msg)
		return silentExit(128 + int(sig))
	}
	return silentOrOK(ws.ExitStatus())
}

// sandboxLockdown installs the seccomp filter: after vmm.New or
// vmm.Restore (every file and descriptor the VMM needs is open), before
// Run. The filter allows what m's virtio backends need — the devices the
// flags asked for, or those a snapshot holds.
func (a *app) sandboxLockdown(f *sandboxFlags, m *vmm.Machine) error {
	devs := sandbox.Devices{Snapshot: f.snapshot}
	for _, d := range m.VirtioDevices() {
		switch d.Type {
		case virtio.DeviceBlock:
			devs.Block = true
		case virtio.DeviceNet:
			devs.Net = true
		case virtio.DeviceRNG:
			devs.RNG = true
		}
	}
	if err := sandbox.InstallVMM(f.mode, devs); err != nil {
		return withCode(exitHost, err)
	}
	return nil
}
