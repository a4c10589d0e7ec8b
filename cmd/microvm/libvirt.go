package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/microvm/microvm/libvirt"
	"github.com/spf13/cobra"
)

// libvirtFlags are the flags shared by every `microvm libvirt` command.
type libvirtFlags struct {
	connect        []string
	hostsFile      string
	connectTimeout time.Duration
	callTimeout    time.Duration
	json           bool
}

func (a *app) newLibvirtCmd() *cobra.Command {
	f := &libvirtFlags{}
	cmd := &cobra.Command{
		Use:   "libvirt",
		Short: "List and manage full VMs through libvirtd, on one host or many",
		Long: `Manage full VMs (libvirt domains) through libvirtd with a pure-Go client of
libvirt's RPC protocol (github.com/digitalocean/go-libvirt; virsh is not used).

Connect like virsh: --connect/-c URI, default $LIBVIRT_DEFAULT_URI or
qemu:///system. URIs: qemu:///system, qemu:///session, test:///default,
qemu+tcp://host[:port]/system, qemu+tls://host/system (?pkipath=, ?no_verify=1),
qemu+ssh://user@host/system (?keyfile=, ?known_hosts=); ?socket=/path picks a
local unix socket. Repeat --connect, or give --hosts FILE (one URI per line,
# comments), to list many hosts at once.

Every connection and every call has a timeout; a daemon that is not there,
does not answer or drops the connection is an error, never a hang.

Exit status: 0 ok, 123 usage error (including a malformed URI or an unknown
URI scheme), 124 a --wait or boot timed out, 127 libvirt error (the daemon's
own message is shown: no such domain, domain already exists, domain is not
running, cannot reach libvirtd, ...), 130 interrupted.`,
		Example: `  microvm libvirt list --all
  microvm libvirt -c test:///default list --all --long
  microvm libvirt -c qemu+tcp://h1/system -c qemu+tcp://h2/system list --all
  microvm libvirt --hosts hosts.txt list --all --json
  microvm libvirt define vm.xml && microvm libvirt start vm --wait
  microvm libvirt boot /boot/vmlinuz --initrd initrd.cpio --transient`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	pf := cmd.PersistentFlags()
	pf.StringArrayVarP(&f.connect, "connect", "c", nil, "libvirt `URI` to connect to (repeat for several hosts; default $LIBVIRT_DEFAULT_URI or qemu:///system)")
	pf.StringVar(&f.hostsFile, "hosts", "", "read more URIs from `FILE`, one per line (# comments)")
	pf.DurationVar(&f.connectTimeout, "connect-timeout", libvirt.DefaultConnectTimeout, "give up connecting after this long")
	pf.DurationVar(&f.callTimeout, "call-timeout", libvirt.DefaultCallTimeout, "give up on any single call to libvirtd after this long")
	pf.BoolVar(&f.json, "json", false, "print the result as JSON on stdout")
	markPaths(pf, "hosts")
	cmd.AddCommand(
		a.newLibvirtListCmd(f),
		a.newLibvirtInfoCmd(f),
		a.newLibvirtDumpXMLCmd(f),
		a.newLibvirtDefineCmd(f),
		a.newLibvirtStartCmd(f),
		a.newLibvirtShutdownCmd(f),
		a.newLibvirtDestroyCmd(f),
		a.newLibvirtUndefineCmd(f),
		a.newLibvirtConsoleCmd(f),
		a.newLibvirtBootCmd(f),
	)
	return cmd
}

func (f *libvirtFlags) options() libvirt.Options {
	return libvirt.Options{ConnectTimeout: f.connectTimeout, CallTimeout: f.callTimeout}
}

// uris returns the connection URIs the flags name: --connect values, then
// the hosts file, else the default. Each is checked.
func (f *libvirtFlags) uris() ([]string, error) {
	if f.connectTimeout <= 0 || f.callTimeout <= 0 {
		return nil, usageErrorf("--connect-timeout and --call-timeout must be positive")
	}
	var uris []string
	for _, u := range f.connect {
		uris = append(uris, libvirt.ResolveURI(u, os.Getenv))
	}
	if f.hostsFile != "" {
		data, err := os.ReadFile(f.hostsFile)
		if err != nil {
			return nil, usageErrorf("--hosts: %v", err)
		}
		more, err := libvirt.ParseHostsFile(data)
		if err != nil {
			return nil, usageErrorf("--hosts %s: %v", f.hostsFile, err)
		}
		uris = append(uris, more...)
	}
	if len(uris) == 0 {
		uris = []string{libvirt.ResolveURI("", os.Getenv)}
	}
	for _, u := range uris {
		if _, err := libvirt.ParseURI(u); err != nil {
			return nil, withCode(exitUsage, err)
		}
	}
	return uris, nil
}

// single returns the one URI of a command that works on one host.
func (f *libvirtFlags) single(cmd *cobra.Command) (string, error) {
	uris, err := f.uris()
	if err != nil {
		return "", err
	}
	if len(uris) != 1 {
		return "", usageErrorf("%s works on one host; got %d (--connect/--hosts): only list takes several", cmd.CommandPath(), len(uris))
	}
	return uris[0], nil
}

// lvContext is the context of a libvirt command: cancelled by SIGINT/SIGTERM.
func lvContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// withConn runs fn with a connection to the command's single host, under a
// context that SIGINT and SIGTERM cancel; the connection is closed after.
func (a *app) withConn(cmd *cobra.Command, f *libvirtFlags, fn func(ctx context.Context, c *libvirt.Conn) error) error {
	ctx, cancel := lvContext()
	defer cancel()
	c, err := a.lvDial(ctx, cmd, f)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(ctx, c)
}

// lvDial connects to the single host of a command.
func (a *app) lvDial(ctx context.Context, cmd *cobra.Command, f *libvirtFlags) (*libvirt.Conn, error) {
	uri, err := f.single(cmd)
	if err != nil {
		return nil, err
	}
	c, err := libvirt.Dial(ctx, uri, f.options())
	if err != nil {
		return nil, lvErr(ctx, err)
	}
	return c, nil
}

// lvErr gives a libvirt package error its exit status.
func lvErr(ctx context.Context, err error) error {
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		return withCode(exitInterrupted, err)
	case errors.Is(err, libvirt.ErrBadURI):
		return withCode(exitUsage, err)
	case errors.Is(err, libvirt.ErrTimeout):
		return withCode(exitTimeout, err)
	}
	return withCode(exitLibvirt, err)
}

func lvWriteJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// lvListRow is one row of `list --json`: a domain, or a host's error.
type lvListRow struct {
	*libvirt.Domain
	Host  string `json:"host"`
	Error string `json:"error,omitempty"`
}

func (a *app) newLibvirtListCmd(f *libvirtFlags) *cobra.Command {
	var all, inactive, names, uuids, long bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List domains like virsh list, on one host or many at once",
		Long: `List domains in virsh's table layout: Id ("-" when inactive), Name and State
(running, idle, paused, in shutdown, shut off, crashed, pmsuspended), active
domains by Id, then inactive ones by name. --long adds vCPUs, memory and CPU
time. With several hosts (repeated --connect, or --hosts) they are listed
concurrently and a Host column comes first; a host that cannot be reached is
a row with its error (the command still succeeds unless every host fails).`,
		Example: `  microvm libvirt list
  microvm libvirt list --all --long
  microvm libvirt -c test:///default list --name
  microvm libvirt -c qemu+tcp://h1/system -c qemu+tcp://h2/system list --all
  microvm libvirt --hosts hosts.txt list --all --json`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			uris, err := f.uris()
			if err != nil {
				return err
			}
			if (names || uuids) && (long || f.json) {
				return usageErrorf("--name/--uuid print bare lists; they do not go with --long or --json")
			}
			ctx, cancel := lvContext()
			defer cancel()
			lo := libvirt.ListOptions{All: all, InactiveOnly: inactive}
			var results []libvirt.HostResult
			if len(uris) == 1 {
				// One host: its failure is the command's failure.
				c, err := libvirt.Dial(ctx, uris[0], f.options())
				if err != nil {
					return lvErr(ctx, err)
				}
				defer c.Close()
				ds, err := c.List(ctx, lo)
				if err != nil {
					return lvErr(ctx, err)
				}
				results = []libvirt.HostResult{{URI: c.URI().String(), Domains: ds}}
			} else {
				results = libvirt.ListHosts(ctx, uris, f.options(), lo)
			}
			failed := 0
			for _, r := range results {
				if r.Err != nil {
					failed++
				}
			}
			multi := len(uris) > 1
			switch {
			case f.json:
				rows := []lvListRow{}
				for _, r := range results {
					if r.Err != nil {
						rows = append(rows, lvListRow{Host: r.URI, Error: r.Err.Error()})
						continue
					}
					for i := range r.Domains {
						d := r.Domains[i]
						rows = append(rows, lvListRow{Domain: &d, Host: r.URI})
					}
				}
				if err := lvWriteJSON(a.stdout, rows); err != nil {
					return err
				}
			case names || uuids:
				for _, r := range results {
					if r.Err != nil {
						fmt.Fprintf(a.stderr, "microvm: %s: %v\n", r.URI, r.Err)
						continue
					}
					for _, d := range r.Domains {
						var parts []string
						if multi {
							parts = append(parts, r.URI)
						}
						if uuids {
							parts = append(parts, d.UUID)
						}
						if names {
							parts = append(parts, d.Name)
						}
						fmt.Fprintln(a.stdout, strings.Join(parts, " "))
					}
				}
				fmt.Fprintln(a.stdout)
			default:
				if err := libvirt.WriteList(a.stdout, results, libvirt.ListFormat{Long: long, Host: multi}); err != nil {
					return err
				}
			}
			if multi && failed == len(results) {
				return withCode(exitLibvirt, fmt.Errorf("no host could be listed (%d failed)", failed))
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&all, "all", false, "list inactive domains too")
	fl.BoolVar(&inactive, "inactive", false, "list only inactive domains")
	fl.BoolVar(&names, "name", false, "print only the names, one per line")
	fl.BoolVar(&uuids, "uuid", false, "print only the UUIDs (with --name: UUID and name)")
	fl.BoolVarP(&long, "long", "l", false, "add vCPUs, memory and CPU time columns")
	return cmd
}

