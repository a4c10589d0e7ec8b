package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/microvm/microvm/images"
	"github.com/microvm/microvm/images/guests"
	"github.com/microvm/microvm/images/multiboot"
	"github.com/microvm/microvm/internal/registry"
	"github.com/microvm/microvm/sandbox"
	"github.com/microvm/microvm/vmm"
	"github.com/spf13/cobra"
)

type bootFlags struct {
	guest    string
	memory   string
	cpus     int
	cmdline  string
	format   string
	timeout  timeoutFlag
	quiet    bool
	json     bool
	stdin    bool
	logLevel string
	initrd   string
	modules  []string // --module FILE[,cmdline], for a Multiboot kernel
	cacheDir string
	append   string
	name     string
	stateDir string
	sandbox  sandboxFlags   // seccomp and jail (boot_sandbox.go)
	virtio   virtioFlags    // --disk, --net, --rng (boot_virtio.go)
	conv     guestConvFlags // --debug-exit, --irqchip (boot_guests.go)
	snapshot string         // --snapshot-on-ready DIR
	onSignal string         // --snapshot-on-signal DIR
	restore  string         // --restore DIR
}

func (a *app) newBootCmd() *cobra.Command {
	f := bootFlags{timeout: timeoutFlag{auto: true}}
	cmd := &cobra.Command{
		Use:   "boot [IMAGE]",
		Short: "Boot a tiny guest or a Linux kernel through /dev/kvm",
		Long: `Boot IMAGE in a micro-VM: a tiny-guest ELF64 or flat binary (see the README's
tiny-guest ABI). With no IMAGE, boot the embedded guest named by --guest
(default "hello"). Embedded guests: ` + guestList() + `.

The guest's serial console goes to stdout (to stderr with --json). When stdin
is a terminal it is put in raw mode and fed to the guest's serial port; type
Ctrl-A x to stop the VM (Ctrl-A Ctrl-A sends a literal Ctrl-A).

Exit status: the guest's own status (0-119) when it writes the exit port,
0 when it halts, resets or powers off; 120 status out of range, 121 guest
crash (triple fault, KVM internal error), 122 guest kernel panic, 123 usage
error, 124 timeout, 125 host error, 126 bad image, 129 bad snapshot, 130
interrupted.

--snapshot-on-ready DIR pauses the guest at its ready write (port 0x502),
writes a snapshot of it into DIR and exits 0; --snapshot-on-signal DIR does
so when the process gets SIGUSR1 (microvm kill --signal USR1 NAME); --restore
DIR resumes a snapshot where it was taken (no IMAGE: the snapshot holds the
guest). See docs/snapshot.md.`,
		Example: `  microvm boot                               # the embedded hello guest
  microvm boot --guest ready --json          # benchmark guest, result as JSON
  microvm boot --guest exit --cmdline 42     # exits with status 42
  microvm boot --guest smp --cpus 4          # every vCPU reports in
  microvm boot ./guest.elf --memory 256M --timeout 5s
  microvm boot ./code.bin --format flat      # a flat binary entered at 0x100000
  microvm boot vmlinux --initrd initramfs.cpio.gz --append 'microvm.cmd="uname -a"'
  microvm boot bzImage --memory 512M --cpus 2 --timeout 0   # a Linux shell on the console
  microvm boot vmlinux --initrd initramfs.cpio.gz --snapshot-on-ready /tmp/snap
  microvm boot --restore /tmp/snap           # resumes after init's ready write`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.boot(cmd, args, &f)
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.guest, "guest", "g", "", "boot the embedded guest `NAME` (default hello when no IMAGE)")
	fl.StringVarP(&f.memory, "memory", "m", "128M", "guest RAM `SIZE` (K, M, G suffixes)")
	fl.IntVarP(&f.cpus, "cpus", "c", 1, "number of vCPUs")
	fl.StringVar(&f.cmdline, "cmdline", "", "command line handed to the guest (for Linux, replaces the default)")
	fl.StringVar(&f.append, "append", "", "text appended to the command line (for Linux, to the default one)")
	fl.StringVar(&f.format, "format", "auto", "image `FORMAT`: auto, elf, flat, bzimage, vmlinux, multiboot or pvh")
	fl.StringArrayVar(&f.modules, "module", nil, "`FILE[,cmdline]` handed to a Multiboot or PVH kernel as a module (repeatable)")
	fl.VarP(&f.timeout, "timeout", "t", "stop the VM after this `DURATION` (0 = never; auto = 10s for an embedded guest without a console, never otherwise)")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "discard the guest's console output")
	fl.BoolVar(&f.json, "json", false, "print the result as JSON on stdout (console goes to stderr)")
	fl.BoolVar(&f.stdin, "stdin", false, "feed stdin to the guest's serial port even when it is not a terminal")
	fl.StringVar(&f.logLevel, "log-level", "warn", "VMM log `LEVEL`: debug, info, warn or error")
	fl.StringVar(&f.initrd, "initrd", "", "initial ramdisk `FILE` for a Linux kernel")
	fl.StringVar(&f.cacheDir, "kernel-cache", defaultKernelCache(), "`DIR` caching vmlinux images decompressed from bzImages (\"\" disables)")
	fl.StringVar(&f.name, "name", "", "`NAME` of the VM in microvm ps, stop and kill (default vm-PID)")
	addStateDirFlag(cmd, &f.stateDir)
	addSandboxFlags(cmd, &f.sandbox)
	addVirtioFlags(cmd, &f.virtio)
	addGuestConvFlags(cmd, &f.conv)
	fl.StringVar(&f.snapshot, "snapshot-on-ready", "", "pause at the guest's ready write, write a snapshot into `DIR` and exit 0")
	fl.StringVar(&f.onSignal, "snapshot-on-signal", "", "on SIGUSR1, pause the running guest, write a snapshot into `DIR` and exit 0")
	fl.StringVar(&f.restore, "restore", "", "resume the snapshot in `DIR` (no IMAGE; --memory and --cpus, when given, must match it)")
	markPaths(fl, "initrd", "kernel-cache", "jail", "disk", "snapshot-on-ready", "snapshot-on-signal", "restore")
	return cmd
}

