package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/microvm/microvm/bench"
	"github.com/microvm/microvm/container"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

type benchFlags struct {
	runs, warmup, parallel     int
	paths, jsonOut, mdOut      string
	json                       bool
	plotOut, kernel, initrd    string
	rootfs, workload, cacheDir string
	libvirtURI, guest, memory  string
	timeout                    time.Duration
	list, noProgress           bool
	dockerd                    string
	density                    int
}

func (a *app) newBenchCmd() *cobra.Command {
	f := &benchFlags{}
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure VM and container startup side by side, interleaved, in one run",
		Long: `bench launches the same trivial workload down every path, interleaved
(A B C A B C ...) so that drift of the machine hits all paths alike:

  vm         the tiny "ready" guest on microvm's VMM, in this process
  vm-proc    microvm boot --guest ready --quiet, as a whole process
  vm-lean    microvm-vmm --guest ready --quiet: the lean VMM binary, whole
             process (bin/microvm-vmm beside microvm, or $MICROVM_VMM_BIN)
  kvm-floor  kvm_floor.c, the least a VMM can do (whole process)
  go-floor   the same work in Go, syscall package only: the least a Go VMM
             can do (built with go build; needs the Go toolchain)
  container  microvm's in-process container launcher, busybox /bin/ready
  runc, crun, podman, docker   the same rootfs and workload via each runtime
  qemu       qemu-system-x86_64 -M microvm -accel kvm, the same tiny guest
  linux, libvirt   with --kernel: a Linux microVM, a libvirt domain

Two figures per launch: launch->ready (the guest's write to port 0x502; for a
container the workload's first instruction, a write to fd 3) and launch->exit
(the guest or workload ended and its VM or container is torn down). A path
that cannot run here is listed as "not available" with the reason; a launch
that fails is counted and shown as failed, never averaged in.

Output is like hyperfine's: per path Time (mean ± σ) and Range (min … max),
then how many times faster the fastest path ran than each other one. With
--parallel N, N launches of a path run at once per round and launches per
second are reported too.

With --density N, bench measures memory instead of time: per path it starts
N instances at once, keeps them all up (an idle tiny guest: the exit guest
with hold and --irqchip; a Linux guest whose init runs sleep; busybox sleep
in a container), and reports the PSS of every process the path started,
summed and per instance (/proc/PID/smaps_rollup: shared pages split among
those that map them). Density paths: vm-proc, vm-lean, linux (--kernel),
container, runc, crun.`,
		Example: `  microvm bench                                  # every path, 10 runs each
  microvm bench --runs 30 --paths vm,container,runc,qemu
  microvm bench --export-json results.json --export-markdown results.md --plot startup.svg
  microvm bench --paths vm,runc --json | jq '.paths[].exit'   # the report on stdout
  microvm bench --parallel $(nproc) --paths vm,container,runc
  microvm bench --kernel .cache/kernel/vmlinux --initrd .cache/initrd.cpio.gz
  microvm bench --list                           # the paths and what each runs
  microvm bench --density 10 --paths vm-lean,vm-proc,runc   # memory per instance, 10 up at once`,
		Args: benchArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cmd.Flags().Changed("density") && f.density == 0 {
				return usageErrorf("bench: --density 0: want 1 to 1000 instances")
			}
			return a.bench(f)
		},
	}
	fl := cmd.Flags()
	fl.IntVarP(&f.runs, "runs", "r", 10, "measured launches per path")
	fl.IntVarP(&f.warmup, "warmup", "w", 2, "warm-up launches per path, not measured")
	fl.IntVarP(&f.parallel, "parallel", "j", 1, "launches of a path at once per round (reports launches/s)")
	fl.StringVarP(&f.paths, "paths", "p", "", "comma-separated paths to run, in this order (default: all)")
	fl.BoolVar(&f.json, "json", false, "print the report with every sample as JSON on stdout (the text report goes to stderr)")
	fl.StringVar(&f.jsonOut, "export-json", "", "write the report with every sample as JSON to `FILE` (- for stdout)")
	fl.StringVar(&f.mdOut, "export-markdown", "", "write Markdown tables and every sample to `FILE` (- for stdout)")
	fl.StringVar(&f.plotOut, "plot", "", "draw the distributions to `FILE` (.svg or .png)")
	fl.StringVar(&f.kernel, "kernel", "", "Linux kernel (vmlinux) for the linux and libvirt paths")
	fl.StringVar(&f.initrd, "initrd", "", "initrd for the linux and libvirt paths")
	fl.StringVar(&f.libvirtURI, "libvirt-uri", "qemu:///system", "libvirt connection of the libvirt path")
	fl.StringVar(&f.rootfs, "rootfs", "", "busybox rootfs of the container paths (default: built in the cache)")
	fl.StringVar(&f.workload, "workload", "/bin/ready", "container workload command line (/bin/ready writes fd 3 and exits 0; /bin/true has no ready figure)")
	fl.StringVar(&f.guest, "guest", "ready", "embedded tiny guest of the VM paths")
	fl.StringVar(&f.memory, "memory", "128M", "RAM of the tiny-guest VMs (vm, qemu)")
	fl.StringVar(&f.cacheDir, "cache-dir", "", "where built artefacts are kept (default $MICROVM_CACHE or ~/.cache/microvm)")
	fl.StringVar(&f.dockerd, "dockerd", "", "docker path's daemon: empty uses what the docker CLI reaches; private starts one for the run and stops it at the end")
	fl.DurationVar(&f.timeout, "timeout", time.Minute, "limit for one launch (a launch past it is a failed sample)")
	fl.BoolVar(&f.list, "list", false, "list the paths and exit")
	fl.IntVar(&f.density, "density", 0, "measure memory: start `N` instances of each path at once and report PSS per instance")
	fl.BoolVar(&f.noProgress, "no-progress", false, "no progress bar even on a terminal")
	markPaths(fl, "export-json", "export-markdown", "plot", "kernel", "initrd", "rootfs", "cache-dir")
	return cmd
}

