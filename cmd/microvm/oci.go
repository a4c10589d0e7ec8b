package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/microvm/microvm/oci"
	"github.com/spf13/cobra"
)

// exitOCIRefused: `microvm oci create|run` refused this host (no usable
// /dev/kvm, or kvm_pvm, where Linux user space cannot run).
const exitOCIRefused = 128

// exitOCIError: any other runtime error (as runc: status 1).
const exitOCIError = 1

// ociGlobals are the runtime's global flags, as runc takes them.
type ociGlobals struct {
	root, log, logFormat, rootless, criu string
	debug, systemdCgroup                 bool
}

func (g *ociGlobals) runtime() *oci.Runtime {
	return &oci.Runtime{Store: oci.Store{Root: g.root}, Launch: g.ociLauncher()}
}

// logLine appends one line to --log (text or json, as runc writes them);
// it reports whether there is a log to write to.
func (g *ociGlobals) logLine(level, msg string) bool {
	if g.log == "" {
		return false
	}
	if f, err := os.OpenFile(g.log, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644); err == nil {
		now := time.Now().UTC().Format(time.RFC3339Nano)
		if g.logFormat == "json" {
			b, _ := json.Marshal(map[string]string{"level": level, "msg": msg, "time": now})
			fmt.Fprintf(f, "%s\n", b)
		} else {
			fmt.Fprintf(f, "time=%q level=%s msg=%q\n", now, level, msg)
		}
		f.Close()
	}
	return true
}

// report logs err to --log and tags its status.
func (g *ociGlobals) report(err error) error {
	if err == nil {
		return nil
	}
	g.logLine("error", err.Error())
	var ee *exitError
	if errors.As(err, &ee) {
		return err
	}
	if errors.Is(err, oci.ErrHost) {
		return withCode(exitOCIRefused, err)
	}
	return withCode(exitOCIError, err)
}

func (a *app) newOCICmd() *cobra.Command {
	g := &ociGlobals{}
	cmd := &cobra.Command{
		Use:   "oci [--root DIR] [--log FILE] [--log-format text|json] COMMAND",
		Short: "An OCI runtime (runc's command line) that runs a bundle in a micro-VM",
		Long: `oci is an OCI runtime with runc's command line, for podman, conmon and
containerd's shim: create leaves the VM built and paused before its first
instruction, start lets it run, and the container's pid is the VMM process.
On a host without a usable /dev/kvm, or with kvm_pvm (where Linux user space
cannot run), create and run refuse at once with status 128. See docs/oci.md.`,
		Example: `  microvm oci create --bundle /tmp/bb c1
  microvm oci start c1
  microvm oci state c1
  podman --runtime scripts/microvm-oci run busybox echo hi`,
		FParseErrWhitelist: cobra.FParseErrWhitelist{UnknownFlags: true},
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&g.root, "root", oci.DefaultRoot, "`DIR` of container state")
	pf.StringVar(&g.log, "log", "", "append errors to `FILE`")
	pf.StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	pf.BoolVar(&g.debug, "debug", false, "accepted for runc compatibility")
	pf.BoolVar(&g.systemdCgroup, "systemd-cgroup", false, "accepted for runc compatibility (no cgroups are made)")
	pf.StringVar(&g.rootless, "rootless", "auto", "accepted for runc compatibility")
	pf.StringVar(&g.criu, "criu", "", "accepted for runc compatibility")
	for _, n := range []string{"debug", "systemd-cgroup", "rootless", "criu"} {
		pf.MarkHidden(n)
	}
	cmd.PersistentPreRunE = func(*cobra.Command, []string) error {
		if g.logFormat != "text" && g.logFormat != "json" {
			return usageErrorf("oci: --log-format %q: want text or json", g.logFormat)
		}
		return nil
	}
	cmd.AddCommand(g.createCmd(), g.runCmd(), g.startCmd(), g.stateCmd(a), g.killCmd(), g.deleteCmd(), g.listCmd(a), g.shimCmd())
	for _, c := range cmd.Commands() {
		c.FParseErrWhitelist = cobra.FParseErrWhitelist{UnknownFlags: true}
	}
	return cmd
}

func (g *ociGlobals) createCmd() *cobra.Command {
	var bundle string
	var opts oci.CreateOptions
	var noPivot, noKeyring bool
	cmd := &cobra.Command{
		Use:     "create [--bundle DIR] [--pid-file FILE] [--console-socket SOCK] [--preserve-fds N] ID",
		Short:   "Create a container: build its VM, paused before the first instruction",
		Example: `  microvm oci create --bundle /tmp/bb --pid-file /tmp/c1.pid c1`,
		Args:    exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			_, err := g.runtime().Create(args[0], bundle, opts)
			return g.report(err)
		},
	}
	f := cmd.Flags()
	f.StringVarP(&bundle, "bundle", "b", ".", "bundle `DIR` (holds config.json)")
	f.StringVar(&opts.PidFile, "pid-file", "", "write the container's pid to `FILE`")
	f.StringVar(&opts.ConsoleSocket, "console-socket", "", "unix `SOCKET` that receives the terminal's master fd")
	f.IntVar(&opts.PreserveFDs, "preserve-fds", 0, "accepted for runc compatibility: `N` descriptors cannot enter a VM (they stay unused)")
	f.BoolVar(&noPivot, "no-pivot", false, "accepted for runc compatibility")
	f.BoolVar(&noKeyring, "no-new-keyring", false, "accepted for runc compatibility")
	return cmd
}