func (a *app) newLibvirtInfoCmd(f *libvirtFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "info NAME",
		Short:   "Show a domain's details like virsh dominfo",
		Long:    `Show a domain's details. NAME may be a name, a UUID or a running domain's Id.`,
		Example: "  microvm libvirt info vm1\n  microvm libvirt -c test:///default info test --json",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withConn(cmd, f, func(ctx context.Context, c *libvirt.Conn) error {
				info, err := c.Info(ctx, args[0])
				if err != nil {
					return lvErr(ctx, err)
				}
				if f.json {
					return lvWriteJSON(a.stdout, info)
				}
				yesno := func(b bool) string {
					if b {
						return "yes"
					}
					return "no"
				}
				autostart := "disable"
				if info.Autostart {
					autostart = "enable"
				}
				for _, kv := range [][2]string{
					{"Id", info.IDString()},
					{"Name", info.Name},
					{"UUID", info.UUID},
					{"OS Type", info.OSType},
					{"State", info.State.String()},
					{"CPU(s)", fmt.Sprint(info.VCPUs)},
					{"CPU time", libvirt.FormatCPUTime(info.CPUTime)},
					{"Max memory", fmt.Sprintf("%d KiB", info.MaxMemoryKiB)},
					{"Used memory", fmt.Sprintf("%d KiB", info.MemoryKiB)},
					{"Persistent", yesno(info.Persistent)},
					{"Autostart", autostart},
				} {
					fmt.Fprintf(a.stdout, "%-15s %s\n", kv[0]+":", kv[1])
				}
				fmt.Fprintln(a.stdout)
				return nil
			})
		},
	}
}

func (a *app) newLibvirtDumpXMLCmd(f *libvirtFlags) *cobra.Command {
	return &cobra.Command{
		Use:     "dumpxml NAME",
		Short:   "Print a domain's XML description",
		Example: "  microvm libvirt dumpxml vm1 > vm1.xml",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withConn(cmd, f, func(ctx context.Context, c *libvirt.Conn) error {
				x, err := c.XML(ctx, args[0])
				if err != nil {
					return lvErr(ctx, err)
				}
				_, err = io.WriteString(a.stdout, x)
				return err
			})
		},
	}
}