func guestList() string {
	var parts []string
	for _, n := range guests.Names() {
		parts = append(parts, n+" ("+guests.Describe(n)+")")
	}
	return strings.Join(parts, "; ")
}

// bootReport is the --json output of boot.
type bootReport struct {
	*vmm.Result
	Image        string  `json:"image"`
	ExitCode     int     `json:"exit_code"`
	Summary      string  `json:"summary"`
	ReadyMillis  float64 `json:"ready_ms,omitempty"`
	ExitMillis   float64 `json:"exit_ms"`
	SetupMillis  float64 `json:"setup_ms"`
	HostKind     string  `json:"host_kind"`
	ProcessMilli float64 `json:"process_ms"`
	// Memory (see bootReport.memory): the resident set, its file-backed
	// part, the guest pages in it and the VMM's own private memory.
	RSSKiB           uint64 `json:"rss_kib,omitempty"`
	RSSFileKiB       uint64 `json:"rss_file_kib,omitempty"`
	GuestResidentKiB uint64 `json:"guest_resident_kib,omitempty"`
	VMMPrivateKiB    uint64 `json:"vmm_private_kib,omitempty"`
}

func (a *app) boot(cmd *cobra.Command, args []string, f *bootFlags) error {
	processStart := time.Now()
	var cfg vmm.Config
	var name string
	var err error
	if f.restore != "" {
		cfg, name, err = restoreConfig(cmd, args, f)
	} else {
		cfg, name, err = bootConfig(args, f)
	}
	if err != nil {
		return err
	}
	level, err := parseLogLevel(f.logLevel)
	if err != nil {
		return err
	}
	cfg.Logger = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
	switch {
	case f.quiet:
		cfg.Console = io.Discard
	case f.json:
		cfg.Console = a.stderr
	default:
		cfg.Console = a.stdout
	}

	ctx, stopSignals := notifyContext()
	defer stopSignals()
	timeout := f.timeout.resolve(len(args) == 0 && f.restore == "", !f.quiet && !f.json && (f.stdin || isTerminal(a.stdin)))
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	cfg.OnReady = readyNotifier()
	// The VM is registered for microvm ps/stop/kill while it is built; a
	// jailed child leaves that to its parent, which it runs under.
	var reg *pendingRegistration
	filtered := false // under seccomp, which lets the VMM remove no file
	if _, jailed := os.LookupEnv(sandbox.JailEnv); !jailed {
		reg = register(f.stateDir, f.name, registry.Entry{
			Image: name, CPUs: cfg.CPUs, MemoryBytes: cfg.MemoryBytes, Jailed: f.sandbox.jail != "",
		})
		if f.sandbox.jail != "" {
			if err := reg.wait(); err != nil {
				return err
			}
		}
		defer func() { reg.end(!filtered) }()
	}
	f.sandbox.snapshot = f.snapshot != "" || f.onSignal != ""
	if f.sandbox.snapshot && f.sandbox.jail != "" {
		return usageErrorf("--jail cannot be combined with a snapshot flag yet (the jailed VMM sees no host paths)")
	}
	if done, err := a.sandboxStart(ctx, cmd, &cfg, &f.sandbox); done || err != nil {
		return err
	}

	var status *os.File // read after the run, for --json's memory figures
	if f.json {
		status, _ = os.Open("/proc/self/status")
	}
	var m *vmm.Machine
	if f.restore != "" {
		m, err = vmm.Restore(f.restore, cfg)
	} else {
		m, err = vmm.New(cfg)
	}
	if reg != nil {
		// A name in use is the first thing to hear about, whatever New said.
		if rerr := reg.wait(); rerr != nil {
			if m != nil {
				m.Close()
			}
			return rerr
		}
	}
	if err != nil {
		return withCode(newErrorCode(err), fmt.Errorf("boot %s: %w", name, err))
	}
	defer m.Close()

	if !f.quiet && !f.json {
		restore, err := attachConsole(a.stdin, m, f.stdin)
		if err != nil {
			return withCode(exitHost, err)
		}
		defer restore()
	}

	// The snapshot's files are opened before the seccomp filter, which
	// allows no open.
	var snap *vmm.SnapshotFiles
	if dir := cmp.Or(f.snapshot, f.onSignal); dir != "" {
		if snap, err = vmm.CreateSnapshotFiles(dir); err != nil {
			return withCode(exitHost, err)
		}
		defer snap.Close()
	}
	if f.onSignal != "" {
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		defer signal.Stop(usr1)
		go func() {
			select {
			case <-usr1:
				m.Pause()
			case <-m.Done():
			}
		}()
	}
	reserveProcs(cfg.CPUs) // before the seccomp filter: it may start threads
	if err := a.sandboxLockdown(&f.sandbox, m); err != nil {
		return err
	}
	filtered = f.sandbox.mode != sandbox.ModeOff
	res, err := m.Run(ctx)
	if err != nil {
		return withCode(exitHost, err)
	}
	code, msg := resultCode(res, timeout)
	if snap != nil {
		code, msg = snapshotCode(m, snap, res, code, msg)
	}
	if res.Reason == vmm.ReasonStopped && ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		code, msg = exitInterrupted, "interrupted"
	}
	if f.json {
		rep := bootReport{
			Result: res, Image: name, ExitCode: code, Summary: res.Summary(),
			ExitMillis: ms(res.ExitAfter), SetupMillis: ms(res.SetupTime),
			HostKind: string(res.Host), ProcessMilli: ms(time.Since(processStart)),
		}
		if res.Ready {
			rep.ReadyMillis = ms(res.ReadyAfter)
		}
		rep.memory(m, status)
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return withCode(exitHost, err)
		}
	}
	if msg != "" && !f.json {
		fmt.Fprintf(a.stderr, "microvm: %s\n", msg)
	}
	return silentOrOK(code)
}

