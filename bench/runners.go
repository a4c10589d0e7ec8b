package bench

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
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

	"github.com/microvm/microvm/bench/qemuguest"
	"github.com/microvm/microvm/container"
	"github.com/microvm/microvm/images/guests"
	"github.com/microvm/microvm/images/rootfs"
	"github.com/microvm/microvm/kvm"
	"github.com/microvm/microvm/vmm"
)

// Config tells the runners where things are.
type Config struct {
	// MicrovmBin is the microvm binary for the whole-process paths (vm-proc,
	// linux). Empty: those paths are not available.
	MicrovmBin string
	// CacheDir holds built artefacts (kvm_floor, the busybox rootfs, the
	// QEMU guest). Required for the paths that build something.
	CacheDir string
	// Rootfs is the busybox rootfs of the container paths (built in
	// CacheDir/rootfs when empty).
	Rootfs string
	// StateDir holds the OCI runtimes' state (a temporary directory when
	// empty).
	StateDir string
	// Workload is the container command (default /bin/ready: writes fd 3,
	// exits 0 — the twin of the "ready" guest). With another command the
	// container paths have no launch→ready figure unless it writes fd 3.
	Workload []string
	// Helper is the container init helper binary (default /proc/self/exe,
	// which must call container.Init first in main).
	Helper string
	// Guest is the tiny guest of the VM paths (default "ready").
	Guest string
	// MemoryBytes is the RAM of the tiny-guest VMs (default 128 MiB, as
	// `microvm boot`).
	MemoryBytes uint64
	// Kernel and Initrd, when Kernel is set, enable the linux and libvirt
	// paths.
	Kernel, Initrd string
	// LibvirtURI is the libvirt connection of the libvirt path.
	LibvirtURI string
	// QEMU is the qemu-system-x86_64 binary (default: found in PATH).
	QEMU string
	// DockerHost is the docker path's daemon (DOCKER_HOST), e.g. a private
	// container.Dockerd's Host. Empty: what the docker CLI reaches.
	DockerHost string
}

func (c *Config) guest() string {
	if c.Guest == "" {
		return "ready"
	}
	return c.Guest
}

func (c *Config) memory() uint64 {
	if c.MemoryBytes == 0 {
		return 128 << 20
	}
	return c.MemoryBytes
}

// DefaultRunners returns every path in the default order: the VM paths from
// the least a VMM can do upwards, then the container paths, then QEMU, then
// (which need Config.Kernel) linux and libvirt.
func DefaultRunners(cfg Config) []Runner {
	rf := &rootfsOnce{cfg: &cfg}
	wl := cfg.Workload
	if len(wl) == 0 {
		wl = []string{"/bin/ready"}
	}
	rs := []Runner{
		newVMRunner(&cfg),
		&poolRunner{cfg: &cfg},
		&restoreRunner{cfg: &cfg},
		&procRunner{name: "vm-proc", desc: fmt.Sprintf("`microvm boot --guest %s --quiet` as a whole process", cfg.guest()), setup: func(ctx context.Context) ([]string, error) {
			if cfg.MicrovmBin == "" {
				return nil, errors.New("the microvm binary is not known (set MICROVM_BIN)")
			}
			if err := needKVM(); err != nil {
				return nil, err
			}
			return []string{cfg.MicrovmBin, "boot", "--guest", cfg.guest(), "--quiet"}, nil
		}},
		&procRunner{name: "vm-lean", desc: fmt.Sprintf("`microvm-vmm --guest %s --quiet` (the lean VMM binary) as a whole process", cfg.guest()), setup: func(ctx context.Context) ([]string, error) {
			lean, err := leanBinary(cfg.MicrovmBin)
			if err != nil {
				return nil, err
			}
			if err := needKVM(); err != nil {
				return nil, err
			}
			return []string{lean, "--guest", cfg.guest(), "--quiet"}, nil
		}},
		floorRunner("kvm-floor", "kvm_floor.c: the least a VMM can do (C, 2 MiB, 13-byte guest), whole process", cfg.CacheDir, buildKVMFloor),
		floorRunner("go-floor", "bench/gofloor: kvm_floor.c's work in Go (syscall package only), whole process", cfg.CacheDir, buildGoFloor),
	}
	for _, rt := range container.Runtimes(cfg.StateDir) {
		if ip, ok := rt.(container.InProcess); ok {
			ip.Helper = cfg.Helper
			rt = ip
		}
		if e, ok := rt.(*container.Engine); ok && e.Name() == "docker" {
			e.Host = cfg.DockerHost
		}
		rs = append(rs, &containerRunner{rt: rt, rootfs: rf, args: wl})
	}
	rs = append(rs, &ociRunner{cfg: &cfg, rootfs: rf})
	rs = append(rs, newQEMURunner(&cfg, false), newQEMURunner(&cfg, true), multibootRunner(&cfg))
	rs = append(rs,
		&procRunner{name: "linux", desc: "`microvm boot KERNEL --initrd INITRD` (Linux microVM) as a whole process", setup: func(ctx context.Context) ([]string, error) {
			if cfg.Kernel == "" {
				return nil, errors.New("needs --kernel (a vmlinux; see `make kernel`)")
			}
			if cfg.MicrovmBin == "" {
				return nil, errors.New("the microvm binary is not known (set MICROVM_BIN)")
			}
			if err := needKVM(); err != nil {
				return nil, err
			}
			argv := []string{cfg.MicrovmBin, "boot", cfg.Kernel, "--quiet", "--timeout", "0"} // the bench's --timeout ends it
			if cfg.Initrd != "" {
				argv = append(argv, "--initrd", cfg.Initrd)
			}
			return argv, nil
		}},
		newLibvirtRunner(&cfg),
	)
	return rs
}

