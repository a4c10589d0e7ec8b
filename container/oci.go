package container

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/microvm/microvm/images/rootfs"
	"github.com/microvm/microvm/internal/cgroup"
)

// OCIRuntime drives an OCI runtime binary (runc, crun) with `run --bundle`.
type OCIRuntime struct {
	// Binary is the runtime's name in PATH, or a path.
	Binary string
	// StateDir holds the runtime's --root, bundles and logs (a temporary
	// directory when empty).
	StateDir string
}

// Name is the binary's base name.
func (r *OCIRuntime) Name() string { return filepath.Base(r.Binary) }

// Available checks that the binary is installed, runs, and that we are root.
func (r *OCIRuntime) Available(ctx context.Context) error {
	path, err := exec.LookPath(r.Binary)
	if err != nil {
		return fmt.Errorf("%s is not installed (Debian package %s)", r.Binary, r.Name())
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s needs root here (rootless mode is not set up)", r.Name())
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput(); err != nil {
		return fmt.Errorf("%s --version: %v: %s", path, err, firstLine(out))
	}
	return nil
}

// hybridWithV2Controllers reports whether this host mounts cgroup v1
// controllers beside a cgroup2 hierarchy that itself holds controllers:
// the layout crun refuses.
func hybridWithV2Controllers() bool {
	l, err := cgroup.HostLayout()
	if err != nil || len(l.V1) == 0 || l.V2 == "" {
		return false
	}
	return len(l.V2Controllers()) > 0
}

// Prepare writes the bundle (config.json pointing at w.Rootfs, read-only).
// For crun on a hybrid cgroup host it also sets up a pure-cgroup2 mount
// namespace to start crun from, and leaves the device cgroup rule out of
// the bundle: crun's cgroup2 device filter is an eBPF program, and before
// loading it crun raises RLIMIT_MEMLOCK to infinity, which fails where the
// bounding set lacks CAP_SYS_RESOURCE; without an explicit deny rule crun
// tolerates that failure. Memory and CPU limits are then refused, since
// the cgroup2 hierarchy of a hybrid host holds no such controllers.
func (r *OCIRuntime) Prepare(ctx context.Context, w Workload) (Launcher, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	path, err := exec.LookPath(r.Binary)
	if err != nil {
		return nil, fmt.Errorf("%s is not installed (Debian package %s)", r.Binary, r.Name())
	}
	root, err := filepath.Abs(w.Rootfs)
	if err != nil {
		return nil, err
	}
	l := &ociLauncher{name: r.Name(), bin: path, w: w}
	if l.dir, err = makeStateDir(r.StateDir, r.Name()); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			l.Close()
		}
	}()
	cfg, err := rootfs.NewConfig(root, rootfs.BundleOptions{
		Args: w.Args, Env: w.Env, MemoryBytes: w.MemoryBytes, CPUs: w.CPUs, NoNetwork: w.NoNetwork,
	})
	if err != nil {
		return nil, err
	}
	if r.Name() == "crun" && hybridWithV2Controllers() {
		if w.MemoryBytes > 0 || w.CPUs > 0 {
			return nil, errors.New("crun: memory and CPU limits are not possible on this hybrid cgroup v1/v2 host (crun only runs here on a pure cgroup2 view, whose hierarchy holds no memory or cpu controller)")
		}
		cfg.Linux.Resources = nil
		if l.thread, err = newCgroup2Thread(); err != nil {
			return nil, fmt.Errorf("crun: %w", err)
		}
	}
	l.bundle = filepath.Join(l.dir, "bundle")
	if err := rootfs.WriteBundle(l.bundle, cfg); err != nil {
		return nil, err
	}
	ok = true
	return l, nil
}

type ociLauncher struct {
	name, bin   string
	w           Workload
	dir, bundle string
	thread      *cgroup2Thread // non-nil: start the runtime from here

	live liveSet // containers that may still exist
}

func (l *ociLauncher) rootArgs(logFile string) []string {
	a := []string{"--root", filepath.Join(l.dir, "state")}
	if logFile != "" {
		a = append(a, "--log", logFile, "--log-format", "json")
	}
	return a
}

// start runs cmd.Start, on the cgroup2 thread when there is one.
func (l *ociLauncher) start(cmd *exec.Cmd) error {
	if l.thread == nil {
		return cmd.Start()
	}
	var err error
	l.thread.do(func() { err = cmd.Start() })
	return err
}

