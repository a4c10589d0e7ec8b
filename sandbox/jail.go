package sandbox

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"github.com/microvm/microvm/internal/cgroup"
	"golang.org/x/sys/unix"
)

// JailEnv is the environment variable that marks a process as a jailed
// child and carries its JailSpec (JSON). StartJailed sets it; JailChild
// reads and clears it.
const JailEnv = "MICROVM_JAIL"

// Nobody is the default uid and gid a jailed VMM runs as.
const Nobody = 65534

// CgroupMode chooses the cgroup hierarchy a jailed VMM is placed in.
type CgroupMode = cgroup.Mode

// The cgroup modes (see ParseCgroupMode).
const (
	// CgroupAuto uses the cgroup2 hierarchy when it offers every controller
	// the limits need, else the v1 controllers (hybrid hosts mount memory,
	// cpu and pids as v1 beside an empty cgroup2 "unified" tree); without
	// limits, no cgroup.
	CgroupAuto = cgroup.Auto
	// CgroupV1 uses the v1 controller hierarchies.
	CgroupV1 = cgroup.V1
	// CgroupV2 uses the cgroup2 hierarchy.
	CgroupV2 = cgroup.V2
	// CgroupNone creates no cgroup; limits are refused.
	CgroupNone = cgroup.None
)

// ParseCgroupMode parses auto, v1, v2 or none.
func ParseCgroupMode(s string) (CgroupMode, error) { return cgroup.ParseMode(s) }

// Limits are a jailed VMM's cgroup limits (zero fields set no limit):
// MemoryBytes caps its memory, guest RAM included; CPUs its CPU time in
// CPUs (1.5 = one and a half cores); Pids its tasks (threads count).
type Limits = cgroup.Limits

// JailConfig describes a jail.
type JailConfig struct {
	// Root is the directory that becomes the VMM's "/": bind-mounted
	// read-only, nosuid, nodev, noexec. The VMM needs nothing in it (it
	// opens /dev/kvm and its images before entering), so an empty
	// directory is best. Created (and removed afterwards) when missing.
	Root string
	// UID and GID the VMM drops to once its files are open.
	UID, GID int
	// Limits are the cgroup limits; Cgroup chooses the hierarchy.
	Limits Limits
	Cgroup CgroupMode
	// Files are handed to the child as descriptors 4, 5, … (3 is the
	// jail's own sync pipe).
	Files []*os.File
}

// JailSpec is what a jailed child is told.
type JailSpec struct {
	Root string `json:"root"`
	UID  int    `json:"uid"`
	GID  int    `json:"gid"`
	// SyncFD is the read end of a pipe: the parent writes one byte once the
	// child is in its cgroups, and closes it.
	SyncFD int `json:"sync_fd"`
}

// JailNamespaces are the namespaces a jailed child gets.
const JailNamespaces = unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWNET | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS

// Jailed is a started jailed child.
type Jailed struct {
	cmd         *exec.Cmd
	cg          *cgroup.Cgroup
	root        string
	createdRoot bool
}

// StartJailed starts the program path with args (args[0] included) in a
// jail: new namespaces (JailNamespaces), placed in a cgroup with
// cfg.Limits before it runs any of its own code past start-up. The child
// must call JailChild and then JailSpec.Enter. stdin, stdout and stderr are
// handed over as they are; env is the child's environment (JailEnv is
// added). The child is killed if the calling thread dies.
func StartJailed(cfg JailConfig, path string, args []string, stdin, stdout, stderr *os.File, env []string) (_ *Jailed, err error) {
	if cfg.Root == "" {
		return nil, errors.New("jail: no root directory given")
	}
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("jail root %q: %w", cfg.Root, err)
	}
	if root == "/" {
		return nil, errors.New("jail: the root directory must not be / (give an empty directory)")
	}
	if cfg.UID < 0 || cfg.GID < 0 {
		return nil, fmt.Errorf("jail: uid %d / gid %d: must not be negative", cfg.UID, cfg.GID)
	}
	j := &Jailed{root: root}
	st, err := os.Stat(root)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.Mkdir(root, 0o755); err != nil {
			return nil, fmt.Errorf("jail: create root %s: %w", root, err)
		}
		j.createdRoot = true
	case err != nil:
		return nil, fmt.Errorf("jail root: %w", err)
	case !st.IsDir():
		return nil, fmt.Errorf("jail root %s is not a directory", root)
	}
	defer func() {
		if err != nil {
			j.cleanup()
		}
	}()
	limited := len(cfg.Limits.Controllers()) > 0
	layout, err := cgroup.HostLayout()
	if err != nil {
		if limited {
			return nil, err
		}
		layout = &cgroup.Layout{}
	}
	mode := cfg.Cgroup
	if mode == CgroupAuto && !limited {
		mode = CgroupNone // nothing to enforce: no cgroup to make and remove
	}
	// The pid keeps processes apart, the clock jails of one process. On
	// v1 the jail joins only the controllers its limits need.
	name := fmt.Sprintf("microvm-jail-%d-%x", os.Getpid(), time.Now().UnixNano())
	if j.cg, err = cgroup.New(layout, cgroup.Config{Mode: mode, Parent: "microvm", Name: name, Limits: cfg.Limits}); err != nil {
		return nil, fmt.Errorf("jail: %w", err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("jail: %w", err)
	}
	defer r.Close()
	defer w.Close()
	spec, err := json.Marshal(JailSpec{Root: root, UID: cfg.UID, GID: cfg.GID, SyncFD: 3})
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{
		Path:       path,
		Args:       args,
		Env:        append(append([]string(nil), env...), JailEnv+"="+string(spec)),
		Stdin:      stdin,
		Stdout:     stdout,
		Stderr:     stderr,
		ExtraFiles: append([]*os.File{r}, cfg.Files...),
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: JailNamespaces,
			Pdeathsig:  syscall.SIGKILL,
		},
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("jail: start %s: %w", path, err)
	}
	j.cmd = cmd
	if err := j.cg.Add(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("jail: %w", err)
	}
	if _, err := w.Write([]byte{1}); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return nil, fmt.Errorf("jail: release child: %w", err)
	}
	return j, nil
}