// leanBinary finds microvm-vmm, the lean VMM binary (cmd/microvm-vmm):
// $MICROVM_VMM_BIN, else beside the microvm binary (make build puts both
// in bin/).
func leanBinary(microvm string) (string, error) {
	if p := os.Getenv("MICROVM_VMM_BIN"); p != "" {
		return p, nil
	}
	if microvm == "" {
		return "", errors.New("the lean VMM binary is not known (set MICROVM_VMM_BIN, or MICROVM_BIN with microvm-vmm beside it)")
	}
	p := filepath.Join(filepath.Dir(microvm), "microvm-vmm")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no lean VMM binary beside %s (make build makes bin/microvm-vmm; or set MICROVM_VMM_BIN): %w", microvm, err)
	}
	return p, nil
}

// Names lists the names of runners.
func Names(rs []Runner) []string {
	var n []string
	for _, r := range rs {
		n = append(n, r.Name())
	}
	return n
}

func needKVM() error {
	s, err := kvm.Open(kvm.DevicePath)
	if err != nil {
		return fmt.Errorf("no usable %s: %w", kvm.DevicePath, err)
	}
	return s.Close()
}

// --- vm: the tiny guest on microvm's VMM, in this process ---

type vmRunner struct {
	cfg *Config
	sys *kvm.System
	img []byte
}

func newVMRunner(cfg *Config) *vmRunner { return &vmRunner{cfg: cfg} }

func (r *vmRunner) Name() string { return "vm" }
func (r *vmRunner) Describe() string {
	return fmt.Sprintf("tiny %q guest on microvm's VMM in this process (vmm.New → Run → Close, %s RAM)", r.cfg.guest(), vmm.FormatBytes(r.cfg.memory()))
}

func (r *vmRunner) Setup(context.Context) error {
	img, err := guests.Get(r.cfg.guest())
	if err != nil {
		return err
	}
	sys, err := kvm.Open(kvm.DevicePath)
	if err != nil {
		return fmt.Errorf("no usable %s: %w", kvm.DevicePath, err)
	}
	r.sys, r.img = sys, img
	return nil
}

