// Package container is microvm's container path: an in-process launcher
// that runs a workload in new PID, mount, UTS, IPC and (optionally) network
// namespaces, pivot_root'ed into a rootfs with /proc, /dev and /sys mounted,
// inside a cgroup (v1 or v2) that limits memory, CPU and tasks; and drivers
// for the real OCI runtimes found on the host (runc, crun, podman, docker).
//
// Go cannot fork without exec, so the launcher re-executes a helper binary
// (by default /proc/self/exe) that must call Init first thing in main:
//
//	func main() {
//		container.Init() // returns at once unless this process is a container's init
//		...
//	}
//
// Test binaries need the same hook in TestMain.
package container

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/microvm/microvm/images/rootfs"
	"github.com/microvm/microvm/internal/cgroup"
	"golang.org/x/sys/unix"
)

// CgroupMode chooses the cgroup hierarchy a container is placed in.
type CgroupMode = cgroup.Mode

// The cgroup modes (see ParseCgroupMode).
const (
	// CgroupAuto uses the v1 controllers (memory, cpu, pids) on a v1 or
	// hybrid host and cgroup2 on a pure v2 host; with limits, it takes
	// cgroup2 wherever that offers every controller they need.
	CgroupAuto = cgroup.Auto
	// CgroupV1 uses the v1 controller hierarchies.
	CgroupV1 = cgroup.V1
	// CgroupV2 uses the cgroup2 hierarchy, also on a hybrid host where it
	// is mounted beside the v1 controllers (there it may hold no
	// controllers, so limits cannot be set).
	CgroupV2 = cgroup.V2
	// CgroupNone places the container in no new cgroup; limits are refused.
	CgroupNone = cgroup.None
)

// ParseCgroupMode parses "auto", "v1", "v2" or "none".
func ParseCgroupMode(s string) (CgroupMode, error) { return cgroup.ParseMode(s) }

// Exit statuses of a launch that did not get as far as the workload, the
// same as docker run's.
const (
	// ExitLauncher: the launcher itself failed (namespaces, mounts, cgroups).
	ExitLauncher = 125
	// ExitCannotInvoke: the command exists but cannot be executed.
	ExitCannotInvoke = 126
	// ExitNotFound: the command was not found in the rootfs.
	ExitNotFound = 127
)

// StartError is a launch that failed before the workload ran. Code is one of
// ExitLauncher, ExitCannotInvoke, ExitNotFound.
type StartError struct {
	Code int
	Err  error
}

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// Spec describes one container.
type Spec struct {
	// Rootfs is the root filesystem directory; it must hold /bin/sh.
	Rootfs string
	// Args is the command line; Args[0] is looked up in PATH inside the
	// rootfs unless it contains a slash.
	Args []string
	// Env is the workload's environment; empty gets rootfs.DefaultEnv().
	Env []string
	// Dir is the working directory inside the container (default "/").
	Dir string
	// Hostname defaults to "microvm".
	Hostname string
	// MemoryBytes limits memory, swap included (0: no limit).
	MemoryBytes int64
	// CPUs limits CPU time to this many CPUs (0: no limit).
	CPUs float64
	// Pids limits the number of tasks (0: no limit).
	Pids int64
	// Network gives the container its own network namespace with only the
	// loopback interface, brought up.
	Network bool
	// ReadOnly mounts the rootfs read-only inside the container.
	ReadOnly bool
	// Privileged keeps every capability; by default the bounding set is cut
	// to runc's default (CAP_AUDIT_WRITE, CAP_KILL, CAP_NET_BIND_SERVICE) and
	// no_new_privs is set.
	Privileged bool
	// Cgroup chooses the hierarchy (default CgroupAuto).
	Cgroup CgroupMode
	// CgroupParent names the parent cgroup (default "microvm").
	CgroupParent string
	// ReadyPipe passes the write end of a pipe as fd 3; the first byte the
	// workload writes to it sets Result.ReadyAfter. ExtraFiles then start
	// at fd 4.
	ReadyPipe bool
	// ExtraFiles are passed to the workload from fd 3 (or 4) on.
	ExtraFiles []*os.File
	// Stdin, Stdout and Stderr are the workload's standard streams (nil:
	// /dev/null).
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Helper is the binary that is re-executed as the container's init; it
	// must call Init first in main. Default: /proc/self/exe.
	Helper string
}