func (a *app) newLibvirtDefineCmd(f *libvirtFlags) *cobra.Command {
	var update bool
	cmd := &cobra.Command{
		Use:   "define FILE",
		Short: "Define a persistent domain from an XML file (- for stdin)",
		Long: `Define a persistent domain from its XML description; it is not started.
Defining a name that already exists is an error unless --update is given
(then libvirt replaces the definition of the domain with that name and UUID).`,
		Example: "  microvm libvirt define vm.xml\n  microvm libvirt dumpxml vm1 | microvm libvirt define --update -",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var data []byte
			var err error
			if args[0] == "-" {
				data, err = io.ReadAll(io.LimitReader(a.stdin, 16<<20))
			} else {
				data, err = os.ReadFile(args[0])
			}
			if err != nil {
				return usageErrorf("read domain XML: %v", err)
			}
			return a.withConn(cmd, f, func(ctx context.Context, c *libvirt.Conn) error {
				d, err := c.Define(ctx, string(data), libvirt.DefineOptions{Update: update})
				if err != nil {
					return lvErr(ctx, err)
				}
				if f.json {
					return lvWriteJSON(a.stdout, d)
				}
				fmt.Fprintf(a.stdout, "Domain '%s' defined from %s\n\n", d.Name, args[0])
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&update, "update", false, "replace the definition of an existing domain")
	return cmd
}

func (a *app) newLibvirtStartCmd(f *libvirtFlags) *cobra.Command {
	var w libvirt.WaitOptions
	cmd := &cobra.Command{
		Use:   "start NAME",
		Short: "Start a defined domain",
		Long: `Start a defined, inactive domain. With --wait, return only after libvirt has
sent the domain's "started" lifecycle event.`,
		Example: "  microvm libvirt start vm1\n  microvm libvirt start vm1 --wait --timeout 30s",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withConn(cmd, f, func(ctx context.Context, c *libvirt.Conn) error {
				t0 := time.Now()
				d, err := c.Start(ctx, args[0], w)
				if err != nil {
					return lvErr(ctx, err)
				}
				if f.json {
					return lvWriteJSON(a.stdout, struct {
						libvirt.Domain
						TookNS time.Duration `json:"took_ns"`
					}{d, time.Since(t0)})
				}
				fmt.Fprintf(a.stdout, "Domain '%s' started\n\n", d.Name)
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&w.Wait, "wait", false, `wait for the "started" lifecycle event`)
	cmd.Flags().DurationVar(&w.Timeout, "timeout", time.Minute, "how long --wait waits")
	return cmd
}

func (a *app) newLibvirtShutdownCmd(f *libvirtFlags) *cobra.Command {
	var w libvirt.WaitOptions
	cmd := &cobra.Command{
		Use:   "shutdown NAME",
		Short: "Ask a domain's guest to shut down",
		Long: `Ask the guest to shut down (ACPI power button or guest agent, as the
hypervisor chooses). The guest may ignore it. With --wait, return only after
the domain has stopped (its "stopped" lifecycle event); a guest that does not
stop within --timeout is exit status 124.`,
		Example: "  microvm libvirt shutdown vm1\n  microvm libvirt shutdown vm1 --wait --timeout 2m",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withConn(cmd, f, func(ctx context.Context, c *libvirt.Conn) error {
				took, err := c.Shutdown(ctx, args[0], w)
				if err != nil {
					return lvErr(ctx, err)
				}
				switch {
				case f.json:
					return lvWriteJSON(a.stdout, map[string]any{"name": args[0], "stopped": w.Wait, "took_ns": took})
				case w.Wait:
					fmt.Fprintf(a.stdout, "Domain '%s' is shut off (%s)\n\n", args[0], took.Round(time.Millisecond))
				default:
					fmt.Fprintf(a.stdout, "Domain '%s' is being shutdown\n\n", args[0])
				}
				return nil
			})
		},
	}
	cmd.Flags().BoolVar(&w.Wait, "wait", false, `wait until the domain has stopped ("stopped" lifecycle event)`)
	cmd.Flags().DurationVar(&w.Timeout, "timeout", time.Minute, "how long --wait waits")
	return cmd
}

// lvSimple builds destroy and undefine, which only differ in the call.
func (a *app) lvSimple(f *libvirtFlags, use, short, long, done string, op func(*libvirt.Conn, context.Context, string) error) *cobra.Command {
	return &cobra.Command{
		Use:     use + " NAME",
		Short:   short,
		Long:    long,
		Example: "  microvm libvirt " + use + " vm1",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withConn(cmd, f, func(ctx context.Context, c *libvirt.Conn) error {
				if err := op(c, ctx, args[0]); err != nil {
					return lvErr(ctx, err)
				}
				if f.json {
					return lvWriteJSON(a.stdout, map[string]any{"name": args[0], "done": use})
				}
				fmt.Fprintf(a.stdout, "Domain '%s' %s\n\n", args[0], done)
				return nil
			})
		},
	}
}

func (a *app) newLibvirtDestroyCmd(f *libvirtFlags) *cobra.Command {
	return a.lvSimple(f, "destroy", "Stop a running domain at once (power off)",
		"Stop a running domain at once, like pulling the plug. A domain that is shut off is an error.",
		"destroyed", (*libvirt.Conn).Destroy)
}

func (a *app) newLibvirtUndefineCmd(f *libvirtFlags) *cobra.Command {
	return a.lvSimple(f, "undefine", "Remove a domain's persistent definition",
		"Remove a domain's definition. A running domain keeps running, as a transient one, until it stops.",
		"has been undefined", (*libvirt.Conn).Undefine)
}

func (a *app) newLibvirtConsoleCmd(f *libvirtFlags) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "console NAME",
		Short: "Show a running domain's console output (read-only)",
		Long: `Copy a running domain's serial console output to stdout until the domain
stops, --timeout passes or Ctrl-C. The console must be a pty (as microvm
libvirt boot makes it). This console is read-only: go-libvirt's console
stream carries no input; use virsh console to type into a guest.`,
		Example: "  microvm libvirt console vm1\n  microvm libvirt console vm1 --timeout 10s",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := lvContext()
			defer cancel()
			if timeout > 0 {
				var c2 context.CancelFunc
				ctx, c2 = context.WithTimeout(ctx, timeout)
				defer c2()
			}
			c, err := a.lvDial(ctx, cmd, f)
			if err != nil {
				return err
			}
			defer c.Close()
			fmt.Fprintf(a.stderr, "Connected to domain '%s' (read-only; Ctrl-C to leave)\n", args[0])
			if err := c.Console(ctx, args[0], a.stdout); err != nil {
				return lvErr(ctx, err)
			}
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "leave after this long (0 = when the domain stops)")
	return cmd
}