// Launch times vmm.New → Run → Close. Ready is the VMM's own launch→ready
// (from New), exit is measured here after Close (teardown included).
func (r *vmRunner) Launch(ctx context.Context) (Sample, error) {
	t0 := time.Now()
	m, err := vmm.New(vmm.Config{Image: r.img, MemoryBytes: r.cfg.memory(), CPUs: 1, Console: io.Discard, System: r.sys})
	if err != nil {
		return Sample{}, fmt.Errorf("vmm.New: %w", err)
	}
	res, err := m.Run(ctx)
	cerr := m.Close()
	exit := time.Since(t0)
	if err != nil {
		return Sample{}, fmt.Errorf("run: %w", err)
	}
	if cerr != nil {
		return Sample{}, fmt.Errorf("close: %w", cerr)
	}
	if res.Reason != vmm.ReasonExit || res.Status != 0 {
		return Sample{}, fmt.Errorf("guest did not exit 0: %s", res.Summary())
	}
	s := Sample{Exit: exit}
	if res.Ready {
		s.Ready, s.HasReady = res.ReadyAfter, true
	}
	return s, nil
}

// poolRunner is path vm-pool: the same guest from a vmm.Pool that keeps
// two machines built ahead; one launch is Get → Run, the teardown
// (Release) off the measured path. Ready is Get plus Run → ready.
type poolRunner struct {
	cfg  *Config
	sys  *kvm.System
	pool *vmm.Pool
}

func (r *poolRunner) Name() string { return "vm-pool" }
func (r *poolRunner) Describe() string {
	return fmt.Sprintf("tiny %q guest from a warm vmm.Pool of 2 built VMs in this process (Get → Run; teardown off the path)", r.cfg.guest())
}

func (r *poolRunner) Setup(context.Context) error {
	img, err := guests.Get(r.cfg.guest())
	if err != nil {
		return err
	}
	sys, err := kvm.Open(kvm.DevicePath)
	if err != nil {
		return fmt.Errorf("no usable %s: %w", kvm.DevicePath, err)
	}
	cfg := vmm.Config{Image: img, MemoryBytes: r.cfg.memory(), CPUs: 1, Console: io.Discard, System: sys}
	r.sys, r.pool = sys, vmm.NewPool(2, func() (*vmm.Machine, error) { return vmm.New(cfg) })
	return nil
}

func (r *poolRunner) Launch(ctx context.Context) (Sample, error) {
	t0 := time.Now()
	m, err := r.pool.Get(ctx)
	if err != nil {
		return Sample{}, fmt.Errorf("pool: %w", err)
	}
	got := time.Since(t0)
	res, err := m.Run(ctx)
	exit := time.Since(t0)
	r.pool.Release(m)
	if err != nil {
		return Sample{}, fmt.Errorf("run: %w", err)
	}
	if res.Reason != vmm.ReasonExit || res.Status != 0 {
		return Sample{}, fmt.Errorf("guest did not exit 0: %s", res.Summary())
	}
	s := Sample{Exit: exit}
	if res.Ready {
		s.Ready, s.HasReady = got+res.ReadyAfter-res.SetupTime, true
	}
	return s, nil
}

func (r *poolRunner) Close() error {
	var err error
	if r.pool != nil {
		err = r.pool.Close()
		r.pool = nil
	}
	if r.sys != nil {
		err = errors.Join(err, r.sys.Close())
		r.sys = nil
	}
	return err
}

// restoreRunner is path vm-restore: the same guest restored in this
// process from a snapshot taken at its ready write (vmm.Restore → Run →
// Close); ready is when the restored guest resumes, right after that write.
type restoreRunner struct {
	cfg *Config
	sys *kvm.System
	dir string
}

func (r *restoreRunner) Name() string { return "vm-restore" }
func (r *restoreRunner) Describe() string {
	return fmt.Sprintf("tiny %q guest restored in this process from a snapshot taken at its ready write (vmm.Restore → Run → Close)", r.cfg.guest())
}

func (r *restoreRunner) Setup(ctx context.Context) error {
	img, err := guests.Get(r.cfg.guest())
	if err != nil {
		return err
	}
	sys, err := kvm.Open(kvm.DevicePath)
	if err != nil {
		return fmt.Errorf("no usable %s: %w", kvm.DevicePath, err)
	}
	r.sys = sys
	m, err := vmm.New(vmm.Config{Image: img, MemoryBytes: r.cfg.memory(), CPUs: 1, Console: io.Discard, System: sys, PauseAtReady: true})
	if err != nil {
		return err
	}
	defer m.Close()
	res, err := m.Run(ctx)
	if err != nil {
		return err
	}
	if res.Reason != vmm.ReasonPaused {
		return fmt.Errorf("the %q guest did not pause at a ready write: %s", r.cfg.guest(), res.Summary())
	}
	if r.dir, err = os.MkdirTemp("", "microvm-bench-snap-"); err != nil {
		return err
	}
	return m.Snapshot(r.dir)
}