// Pid is the child's pid as seen from the caller.
func (j *Jailed) Pid() int { return j.cmd.Process.Pid }

// CgroupDirs lists the cgroup leaf directories the child is in.
func (j *Jailed) CgroupDirs() []string { return j.cg.Dirs() }

// Signal sends sig to the child.
func (j *Jailed) Signal(sig os.Signal) error { return j.cmd.Process.Signal(sig) }

// Wait waits for the child to end, removes its cgroups (and the root
// directory if StartJailed created it) and returns how it ended.
func (j *Jailed) Wait() (*os.ProcessState, error) {
	err := j.cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		err = nil // a non-zero status is the child's answer, not a failure
	}
	return j.cmd.ProcessState, errors.Join(err, j.cleanup())
}

func (j *Jailed) cleanup() error {
	err := j.cg.Remove()
	if j.createdRoot {
		if e := os.Remove(j.root); e != nil && !errors.Is(e, os.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("jail: remove root: %w", e))
		}
		j.createdRoot = false
	}
	return err
}

// JailChild reports whether this process was started by StartJailed. If
// so, it waits until the parent has placed it in its cgroups, clears
// JailEnv and returns the spec: open what the VMM needs, then call Enter.
// It returns nil, nil in any other process.
func JailChild() (*JailSpec, error) {
	v, ok := os.LookupEnv(JailEnv)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(JailEnv)
	var s JailSpec
	if err := json.Unmarshal([]byte(v), &s); err != nil {
		return nil, fmt.Errorf("jail: bad %s: %w", JailEnv, err)
	}
	if s.SyncFD < 3 || s.Root == "" {
		return nil, fmt.Errorf("jail: bad %s=%q", JailEnv, v)
	}
	f := os.NewFile(uintptr(s.SyncFD), "jail-sync")
	var b [1]byte
	_, err := io.ReadFull(f, b[:])
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("jail: the parent did not release us: %w", err)
	}
	return &s, nil
}

// Enter confines the calling process: makes every mount private to its
// mount namespace, bind-mounts Root on itself, pivots into it and detaches
// the old root, remounts "/" read-only (nosuid, nodev, noexec), drops every
// capability from the bounding set, clears supplementary groups and sets
// gid and uid (for every thread). Descriptors opened before stay usable.
func (s *JailSpec) Enter() error {
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("jail: make mounts private: %w", err)
	}
	if err := unix.Mount(s.Root, s.Root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("jail: bind %s: %w", s.Root, err)
	}
	if err := unix.Chdir(s.Root); err != nil {
		return fmt.Errorf("jail: chdir %s: %w", s.Root, err)
	}
	// pivot_root(".", ".") stacks the old root on top of the new one;
	// detaching "." then leaves the new root alone (pivot_root(2)).
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("jail: pivot_root into %s: %w", s.Root, err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("jail: detach the old root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return fmt.Errorf("jail: chdir /: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return fmt.Errorf("jail: remount / read-only: %w", err)
	}
	if err := dropBoundingSet(); err != nil {
		return err
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("jail: setgroups: %w", err)
	}
	if err := syscall.Setgid(s.GID); err != nil {
		return fmt.Errorf("jail: setgid %d: %w", s.GID, err)
	}
	if err := syscall.Setuid(s.UID); err != nil {
		return fmt.Errorf("jail: setuid %d: %w", s.UID, err)
	}
	if s.UID != 0 && syscall.Setuid(0) == nil {
		return errors.New("jail: could regain uid 0 after dropping it")
	}
	return nil
}

// dropBoundingSet empties the capability bounding set of every thread. A
// cgo binary cannot do that (syscall.AllThreadsSyscall is refused there:
// glibc owns its threads); then only the calling thread's set is emptied.
// That is enough: the bounding set limits what an execve can grant, and the
// VMM's seccomp filter forbids execve, under no_new_privs.
func dropBoundingSet() error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	for c := 0; c <= unix.CAP_LAST_CAP; c++ {
		_, _, errno := syscall.AllThreadsSyscall(unix.SYS_PRCTL, unix.PR_CAPBSET_DROP, uintptr(c), 0)
		if errno == unix.ENOTSUP {
			errno = 0
			if err := unix.Prctl(unix.PR_CAPBSET_DROP, uintptr(c), 0, 0, 0); err != nil {
				errno, _ = err.(unix.Errno)
			}
		}
		if errno != 0 && errno != unix.EINVAL { // EINVAL: a capability this kernel lacks
			return fmt.Errorf("jail: drop capability %d from the bounding set: %w", c, errno)
		}
	}
	return nil
}
