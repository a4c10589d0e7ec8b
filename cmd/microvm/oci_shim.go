package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/microvm/microvm/images/rootfs"
	"github.com/microvm/microvm/oci"
	"github.com/microvm/microvm/vmm"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// The VMM of a container-VM is a `microvm oci --root ROOT shim ID` process
// (hidden command): its pid is the container's. It builds the VM from the
// bundle (the lean kernel; the bundle's rootfs as a read-only ext4 image
// on virtio-blk, cached by content, or as a 9p share; the bind-mounted
// directories as 9p shares; an initramfs with a static busybox, the agent
// and the bind-mounted files; COM2 for signals), says "ok" on fd 3 — create returns only
// then — and blocks on the start fifo before the VM's first instruction.
// After start it runs the VM with the console on its stdout (and, for a
// terminal, its stdin on the console's input) and exits with the
// workload's status. The signals of oci.ForwardedSignals go to the
// workload (held while the guest boots; before start, one that ends a
// process ends the container with 128+signal); SIGKILL kills the VMM and
// the VM with it.

// ociLauncher is the runtime's Launcher: it starts the shim in a session
// of its own with this process's stdio (the container's: conmon's pipes,
// or run's terminal), or with a new terminal for --console-socket, and
// waits for its verdict on the VM's build.
func (g *ociGlobals) ociLauncher() oci.Launcher {
	return func(st *oci.State, b *oci.Bundle, fifo string, opts oci.CreateOptions) (*os.Process, error) {
		self, err := os.Executable()
		if err != nil {
			return nil, err
		}
		rd, wr, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		defer rd.Close()
		cmd := exec.Command(self, "oci", "--root", g.root, "--log", g.log, "--log-format", g.logFormat, "shim", st.ID)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
		if opts.ConsoleSocket != "" {
			tty, err := oci.OpenConsole(opts.ConsoleSocket)
			if err != nil {
				wr.Close()
				return nil, err
			}
			defer tty.Close()
			cmd.Stdin, cmd.Stdout, cmd.Stderr = tty, tty, tty
		}
		cmd.ExtraFiles = []*os.File{wr}
		// $MICROVM_READY_FD (microvm bench's ready pipe) moves to fd 4
		// of the VMM, whose fd 3 is the build verdict.
		if fd, err := strconv.Atoi(os.Getenv("MICROVM_READY_FD")); err == nil && fd >= 3 {
			cmd.ExtraFiles = append(cmd.ExtraFiles, os.NewFile(uintptr(fd), "ready-fd"))
			cmd.Env = append(os.Environ(), "MICROVM_READY_FD=4")
		}
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			wr.Close()
			return nil, err
		}
		wr.Close()
		msg, _ := io.ReadAll(io.LimitReader(rd, 4096))
		if string(msg) != "ok\n" {
			cmd.Process.Kill()
			cmd.Wait()
			if len(msg) == 0 {
				return nil, errors.New("the VMM process ended before it built the VM")
			}
			return nil, errors.New(strings.TrimSpace(string(msg)))
		}
		return cmd.Process, nil
	}
}

func (g *ociGlobals) shimCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "shim ID",
		Short:  "The VMM process of a container (started by create)",
		Hidden: true,
		Args:   exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			sync := os.NewFile(3, "sync")
			code, err := g.shim(args[0], sync)
			if err != nil {
				if sync != nil {
					fmt.Fprintf(sync, "%v\n", err)
					sync.Close()
				}
				return withCode(exitOCIError, err)
			}
			return silentOrOK(code)
		},
	}
}