func (g *ociGlobals) runCmd() *cobra.Command {
	var bundle string
	var opts oci.CreateOptions
	var detach bool
	cmd := &cobra.Command{
		Use:     "run [--bundle DIR] [--pid-file FILE] [--detach] ID",
		Short:   "Create and start a container, and wait for it (exit status = the workload's)",
		Example: `  microvm oci run --bundle /tmp/bb c1`,
		Args:    exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			rt := g.runtime()
			// As runc run: signals go to the container.
			sigs := make(chan os.Signal, 16)
			for _, s := range oci.ForwardedSignals {
				signal.Notify(sigs, s)
			}
			defer signal.Stop(sigs)
			opts.Foreground = !detach
			st, err := rt.Create(args[0], bundle, opts)
			if err != nil {
				return g.report(err)
			}
			go func() {
				for s := range sigs {
					rt.Kill(st.ID, s.(syscall.Signal))
				}
			}()
			if err := rt.Start(st.ID); err != nil {
				rt.Delete(st.ID, true)
				return g.report(err)
			}
			if detach {
				return nil
			}
			code, err := rt.Wait(st.ID)
			rt.Delete(st.ID, true)
			if err != nil {
				return g.report(err)
			}
			if code != 0 {
				return silentExit(code)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&bundle, "bundle", "b", ".", "bundle `DIR` (holds config.json)")
	f.StringVar(&opts.PidFile, "pid-file", "", "write the container's pid to `FILE`")
	f.StringVar(&opts.ConsoleSocket, "console-socket", "", "unix `SOCKET` that receives the terminal's master fd")
	f.IntVar(&opts.PreserveFDs, "preserve-fds", 0, "accepted for runc compatibility: `N` descriptors cannot enter a VM (they stay unused)")
	f.BoolVarP(&detach, "detach", "d", false, "return after start")
	return cmd
}

func (g *ociGlobals) startCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "start ID",
		Short:   "Start a created container",
		Example: `  microvm oci start c1`,
		Args:    exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return g.report(g.runtime().Start(args[0]))
		},
	}
}

func (g *ociGlobals) stateCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "state ID",
		Short:   "Print a container's OCI state as JSON",
		Example: `  microvm oci state c1`,
		Args:    exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			st, err := g.runtime().State(args[0])
			if err != nil {
				return g.report(err)
			}
			b, err := json.MarshalIndent(st, "", "  ")
			if err != nil {
				return g.report(err)
			}
			fmt.Fprintf(a.stdout, "%s\n", b)
			return nil
		},
	}
}

func (g *ociGlobals) killCmd() *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:     "kill ID [SIGNAL]",
		Short:   "Send a signal (default SIGTERM) to a created or running container",
		Example: `  microvm oci kill c1 KILL`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usageErrorf("%s takes ID and an optional SIGNAL, got %q", cmd.CommandPath(), args)
			}
			return nil
		},
		RunE: func(_ *cobra.Command, args []string) error {
			s := ""
			if len(args) == 2 {
				s = args[1]
			}
			sig, err := oci.ParseSignal(s)
			if err != nil {
				return g.report(usageErrorf("oci kill: %v", err))
			}
			return g.report(g.runtime().Kill(args[0], sig))
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "accepted for runc compatibility (a VM has one process tree)")
	return cmd
}

func (g *ociGlobals) deleteCmd() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "delete [--force] ID",
		Short:   "Delete a stopped container (any, with --force)",
		Example: `  microvm oci delete --force c1`,
		Args:    exactArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			return g.report(g.runtime().Delete(args[0], force))
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill the container first if it is not stopped")
	return cmd
}

func (g *ociGlobals) listCmd(a *app) *cobra.Command {
	var format string
	var quiet bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List containers",
		Example: `  microvm oci list --format json`,
		Args:    noArgs,
		RunE: func(_ *cobra.Command, _ []string) error {
			sts, err := g.runtime().List()
			if err != nil {
				return g.report(err)
			}
			switch {
			case quiet:
				for _, s := range sts {
					fmt.Fprintln(a.stdout, s.ID)
				}
			case format == "json":
				if sts == nil {
					sts = []*oci.State{}
				}
				b, err := json.Marshal(sts)
				if err != nil {
					return g.report(err)
				}
				fmt.Fprintf(a.stdout, "%s\n", b)
			case format == "table":
				w := tabwriter.NewWriter(a.stdout, 0, 8, 2, ' ', 0)
				fmt.Fprintln(w, "ID\tPID\tSTATUS\tBUNDLE\tCREATED")
				for _, s := range sts {
					fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\n", s.ID, s.Pid, s.Status, s.Bundle, s.Created.Format(time.RFC3339))
				}
				w.Flush()
			default:
				return g.report(usageErrorf("oci list: --format %q: want table or json", format))
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&format, "format", "f", "table", "table or json")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "IDs only")
	return cmd
}