// memory fills the resident-memory figures from /proc/self/status, opened
// before the seccomp filter went on (status) and read now: the process's
// resident set split into private memory and file pages (the binary's
// text, shared by every microvm process), the guest pages (mincore) and the
// VMM's own private memory, which is what each VM costs beyond its guest.
// Fields stay zero when the kernel does not say.
func (r *bootReport) memory(m *vmm.Machine, status *os.File) {
	if status == nil {
		return
	}
	defer status.Close()
	guest, err := m.Memory().Resident()
	if err != nil {
		return
	}
	buf := make([]byte, 8192)
	n, _ := status.Read(buf)
	fields := map[string]uint64{}
	for _, line := range strings.Split(string(buf[:n]), "\n") {
		if f := strings.Fields(line); len(f) >= 2 {
			v, _ := strconv.ParseUint(f[1], 10, 64)
			fields[strings.TrimSuffix(f[0], ":")] = v
		}
	}
	r.RSSKiB, r.RSSFileKiB, r.GuestResidentKiB = fields["VmRSS"], fields["RssFile"], guest>>10
	if anon := fields["RssAnon"]; anon > r.GuestResidentKiB {
		r.VMMPrivateKiB = anon - r.GuestResidentKiB
	}
}

func silentOrOK(code int) error {
	if code == exitOK {
		return nil
	}
	return silentExit(code)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// bootConfig turns flags and arguments into a machine config and a name for
// the image.
func bootConfig(args []string, f *bootFlags) (vmm.Config, string, error) {
	var cfg vmm.Config
	mem, err := vmm.ParseBytes(f.memory)
	if err != nil {
		return cfg, "", usageErrorf("--memory: %v", err)
	}
	if mem < vmm.MinMemory {
		return cfg, "", usageErrorf("--memory %s is too small: a guest needs at least %s", f.memory, vmm.FormatBytes(vmm.MinMemory))
	}
	if f.cpus < 1 {
		return cfg, "", usageErrorf("--cpus %d: need at least 1", f.cpus)
	}
	format, err := images.ParseFormat(f.format)
	if err != nil {
		return cfg, "", usageErrorf("--format: %v", err)
	}
	var name string
	switch {
	case len(args) == 1 && f.guest != "":
		return cfg, "", usageErrorf("give an IMAGE or --guest, not both")
	case len(args) == 1:
		name = args[0]
		cfg.Image, err = readImage(name)
		if err != nil {
			return cfg, "", withCode(exitBadImage, err)
		}
	default:
		g := f.guest
		if g == "" {
			g = guests.Default
		}
		name = "guest:" + g
		cfg.Image, err = guests.Get(g)
		if err != nil {
			return cfg, "", usageErrorf("--guest: %v", err)
		}
	}
	cfg.MemoryBytes, cfg.CPUs, cfg.Cmdline, cfg.Format = mem, f.cpus, f.cmdline, format
	cfg.AppendCmdline = f.append
	cfg.CPUIDCacheDir = vmm.RuntimeDir()
	cfg.KernelCacheDir = f.cacheDir
	for _, spec := range f.modules {
		file, args, _ := strings.Cut(spec, ",")
		data, err := readImage(file)
		if err != nil {
			return cfg, "", withCode(exitBadImage, fmt.Errorf("--module: %w", err))
		}
		cfg.Modules = append(cfg.Modules, multiboot.Module{Name: file, Data: data, Cmdline: args})
	}
	if f.initrd != "" {
		if cfg.Initrd, err = readImage(f.initrd); err != nil {
			return cfg, "", withCode(exitBadImage, fmt.Errorf("--initrd: %w", err))
		}
	}
	f.conv.apply(&cfg)
	if err := f.virtio.apply(&cfg); err != nil {
		return cfg, "", err
	}
	cfg.PauseAtReady = f.snapshot != ""
	if f.snapshot != "" && f.onSignal != "" {
		return cfg, "", usageErrorf("give --snapshot-on-ready or --snapshot-on-signal, not both")
	}
	return cfg, name, nil
}

// readyNotifier returns an OnReady hook writing one byte to the file
// descriptor named by $MICROVM_READY_FD, so that a parent process (microvm
// bench) learns launch→ready of a whole `microvm boot` process; nil when
// the variable is unset or not a descriptor number.
func readyNotifier() func() {
	s := os.Getenv("MICROVM_READY_FD")
	if s == "" {
		return nil
	}
	fd, err := strconv.Atoi(s)
	if err != nil || fd < 3 {
		return nil
	}
	f := os.NewFile(uintptr(fd), "ready-fd")
	return func() {
		f.Write([]byte{1})
		f.Close()
	}
}

// reserveProcs raises GOMAXPROCS to one more than vcpus when it is lower
// (on a one-CPU host it is 1). The VMM issues KVM_RUN as a raw system call,
// with no P hand-off and re-acquisition per VM exit, only while a P stays
// free for its other goroutines (vmm.Machine.Run); that halves the cost of
// an exit where exits are dear. Measured on a one-CPU nested host (the rig's
// L1): the lean kernel's 16,800 console exits to its ready marker took
// 5.5–6.3 s with GOMAXPROCS=1 and 2.6–3.8 s with 2.
func reserveProcs(vcpus int) {
	if n := max(vcpus, 1) + 1; runtime.GOMAXPROCS(0) < n {
		runtime.GOMAXPROCS(n)
	}
}

// notifyContext is signal.NotifyContext(ctx, SIGINT, SIGTERM) set up on
// another goroutine: installing the handlers costs the runtime a thread,
// and on the path every benchmark times that work overlaps with building
// the VM. A signal that comes before the handlers are in place kills the
// process the default way.
func notifyContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
		defer signal.Stop(sigs)
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// defaultKernelCache is where decompressed kernels are cached:
// $MICROVM_CACHE/kernels, else the user cache directory's microvm/kernels.
func defaultKernelCache() string {
	if d := os.Getenv("MICROVM_CACHE"); d != "" {
		return filepath.Join(d, "kernels")
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "microvm", "kernels")
	}
	return ""
}