// shim builds the container's VM, reports on sync, waits for start and
// runs the VM; it returns the workload's exit status.
func (g *ociGlobals) shim(id string, sync *os.File) (int, error) {
	store := oci.Store{Root: g.root}
	st, err := store.Load(id)
	if err != nil {
		return 0, err
	}
	b, err := oci.LoadBundle(st.Bundle)
	if err != nil {
		return 0, err
	}
	kernelPath, err := oci.FindKernel(b.Plan, os.Getenv)
	if err != nil {
		return 0, err
	}
	kernel, err := os.ReadFile(kernelPath)
	if err != nil {
		return 0, fmt.Errorf("guest kernel: %w", err)
	}
	bb, err := rootfs.FindBusybox("")
	if err != nil {
		return 0, fmt.Errorf("the agent needs a static busybox: %w", err)
	}
	initrd, notes, err := oci.GuestImage(b, bb)
	if err != nil {
		return 0, err
	}
	var disks []vmm.DiskConfig
	if b.Plan.Rootfs == oci.RootfsImage {
		img, err := rootfs.Ext4Image(b.Rootfs, oci.RootImageDir(os.Getenv))
		if err != nil {
			return 0, err
		}
		disks = []vmm.DiskConfig{{Path: img, ReadOnly: true}}
	}
	// What config.json asks and the VM does not do: to --log (as runc's
	// warnings), else on stderr (the container's).
	for _, n := range append(b.Notes, notes...) {
		if msg := fmt.Sprintf("%s: %s", id, n); !g.logLine("warning", msg) {
			fmt.Fprintf(os.Stderr, "microvm oci: %s\n", msg)
		}
	}
	// Signals wait for the agent's ready write: COM2's receiver is reset
	// when the guest opens it, so what came before would be lost. Those
	// that come while the guest boots are held until then.
	ready := make(chan struct{})
	notify := readyNotifier()
	onReady := func() {
		if notify != nil {
			notify()
		}
		close(ready)
	}
	m, err := vmm.New(vmm.Config{
		Image: kernel, Initrd: initrd, MemoryBytes: uint64(b.Plan.MemoryMB) << 20, CPUs: b.Plan.CPUs,
		AppendCmdline: oci.GuestCmdline, Console: os.Stdout, CPUIDCacheDir: vmm.RuntimeDir(),
		KernelCacheDir: defaultKernelCache(),
		OnReady:        onReady, // the agent's ready write: its signal listener is up, the workload starts
		Disks:          disks,
		COM2:           true,
		Shares:         b.Shares,
	})
	if err != nil {
		return 0, err
	}
	defer m.Close()
	sigs := make(chan os.Signal, 16)
	for _, s := range oci.ForwardedSignals {
		signal.Notify(sigs, s)
	}
	defer signal.Stop(sigs)
	if _, err := sync.WriteString("ok\n"); err != nil {
		return 0, err
	}
	sync.Close()

	// Paused before the first instruction until start writes the fifo (or
	// a signal ends the container first).
	started := make(chan error, 1)
	go func() {
		f, err := os.Open(store.StartFIFO(id))
		if err == nil {
			_, err = f.Read(make([]byte, 1))
			f.Close()
		}
		started <- err
	}()
	for waiting := true; waiting; {
		select {
		case err := <-started:
			if err != nil {
				return 0, fmt.Errorf("start fifo: %w", err)
			}
			waiting = false
		case s := <-sigs:
			if s != syscall.SIGCONT && s != syscall.SIGWINCH { // the two whose default is not to end
				return 128 + int(s.(syscall.Signal)), nil
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // start waits for this mark (oci.Runtime.Start)
		select {
		case <-ready:
			os.WriteFile(store.ReadyMark(id), nil, 0o600)
		case <-ctx.Done():
		}
	}()
	go func() {
		var held []byte
		booting := ready
		for {
			select {
			case s := <-sigs:
				held = fmt.Appendf(held, "%d\n", s.(syscall.Signal))
			case <-booting:
				booting = nil // the agent listens from now on
			case <-ctx.Done():
				return
			}
			if booting == nil && len(held) > 0 {
				m.COM2().Enqueue(held) // to the agent's listener (oci.AgentScript)
				held = held[:0]
			}
		}
	}()
	if b.Agent.Terminal {
		// A terminal of run's own is raw while the guest's tty does the
		// line discipline (OpenConsole's slave is raw already).
		if fd := int(os.Stdin.Fd()); term.IsTerminal(fd) {
			if old, err := term.MakeRaw(fd); err == nil {
				defer term.Restore(fd, old)
			}
		}
		go m.PumpInput(os.Stdin)
	}
	res, err := m.Run(ctx)
	if err != nil {
		return 0, err
	}
	switch res.Reason {
	case vmm.ReasonExit:
		return int(res.Status & 0xff), nil
	case vmm.ReasonPowerOff, vmm.ReasonHalt, vmm.ReasonReset:
		return 0, nil
	}
	return 0, fmt.Errorf("container VM: %s", res.Summary())
}
