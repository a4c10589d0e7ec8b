package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/microvm/microvm/internal/registry"
	"github.com/microvm/microvm/vmm"
	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"
)

// stateDirEnv overrides the default state directory of running VMs.
const stateDirEnv = "MICROVM_STATE_DIR"

// defaultStateDir is where running VMs are registered: $MICROVM_STATE_DIR,
// else vms/ under the runtime directory (/run/microvm/vms for root).
func defaultStateDir() string {
	if d := os.Getenv(stateDirEnv); d != "" {
		return d
	}
	return filepath.Join(vmm.RuntimeDir(), "vms")
}

// addStateDirFlag registers --state-dir on a command.
func addStateDirFlag(cmd *cobra.Command, dir *string) {
	cmd.Flags().StringVar(dir, "state-dir", defaultStateDir(), "`DIR` where running VMs are registered ($"+stateDirEnv+")")
	markPaths(cmd.Flags(), "state-dir")
}

// pendingRegistration is boot's registration of its VM, made on another
// goroutine while the VM is built.
type pendingRegistration struct {
	done chan struct{}
	reg  *registry.Registration
	err  error
}

// register starts registering the VM of one boot under name (a generated
// one when empty).
func register(stateDir, name string, e registry.Entry) *pendingRegistration {
	p := &pendingRegistration{done: make(chan struct{})}
	if name == "" {
		name = "vm-" + strconv.Itoa(os.Getpid())
	}
	e.Name, e.PID, e.Created = name, os.Getpid(), time.Now().UTC().Truncate(time.Millisecond)
	go func() {
		defer close(p.done)
		d, err := registry.Open(stateDir)
		if err != nil {
			p.err = err
			return
		}
		p.reg, p.err = d.Register(e)
	}()
	return p
}

// wait returns the registration's outcome, with the exit status to use.
func (p *pendingRegistration) wait() error {
	<-p.done
	switch {
	case p.err == nil:
		return nil
	case errors.Is(p.err, registry.ErrNameInUse), errors.Is(p.err, registry.ErrBadName):
		return withCode(exitUsage, fmt.Errorf("--name: %w", p.err))
	}
	return withCode(exitHost, fmt.Errorf("register the VM (--state-dir): %w", p.err))
}

// end drops the registration: the file is removed when the process still
// may (no seccomp filter), else only released for the next reader to prune.
func (p *pendingRegistration) end(canRemove bool) {
	<-p.done
	if p.reg == nil {
		return
	}
	if canRemove {
		p.reg.Close()
		return
	}
	p.reg.Release()
}

func (a *app) newPsCmd() *cobra.Command {
	var (
		dir          string
		asJSON, bare bool
	)
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List running VMs (those started by microvm boot)",
		Long: `ps lists the VMs that microvm boot processes run on this host: every boot
registers its VM under its --name (default vm-PID) in the state directory,
and holds the entry for as long as its process lives. Entries of processes
that are gone (crashed, killed) are removed on the way.`,
		Example: `  microvm ps
  microvm ps --json | jq -r '.[].name'
  microvm ps -q                       # names only`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if asJSON && bare {
				return usageErrorf("ps: --json and --quiet do not go together")
			}
			list, err := listVMs(dir)
			if err != nil {
				return withCode(exitHost, err)
			}
			switch {
			case asJSON:
				rows := make([]psRow, 0, len(list))
				for _, e := range list {
					rows = append(rows, psRow{Entry: e, UptimeSeconds: time.Since(e.Created).Seconds()})
				}
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			case bare:
				for _, e := range list {
					fmt.Fprintln(a.stdout, e.Name)
				}
				return nil
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 0, 3, ' ', 0)
			fmt.Fprintln(tw, "NAME\tPID\tIMAGE\tCPUS\tMEMORY\tSTATUS")
			for _, e := range list {
				image := e.Image
				if e.Jailed {
					image += " (jailed)"
				}
				fmt.Fprintf(tw, "%s\t%d\t%s\t%d\t%s\tUp %s\n", e.Name, e.PID, image, e.CPUs,
					vmm.FormatBytes(e.MemoryBytes), humanDuration(time.Since(e.Created)))
			}
			return tw.Flush()
		},
	}
	addStateDirFlag(cmd, &dir)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the list as JSON on stdout")
	cmd.Flags().BoolVarP(&bare, "quiet", "q", false, "print only the names")
	return cmd
}

