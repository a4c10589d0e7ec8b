package rig

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/microvm/microvm/images/initramfs"
)

//go:embed init.sh
var initScript []byte

// Defaults used for zero Config fields.
const (
	DefaultMemoryMiB = 2048
	DefaultCPUs      = 1
	DefaultTimeout   = 5 * time.Minute
	// DefaultCPU is the QEMU CPU model of L1: a TCG-emulated AMD EPYC with
	// SVM and nested paging, so that kvm-amd loads in L1.
	DefaultCPU = "EPYC,+svm,+npt"
	// DefaultCmdline is the L1 kernel command line. The console (ttyS0)
	// carries kernel messages only; results use ttyS1.
	DefaultCmdline = "console=ttyS0 quiet panic=-1 mitigations=off"
)

// modules are the kernel modules init.sh loads, in this order (the list
// goes to /etc/microvm/modules, the files to /lib/modules): KVM on SVM, and
// tun for the taps of virtio-net tests (it depends on nothing).
var modules = []string{"irqbypass", "kvm", "kvm-amd", "tun"}

// Command is one step run inside L1, by busybox sh with -e, in /rig/work,
// with stdin from /dev/null and stdout and stderr captured together.
type Command struct {
	// Name identifies the command in the Result: letters, digits, '.',
	// '_', '-', ':' and '/'; unique within a Config.
	Name string
	// Run is the shell text, e.g. "/bin/microvm check".
	Run string
	// Timeout, when non-zero, kills the command (SIGKILL, status 137)
	// after this long inside L1; whole seconds, rounded up.
	Timeout time.Duration
}

// Config describes one rig run. Kernel and Modules are required; the rest
// has defaults.
type Config struct {
	// Kernel is the L1 kernel (a bzImage), e.g. Debian's cloud kernel.
	Kernel string
	// Modules is a directory searched recursively for irqbypass.ko, kvm.ko
	// and kvm-amd.ko built for Kernel (e.g. /lib/modules/<release>).
	Modules string
	// Busybox is a static busybox binary; default /bin/busybox.
	Busybox string
	// QEMU is the qemu-system-x86_64 binary; default looked up in PATH.
	QEMU string
	// CacheDir keeps the L1 base initramfs (busybox, modules, init) between
	// runs; default $MICROVM_CACHE/rig, or the user cache directory.
	CacheDir string
	// WorkDir holds this run's initramfs and logs. When empty, Run uses a
	// new temporary directory and removes it afterwards, except the logs
	// of a failed run.
	WorkDir string

	// Files are copied into L1: path inside L1 -> host path. Modes are
	// kept, symlinks followed. Use AddBinary for dynamically linked
	// programs.
	Files map[string]string
	// Script, when set, runs as a command named "script" before Commands.
	Script string
	// Commands run in order after KVM is set up, each whatever the
	// status of the ones before.
	Commands []Command

	MemoryMiB int           // L1 RAM; default DefaultMemoryMiB
	CPUs      int           // L1 vCPUs; default DefaultCPUs (see docs/rig.md on SMP)
	CPU       string        // QEMU -cpu; default DefaultCPU
	Cmdline   string        // L1 kernel command line; default DefaultCmdline
	Timeout   time.Duration // whole run, host side; default DefaultTimeout
	// Monitor, when set, is the path of a Unix socket on which QEMU serves
	// its human monitor (HMP: `info registers`, `x/8i $pc`, ...), for
	// looking into an L1 that hangs.
	Monitor string

	// Log, when set, receives the results port live, one line at a time
	// (e.g. a writer onto t.Log).
	Log io.Writer

	// NoNudge turns off the host's nudges: a byte sent to L1's results
	// port every NudgeInterval, whose receive interrupt makes QEMU TCG
	// re-evaluate L1's local APIC and deliver a timer interrupt it had
	// left pending for good (docs/rig.md, "L1 sometimes freezes"). For
	// studying freezes only.
	NoNudge bool

	// freezeGrace replaces the constant freezeGrace when non-zero (tests).
	freezeGrace time.Duration
}