// maxImageSize bounds what boot reads into memory.
const maxImageSize = 1 << 30

// readImage reads an image file with errors that say what is wrong with it.
func readImage(path string) ([]byte, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", path, errors.Unwrap(err))
	}
	switch {
	case st.IsDir():
		return nil, fmt.Errorf("image %s is a directory, not an image file", path)
	case !st.Mode().IsRegular() && st.Mode()&os.ModeDevice == 0:
		return nil, fmt.Errorf("image %s is not a regular file", path)
	case st.Size() == 0:
		return nil, fmt.Errorf("image %s is empty (0 bytes)", path)
	case st.Size() > maxImageSize:
		return nil, fmt.Errorf("image %s is %d MiB, more than the %d MiB limit", path, st.Size()>>20, maxImageSize>>20)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read image %s: %w", path, errors.Unwrap(err))
	}
	return b, nil
}

// newErrorCode maps an error from vmm.New to an exit status.
func newErrorCode(err error) int {
	var ce *vmm.ConfigError
	switch {
	case errors.As(err, &ce):
		return exitUsage
	case errors.Is(err, images.ErrBadImage):
		return exitBadImage
	case errors.Is(err, vmm.ErrNotSnapshot), errors.Is(err, vmm.ErrSnapshotCorrupt), errors.Is(err, vmm.ErrSnapshotVersion),
		errors.Is(err, vmm.ErrSnapshotHost), errors.Is(err, vmm.ErrSnapshotMemory):
		return exitSnapshot
	}
	return exitHost
}

