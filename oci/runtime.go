package oci

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/microvm/microvm/vmm"
	"golang.org/x/sys/unix"
)

// Launcher starts the VMM process of a created container: the process
// builds the VM and waits on fifo for start before the VM's first
// instruction. Its stdio is the container's: create's own, or with
// opts.ConsoleSocket a new terminal (OpenConsole). It returns the started
// process, whose exit is the container's.
type Launcher func(st *State, b *Bundle, fifo string, opts CreateOptions) (*os.Process, error)

// Runtime runs the OCI lifecycle over a state directory.
type Runtime struct {
	Store Store
	// DevKVM is the KVM device checked before create ("" = /dev/kvm).
	DevKVM string
	// HostKind tells the KVM backend (nil = vmm.DetectHost).
	HostKind func() vmm.HostKind
	// Launch starts the VMM process (nil: create refuses).
	Launch Launcher
}

// CreateOptions are create's flags.
type CreateOptions struct {
	PidFile       string
	ConsoleSocket string
	PreserveFDs   int
	// Foreground is run's (without --detach): the container's terminal,
	// when config.json asks for one, may be create's own stdio.
	Foreground bool
}

// ForwardedSignals are the signals the VMM process of a running container
// passes on to its workload (and that run passes on to the container):
// every catchable one whose default action ends or continues a process,
// and SIGWINCH. SIGKILL ends the VMM, and the VM with it; SIGSTOP and the
// terminal stops pause the VMM, and the VM with it.
var ForwardedSignals = []unix.Signal{
	unix.SIGHUP, unix.SIGINT, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2,
	unix.SIGALRM, unix.SIGTERM, unix.SIGCONT, unix.SIGWINCH,
}

// ErrNoLauncher is returned by create when the runtime has no VM launcher.
var ErrNoLauncher = errors.New("no VM launcher configured")

// Create checks the ID, the bundle and the host — in that order, before
// anything is made — then reserves the state directory and launches the
// VMM. On any failure nothing is left behind.
func (r *Runtime) Create(id, bundleDir string, opts CreateOptions) (*State, error) {
	if err := ValidateID(id); err != nil {
		return nil, err
	}
	if _, err := r.Store.Load(id); err == nil {
		return nil, fmt.Errorf("container %q: %w", id, ErrExist)
	}
	b, err := LoadBundle(bundleDir)
	if err != nil {
		return nil, err
	}
	if opts.PreserveFDs < 0 {
		return nil, fmt.Errorf("--preserve-fds %d is negative", opts.PreserveFDs)
	}
	switch {
	case opts.ConsoleSocket != "" && !b.Agent.Terminal:
		return nil, errors.New("--console-socket given, but process.terminal is false")
	case b.Agent.Terminal && opts.ConsoleSocket == "" && !opts.Foreground:
		return nil, errors.New("process.terminal is true: create needs --console-socket to hand the terminal to")
	}
	dev := r.DevKVM
	if dev == "" {
		dev = "/dev/kvm"
	}
	kind := vmm.DetectHost
	if r.HostKind != nil {
		kind = r.HostKind
	}
	if err := CheckHost(dev, kind()); err != nil {
		return nil, err
	}
	if r.Launch == nil {
		return nil, ErrNoLauncher
	}
	if err := r.Store.Reserve(id); err != nil {
		return nil, err
	}
	st := &State{OCIVersion: SpecVersion, ID: id, Status: StatusCreating, Bundle: b.Dir, Created: time.Now().UTC()}
	fail := func(err error) (*State, error) {
		r.Store.Remove(id)
		return nil, err
	}
	if err := r.Store.Save(st); err != nil {
		return fail(err)
	}
	fifo := r.Store.StartFIFO(id)
	if err := unix.Mkfifo(fifo, 0o600); err != nil {
		return fail(fmt.Errorf("start fifo: %w", err))
	}
	p, err := r.Launch(st, b, fifo, opts)
	if err != nil {
		return fail(fmt.Errorf("launch VM: %w", err))
	}
	st.Pid = p.Pid
	st.PidStart, _ = procStart(p.Pid)
	st.Status = StatusCreated
	if err := r.Store.Save(st); err != nil {
		p.Kill()
		return fail(err)
	}
	if opts.PidFile != "" {
		if err := writePidFile(opts.PidFile, p.Pid); err != nil {
			p.Kill()
			return fail(err)
		}
	}
	return st, nil
}

func writePidFile(path string, pid int) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o644); err != nil {
		return fmt.Errorf("pid file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pid file: %w", err)
	}
	return nil
}

