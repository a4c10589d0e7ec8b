// Command rigrun runs shell commands inside the KVM test rig's L1 guest (a
// Debian cloud kernel under QEMU TCG with emulated AMD-V and a real,
// SVM-backed /dev/kvm) and prints what they did. It is the interactive
// face of package rig, for developing rig tests:
//
//	go run ./internal/rig/rigrun -bin bin/microvm 'microvm check'
//	go run ./internal/rig/rigrun -file /guest/vmlinux=.cache/kernel/vmlinux -qemu 'ls -l /guest'
//
// Each argument is one command (named 1, 2, ...), run by busybox sh -e.
// The L1 kernel and modules come from $MICROVM_DEBIAN_KERNEL and
// $MICROVM_DEBIAN_MODULES, else the repository's .cache (make debian-kernel).
// Exit status: 0 when every command exited 0, 1 when one did not, 2 when
// the rig itself failed (its error names the kept L1 console log).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/microvm/microvm/internal/rig"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func main() { os.Exit(run()) }

func run() int {
	var files, bins multiFlag
	fs := flag.NewFlagSet("rigrun", flag.ContinueOnError)
	fs.Var(&files, "file", "copy a host file into L1: DST=SRC (repeatable)")
	fs.Var(&bins, "bin", "copy a host program into L1 under its own path, with its shared libraries (repeatable)")
	withQEMU := fs.Bool("qemu", false, "copy qemu-system-x86_64, its libraries and -M microvm firmware into L1")
	timeout := fs.Duration("timeout", rig.DefaultTimeout, "host-side limit for the whole run")
	cmdTimeout := fs.Duration("command-timeout", 0, "per-command limit inside L1 (0: none)")
	cpus := fs.Int("cpus", rig.DefaultCPUs, "L1 vCPUs")
	mem := fs.Int("memory", rig.DefaultMemoryMiB, "L1 RAM in MiB")
	quiet := fs.Bool("q", false, "do not stream the results port to stderr")
	asJSON := fs.Bool("json", false, "print the Result as JSON on stdout")
	monitor := fs.String("monitor", "", "serve QEMU's human monitor of L1 on this Unix socket")
	cpu := fs.String("cpu", rig.DefaultCPU, "QEMU -cpu model of L1 (it needs svm and npt)")
	cmdline := fs.String("cmdline", rig.DefaultCmdline, "L1 kernel command line")
	workDir := fs.String("workdir", "", "keep the run's logs (console.log, results.log, qemu.log) in this directory")
	noNudge := fs.Bool("no-nudge", false, "do not nudge L1 with a byte on its results port every 200 ms (for studying L1 freezes, docs/rig.md)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: rigrun [flags] 'shell command' ...\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 2
	}
	a := rig.FindArtifacts()
	if a.L1Kernel == "" || a.L1Modules == "" {
		fmt.Fprintln(os.Stderr, "rigrun: L1 kernel or modules missing: run `make debian-kernel` or set MICROVM_DEBIAN_KERNEL and MICROVM_DEBIAN_MODULES")
		return 2
	}
	cfg := rig.Config{
		Kernel: a.L1Kernel, Modules: a.L1Modules, QEMU: a.QEMU,
		Files: map[string]string{}, Timeout: *timeout, CPUs: *cpus, MemoryMiB: *mem,
		WorkDir: *workDir, Monitor: *monitor, Cmdline: *cmdline, CPU: *cpu, NoNudge: *noNudge,
	}
	for _, f := range files {
		dst, src, ok := strings.Cut(f, "=")
		if !ok || dst == "" || src == "" {
			fmt.Fprintf(os.Stderr, "rigrun: -file %q: want DST=SRC\n", f)
			return 2
		}
		cfg.Files[dst] = src
	}
	for _, b := range bins {
		abs, err := filepath.Abs(b)
		if strings.Contains(b, "/") && err == nil {
			b = abs
		}
		if err := rig.AddBinary(cfg.Files, b); err != nil {
			fmt.Fprintf(os.Stderr, "rigrun: %v\n", err)
			return 2
		}
	}
	if *withQEMU {
		if err := rig.AddQEMU(cfg.Files, ""); err != nil {
			fmt.Fprintf(os.Stderr, "rigrun: %v\n", err)
			return 2
		}
	}
	for i, c := range fs.Args() {
		cfg.Commands = append(cfg.Commands, rig.Command{Name: strconv.Itoa(i + 1), Run: c, Timeout: *cmdTimeout})
	}
	if !*quiet {
		cfg.Log = os.Stderr
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := rig.Run(ctx, cfg)
	if *asJSON && res != nil {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(res)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "rigrun: %v\n", err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "rigrun: L1 init after %v, commands from %v, wall %v (nested under TCG)\n",
		res.Hello.Round(time.Millisecond), res.ScriptStart.Round(time.Millisecond), res.Wall.Round(time.Millisecond))
	status := 0
	for _, c := range res.Commands {
		fmt.Fprintf(os.Stderr, "rigrun: command %s: status %d in %v\n", c.Name, c.Status, c.Elapsed.Round(time.Millisecond))
		if !c.OK() {
			status = 1
		}
	}
	return status
}