// restoreConfig is bootConfig for --restore: the snapshot holds the guest,
// so no IMAGE, --guest or boot-time flag may be given; --memory and --cpus
// only when set, to be checked against the snapshot.
func restoreConfig(cmd *cobra.Command, args []string, f *bootFlags) (vmm.Config, string, error) {
	var cfg vmm.Config
	if len(args) > 0 || f.guest != "" {
		return cfg, "", usageErrorf("--restore takes no IMAGE or --guest: the snapshot holds the guest")
	}
	for _, name := range []string{"snapshot-on-ready", "snapshot-on-signal", "cmdline", "append", "format", "module", "initrd", "disk", "net", "rng", "irqchip", "debug-exit"} {
		if fl := cmd.Flags().Lookup(name); fl != nil && fl.Changed {
			return cfg, "", usageErrorf("--restore: --%s cannot be given, the snapshot fixed it", name)
		}
	}
	if cmd.Flags().Changed("memory") {
		mem, err := vmm.ParseBytes(f.memory)
		if err != nil {
			return cfg, "", usageErrorf("--memory: %v", err)
		}
		cfg.MemoryBytes = mem
	}
	if cmd.Flags().Changed("cpus") {
		cfg.CPUs = f.cpus
	}
	cfg.CPUIDCacheDir = vmm.RuntimeDir()
	return cfg, "snapshot:" + f.restore, nil
}

// snapshotCode writes the snapshot of a machine that paused at ready
// (--snapshot-on-ready): 0 once written; a guest that ended otherwise has
// its own status and no snapshot (the state file stays empty: no snapshot).
func snapshotCode(m *vmm.Machine, snap *vmm.SnapshotFiles, res *vmm.Result, code int, msg string) (int, string) {
	if res.Reason != vmm.ReasonPaused {
		if code == exitOK {
			code = exitSnapshot
		}
		return code, fmt.Sprintf("no snapshot written: the guest ended before it was paused (%s)", res.Summary())
	}
	if err := snap.Write(m); err != nil {
		return exitHost, err.Error()
	}
	return exitOK, ""
}

// resultCode maps a run's result to the process exit status and, for
// anything but a clean end, a message for stderr.
func resultCode(r *vmm.Result, timeout time.Duration) (int, string) {
	switch r.Reason {
	case vmm.ReasonExit:
		if r.Status > maxGuestStatus {
			return exitGuestRange, fmt.Sprintf("guest exit status %d is out of range (0-%d)", r.Status, maxGuestStatus)
		}
		return int(r.Status), ""
	case vmm.ReasonHalt, vmm.ReasonReset, vmm.ReasonPowerOff:
		return exitOK, ""
	case vmm.ReasonPanic:
		return exitGuestPanic, r.Summary()
	case vmm.ReasonTripleFault, vmm.ReasonCrash:
		return exitGuestCrash, r.Summary()
	case vmm.ReasonTimeout:
		return exitTimeout, fmt.Sprintf("the guest did not finish within %v (--timeout)%s", timeout, lastLine(r))
	case vmm.ReasonStopped:
		return exitInterrupted, r.Summary()
	case vmm.ReasonPaused:
		return exitOK, ""
	}
	return exitHost, r.Summary()
}

func lastLine(r *vmm.Result) string {
	if r.LastConsoleLine == "" {
		return ""
	}
	return fmt.Sprintf("; last console line: %q", r.LastConsoleLine)
}

func parseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, usageErrorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}