func (r *restoreRunner) Launch(ctx context.Context) (Sample, error) {
	t0 := time.Now()
	m, err := vmm.Restore(r.dir, vmm.Config{Console: io.Discard, System: r.sys})
	if err != nil {
		return Sample{}, fmt.Errorf("vmm.Restore: %w", err)
	}
	res, err := m.Run(ctx)
	cerr := m.Close()
	exit := time.Since(t0)
	if err != nil {
		return Sample{}, fmt.Errorf("run: %w", err)
	}
	if cerr != nil {
		return Sample{}, fmt.Errorf("close: %w", cerr)
	}
	if res.Reason != vmm.ReasonExit || res.Status != 0 {
		return Sample{}, fmt.Errorf("restored guest did not exit 0: %s", res.Summary())
	}
	return Sample{Exit: exit, Ready: res.ReadyAfter, HasReady: true}, nil
}

func (r *restoreRunner) Close() error {
	var err error
	if r.dir != "" {
		err = os.RemoveAll(r.dir)
		r.dir = ""
	}
	if r.sys != nil {
		err = errors.Join(err, r.sys.Close())
		r.sys = nil
	}
	return err
}

func (r *vmRunner) Close() error {
	if r.sys != nil {
		err := r.sys.Close()
		r.sys = nil
		return err
	}
	return nil
}

// --- whole-process paths ---

// procRunner launches a command per sample. Its fd 3 is the write end of a
// ready pipe (and MICROVM_READY_FD=3 is set): a byte there is launch→ready.
// Exit is the process reaped. A non-zero status is a failed sample.
type procRunner struct {
	name, desc string
	setup      func(context.Context) ([]string, error)
	argv       []string
}

func (r *procRunner) Name() string     { return r.name }
func (r *procRunner) Describe() string { return r.desc }

func (r *procRunner) Setup(ctx context.Context) error {
	argv, err := r.setup(ctx)
	if err != nil {
		return err
	}
	if _, err := os.Stat(argv[0]); err != nil {
		return fmt.Errorf("%s: %w", argv[0], err)
	}
	r.argv = argv
	return nil
}

func (r *procRunner) Launch(ctx context.Context) (Sample, error) {
	return launchProcess(ctx, r.argv, nil, func(code int, stderr string) error {
		if code != 0 {
			return fmt.Errorf("exit status %d: %s", code, stderr)
		}
		return nil
	})
}

func (r *procRunner) Close() error { return nil }

// multibootRunner is path vm-multiboot: `microvm boot` of the tiny guest
// wrapped as a Multiboot kernel (qemuguest.WrapMultiboot), the very image
// path qemu-multiboot hands QEMU, written to the cache by content.
func multibootRunner(cfg *Config) Runner {
	return &procRunner{name: "vm-multiboot", desc: fmt.Sprintf("`microvm boot GUEST-multiboot.elf --quiet`: the %q guest as a Multiboot kernel (ELF32, stub), whole process", cfg.guest()), setup: func(ctx context.Context) ([]string, error) {
		if cfg.MicrovmBin == "" {
			return nil, errors.New("the microvm binary is not known (set MICROVM_BIN)")
		}
		if cfg.CacheDir == "" {
			return nil, errors.New("needs a cache directory for the Multiboot image")
		}
		if err := needKVM(); err != nil {
			return nil, err
		}
		g, err := guests.Get(cfg.guest())
		if err != nil {
			return nil, err
		}
		img, err := qemuguest.WrapMultiboot(g, cfg.memory(), "")
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(img)
		path := filepath.Join(cfg.CacheDir, "multiboot", cfg.guest()+"-"+hex.EncodeToString(sum[:6])+".elf")
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, img, 0o644); err != nil {
			return nil, err
		}
		return []string{cfg.MicrovmBin, "boot", path, "--quiet", "--memory", fmt.Sprintf("%dM", cfg.memory()>>20)}, nil
	}}
}

