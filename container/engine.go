package container

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/microvm/microvm/images/rootfs"
	"github.com/microvm/microvm/internal/cgroup"
)

// Engine drives a container engine CLI (podman, docker): the rootfs is
// imported once as an image and each launch is `ENGINE run --rm`.
//
// podman runs fully private to this process: its own storage (vfs driver)
// and run directories under the state directory, cgroupfs as the cgroup
// manager, runc as the runtime, and a containers.conf without default
// ulimits (raising RLIMIT_NOFILE needs CAP_SYS_RESOURCE, which some hosts
// lack). docker talks to whatever daemon the docker CLI reaches.
type Engine struct {
	// Binary is "podman" or "docker" (or a path to one).
	Binary string
	// StateDir holds podman's storage and the image tar (a temporary
	// directory when empty).
	StateDir string
	// Host, for docker, is the daemon address (DOCKER_HOST), e.g. a
	// private daemon's Dockerd.Host. Empty: what the docker CLI reaches.
	Host string
}

func (e *Engine) env() []string {
	if e.Host == "" || e.isPodman() {
		return nil
	}
	return append(os.Environ(), "DOCKER_HOST="+e.Host)
}

// Name is the binary's base name.
func (e *Engine) Name() string { return filepath.Base(e.Binary) }

func (e *Engine) isPodman() bool { return e.Name() == "podman" }

// Available checks the binary, and for docker that a daemon answers.
func (e *Engine) Available(ctx context.Context) error {
	path, err := exec.LookPath(e.Binary)
	if err != nil {
		return fmt.Errorf("%s is not installed", e.Binary)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if e.isPodman() {
		if os.Geteuid() != 0 {
			return errors.New("podman needs root here (rootless mode is not set up)")
		}
		if _, err := exec.LookPath("runc"); err != nil {
			return errors.New("podman is driven with --runtime runc, and runc is not installed")
		}
		if out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput(); err != nil {
			return fmt.Errorf("podman --version: %v: %s", err, firstLine(out))
		}
		return nil
	}
	vc := exec.CommandContext(ctx, path, "version", "--format", "{{.Server.Version}}")
	vc.Env = e.env()
	out, err := vc.CombinedOutput()
	if err != nil {
		msg := firstLine(out)
		if i := strings.LastIndex(string(out), "Cannot connect"); i >= 0 {
			msg = firstLine(out[i:])
		}
		return fmt.Errorf("no Docker daemon answers (the docker binary is only a client here): %s", msg)
	}
	return nil
}

// Prepare imports w.Rootfs as an image.
func (e *Engine) Prepare(ctx context.Context, w Workload) (Launcher, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	path, err := exec.LookPath(e.Binary)
	if err != nil {
		return nil, fmt.Errorf("%s is not installed", e.Binary)
	}
	l := &engineLauncher{name: e.Name(), bin: path, w: w, podman: e.isPodman(), env: e.env()}
	if l.dir, err = makeStateDir(e.StateDir, e.Name()); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			l.Close()
		}
	}()
	if l.podman {
		// podman refuses a runroot longer than 50 characters.
		if l.runDir, err = os.MkdirTemp("", "mvpod-"); err != nil {
			return nil, fmt.Errorf("podman: %w", err)
		}
		conf := filepath.Join(l.dir, "containers.conf")
		if err := os.WriteFile(conf, []byte("[containers]\ndefault_ulimits = []\n\n[engine]\nevents_logger = \"file\"\n"), 0o644); err != nil {
			return nil, fmt.Errorf("podman: %w", err)
		}
		l.env = append(os.Environ(), "CONTAINERS_CONF="+conf)
	}
	tarPath := filepath.Join(l.dir, "rootfs.tar")
	f, err := os.Create(tarPath)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l.name, err)
	}
	err = rootfs.WriteTar(f, w.Rootfs)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", l.name, err)
	}
	l.image = "localhost/microvm-bench:" + NewID()
	if out, err := l.command(ctx, "import", tarPath, l.image).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("%s import: %v: %s", l.name, err, lastLine(out))
	}
	l.imported = true
	_ = os.Remove(tarPath)
	ok = true
	return l, nil
}

type engineLauncher struct {
	name, bin string
	podman    bool
	w         Workload
	dir       string
	runDir    string // podman's runroot (short: podman limits its length)
	env       []string
	image     string
	imported  bool

	live liveSet // containers that may still exist
}

// globals are podman's flags for a private, host-friendly setup.
func (l *engineLauncher) globals() []string {
	if !l.podman {
		return nil
	}
	return []string{
		"--root", filepath.Join(l.dir, "storage"),
		"--runroot", l.runDir,
		"--tmpdir", filepath.Join(l.dir, "tmp"),
		"--storage-driver", "vfs",
		"--cgroup-manager", "cgroupfs",
		"--runtime", "runc",
	}
}

func (l *engineLauncher) command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, l.bin, append(l.globals(), args...)...)
	cmd.Env = l.env
	return cmd
}

