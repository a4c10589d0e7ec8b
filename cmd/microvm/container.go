package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/microvm/microvm/container"
	"github.com/microvm/microvm/images/rootfs"
	"github.com/spf13/cobra"
)

func (a *app) newContainerCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "container",
		Short: "Run workloads down the container path (namespaces + cgroups, or a real OCI runtime)",
		Long: `container runs a command in a busybox rootfs the way a container runtime does:
new PID, mount, UTS, IPC and (optionally) network namespaces, pivot_root into
the rootfs with /proc, /dev and /sys mounted, and a cgroup (v1 or v2) with
memory and CPU limits. It is the peer microvm's VMs are measured against.`,
		Example: `  microvm container rootfs .cache/rootfs               # build a busybox rootfs
  microvm container run --rootfs .cache/rootfs -- sh -c 'echo hi'
  microvm container run --rootfs .cache/rootfs --memory 64M --net -- /bin/ready
  microvm container run --rootfs .cache/rootfs --runtime runc -- /bin/true
  microvm container runtimes                           # which runtimes work here`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.newContainerRunCmd(), a.newContainerRootfsCmd(), a.newContainerBundleCmd(), a.newContainerRuntimesCmd())
	return cmd
}

type containerRunFlags struct {
	rootfs, memory, hostname, cgroup, runtime, stateDir string
	cpus                                                float64
	pids                                                int64
	net, readOnly, privileged, json                     bool
	env                                                 []string
}