// launchProcess runs argv once with a ready pipe on fd 3 and the extra
// environment env, and judges the exit status with check.
func launchProcess(ctx context.Context, argv, env []string, check func(code int, stderr string) error) (Sample, error) {
	rd, wr, err := os.Pipe()
	if err != nil {
		return Sample{}, err
	}
	defer rd.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(append(os.Environ(), "MICROVM_READY_FD=3"), env...)
	cmd.ExtraFiles = []*os.File{wr}
	var tail tailWriter
	cmd.Stderr = &tail
	// Own process group, so a cancelled launch takes all its children.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		wr.Close()
		return Sample{}, fmt.Errorf("start %s: %w", argv[0], err)
	}
	wr.Close()
	readyAt := make(chan time.Time, 1)
	go func() {
		var b [1]byte
		if n, _ := rd.Read(b[:]); n == 1 {
			readyAt <- time.Now()
		}
		close(readyAt)
	}()
	waitDone := make(chan error, 1)
	go func() { waitDone <- cmd.Wait() }()
	select {
	case err = <-waitDone:
	case <-ctx.Done():
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-waitDone
		return Sample{}, ctx.Err()
	}
	s := Sample{Exit: time.Since(t0)}
	if t, ok := <-readyAt; ok {
		// The reader may be scheduled late on a busy host; ready was no
		// later than the exit.
		s.Ready, s.HasReady = min(t.Sub(t0), s.Exit), true
	}
	// Children the command left behind in its group go too.
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return Sample{}, fmt.Errorf("wait %s: %w", argv[0], err)
		}
		code = ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return Sample{}, fmt.Errorf("killed by signal %d (%v): %s", int(ws.Signal()), ws.Signal(), tail.String())
		}
	}
	if err := check(code, tail.String()); err != nil {
		return Sample{}, err
	}
	return s, nil
}

// tailWriter keeps the last 2 KiB written (a command's stderr, for errors).
type tailWriter struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailWriter) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 2048 {
		t.b = t.b[len(t.b)-2048:]
	}
	return len(p), nil
}

func (t *tailWriter) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := strings.TrimSpace(string(t.b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 && len(s)-i > 20 {
		s = s[i+1:]
	}
	return s
}

// floorRunner is a whole-process path running the program build makes in
// cacheDir (a floor: kvm_floor.c or its Go twin).
func floorRunner(name, desc, cacheDir string, build func(ctx context.Context, cacheDir string) (string, error)) Runner {
	return &procRunner{name: name, desc: desc, setup: func(ctx context.Context) ([]string, error) {
		if err := needKVM(); err != nil {
			return nil, err
		}
		p, err := build(ctx, cacheDir)
		if err != nil {
			return nil, err
		}
		return []string{p}, nil
	}}
}

//go:embed kvmfloor/kvm_floor.c
var kvmFloorSource []byte

//go:embed gofloor/main.go
var goFloorSource []byte

// buildKVMFloor compiles kvm_floor.c (cc -O2) into cacheDir once per
// source version and returns the binary's path.
func buildKVMFloor(ctx context.Context, cacheDir string) (string, error) {
	return buildFloor(cacheDir, "kvm-floor", "kvm_floor.c", kvmFloorSource, func(src, out string) error {
		cc, err := exec.LookPath("cc")
		if err != nil {
			return errors.New("needs a C compiler (cc) to build kvm_floor.c")
		}
		if b, err := exec.CommandContext(ctx, cc, "-O2", "-o", out, src).CombinedOutput(); err != nil {
			return fmt.Errorf("cc -O2 kvm_floor.c: %v: %s", err, strings.TrimSpace(string(b)))
		}
		return nil
	})
}

// buildGoFloor builds bench/gofloor (kvm_floor.c's work in Go, standard
// library only) with the go command into cacheDir once per source version
// and returns the binary's path.
func buildGoFloor(ctx context.Context, cacheDir string) (string, error) {
	return buildFloor(cacheDir, "go-floor", "main.go", goFloorSource, func(src, out string) error {
		goCmd, err := exec.LookPath("go")
		if err != nil {
			return errors.New("needs the Go toolchain (go) to build bench/gofloor")
		}
		dir := filepath.Dir(src)
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module gofloor\n\ngo 1.22\n"), 0o644); err != nil {
			return err
		}
		cmd := exec.CommandContext(ctx, goCmd, "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=", "GOTOOLCHAIN=local")
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build bench/gofloor: %v: %s", err, strings.TrimSpace(string(b)))
		}
		return nil
	})
}