// State returns a container's live state: a created or running container
// whose VMM process is gone is stopped (and saved so).
func (r *Runtime) State(id string) (*State, error) {
	st, err := r.Store.Load(id)
	if err != nil {
		return nil, err
	}
	if (st.Status == StatusCreated || st.Status == StatusRunning || st.Status == StatusCreating) && !alive(st) {
		st.Status = StatusStopped
		if err := r.Store.Save(st); err != nil {
			return nil, err
		}
	}
	return st, nil
}

// Start releases a created container's VM: one byte on its start fifo.
func (r *Runtime) Start(id string) error {
	st, err := r.State(id)
	if err != nil {
		return err
	}
	if err := st.Status.Check(OpStart); err != nil {
		return fmt.Errorf("container %q: %w", id, err)
	}
	// The VMM opens the fifo once its VM is built; give a VMM that is
	// still alive a few seconds to get there (ENXIO: no reader yet).
	var f *os.File
	deadline := time.Now().Add(5 * time.Second)
	for {
		f, err = os.OpenFile(r.Store.StartFIFO(id), os.O_WRONLY|unix.O_NONBLOCK, 0)
		if err == nil || !errors.Is(err, unix.ENXIO) || !alive(st) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("container %q: VMM is not waiting for start: %w", id, err)
	}
	_, err = f.Write([]byte{1})
	f.Close()
	if err != nil {
		return fmt.Errorf("container %q: start: %w", id, err)
	}
	os.Remove(r.Store.StartFIFO(id))
	st.Status = StatusRunning
	if err := r.Store.Save(st); err != nil {
		return err
	}
	// As runc's start returns with the process exec'ing, this one returns
	// once the guest's agent starts the workload (ReadyMark): a signal
	// sent after start finds the workload, not a booting kernel. A VMM
	// that ends first, or a guest slower than StartWait, ends the wait.
	for deadline := time.Now().Add(StartWait); time.Now().Before(deadline) && alive(st); time.Sleep(5 * time.Millisecond) {
		if _, err := os.Stat(r.Store.ReadyMark(id)); err == nil {
			break
		}
	}
	return nil
}

// StartWait bounds how long start waits for the workload to start.
const StartWait = 2 * time.Minute

// Kill sends sig to a created or running container's VMM process, which
// forwards it to the workload.
func (r *Runtime) Kill(id string, sig unix.Signal) error {
	st, err := r.State(id)
	if err != nil {
		return err
	}
	if err := st.Status.Check(OpKill); err != nil {
		return fmt.Errorf("container %q: %w", id, err)
	}
	if err := unix.Kill(st.Pid, sig); err != nil {
		return fmt.Errorf("container %q: kill pid %d: %w", id, st.Pid, err)
	}
	return nil
}

// Delete removes a stopped container's state. With force, a container in
// any state is killed (SIGKILL, waited for up to 5 s) and removed.
func (r *Runtime) Delete(id string, force bool) error {
	st, err := r.State(id)
	if err != nil {
		return err
	}
	op := OpDelete
	if force {
		op = OpForceDelete
	}
	if err := st.Status.Check(op); err != nil {
		return fmt.Errorf("container %q: %w", id, err)
	}
	if st.Status != StatusStopped && alive(st) {
		if err := unix.Kill(st.Pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("container %q: kill pid %d: %w", id, st.Pid, err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for alive(st) {
			if time.Now().After(deadline) {
				return fmt.Errorf("container %q: pid %d did not exit after SIGKILL", id, st.Pid)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return r.Store.Remove(id)
}

// List returns the live states of all containers.
func (r *Runtime) List() ([]*State, error) {
	ids, err := r.Store.IDs()
	if err != nil {
		return nil, err
	}
	var out []*State
	for _, id := range ids {
		st, err := r.State(id)
		if err != nil {
			continue // a directory being created or removed right now
		}
		out = append(out, st)
	}
	return out, nil
}

// ParseSignal reads a signal as kill takes it: a number, or a name with or
// without the SIG prefix (KILL, SIGTERM, 15).
func ParseSignal(s string) (unix.Signal, error) {
	if s == "" {
		return unix.SIGTERM, nil
	}
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, fmt.Errorf("signal %d out of range", n)
		}
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

// Wait blocks until the container's VMM process is gone and returns its
// exit status when this process is its parent (run), else 0.
func (r *Runtime) Wait(id string) (int, error) {
	st, err := r.Store.Load(id)
	if err != nil {
		return 0, err
	}
	var ws unix.WaitStatus
	if _, err := unix.Wait4(st.Pid, &ws, 0, nil); err == nil {
		if ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ws.ExitStatus(), nil
	}
	for alive(st) {
		time.Sleep(20 * time.Millisecond)
	}
	return 0, nil
}