// psRow is one element of `ps --json`.
type psRow struct {
	registry.Entry
	UptimeSeconds float64 `json:"uptime_s"`
}

func listVMs(dir string) ([]registry.Entry, error) {
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil, nil // nothing has run yet
	}
	d, err := registry.Open(dir)
	if err != nil {
		return nil, err
	}
	return d.List()
}

func (a *app) newStopCmd() *cobra.Command {
	var (
		dir   string
		grace time.Duration
	)
	cmd := &cobra.Command{
		Use:   "stop NAME...",
		Short: "Stop running VMs: SIGTERM, then SIGKILL after a grace period",
		Long: `stop sends SIGTERM to the microvm boot process of each named VM and waits
for it to end; the VMM stops its vCPUs, tears the VM down and exits with 130
("interrupted"). A process still running after --time gets SIGKILL. stop
returns once every VM has ended; it prints each name as it goes (like
docker stop).`,
		Example: `  microvm stop web
  microvm stop -t 2s web db
  microvm stop $(microvm ps -q)       # all of them`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if grace < 0 {
				return usageErrorf("stop: --time must not be negative")
			}
			return a.eachVM(dir, args, func(v *liveVM) error {
				return v.stop(grace)
			})
		},
	}
	addStateDirFlag(cmd, &dir)
	cmd.Flags().DurationVarP(&grace, "time", "t", 10*time.Second, "how long to wait after SIGTERM before SIGKILL")
	return cmd
}

func (a *app) newKillCmd() *cobra.Command {
	var dir, sig string
	cmd := &cobra.Command{
		Use:   "kill NAME...",
		Short: "Send a signal to running VMs (default SIGKILL)",
		Long: `kill sends a signal to the microvm boot process of each named VM and
returns at once (with SIGKILL, once the process is gone). The VMM ends its
VM on SIGINT and SIGTERM (status 130); SIGKILL ends the process outright, and
the kernel frees the VM, its memory and its non-persistent taps with it.`,
		Example: `  microvm kill web
  microvm kill --signal TERM web`,
		Args: minArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := parseSignal(sig)
			if err != nil {
				return usageErrorf("kill: --signal: %v", err)
			}
			return a.eachVM(dir, args, func(v *liveVM) error {
				if err := v.signal(s); err != nil {
					return err
				}
				if s == unix.SIGKILL {
					return v.waitExit(5 * time.Second)
				}
				return nil
			})
		},
	}
	addStateDirFlag(cmd, &dir)
	cmd.Flags().StringVarP(&sig, "signal", "s", "KILL", "`SIGNAL` to send: a name (KILL, TERM, INT, HUP, USR1, …) or a number")
	return cmd
}

// eachVM runs fn on every named VM, printing each name once done, and
// reports every failure.
func (a *app) eachVM(dir string, names []string, fn func(*liveVM) error) error {
	d, err := registry.Open(dir)
	if err != nil {
		return withCode(exitHost, err)
	}
	var errs []error
	code := exitOK
	for _, name := range names {
		v, err := openVM(d, name)
		if err == nil {
			err = fn(v)
			v.close()
		}
		if err != nil {
			errs = append(errs, err)
			if c := codeOf(err); code == exitOK || c != exitUsage {
				code = c
			}
			continue
		}
		fmt.Fprintln(a.stdout, name)
	}
	if len(errs) > 0 {
		return withCode(code, errors.Join(errs...))
	}
	return nil
}