// buildFloor writes source as cacheDir/name/srcName and has compile turn
// it into cacheDir/name/name-<hash of source>, unless that exists.
func buildFloor(cacheDir, name, srcName string, source []byte, compile func(src, out string) error) (string, error) {
	if cacheDir == "" {
		return "", fmt.Errorf("no cache directory to build %s in", name)
	}
	sum := sha256.Sum256(source)
	dir, err := filepath.Abs(filepath.Join(cacheDir, name)) // compile may run elsewhere
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, name+"-"+hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	src := filepath.Join(dir, srcName)
	if err := os.WriteFile(src, source, 0o644); err != nil {
		return "", err
	}
	tmp := bin + ".tmp"
	if err := compile(src, tmp); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	return bin, nil
}

// --- container paths ---

// rootfsOnce provides the busybox rootfs, building it in the cache once.
type rootfsOnce struct {
	cfg  *Config
	once sync.Once
	dir  string
	err  error
}

func (o *rootfsOnce) get() (string, error) {
	o.once.Do(func() {
		if o.cfg.Rootfs != "" {
			o.dir, o.err = o.cfg.Rootfs, rootfs.Check(o.cfg.Rootfs)
			return
		}
		if o.cfg.CacheDir == "" {
			o.err = errors.New("no rootfs given and no cache directory to build one in")
			return
		}
		dir := filepath.Join(o.cfg.CacheDir, "rootfs")
		if rootfs.Check(dir) != nil || !sameFile(filepath.Join(dir, "bin/ready"), rootfs.Ready()) {
			if err := rootfs.Build(dir, rootfs.Options{}); err != nil {
				o.err = err
				return
			}
		}
		// runc refuses a bundle rootfs whose path goes through a symlink
		// (a symlinked cache directory, say).
		o.dir, o.err = filepath.EvalSymlinks(dir)
	})
	return o.dir, o.err
}

func sameFile(p string, want []byte) bool {
	b, err := os.ReadFile(p)
	return err == nil && string(b) == string(want)
}

type containerRunner struct {
	rt     container.Runtime
	rootfs *rootfsOnce
	args   []string
	l      container.Launcher
}

func (r *containerRunner) Name() string { return r.rt.Name() }

func (r *containerRunner) Describe() string {
	cmd := strings.Join(r.args, " ")
	switch r.rt.Name() {
	case "container":
		return fmt.Sprintf("microvm's in-process launcher: busybox rootfs, %s, own netns, cgroup", cmd)
	case "runc", "crun":
		return fmt.Sprintf("`%s run --bundle B --preserve-fds 1 ID` of busybox %s", r.rt.Name(), cmd)
	case "podman":
		return fmt.Sprintf("`podman run --rm --network none --preserve-fds 1` of busybox %s (runc, vfs, cgroupfs)", cmd)
	}
	return fmt.Sprintf("`%s run --rm --network none` of busybox %s", r.rt.Name(), cmd)
}

func (r *containerRunner) Setup(ctx context.Context) error {
	if err := r.rt.Available(ctx); err != nil {
		return err
	}
	dir, err := r.rootfs.get()
	if err != nil {
		return err
	}
	l, err := r.rt.Prepare(ctx, container.Workload{Rootfs: dir, Args: r.args, ReadyPipe: true})
	if err != nil {
		return err
	}
	r.l = l
	return nil
}

func (r *containerRunner) Launch(ctx context.Context) (Sample, error) {
	res, err := r.l.Launch(ctx, container.IO{})
	if err != nil {
		return Sample{}, err
	}
	if res.Status != 0 {
		return Sample{}, fmt.Errorf("workload exited with status %d", res.Status)
	}
	return Sample{Exit: res.ExitAfter, Ready: res.ReadyAfter, HasReady: res.Ready}, nil
}

func (r *containerRunner) Close() error {
	if r.l == nil {
		return nil
	}
	err := r.l.Close()
	r.l = nil
	return err
}