func (a *app) bench(f *benchFlags) error {
	if f.runs < 1 {
		return usageErrorf("bench: --runs must be at least 1, got %d", f.runs)
	}
	if f.warmup < 0 || f.parallel < 1 {
		return usageErrorf("bench: --warmup must be ≥ 0 and --parallel ≥ 1")
	}
	if f.timeout <= 0 {
		return usageErrorf("bench: --timeout must be positive")
	}
	reserveProcs(f.parallel) // the vm path runs up to --parallel one-vCPU VMs here
	mem, err := parseBenchMemory(f.memory)
	if err != nil {
		return usageErrorf("bench: --memory: %v", err)
	}
	cfg := bench.Config{
		CacheDir: f.cacheDir, Rootfs: f.rootfs, Workload: strings.Fields(f.workload),
		Guest: f.guest, MemoryBytes: mem, Kernel: f.kernel, Initrd: f.initrd, LibvirtURI: f.libvirtURI,
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = defaultCacheDir()
	}
	if exe, err := os.Executable(); err == nil {
		cfg.MicrovmBin = exe
	}
	switch f.dockerd {
	case "":
	case "private":
		if !f.list && (f.paths == "" || slices.Contains(strings.Split(f.paths, ","), "docker")) {
			d, err := startBenchDockerd(cfg.CacheDir)
			if err != nil {
				fmt.Fprintf(a.stderr, "bench: --dockerd private: %v\n", err)
			} else {
				defer d.Stop()
				cfg.DockerHost = d.Host()
			}
		}
	default:
		return usageErrorf("bench: --dockerd: want empty or private, not %q", f.dockerd)
	}
	if f.density != 0 {
		return a.benchDensity(f, cfg)
	}
	runners, err := bench.SelectRunners(bench.DefaultRunners(cfg), f.paths)
	if err != nil {
		return usageErrorf("%v", err)
	}
	if f.list {
		for _, r := range runners {
			fmt.Fprintf(a.stdout, "%-10s %s\n", r.Name(), r.Describe())
		}
		return nil
	}
	if err := f.resolveJSON(); err != nil {
		return err
	}
	if f.jsonOut == "-" && f.mdOut == "-" {
		return usageErrorf("bench: the JSON (--json or --export-json -) and Markdown (--export-markdown -) reports cannot both go to stdout")
	}
	// Open the outputs first: a bad path fails now, not after the run.
	jsonW, closeJSON, err := a.openOutput(f.jsonOut, "--export-json")
	if err != nil {
		return err
	}
	defer closeJSON()
	mdW, closeMD, err := a.openOutput(f.mdOut, "--export-markdown")
	if err != nil {
		return err
	}
	defer closeMD()
	if f.plotOut != "" {
		if err := bench.CheckPlotPath(f.plotOut); err != nil {
			return usageErrorf("bench: --plot: %v", err)
		}
		pf, err := os.Create(f.plotOut)
		if err != nil {
			return usageErrorf("bench: --plot: cannot write %s: %v", f.plotOut, err)
		}
		pf.Close()
	}
	text := a.stdout
	if f.jsonOut == "-" || f.mdOut == "-" {
		text = a.stderr
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := bench.Options{Runs: f.runs, Warmup: f.warmup, Parallel: f.parallel, Timeout: f.timeout}
	var bar *bench.ProgressBar
	if !f.noProgress && isTerminal(a.stderr) {
		bar = bench.NewProgressBar(a.stderr)
		opts.Progress = bar.Update
	}
	rep, runErr := bench.Run(ctx, runners, opts)
	if bar != nil {
		bar.Finish()
	}
	if rep == nil {
		return withCode(exitHost, runErr)
	}
	var errs []error
	if err := bench.WriteText(text, rep); err != nil {
		errs = append(errs, fmt.Errorf("write report: %w", err))
	}
	if jsonW != nil {
		if err := bench.WriteJSON(jsonW, rep); err != nil {
			errs = append(errs, fmt.Errorf("write the JSON report to %s: %w", f.jsonOut, err))
		}
	}
	if mdW != nil {
		if err := bench.WriteMarkdown(mdW, rep); err != nil {
			errs = append(errs, fmt.Errorf("write --export-markdown %s: %w", f.mdOut, err))
		}
	}
	if f.plotOut != "" {
		if err := bench.Plot(rep, f.plotOut); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(a.stderr, "plot written to %s\n", f.plotOut)
		}
	}
	if runErr != nil && ctx.Err() != nil {
		fmt.Fprintln(a.stderr, "microvm: bench interrupted; every container and VM it started was removed")
		return silentExit(exitInterrupted)
	}
	if err := errors.Join(append(errs, runErr)...); err != nil {
		return withCode(exitHost, err)
	}
	return nil
}