// Launch runs `RUNTIME run --bundle B [--preserve-fds 1] ID`.
func (l *ociLauncher) Launch(ctx context.Context, stdio IO) (*Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	id := "microvm-" + NewID()
	logFile := filepath.Join(l.dir, id+".log")
	defer os.Remove(logFile)
	args := append(l.rootArgs(logFile), "run", "--bundle", l.bundle)
	if rootOnRamfs() {
		// pivot_root(2) cannot leave an initramfs (the rig's L1): runc
		// and crun then move the root with MS_MOVE + chroot instead.
		args = append(args, "--no-pivot")
	}
	cmd := exec.Command(l.bin)
	var started func() <-chan time.Time
	if l.w.ReadyPipe {
		r, w, s, err := readyPipe()
		if err != nil {
			return nil, err
		}
		defer r.Close()
		defer w.Close()
		cmd.ExtraFiles = []*os.File{w}
		started = s
		args = append(args, "--preserve-fds", "1")
	}
	cmd.Args = append(append([]string{l.bin}, args...), id)
	cmd.Stdin, cmd.Stdout = stdio.Stdin, stdio.Stdout
	tail := &tailBuffer{max: 4096}
	cmd.Stderr = teeWriter(stdio.Stderr, tail)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// A container left running by a killed runtime holds our stdio pipes:
	// never let that block Wait for long.
	cmd.WaitDelay = 5 * time.Second
	l.live.track(id, true)
	t0 := time.Now()
	if err := l.start(cmd); err != nil {
		l.live.track(id, false)
		return nil, &StartError{Code: ExitLauncher, Err: fmt.Errorf("%s: start: %w", l.name, err)}
	}
	readyAt := closedTimeChan()
	if started != nil {
		readyAt = started()
	}
	werr, stopped := waitOrKill(ctx, cmd, func() error { return l.delete(id) })
	if stopped != nil {
		return nil, stopped
	}
	exitAfter := time.Since(t0)
	res := &Result{ExitAfter: exitAfter}
	if t, ok := <-readyAt; ok {
		res.Ready, res.ReadyAfter = true, min(t.Sub(t0), exitAfter) // see Run
	}
	if werr != nil {
		var ee *exec.ExitError
		if !errors.As(werr, &ee) {
			_ = l.delete(id)
			return nil, &StartError{Code: ExitLauncher, Err: fmt.Errorf("%s: wait: %w", l.name, werr)}
		}
	}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		res.Signal, res.Status = ws.Signal(), 128+int(ws.Signal())
	} else {
		res.Status = ws.ExitStatus()
	}
	if msgs := runtimeErrors(logFile); len(msgs) > 0 {
		_ = l.delete(id)
		code := ExitLauncher
		joined := strings.Join(msgs, "; ")
		switch {
		case strings.Contains(joined, "executable file not found") || strings.Contains(joined, "no such file or directory"):
			code = ExitNotFound
		case strings.Contains(joined, "permission denied"):
			code = ExitCannotInvoke
		}
		return nil, &StartError{Code: code, Err: fmt.Errorf("%s: %s", l.name, joined)}
	}
	if res.Status != 0 && ws.Signaled() {
		// The runtime itself was killed: the container may still exist.
		_ = l.delete(id)
	}
	l.live.track(id, false)
	return res, nil
}

// delete force-removes container id (and its cgroup).
func (l *ociLauncher) delete(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, l.bin, append(l.rootArgs(""), "delete", "--force", id)...)
	var out []byte
	var err error
	run := func() { out, err = cmd.CombinedOutput() }
	if l.thread != nil {
		// Start on the thread (its mount namespace); wait anywhere.
		var serr error
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		l.thread.do(func() { serr = cmd.Start() })
		if serr != nil {
			return fmt.Errorf("%s delete %s: %w", l.name, id, serr)
		}
		err = cmd.Wait()
		out = buf.Bytes()
	} else {
		run()
	}
	l.live.track(id, false)
	removeRuntimeCgroups(id)
	if err != nil && !bytes.Contains(out, []byte("does not exist")) && !bytes.Contains(out, []byte("not exist")) {
		return fmt.Errorf("%s delete %s: %v: %s", l.name, id, err, firstLine(out))
	}
	return nil
}

// removeRuntimeCgroups removes the cgroups a runtime made for container id
// (runc and crun put them at /<id> in every hierarchy) when the runtime
// itself cannot: it was killed after making them and before recording its
// state, so `delete` no longer knows the container. Only empty cgroups go
// (rmdir); anything still holding a process stays.
func removeRuntimeCgroups(id string) {
	dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", "*", id))
	for _, d := range append(dirs, filepath.Join("/sys/fs/cgroup", id)) { // pure cgroup2 too
		_ = os.Remove(d)
	}
}

// Close deletes containers that may be left and removes the state directory.
func (l *ociLauncher) Close() error {
	ids := l.live.snapshot()
	var errs []error
	for _, id := range ids {
		errs = append(errs, l.delete(id))
	}
	l.thread.close()
	errs = append(errs, removeAll(l.dir))
	return errors.Join(errs...)
}

// runtimeErrors returns the messages of error-level records in a runc/crun
// JSON log.
func runtimeErrors(logFile string) []string {
	f, err := os.Open(logFile)
	if err != nil {
		return nil
	}
	defer f.Close()
	var msgs []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
		}
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			continue
		}
		if rec.Level == "error" || rec.Level == "fatal" {
			msgs = append(msgs, rec.Msg)
		}
	}
	return msgs
}

func firstLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}

func closedTimeChan() <-chan time.Time {
	c := make(chan time.Time)
	close(c)
	return c
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}

type multiWriter struct{ a, b io.Writer }

func (m multiWriter) Write(p []byte) (int, error) {
	if m.a != nil {
		_, _ = m.a.Write(p)
	}
	return m.b.Write(p)
}

// teeWriter copies to w (when not nil) and to tail.
func teeWriter(w io.Writer, tail *tailBuffer) io.Writer {
	if w == nil {
		return tail
	}
	return multiWriter{a: w, b: tail}
}

// rootOnRamfs reports whether this process's / is the initial ramfs
// (rootfs or ramfs in /proc/self/mounts), which pivot_root cannot leave.
func rootOnRamfs() bool {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return false
	}
	typ := ""
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && f[1] == "/" {
			typ = f[2] // the last mount on / is the one in effect
		}
	}
	return typ == "rootfs" || typ == "ramfs"
}