// liveVM is a registered VM's process, held by a pidfd so that a signal
// never reaches a process that reused its pid.
type liveVM struct {
	registry.Entry
	pidfd int
}

func openVM(d *registry.Dir, name string) (*liveVM, error) {
	e, err := d.Get(name)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		return nil, withCode(exitUsage, fmt.Errorf("no such VM: %s (microvm ps lists the running ones)", name))
	case errors.Is(err, registry.ErrBadName):
		return nil, withCode(exitUsage, err)
	case err != nil:
		return nil, withCode(exitHost, err)
	}
	fd, err := unix.PidfdOpen(e.PID, 0)
	if err != nil {
		return nil, withCode(exitHost, fmt.Errorf("%s: pid %d: %w", name, e.PID, err))
	}
	// The pidfd was opened while the entry was held, or the process is gone
	// now: ask again, so that the pidfd is known to be the VM's process.
	if alive, err := d.Alive(name); err != nil || !alive {
		unix.Close(fd)
		if err != nil {
			return nil, withCode(exitHost, err)
		}
		return nil, withCode(exitUsage, fmt.Errorf("no such VM: %s (it just ended)", name))
	}
	return &liveVM{Entry: e, pidfd: fd}, nil
}

func (v *liveVM) close() { unix.Close(v.pidfd) }

func (v *liveVM) signal(s unix.Signal) error {
	if err := unix.PidfdSendSignal(v.pidfd, s, nil, 0); err != nil && !errors.Is(err, unix.ESRCH) {
		return withCode(exitHost, fmt.Errorf("%s: send %v to pid %d: %w", v.Name, s, v.PID, err))
	}
	return nil
}

// exited waits up to d for the process to end and says whether it did.
func (v *liveVM) exited(d time.Duration) (bool, error) {
	fds := []unix.PollFd{{Fd: int32(v.pidfd), Events: unix.POLLIN}}
	deadline := time.Now().Add(d)
	for {
		ms := int(time.Until(deadline).Milliseconds())
		n, err := unix.Poll(fds, max(ms, 0))
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return false, fmt.Errorf("%s: wait for pid %d: %w", v.Name, v.PID, err)
		}
		return n > 0, nil
	}
}

func (v *liveVM) waitExit(d time.Duration) error {
	done, err := v.exited(d)
	if err != nil {
		return withCode(exitHost, err)
	}
	if !done {
		return withCode(exitHost, fmt.Errorf("%s: pid %d still runs %v after the signal", v.Name, v.PID, d))
	}
	return nil
}

func (v *liveVM) stop(grace time.Duration) error {
	if err := v.signal(unix.SIGTERM); err != nil {
		return err
	}
	done, err := v.exited(grace)
	if err != nil {
		return withCode(exitHost, err)
	}
	if done {
		return nil
	}
	if err := v.signal(unix.SIGKILL); err != nil {
		return err
	}
	return v.waitExit(5 * time.Second)
}

// parseSignal parses a signal name (KILL, SIGKILL, kill) or number.
func parseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n < 1 || n > 64 {
			return 0, fmt.Errorf("signal %d out of range (1-64)", n)
		}
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

// humanDuration is docker-like: "3 seconds", "5 minutes", "2 hours".
func humanDuration(d time.Duration) string {
	switch s := int(d.Seconds()); {
	case s < 1:
		return "less than a second"
	case s == 1:
		return "1 second"
	case s < 60:
		return fmt.Sprintf("%d seconds", s)
	case s < 120:
		return "about a minute"
	case s < 3600:
		return fmt.Sprintf("%d minutes", s/60)
	case s < 7200:
		return "about an hour"
	case s < 48*3600:
		return fmt.Sprintf("%d hours", s/3600)
	default:
		return fmt.Sprintf("%d days", s/86400)
	}
}

// minArgs requires at least n positional arguments.
func minArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < n {
			return usageErrorf("%s needs at least %d argument(s): %s", cmd.CommandPath(), n, cmd.Use)
		}
		return nil
	}
}