// Launch runs `ENGINE run --rm --network none [--preserve-fds 1] IMAGE ARGS`.
// docker cannot pass file descriptors, so its launches never report ready.
func (l *engineLauncher) Launch(ctx context.Context, stdio IO) (*Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	id := "microvm-" + NewID()
	args := []string{"run", "--rm", "--name", id}
	if !l.w.NoNetwork {
		args = append(args, "--network", "none")
	} else {
		args = append(args, "--network", "host")
	}
	if stdio.Stdin != nil {
		args = append(args, "-i")
	}
	if l.w.MemoryBytes > 0 {
		args = append(args, "--memory", strconv.FormatInt(l.w.MemoryBytes, 10))
	}
	if l.w.CPUs > 0 {
		args = append(args, "--cpus", strconv.FormatFloat(l.w.CPUs, 'f', -1, 64))
	}
	for _, e := range l.w.Env {
		args = append(args, "--env", e)
	}
	cmd := exec.Command(l.bin)
	var started func() <-chan time.Time
	if l.w.ReadyPipe && l.podman {
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
	args = append(args, l.image)
	args = append(args, l.w.Args...)
	cmd.Args = append(append([]string{l.bin}, l.globals()...), args...)
	cmd.Env = l.env
	cmd.Stdin, cmd.Stdout = stdio.Stdin, stdio.Stdout
	tail := &tailBuffer{max: 4096}
	cmd.Stderr = teeWriter(stdio.Stderr, tail)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// A container left running by a killed runtime holds our stdio pipes:
	// never let that block Wait for long.
	cmd.WaitDelay = 5 * time.Second
	l.live.track(id, true)
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		l.live.track(id, false)
		return nil, &StartError{Code: ExitLauncher, Err: fmt.Errorf("%s: start: %w", l.name, err)}
	}
	readyAt := closedTimeChan()
	if started != nil {
		readyAt = started()
	}
	werr, stopped := waitOrKill(ctx, cmd, func() error { return l.remove(id) })
	if stopped != nil {
		return nil, stopped
	}
	res := &Result{ExitAfter: time.Since(t0)}
	if t, ok := <-readyAt; ok {
		res.Ready, res.ReadyAfter = true, min(t.Sub(t0), res.ExitAfter) // see Run
	}
	if werr != nil {
		var ee *exec.ExitError
		if !errors.As(werr, &ee) {
			_ = l.remove(id)
			return nil, &StartError{Code: ExitLauncher, Err: fmt.Errorf("%s: wait: %w", l.name, werr)}
		}
	}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		res.Signal, res.Status = ws.Signal(), 128+int(ws.Signal())
		_ = l.remove(id)
	} else {
		res.Status = ws.ExitStatus()
	}
	// podman and docker exit 125 for their own failures and 126/127 when
	// the command cannot be run, like microvm's launcher.
	switch res.Status {
	case ExitLauncher, ExitCannotInvoke, ExitNotFound:
		_ = l.remove(id)
		return nil, &StartError{Code: res.Status, Err: fmt.Errorf("%s run (status %d): %s", l.name, res.Status, lastLine([]byte(tail.String())))}
	}
	l.live.track(id, false)
	return res, nil
}

// remove force-removes container id.
func (l *engineLauncher) remove(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := []string{"rm", "--force", id}
	if l.podman {
		args = []string{"rm", "--force", "--time", "0", id} // no 10 s grace for a PID 1 that ignores SIGTERM
	}
	out, err := l.command(ctx, args...).CombinedOutput()
	l.live.track(id, false)
	if err != nil && !strings.Contains(strings.ToLower(string(out)), "no such container") && !strings.Contains(string(out), "no container with") {
		return fmt.Errorf("%s rm %s: %v: %s", l.name, id, err, lastLine(out))
	}
	return nil
}

// Close removes left-over containers, the image and the state directory.
func (l *engineLauncher) Close() error {
	ids := l.live.snapshot()
	var errs []error
	for _, id := range ids {
		errs = append(errs, l.remove(id))
	}
	if l.imported {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if out, err := l.command(ctx, "rmi", "--force", l.image).CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("%s rmi: %v: %s", l.name, err, lastLine(out)))
		}
		cancel()
	}
	if l.podman {
		// podman may leave mounts (shm, overlay) under its run directory.
		unmountUnder(l.dir)
		if l.runDir != "" {
			unmountUnder(l.runDir)
		}
	}
	errs = append(errs, removeAll(l.dir), removeAll(l.runDir))
	return errors.Join(errs...)
}

// unmountUnder lazily unmounts every mount point below dir.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var mps []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 {
			if mp := cgroup.UnescapeMountinfo(f[4]); strings.HasPrefix(mp, dir+"/") {
				mps = append(mps, mp)
			}
		}
	}
	for i := len(mps) - 1; i >= 0; i-- {
		_ = syscall.Unmount(mps[i], syscall.MNT_DETACH)
	}
}

func lastLine(b []byte) string {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