// Result is what a finished container reports.
type Result struct {
	// Status is the workload's exit status, or 128+N when signal N killed it.
	Status int
	// Signal is the signal that killed the workload (0 if it exited).
	Signal syscall.Signal
	// Ready reports whether the workload wrote to the ready pipe.
	Ready bool
	// ReadyAfter is the time from launch to the first byte on the ready pipe.
	ReadyAfter time.Duration
	// ExitAfter is the time from launch until the workload had exited and
	// been reaped (cgroup removal not included).
	ExitAfter time.Duration
	// Cgroup is the (first) cgroup directory the container ran in.
	Cgroup string
}

// initEnv marks a re-executed helper as a container init; its value names
// the config and error fds.
const initEnv = "_MICROVM_CONTAINER_INIT"

// childConfig is what the parent sends its init over the config pipe.
type childConfig struct {
	Rootfs     string   `json:"rootfs"`
	Args       []string `json:"args"`
	Env        []string `json:"env"`
	Dir        string   `json:"dir"`
	Hostname   string   `json:"hostname"`
	Network    bool     `json:"network"`
	ReadOnly   bool     `json:"readonly"`
	Privileged bool     `json:"privileged"`
}

// childError is what the init reports over the error pipe when it fails.
type childError struct {
	Code int    `json:"code"`
	Msg  string `json:"msg"`
}

// Validate checks a spec without running anything.
func (s *Spec) Validate() error {
	if len(s.Args) == 0 || s.Args[0] == "" {
		return errors.New("container: no command given")
	}
	if err := rootfs.Check(s.Rootfs); err != nil {
		return fmt.Errorf("container: %w", err)
	}
	if s.MemoryBytes < 0 {
		return fmt.Errorf("container: negative memory limit %d", s.MemoryBytes)
	}
	if s.MemoryBytes > 0 && s.MemoryBytes < 1<<20 {
		return fmt.Errorf("container: memory limit %d bytes is below 1 MiB", s.MemoryBytes)
	}
	if s.CPUs < 0 {
		return fmt.Errorf("container: negative CPU limit %g", s.CPUs)
	}
	if s.Pids < 0 {
		return fmt.Errorf("container: negative pids limit %d", s.Pids)
	}
	if s.Dir != "" && !strings.HasPrefix(s.Dir, "/") {
		return fmt.Errorf("container: working directory %q is not absolute", s.Dir)
	}
	if strings.ContainsAny(s.CgroupParent, "\x00") || strings.Contains(s.CgroupParent, "..") {
		return fmt.Errorf("container: bad cgroup parent %q", s.CgroupParent)
	}
	return nil
}