func (a *app) newLibvirtBootCmd(f *libvirtFlags) *cobra.Command {
	spec := libvirt.BootSpec{MemoryMiB: 256}
	var detach, rm bool
	cmd := &cobra.Command{
		Use:   "boot KERNEL",
		Short: "Boot a kernel image as a libvirt domain and time launch→ready",
		Long: `Turn a kernel image (the same bzImage/vmlinuz that microvm boot takes) into a
libvirt domain by direct kernel boot, start it, and report how long it took
from the launch to the ready marker on its console ("` + libvirt.DefaultReadyMarker + `"
by default) and, unless --detach, to the domain stopping. This is the
"full VM" row of microvm bench.

The domain gets --memory MiB, --cpus vCPUs, a pty serial console that QEMU
also logs to --console-log, and the command line "` + libvirt.BaseCmdline + `"
followed by --cmdline. --type auto picks type='kvm' when libvirt reports KVM
and the host CPU has VT-x/AMD-V, type='qemu' (TCG) otherwise, e.g. under
nested or paravirtual KVM (kvm_pvm). KERNEL and --initrd are paths on the
daemon's host; for a local daemon relative paths are made absolute.

Without --transient the domain is defined first and stays defined after it
stops (--rm undefines it); with --transient it vanishes when it stops. When
the timeout passes the domain is destroyed (exit status 124); a domain that
stops before it is ready is exit status 127 with its last console line.`,
		Example: `  microvm libvirt boot vmlinuz --initrd initrd.cpio --transient
  microvm libvirt boot vmlinuz --initrd initrd.cpio --type qemu --memory 512 --json
  microvm libvirt -c qemu+tcp://h1/system boot /srv/vmlinuz --initrd /srv/initrd --detach`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec.Kernel = args[0]
			switch spec.VirtType {
			case "auto":
				spec.VirtType = libvirt.VirtAuto
			case "kvm", "qemu":
			case "tcg":
				spec.VirtType = libvirt.VirtTCG
			default:
				return usageErrorf("--type %q: want auto, kvm or qemu", spec.VirtType)
			}
			if spec.MemoryMiB < 16 || spec.CPUs < 1 {
				return usageErrorf("--memory must be at least 16M and --cpus at least 1")
			}
			spec.WaitExit = !detach
			return a.withConn(cmd, f, func(ctx context.Context, c *libvirt.Conn) error {
				res, err := c.BootKernel(ctx, spec)
				if rm && res != nil {
					cctx, ccancel := context.WithTimeout(context.Background(), f.callTimeout)
					if cerr := res.Cleanup(cctx); cerr != nil {
						fmt.Fprintf(a.stderr, "microvm: clean up: %v\n", cerr)
					}
					ccancel()
				}
				if res != nil && res.UUID != "" {
					if f.json {
						out := struct {
							*libvirt.BootResult
							Error string `json:"error,omitempty"`
						}{BootResult: res}
						if err != nil {
							out.Error = err.Error()
						}
						if jerr := lvWriteJSON(a.stdout, out); jerr != nil {
							return jerr
						}
					} else {
						lvPrintBoot(a.stderr, res)
					}
				}
				return lvErr(ctx, err)
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&spec.Initrd, "initrd", "", "initrd/initramfs `FILE`")
	fl.StringVar(&spec.Cmdline, "cmdline", "quiet", "kernel arguments after \""+libvirt.BaseCmdline+"\"")
	fl.VarP((*mibFlag)(&spec.MemoryMiB), "memory", "m", "guest RAM `SIZE` (K, M, G suffixes; a bare number is MiB, as in virsh)")
	fl.IntVar(&spec.CPUs, "cpus", 1, "number of vCPUs")
	fl.BoolVar(&spec.Transient, "transient", false, "create a transient domain that vanishes when it stops")
	fl.StringVar(&spec.VirtType, "type", "auto", "domain `TYPE`: auto, kvm or qemu (TCG)")
	fl.StringVar(&spec.Name, "name", "", "domain `NAME` (default microvm-<random>)")
	fl.StringVar(&spec.Machine, "machine", "", "QEMU machine `TYPE` (default: the hypervisor's)")
	fl.StringVar(&spec.ConsoleLog, "console-log", "", "console log `FILE` on the daemon's host (default: a temp file locally, /var/log/libvirt/qemu/NAME.console.log remotely)")
	fl.StringVar(&spec.ReadyMarker, "ready-marker", libvirt.DefaultReadyMarker, "console `TEXT` that means ready")
	fl.DurationVarP(&spec.Timeout, "timeout", "t", 2*time.Minute, "destroy the domain if not done after this long")
	fl.BoolVar(&detach, "detach", false, "return once ready and leave the domain running")
	fl.BoolVar(&rm, "rm", false, "destroy and undefine the domain afterwards")
	return cmd
}

func lvPrintBoot(w io.Writer, r *libvirt.BootResult) {
	ms := func(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
	kind := "persistent"
	if r.Transient {
		kind = "transient"
	}
	fmt.Fprintf(w, "domain %s (%s, uuid %s), type=%s: %s\n", r.Name, kind, r.UUID, r.VirtType, r.VirtReason)
	if r.DefineTook > 0 {
		fmt.Fprintf(w, "  define          %s\n", ms(r.DefineTook))
	}
	fmt.Fprintf(w, "  start call      %s\n", ms(r.StartTook))
	if r.Ready {
		fmt.Fprintf(w, "  launch→ready    %s\n", ms(r.ReadyAfter))
	} else {
		fmt.Fprintf(w, "  launch→ready    (not ready)\n")
	}
	if r.Exited {
		fmt.Fprintf(w, "  launch→stopped  %s (%s)\n", ms(r.ExitAfter), r.ExitReason)
	}
	fmt.Fprintf(w, "  console log     %s (read via %s)\n", r.ConsoleLog, r.ConsoleVia)
	if r.LastLine != "" {
		fmt.Fprintf(w, "  last line       %s\n", r.LastLine)
	}
}