// resolveJSON folds --json into --export-json - (the report on stdout);
// both with a file is a usage error.
func (f *benchFlags) resolveJSON() error {
	if !f.json {
		return nil
	}
	if f.jsonOut != "" && f.jsonOut != "-" {
		return usageErrorf("bench: --json prints the report on stdout and --export-json writes it to a file: give one")
	}
	f.jsonOut = "-"
	return nil
}

// benchDensity is bench --density N.
func (a *app) benchDensity(f *benchFlags, cfg bench.Config) error {
	if f.density < 1 || f.density > 1000 {
		return usageErrorf("bench: --density %d: want 1 to 1000 instances", f.density)
	}
	if f.mdOut != "" || f.plotOut != "" {
		return usageErrorf("bench: --density reports a table and JSON (--json, --export-json); --export-markdown and --plot are for timings")
	}
	paths, err := bench.SelectDensityPaths(bench.DensityPaths(cfg), f.paths)
	if err != nil {
		return usageErrorf("%v", err)
	}
	if f.list {
		for _, p := range paths {
			fmt.Fprintf(a.stdout, "%-10s %s\n", p.Name, p.Desc)
		}
		return nil
	}
	if err := f.resolveJSON(); err != nil {
		return err
	}
	jsonW, closeJSON, err := a.openOutput(f.jsonOut, "--export-json")
	if err != nil {
		return err
	}
	defer closeJSON()
	text := a.stdout
	if f.jsonOut == "-" {
		text = a.stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, runErr := bench.Density(ctx, paths, f.density, f.timeout)
	if rep == nil {
		return withCode(exitUsage, runErr)
	}
	var errs []error
	if err := bench.WriteDensityText(text, rep); err != nil {
		errs = append(errs, fmt.Errorf("write report: %w", err))
	}
	if jsonW != nil {
		if err := bench.WriteDensityJSON(jsonW, rep); err != nil {
			errs = append(errs, fmt.Errorf("write the JSON report to %s: %w", f.jsonOut, err))
		}
	}
	if runErr != nil && ctx.Err() != nil {
		fmt.Fprintln(a.stderr, "microvm: bench interrupted; every container and VM it started was stopped")
		return silentExit(exitInterrupted)
	}
	if err := errors.Join(append(errs, runErr)...); err != nil {
		return withCode(exitHost, err)
	}
	return nil
}

// benchArgs rejects positional arguments, with a hint for the export
// flags' old spelling (`--json FILE` now prints to stdout).
func benchArgs(cmd *cobra.Command, args []string) error {
	if len(args) == 0 {
		return nil
	}
	hint := ""
	switch ext := filepath.Ext(args[0]); ext {
	case ".json":
		hint = " (to write the JSON report to a file: --export-json " + args[0] + ")"
	case ".md":
		hint = " (to write the Markdown report to a file: --export-markdown " + args[0] + ")"
	}
	return usageErrorf("%s takes no arguments, got %q%s", cmd.CommandPath(), args, hint)
}

// openOutput opens an export file ("" none, "-" stdout). The returned close
// function reports nothing; write errors surface from the writers.
func (a *app) openOutput(path, flag string) (io.Writer, func(), error) {
	switch path {
	case "":
		return nil, func() {}, nil
	case "-":
		return a.stdout, func() {}, nil
	}
	fh, err := os.Create(path)
	if err != nil {
		return nil, nil, usageErrorf("bench: %s: cannot write %s: %v", flag, path, err)
	}
	return fh, func() { fh.Close() }, nil
}

// isTerminal says whether s (a reader or writer) is a terminal.
func isTerminal(s any) bool {
	f, ok := s.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func defaultCacheDir() string {
	if d := os.Getenv("MICROVM_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "microvm")
	}
	return filepath.Join(os.TempDir(), "microvm-cache")
}

func parseBenchMemory(s string) (uint64, error) {
	n, err := container.ParseSize(s)
	if err != nil {
		return 0, err
	}
	if n < 32<<20 {
		return 0, fmt.Errorf("%s is below 32M (the QEMU path's stub sits at 16 MiB)", s)
	}
	return uint64(n), nil
}

// startBenchDockerd starts a private dockerd under cacheDir/dockerd (or a
// short temporary directory when that path is too long for a socket).
func startBenchDockerd(cacheDir string) (*container.Dockerd, error) {
	dir := filepath.Join(cacheDir, "dockerd")
	if abs, err := filepath.Abs(dir); err != nil || len(abs) > 80 {
		if dir, err = os.MkdirTemp("", "mvdk-"); err != nil {
			return nil, err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return container.StartDockerd(ctx, dir)
}