// CommandResult is what one Command did.
type CommandResult struct {
	Name string
	// Status is the exit status, -1 when the command did not finish.
	Status int
	// Done is true when L1 reported the command's end.
	Done bool
	// Output is its stdout and stderr, line by line, each ending in "\n".
	Output string
	// Truncated is set when Output was cut at 16 MiB.
	Truncated bool
	// Elapsed is the time between its start and end, as seen by the host.
	Elapsed time.Duration
}

// OK reports whether the command ran to its end with status 0.
func (c *CommandResult) OK() bool { return c.Done && c.Status == 0 }

// Result is what a run produced. Run returns it, as far as it got, even
// with an error.
type Result struct {
	Commands []CommandResult
	// Complete is true when L1 ran every command and reported DONE.
	Complete bool
	// KVMChecked is true once L1 reported its KVM setup; KVM is true when
	// the modules loaded and /dev/kvm opened, KVMDetail says why not.
	KVMChecked bool
	KVM        bool
	KVMDetail  string

	// Host-side times since QEMU started: L1 init running (Hello), KVM
	// set up and commands starting (ScriptStart), QEMU gone (Wall).
	Hello, ScriptStart, Wall time.Duration
	// L1Uptime holds L1's /proc/uptime at the same events.
	L1Uptime struct{ Hello, KVM, Done time.Duration }

	// Console is the path of the L1 console log (kernel messages on
	// ttyS0); Results the raw results-port log; QEMULog QEMU's own
	// stdout/stderr. Kept when the run failed or WorkDir was given.
	Console, Results, QEMULog string
	// Stray holds results-port lines that were not protocol events.
	Stray []string
	// Freezes counts the times L1 froze — a command with a Timeout went
	// freezeGrace past it without L1 reporting its end — and was restarted
	// for the commands left (see Run).
	Freezes int
	// ExitErr is QEMU's exit error, if any.
	ExitErr error `json:"-"`
}

