// Command microvm-vmm is the lean VMM process: it boots one tiny guest
// (an embedded one or a tiny-guest image) and exits with the guest's
// status, and links nothing else. Orchestrators and benchmarks that start
// a VM per process exec it instead of `microvm boot`, whose binary also
// carries cobra's command tree, libvirt, SSH, TLS, OCI, charts and the
// container engines: Go runs every linked package's initialiser at start,
// whether the command uses it or not (docs/lean.md has the measured cost).
//
//	microvm-vmm [--guest NAME] [--memory MiB] [--cpus N] [--cmdline S] [--irqchip] [--timeout D] [--quiet] [IMAGE]
//
// It offers what a per-request VM needs and no more: no registration for
// `microvm ps`, no seccomp jail, no virtio devices, no Linux kernels (their
// loaders need the decompressors; use `microvm boot`). The exit statuses
// are microvm boot's (README, "Exit statuses"). $MICROVM_READY_FD, when
// set, names a descriptor that gets one byte at the guest's ready write.
package main

import (
	"context"
	"errors"
	"io"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/microvm/microvm/images"
	"github.com/microvm/microvm/images/guests"
	"github.com/microvm/microvm/vmm"
	"github.com/spf13/pflag"
)

// Exit statuses, as microvm boot's (cmd/microvm/exit.go).
const (
	maxGuestStatus = 119
	exitGuestRange = 120
	exitGuestCrash = 121
	exitUsage      = 123
	exitTimeout    = 124
	exitHost       = 125
	exitBadImage   = 126
	exitStopped    = 130
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("microvm-vmm", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	guest := fs.String("guest", guests.Default, "embedded guest to boot when no IMAGE is given")
	memMiB := fs.Uint64("memory", 128, "guest RAM in MiB (as microvm boot)")
	cpus := fs.Int("cpus", 1, "vCPUs")
	timeout := fs.Duration("timeout", 10*time.Second, "end the VM after this long (0: never)")
	cmdline := fs.String("cmdline", "", "the guest's command line (tiny-guest ABI boot info)")
	irqchip := fs.Bool("irqchip", false, "give the guest KVM's in-kernel irqchip (hlt then idles in KVM)")
	quiet := fs.Bool("quiet", false, "discard the guest's console output")
	fs.Usage = func() {
		say(stderr, "usage: microvm-vmm [--guest NAME] [--memory MiB] [--cpus N] [--cmdline S] [--irqchip] [--timeout D] [--quiet] [IMAGE]\n"+
			"The lean VMM process: boots one tiny guest and exits with its status.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		return fail(stderr, exitUsage, err.Error()+" (see --help)")
	}
	if fs.NArg() > 1 {
		return fail(stderr, exitUsage, "give at most one IMAGE")
	}
	if *memMiB == 0 || *memMiB > 64<<10 {
		return fail(stderr, exitUsage, "--memory "+strconv.FormatUint(*memMiB, 10)+": want 1 to 65536 MiB")
	}
	if *cpus < 1 || *cpus > 64 {
		return fail(stderr, exitUsage, "--cpus "+strconv.Itoa(*cpus)+": want 1 to 64")
	}
	cfg := vmm.Config{MemoryBytes: *memMiB << 20, CPUs: *cpus, Cmdline: *cmdline, IRQChip: *irqchip, CPUIDCacheDir: vmm.RuntimeDir()}
	var err error
	if fs.NArg() == 1 {
		if cfg.Image, err = os.ReadFile(fs.Arg(0)); err != nil {
			return fail(stderr, exitBadImage, err.Error())
		}
		if len(cfg.Image) == 0 {
			return fail(stderr, exitBadImage, fs.Arg(0)+": empty file")
		}
	} else if cfg.Image, err = guests.Get(*guest); err != nil {
		return fail(stderr, exitUsage, "--guest: "+err.Error())
	}
	if !*quiet {
		cfg.Console = stdout
	}
	cfg.OnReady = readyNotifier()

	ctx := context.Background()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	m, err := vmm.New(cfg)
	if err != nil {
		var ce *vmm.ConfigError
		switch {
		case errors.As(err, &ce):
			return fail(stderr, exitUsage, err.Error())
		case errors.Is(err, images.ErrBadImage):
			return fail(stderr, exitBadImage, err.Error())
		}
		return fail(stderr, exitHost, err.Error())
	}
	defer m.Close()
	if n := cfg.CPUs + 1; runtime.GOMAXPROCS(0) < n {
		runtime.GOMAXPROCS(n) // see cmd/microvm's reserveProcs
	}
	res, err := m.Run(ctx)
	if err != nil {
		return fail(stderr, exitHost, err.Error())
	}
	switch res.Reason {
	case vmm.ReasonExit:
		if res.Status > maxGuestStatus {
			return fail(stderr, exitGuestRange, "guest exit status "+strconv.FormatUint(uint64(res.Status), 10)+" is out of range (0-119)")
		}
		return int(res.Status)
	case vmm.ReasonHalt, vmm.ReasonReset, vmm.ReasonPowerOff:
		return 0
	case vmm.ReasonTripleFault, vmm.ReasonCrash, vmm.ReasonPanic:
		return fail(stderr, exitGuestCrash, res.Summary())
	case vmm.ReasonTimeout:
		return fail(stderr, exitTimeout, "the guest did not finish within "+timeout.String()+" (--timeout)")
	case vmm.ReasonStopped:
		return fail(stderr, exitStopped, res.Summary())
	}
	return fail(stderr, exitHost, res.Summary())
}

// readyNotifier writes one byte to $MICROVM_READY_FD at the guest's ready
// write (microvm bench's launch→ready), as microvm boot does.
func readyNotifier() func() {
	fd, err := strconv.Atoi(os.Getenv("MICROVM_READY_FD"))
	if err != nil || fd < 3 {
		return nil
	}
	f := os.NewFile(uintptr(fd), "ready-fd")
	return func() {
		f.Write([]byte{1})
		f.Close()
	}
}

func fail(w io.Writer, code int, msg string) int {
	say(w, "microvm-vmm: "+msg+"\n")
	return code
}

func say(w io.Writer, s string) { io.WriteString(w, s) }