// NewID returns a random container identifier (16 hex digits).
func NewID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Run starts the container, waits for it and returns its result. The error
// is a *StartError when the launch failed before the workload ran. When ctx
// ends, the container is killed (SIGKILL; its PID namespace goes with it),
// its cgroup removed and ctx's error returned. Only root can run containers.
func Run(ctx context.Context, s Spec) (*Result, error) {
	if err := s.Validate(); err != nil {
		return nil, &StartError{Code: ExitLauncher, Err: err}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	root, err := filepath.Abs(s.Rootfs)
	if err != nil {
		return nil, &StartError{Code: ExitLauncher, Err: fmt.Errorf("container: %w", err)}
	}
	helper := s.Helper
	if helper == "" {
		helper = "/proc/self/exe"
	}
	env := s.Env
	if len(env) == 0 {
		env = rootfs.DefaultEnv()
	}
	cfg := childConfig{
		Rootfs: root, Args: s.Args, Env: env, Dir: s.Dir, Hostname: s.Hostname,
		Network: s.Network, ReadOnly: s.ReadOnly, Privileged: s.Privileged,
	}
	if cfg.Dir == "" {
		cfg.Dir = "/"
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "microvm"
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return nil, &StartError{Code: ExitLauncher, Err: err}
	}

	layout, err := cgroup.HostLayout()
	if err != nil {
		return nil, &StartError{Code: ExitLauncher, Err: err}
	}
	parent := s.CgroupParent
	if parent == "" {
		parent = "microvm"
	}
	// AllV1: the container is accounted in memory, cpu and pids on v1.
	cg, err := cgroup.New(layout, cgroup.Config{
		Mode: s.Cgroup, Parent: parent, Name: NewID(), AllV1: true,
		Limits: cgroup.Limits{MemoryBytes: s.MemoryBytes, CPUs: s.CPUs, Pids: s.Pids},
	})
	if err != nil {
		return nil, &StartError{Code: ExitLauncher, Err: err}
	}
	res, err := launch(ctx, s, helper, cfgJSON, cg)
	if rerr := cg.Remove(); rerr != nil && err == nil {
		err = &StartError{Code: ExitLauncher, Err: rerr}
	}
	return res, err
}

// launch starts the init, puts it into cg, hands it its config and waits.
func launch(ctx context.Context, s Spec, helper string, cfgJSON []byte, cg *cgroup.Cgroup) (*Result, error) {
	fail := func(err error) (*Result, error) {
		return nil, &StartError{Code: ExitLauncher, Err: fmt.Errorf("container: %w", err)}
	}
	var closers []io.Closer
	defer func() {
		for _, c := range closers {
			c.Close()
		}
	}()
	pipe := func() (*os.File, *os.File, error) {
		r, w, err := os.Pipe()
		if err == nil {
			closers = append(closers, r, w)
		}
		return r, w, err
	}
	cfgR, cfgW, err := pipe()
	if err != nil {
		return fail(err)
	}
	errR, errW, err := pipe()
	if err != nil {
		return fail(err)
	}
	var readyR, readyW *os.File
	var files []*os.File
	if s.ReadyPipe {
		if readyR, readyW, err = pipe(); err != nil {
			return fail(err)
		}
		files = append(files, readyW)
	}
	files = append(files, s.ExtraFiles...)
	cfgFD, errFD := 3+len(files), 4+len(files)
	files = append(files, cfgR, errW)

	flags := uintptr(unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC)
	if s.Network {
		flags |= unix.CLONE_NEWNET
	}
	cmd := &exec.Cmd{
		Path:       helper,
		Args:       []string{"microvm-container-init"},
		Env:        []string{initEnv + "=" + strconv.Itoa(cfgFD) + "," + strconv.Itoa(errFD)},
		Stdin:      s.Stdin,
		Stdout:     s.Stdout,
		Stderr:     s.Stderr,
		ExtraFiles: files,
		SysProcAttr: &syscall.SysProcAttr{
			Cloneflags: flags,
			Pdeathsig:  syscall.SIGKILL,
		},
	}
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("start init %s: %w", helper, err))
	}
	// From here on the child must be reaped whatever happens.
	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait() }()
	kill := func() { _ = cmd.Process.Signal(syscall.SIGKILL) }

	// The parent's copies of the child's ends: closed so EOFs arrive.
	cfgR.Close()
	errW.Close()
	if readyW != nil {
		readyW.Close()
	}
	readyAt := make(chan time.Time, 1)
	if readyR != nil {
		go func() {
			var b [1]byte
			if n, _ := readyR.Read(b[:]); n == 1 {
				readyAt <- time.Now()
			}
			close(readyAt)
		}()
	} else {
		close(readyAt)
	}

	abort := func(err error) (*Result, error) {
		kill()
		<-waitDone
		return nil, err
	}
	if err := cg.Add(cmd.Process.Pid); err != nil {
		return abort(&StartError{Code: ExitLauncher, Err: fmt.Errorf("container: %w", err)})
	}
	if _, err := cfgW.Write(cfgJSON); err != nil {
		return abort(&StartError{Code: ExitLauncher, Err: fmt.Errorf("container: send config to init: %w", err)})
	}
	cfgW.Close()

	// The error pipe closes on a successful exec (it is close-on-exec in
	// the init) or carries the reason the init failed.
	errMsg := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(errR, 64<<10))
		errMsg <- b
	}()
	var werr error
	select {
	case werr = <-waitDone:
	case <-ctx.Done():
		kill()
		<-waitDone
		return nil, ctx.Err()
	}
	exitAfter := time.Since(t0)
	if b := <-errMsg; len(b) > 0 {
		var ce childError
		if err := json.Unmarshal(b, &ce); err != nil || ce.Code == 0 {
			return nil, &StartError{Code: ExitLauncher, Err: fmt.Errorf("container init failed: %q", b)}
		}
		return nil, &StartError{Code: ce.Code, Err: errors.New(ce.Msg)}
	}
	res := &Result{ExitAfter: exitAfter, Cgroup: cg.Path()}
	if t, ok := <-readyAt; ok {
		// The reader goroutine may run late on a busy host: ready was
		// certainly no later than the exit.
		res.Ready, res.ReadyAfter = true, min(t.Sub(t0), exitAfter)
	}
	if werr != nil {
		var ee *exec.ExitError
		if !errors.As(werr, &ee) {
			return nil, &StartError{Code: ExitLauncher, Err: fmt.Errorf("container: wait: %w", werr)}
		}
	}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	switch {
	case ws.Signaled():
		res.Signal = ws.Signal()
		res.Status = 128 + int(ws.Signal())
	default:
		res.Status = ws.ExitStatus()
	}
	return res, nil
}