// Command returns the result of the named command, or nil.
func (r *Result) Command(name string) *CommandResult {
	for i := range r.Commands {
		if r.Commands[i].Name == name {
			return &r.Commands[i]
		}
	}
	return nil
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9._:/-]{1,128}$`)

func (c *Config) withDefaults() (Config, error) {
	cfg := *c
	if cfg.Kernel == "" {
		return cfg, errors.New("rig: Config.Kernel (the L1 bzImage) is required")
	}
	if cfg.Modules == "" {
		return cfg, errors.New("rig: Config.Modules (directory with kvm.ko, kvm-amd.ko, irqbypass.ko) is required")
	}
	if cfg.Busybox == "" {
		cfg.Busybox = "/bin/busybox"
	}
	if cfg.QEMU == "" {
		p, err := exec.LookPath("qemu-system-x86_64")
		if err != nil {
			return cfg, fmt.Errorf("rig: qemu-system-x86_64 not found (install Debian's qemu-system-x86): %w", err)
		}
		cfg.QEMU = p
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = DefaultCacheDir()
	}
	if cfg.MemoryMiB == 0 {
		cfg.MemoryMiB = DefaultMemoryMiB
	}
	if cfg.MemoryMiB < 128 {
		return cfg, fmt.Errorf("rig: MemoryMiB %d too small (at least 128)", cfg.MemoryMiB)
	}
	if cfg.CPUs == 0 {
		cfg.CPUs = DefaultCPUs
	}
	if cfg.CPUs < 1 || cfg.CPUs > 64 {
		return cfg, fmt.Errorf("rig: CPUs %d out of range 1..64", cfg.CPUs)
	}
	if cfg.CPU == "" {
		cfg.CPU = DefaultCPU
	}
	if cfg.Cmdline == "" {
		cfg.Cmdline = DefaultCmdline
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	var cmds []Command
	if cfg.Script != "" {
		cmds = append(cmds, Command{Name: "script", Run: cfg.Script})
	}
	cmds = append(cmds, cfg.Commands...)
	seen := map[string]bool{}
	for _, c := range cmds {
		if !nameRE.MatchString(c.Name) {
			return cfg, fmt.Errorf("rig: command name %q: use 1-128 of [A-Za-z0-9._:/-]", c.Name)
		}
		if seen[c.Name] {
			return cfg, fmt.Errorf("rig: command name %q used twice", c.Name)
		}
		if c.Timeout < 0 {
			return cfg, fmt.Errorf("rig: command %q: negative timeout", c.Name)
		}
		seen[c.Name] = true
	}
	cfg.Commands = cmds
	cfg.Script = ""
	return cfg, nil
}

// DefaultCacheDir is where the rig keeps its base initramfs: <cache>/rig,
// where <cache> is $MICROVM_CACHE, else the .cache directory of the Go
// module holding the working directory (the Makefile's CACHE), else
// <user cache dir>/microvm.
func DefaultCacheDir() string {
	if c := cacheRoot(); c != "" {
		return filepath.Join(c, "rig")
	}
	if c, err := os.UserCacheDir(); err == nil {
		return filepath.Join(c, "microvm", "rig")
	}
	return filepath.Join(os.TempDir(), "microvm-rig")
}

// findModules returns the host paths of the modules init.sh loads, found
// anywhere under dir.
func findModules(dir string) (map[string]string, error) {
	want := map[string]bool{}
	for _, m := range modules {
		want[m+".ko"] = true
	}
	found := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && want[d.Name()] && found[d.Name()] == "" {
			found[d.Name()] = p
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rig: search modules in %s: %w", dir, err)
	}
	for name := range want {
		if found[name] == "" {
			return nil, fmt.Errorf("rig: %s not found under %s (compressed modules are not supported)", name, dir)
		}
	}
	return found, nil
}

// baseInitramfs returns the cached L1 base archive (init, busybox, the KVM
// modules; built by images/initramfs), building it when an input changed.
func baseInitramfs(cfg *Config) (string, error) {
	mods, err := findModules(cfg.Modules)
	if err != nil {
		return "", err
	}
	// The cache key covers every byte that goes into the archive.
	h := sha256.New()
	h.Write(initScript)
	inputs := []string{cfg.Busybox}
	for _, m := range modules {
		inputs = append(inputs, mods[m+".ko"])
	}
	for _, p := range inputs {
		b, err := os.ReadFile(p)
		if err != nil {
			return "", fmt.Errorf("rig: read %s: %w", p, err)
		}
		fmt.Fprintf(h, "%s %d\n", filepath.Base(p), len(b))
		h.Write(b)
	}
	key := hex.EncodeToString(h.Sum(nil))[:16]
	out := filepath.Join(cfg.CacheDir, "base-"+key+".cpio")
	if st, err := os.Stat(out); err == nil && st.Size() > 0 {
		return out, nil
	}
	if err := os.MkdirAll(cfg.CacheDir, 0o755); err != nil {
		return "", fmt.Errorf("rig: cache dir: %w", err)
	}
	tmp, err := os.CreateTemp(cfg.CacheDir, ".base-*.cpio")
	if err != nil {
		return "", fmt.Errorf("rig: %w", err)
	}
	defer os.Remove(tmp.Name())
	bw := bufio.NewWriterSize(tmp, 1<<20)
	// Uncompressed: L1 runs under TCG, where inflating costs more than
	// copying the larger archive.
	err = initramfs.Write(bw, initramfs.Options{Busybox: cfg.Busybox, Init: initScript, Modules: inputs[1:]})
	if err == nil {
		err = bw.Flush()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("rig: write base initramfs: %w", err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return "", fmt.Errorf("rig: %w", err)
	}
	// Drop archives built from older inputs.
	old, _ := filepath.Glob(filepath.Join(cfg.CacheDir, "base-*.cpio"))
	for _, o := range old {
		if o != out {
			os.Remove(o)
		}
	}
	return out, nil
}

// writeInitramfs writes the run's initramfs to path: the cached base archive
// followed by a second archive with cfg.Files, /rig/env, /rig/run.sh and
// the command scripts (the kernel unpacks concatenated archives in order).
func writeInitramfs(cfg *Config, base, path, nonce string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	b, err := os.Open(base)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, b)
	b.Close()
	if err != nil {
		return fmt.Errorf("copy base initramfs: %w", err)
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	a := newRunArchive(bw)
	if err := a.files(cfg.Files); err != nil {
		return err
	}
	if err := a.bytes("rig/env", 0o644, []byte("RIG_NONCE="+nonce+"\n")); err != nil {
		return err
	}
	var run bytes.Buffer
	run.WriteString("# generated by package rig: one rig_run per Command\n")
	for i, c := range cfg.Commands {
		script := fmt.Sprintf("rig/cmd/%03d", i)
		if err := a.bytes(script, 0o755, []byte(c.Run+"\n")); err != nil {
			return err
		}
		secs := int64((c.Timeout + time.Second - 1) / time.Second)
		fmt.Fprintf(&run, "rig_run %s %d /%s\n", c.Name, secs, script)
	}
	if err := a.bytes("rig/run.sh", 0o644, run.Bytes()); err != nil {
		return err
	}
	if err := a.close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}

// qemuArgs builds QEMU's command line. Serial 0 (the console) goes to a
// file, serial 1 (results) to QEMU's stdout.
//
// With more than one L1 vCPU, TCG runs single-threaded: with multi-threaded
// TCG (QEMU 7.2) L1's KVM guests hung in KVM_RUN (kvm_floor never ended),
// with one thread they run.
func qemuArgs(cfg *Config, initrd, console string) []string {
	accel := "tcg"
	if cfg.CPUs > 1 {
		accel = "tcg,thread=single"
	}
	args := []string{
		"-M", "q35", "-accel", accel,
		"-cpu", cfg.CPU,
		"-smp", strconv.Itoa(cfg.CPUs),
		"-m", strconv.Itoa(cfg.MemoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", cfg.Kernel,
		"-initrd", initrd,
		"-append", cfg.Cmdline,
		"-chardev", "file,id=con,path=" + strings.ReplaceAll(console, ",", ",,"),
		"-serial", "chardev:con",
		"-chardev", "stdio,id=res,signal=off",
		"-serial", "chardev:res",
	}
	if cfg.Monitor != "" {
		args = append(args, "-monitor", "unix:"+strings.ReplaceAll(cfg.Monitor, ",", ",,")+",server=on,wait=off")
	}
	return args
}

// Run boots L1 under QEMU TCG with emulated AMD-V, loads KVM there, runs
// cfg's commands and returns their results. The run ends when L1 powers
// off, when ctx is done or when cfg.Timeout passes; QEMU is killed in every
// case before Run returns (and if the calling process dies). The error is
// nil only when every command was reported finished and L1 said DONE; a
// command's non-zero status is not an error (see CommandResult.OK). The
// Result is returned, as far as the run got, also with an error.
func Run(ctx context.Context, c Config) (*Result, error) {
	cfg, err := c.withDefaults()
	if err != nil {
		return nil, err
	}
	for _, p := range []string{cfg.Kernel, cfg.Busybox, cfg.QEMU} {
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("rig: %w", err)
		}
	}
	base, err := baseInitramfs(&cfg)
	if err != nil {
		return nil, err
	}
	work := cfg.WorkDir
	tempWork := work == ""
	if tempWork {
		if work, err = os.MkdirTemp("", "microvm-rig-"); err != nil {
			return nil, fmt.Errorf("rig: %w", err)
		}
	} else if err := os.MkdirAll(work, 0o755); err != nil {
		return nil, fmt.Errorf("rig: %w", err)
	}
	initrd := filepath.Join(work, "initramfs.cpio")
	nonceb := make([]byte, 8)
	if _, err := rand.Read(nonceb); err != nil {
		return nil, fmt.Errorf("rig: nonce: %w", err)
	}
	nonce := hex.EncodeToString(nonceb)

	// One L1 boot for all commands; should L1 freeze (QEMU TCG's nested
	// SVM, see docs/rig.md), a fresh one for the commands that did not
	// finish, the frozen one first — at most maxFreezes times.
	var res *Result
	var runErr error
	var kept []CommandResult // finished commands of the L1 boots before
	attempt := cfg
	for freezes := 0; ; freezes++ {
		sfx := ""
		if freezes > 0 {
			sfx = fmt.Sprintf("-restart%d", freezes)
		}
		r := &Result{
			Console: filepath.Join(work, "console"+sfx+".log"),
			Results: filepath.Join(work, "results"+sfx+".log"),
			QEMULog: filepath.Join(work, "qemu"+sfx+".log"),
			Freezes: freezes,
		}
		if err := writeInitramfs(&attempt, base, initrd, nonce); err != nil {
			return res, fmt.Errorf("rig: write initramfs: %w", err)
		}
		runErr = run(ctx, &attempt, initrd, nonce, r)
		os.Remove(initrd)
		if res != nil {
			r.Hello, r.ScriptStart = res.Hello, res.ScriptStart
		}
		r.Commands = append(kept, r.Commands...)
		res = r
		if !isFrozen(runErr) || freezes == maxFreezes {
			break
		}
		kept, attempt.Commands = nil, nil
		for _, c := range cfg.Commands {
			if done := res.Command(c.Name); done != nil && done.Done {
				kept = append(kept, *done)
			} else {
				attempt.Commands = append(attempt.Commands, c)
			}
		}
		if cfg.Log != nil {
			fmt.Fprintf(cfg.Log, "%v\nrig: restarting L1 for the %d command(s) left\n", runErr, len(attempt.Commands))
		}
	}
	if tempWork {
		if runErr == nil {
			os.RemoveAll(work)
			res.Console, res.Results, res.QEMULog = "", "", ""
		}
	}
	return res, runErr
}

// doneGrace is how long QEMU may take to exit after L1 reported DONE.
const doneGrace = 15 * time.Second

// freezeGrace is how long past a command's Timeout the host waits for L1
// to report the command's end (L1 kills it at its Timeout) before it
// calls L1 frozen; maxFreezes is how many times Run restarts a frozen L1.
const (
	freezeGrace = 60 * time.Second
	maxFreezes  = 1
)

// frozenError is the error of a run stopped because L1 froze.
type frozenError struct{ error }

func (e frozenError) Unwrap() error { return e.error }

// isFrozen reports whether err is a frozenError.
func isFrozen(err error) bool {
	var f frozenError
	return errors.As(err, &f)
}

func run(ctx context.Context, cfg *Config, initrd, nonce string, res *Result) error {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()

	qlog, err := os.Create(res.QEMULog)
	if err != nil {
		return fmt.Errorf("rig: %w", err)
	}
	defer qlog.Close()
	rlog, err := os.Create(res.Results)
	if err != nil {
		return fmt.Errorf("rig: %w", err)
	}
	defer rlog.Close()

	cmd := exec.Command(cfg.QEMU, qemuArgs(cfg, initrd, res.Console)...)
	cmd.Stderr = qlog
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("rig: %w", err)
	}
	var stdin io.WriteCloser
	if !cfg.NoNudge {
		if stdin, err = cmd.StdinPipe(); err != nil {
			return fmt.Errorf("rig: %w", err)
		}
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("rig: start %s: %w", cfg.QEMU, err)
	}
	// Nudges start once L1 said HELLO: its init has made ttyS1 raw, no
	// echo, by then (before, the tty would echo them into the results).
	hello := make(chan struct{})
	if stdin != nil {
		stopNudge := make(chan struct{})
		defer close(stopNudge)
		go nudge(stdin, hello, stopNudge)
	}
	var killOnce sync.Once
	kill := func() { killOnce.Do(func() { _ = cmd.Process.Kill() }) }
	defer kill()

	p := newParser(nonce, start, res)
	timeouts := map[string]time.Duration{}
	for _, c := range cfg.Commands {
		timeouts[c.Name] = c.Timeout
	}
	// frozenAt is when the running command is overdue (UnixNano; 0: no
	// command with a Timeout is running), set by the reader below.
	var frozenAt atomic.Int64
	var frozenCmd atomic.Value // string
	graceAfter := freezeGrace
	if cfg.freezeGrace > 0 {
		graceAfter = cfg.freezeGrace
	}
	done := make(chan struct{}) // closed when L1 reports DONE
	readErr := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var doneOnce, helloOnce sync.Once
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(rlog, line)
			if cfg.Log != nil && line != "" {
				fmt.Fprintln(cfg.Log, line)
			}
			p.line(line, time.Now())
			if res.Hello > 0 {
				helloOnce.Do(func() { close(hello) })
			}
			if p.cur != nil && timeouts[p.cur.Name] > 0 {
				frozenCmd.Store(p.cur.Name)
				frozenAt.Store(p.begun.Add(timeouts[p.cur.Name] + graceAfter).UnixNano())
			} else {
				frozenAt.Store(0)
			}
			if res.Complete {
				doneOnce.Do(func() { close(done) })
			}
		}
		readErr <- sc.Err()
	}()

	waitErr := make(chan error, 1)
	go func() {
		rerr := <-readErr // stdout must be drained before Wait
		werr := cmd.Wait()
		if werr == nil && rerr != nil {
			werr = fmt.Errorf("read results port: %w", rerr)
		}
		waitErr <- werr
	}()

	var stopReason string
	var grace <-chan time.Time
	frozen := false
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for stopReason == "" {
		select {
		case now := <-tick.C:
			if at := frozenAt.Load(); at != 0 && now.UnixNano() > at {
				frozen = true
				stopReason = fmt.Sprintf("L1 froze: no end of command %q %v after its timeout", frozenCmd.Load(), graceAfter)
			}
		case err := <-waitErr:
			res.Wall = time.Since(start)
			res.ExitErr = err
			p.finish(time.Now())
			return verdict(res, "")
		case <-done:
			done = nil
			grace = time.After(doneGrace)
		case <-grace:
			stopReason = fmt.Sprintf("L1 reported DONE but QEMU did not exit within %v", doneGrace)
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				stopReason = fmt.Sprintf("timed out after %v", cfg.Timeout)
			} else {
				stopReason = ctx.Err().Error()
			}
		}
	}
	kill()
	res.ExitErr = <-waitErr
	res.Wall = time.Since(start)
	p.finish(time.Now())
	err = verdict(res, stopReason)
	if frozen {
		err = frozenError{err}
	}
	return err
}

// NudgeInterval is how often the host sends L1 a byte on its results port
// (see Config.NoNudge).
const NudgeInterval = 200 * time.Millisecond

// nudge writes a NUL byte to w (QEMU's stdin, L1's ttyS1: raw, no echo,
// never read) every NudgeInterval from when start is closed until stop is
// closed or a write fails (QEMU gone), then closes w. The receive
// interrupt is the point, not the byte: it makes QEMU TCG look at L1's
// local APIC again and deliver the timer interrupt it had left pending
// while L1 ran a guest (docs/rig.md).
func nudge(w io.WriteCloser, start, stop <-chan struct{}) {
	defer w.Close()
	select {
	case <-start:
	case <-stop:
		return
	}
	t := time.NewTicker(NudgeInterval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if _, err := w.Write([]byte{0}); err != nil {
				return
			}
		}
	}
}

// verdict turns a finished run into Run's error.
func verdict(res *Result, stopReason string) error {
	if res.Complete && stopReason == "" {
		return nil
	}
	var b strings.Builder
	b.WriteString("rig: ")
	switch {
	case stopReason != "":
		b.WriteString(stopReason)
	case res.ExitErr != nil:
		fmt.Fprintf(&b, "QEMU exited (%v)", res.ExitErr)
	default:
		b.WriteString("L1 stopped")
	}
	switch {
	case res.Complete:
		b.WriteString(" after all commands finished")
	case res.Hello == 0:
		b.WriteString(" before L1 init ran")
	case !res.KVMChecked:
		b.WriteString(" while L1 loaded KVM")
	default:
		var last *CommandResult
		if n := len(res.Commands); n > 0 {
			last = &res.Commands[n-1]
		}
		if last != nil && !last.Done {
			fmt.Fprintf(&b, " inside command %q", last.Name)
		} else {
			fmt.Fprintf(&b, " after %d command(s), before DONE", len(res.Commands))
		}
	}
	if res.Console != "" {
		fmt.Fprintf(&b, "; L1 console: %s", res.Console)
		if t := tailFile(res.Console, 15); t != "" {
			fmt.Fprintf(&b, "\n--- last console lines ---\n%s", t)
		}
	}
	if t := tailFile(res.QEMULog, 5); t != "" {
		fmt.Fprintf(&b, "\n--- QEMU stderr ---\n%s", t)
	}
	return errors.New(b.String())
}

// tailFile returns the last n lines of the file at p, or "".
func tailFile(p string, n int) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.TrimRight(strings.Join(lines, "\n"), "\n")
}