func (a *app) newContainerRunCmd() *cobra.Command {
	f := &containerRunFlags{}
	cmd := &cobra.Command{
		Use:   "run --rootfs DIR [flags] -- CMD [ARGS...]",
		Short: "Run a command in a container and exit with its status",
		Long: `run starts CMD in a container on ROOTFS and exits with CMD's exit status.
Statuses of its own, like docker run: 125 the launcher failed, 126 the command
cannot be invoked, 127 the command was not found, 130 interrupted.

The default runtime is microvm's in-process launcher; --runtime runc, crun,
podman or docker runs the same rootfs through that runtime instead.
With --json the result (status, launch->ready and launch->exit in ms) goes to
stdout as JSON and the command's own stdout goes to stderr. The ready time is
set when the command writes to fd 3 (as /bin/ready does).`,
		Example: `  microvm container run --rootfs .cache/rootfs -- sh -c 'hostname; echo $$'
  microvm container run --rootfs .cache/rootfs --memory 64M --cpus 0.5 -- sh
  microvm container run --rootfs .cache/rootfs --json -- /bin/ready
  microvm container run --rootfs .cache/rootfs --runtime crun -- /bin/true`,
		RunE: func(cmd *cobra.Command, args []string) error { return a.containerRun(args, f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.rootfs, "rootfs", "", "root filesystem directory (must hold /bin/sh); required")
	fl.StringVar(&f.memory, "memory", "", "memory limit, e.g. 64M (default: none)")
	fl.Float64Var(&f.cpus, "cpus", 0, "CPU limit in CPUs, e.g. 0.5 (default: none)")
	fl.Int64Var(&f.pids, "pids", 0, "limit on the number of tasks (in-process runtime; default: none)")
	fl.BoolVar(&f.net, "net", false, "own network namespace with only loopback (in-process runtime; the others always get one)")
	fl.BoolVar(&f.readOnly, "read-only", false, "mount the rootfs read-only (in-process runtime; the OCI runtimes always do)")
	fl.BoolVar(&f.privileged, "privileged", false, "keep all capabilities (in-process runtime)")
	fl.StringVar(&f.hostname, "hostname", "microvm", "hostname inside the container (in-process runtime)")
	fl.StringArrayVarP(&f.env, "env", "e", nil, "environment variable NAME=VALUE (repeatable; default: PATH and HOME)")
	fl.StringVar(&f.cgroup, "cgroup", "auto", "cgroup hierarchy for the in-process runtime: auto, v1, v2 or none")
	fl.StringVar(&f.runtime, "runtime", "container", "container (in-process), runc, crun, podman or docker")
	fl.StringVar(&f.stateDir, "state-dir", "", "state directory for OCI runtimes (default: a temporary one)")
	fl.BoolVar(&f.json, "json", false, "print the result as JSON on stdout (the command's stdout goes to stderr)")
	markPaths(fl, "rootfs", "state-dir")
	return cmd
}

// containerReport is the --json output of container run.
type containerReport struct {
	Runtime    string  `json:"runtime"`
	Status     int     `json:"status"`
	Signal     string  `json:"signal,omitempty"`
	Ready      bool    `json:"ready"`
	ReadyMs    float64 `json:"ready_ms,omitempty"`
	ExitMs     float64 `json:"exit_ms"`
	Cgroup     string  `json:"cgroup,omitempty"`
	Error      string  `json:"error,omitempty"`
	ExitStatus int     `json:"exit_status"`
}

func (a *app) containerRun(args []string, f *containerRunFlags) error {
	if f.rootfs == "" {
		return usageErrorf("container run: --rootfs DIR is required")
	}
	if len(args) == 0 {
		return usageErrorf("container run: no command given (put it after --)")
	}
	mem, err := container.ParseSize(f.memory)
	if err != nil {
		return usageErrorf("container run: --memory: %v", err)
	}
	if f.cpus < 0 || f.pids < 0 {
		return usageErrorf("container run: --cpus and --pids must not be negative")
	}
	mode, err := container.ParseCgroupMode(f.cgroup)
	if err != nil {
		return usageErrorf("container run: --cgroup: %v", err)
	}
	if err := rootfs.Check(f.rootfs); err != nil {
		return withCode(container.ExitLauncher, fmt.Errorf("container run: %w", err))
	}
	rt, err := container.RuntimeByName(f.runtime, f.stateDir)
	if err != nil {
		return usageErrorf("container run: --runtime: %v", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rt.Available(ctx); err != nil {
		return withCode(container.ExitLauncher, fmt.Errorf("container run: runtime %s is not available: %w", rt.Name(), err))
	}
	stdout := a.stdout
	if f.json {
		stdout = a.stderr
	}
	stdio := container.IO{Stdin: a.stdin, Stdout: stdout, Stderr: a.stderr}
	var res *container.Result
	if f.runtime == "container" {
		// The in-process launcher offers more knobs than the Runtime interface.
		res, err = container.Run(ctx, container.Spec{
			Rootfs: f.rootfs, Args: args, Env: f.env, Hostname: f.hostname,
			MemoryBytes: mem, CPUs: f.cpus, Pids: f.pids, Network: f.net, ReadOnly: f.readOnly,
			Privileged: f.privileged, Cgroup: mode, ReadyPipe: true,
			Stdin: stdio.Stdin, Stdout: stdio.Stdout, Stderr: stdio.Stderr,
		})
	} else {
		var l container.Launcher
		l, err = rt.Prepare(ctx, container.Workload{Rootfs: f.rootfs, Args: args, Env: f.env, MemoryBytes: mem, CPUs: f.cpus, ReadyPipe: true})
		if err == nil {
			res, err = l.Launch(ctx, stdio)
			if cerr := l.Close(); cerr != nil && err == nil {
				err = cerr
			}
		}
	}
	code := exitOK
	var se *container.StartError
	switch {
	case ctx.Err() != nil:
		code, err = exitInterrupted, errors.New("interrupted")
	case errors.As(err, &se):
		code = se.Code
	case err != nil:
		code = container.ExitLauncher
	default:
		code = res.Status
	}
	if f.json {
		rep := containerReport{Runtime: rt.Name(), ExitStatus: code}
		if res != nil {
			rep.Status, rep.Ready, rep.Cgroup = res.Status, res.Ready, res.Cgroup
			rep.ExitMs = float64(res.ExitAfter.Microseconds()) / 1000
			if res.Ready {
				rep.ReadyMs = float64(res.ReadyAfter.Microseconds()) / 1000
			}
			if res.Signal != 0 {
				rep.Signal = res.Signal.String()
			}
		}
		if err != nil {
			rep.Error = err.Error()
		}
		if jerr := writeJSON(a.stdout, rep); jerr != nil {
			return withCode(exitHost, jerr)
		}
	}
	if err != nil {
		if f.json {
			return silentOrOK(code)
		}
		return withCode(code, fmt.Errorf("container run: %w", err))
	}
	return silentOrOK(code)
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (a *app) newContainerRootfsCmd() *cobra.Command {
	var busybox string
	cmd := &cobra.Command{
		Use:   "rootfs DIR",
		Short: "Build a busybox root filesystem in DIR",
		Long: `rootfs builds the rootfs the container paths run: a static busybox (Debian's
busybox-static) with a symlink per applet, /bin/ready (writes fd 3, exits 0),
the usual mount points and a minimal /etc. Running it again refreshes DIR.`,
		Example: `  microvm container rootfs .cache/rootfs
  microvm container rootfs --busybox /usr/bin/busybox /tmp/rootfs`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := rootfs.Build(args[0], rootfs.Options{Busybox: busybox}); err != nil {
				return withCode(exitHost, err)
			}
			fmt.Fprintf(a.stderr, "rootfs ready in %s\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVar(&busybox, "busybox", "", "static busybox binary (default: /bin/busybox or /usr/bin/busybox)")
	markPaths(cmd.Flags(), "busybox")
	return cmd
}

func (a *app) newContainerBundleCmd() *cobra.Command {
	var root, memory string
	var cpus float64
	var noNet bool
	cmd := &cobra.Command{
		Use:   "bundle DIR --rootfs ROOTFS -- CMD [ARGS...]",
		Short: "Write an OCI bundle (config.json) that runs CMD in ROOTFS",
		Long: `bundle writes DIR/config.json per the OCI runtime specification: terminal
false, the pid, network, ipc, uts and mount namespaces, the standard mounts,
runc's default capabilities, root.path pointing at ROOTFS (read-only).
Run it with 'runc run --bundle DIR ID' or 'crun run --bundle DIR ID'.`,
		Example: `  microvm container bundle /tmp/b --rootfs .cache/rootfs -- /bin/true
  runc run --bundle /tmp/b demo`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usageErrorf("container bundle: want DIR and a command after --")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if root == "" {
				return usageErrorf("container bundle: --rootfs is required")
			}
			if err := rootfs.Check(root); err != nil {
				return withCode(container.ExitLauncher, err)
			}
			mem, err := container.ParseSize(memory)
			if err != nil {
				return usageErrorf("container bundle: --memory: %v", err)
			}
			abs, err := absPath(root)
			if err != nil {
				return withCode(exitHost, err)
			}
			c, err := rootfs.NewConfig(abs, rootfs.BundleOptions{Args: args[1:], MemoryBytes: mem, CPUs: cpus, NoNetwork: noNet})
			if err != nil {
				return usageErrorf("container bundle: %v", err)
			}
			if err := rootfs.WriteBundle(args[0], c); err != nil {
				return withCode(exitHost, err)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&root, "rootfs", "", "root filesystem directory; required")
	fl.StringVar(&memory, "memory", "", "memory limit, e.g. 64M")
	fl.Float64Var(&cpus, "cpus", 0, "CPU limit in CPUs")
	fl.BoolVar(&noNet, "no-net", false, "no network namespace")
	markPaths(fl, "rootfs")
	return cmd
}

func (a *app) newContainerRuntimesCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "runtimes",
		Short: "List the container runtimes and whether each can run here",
		Example: `  microvm container runtimes
  microvm container runtimes --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			type row struct {
				Name      string `json:"name"`
				Available bool   `json:"available"`
				Why       string `json:"why,omitempty"`
			}
			var rows []row
			for _, rt := range container.Runtimes("") {
				r := row{Name: rt.Name(), Available: true}
				if err := rt.Available(context.Background()); err != nil {
					r.Available, r.Why = false, err.Error()
				}
				rows = append(rows, r)
			}
			if asJSON {
				return writeJSON(a.stdout, rows)
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
			for _, r := range rows {
				st := "available"
				if !r.Available {
					st = "not available: " + r.Why
				}
				fmt.Fprintf(tw, "%s\t%s\n", r.Name, st)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the list as JSON")
	return cmd
}

func absPath(p string) (string, error) {
	if len(p) > 0 && p[0] == '/' {
		return p, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	return wd + "/" + p, nil
}
