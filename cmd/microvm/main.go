// Command microvm boots tiny guests and Linux kernels through /dev/kvm,
// runs the same workload in containers, benchmarks the two side by side and
// manages full VMs through libvirtd.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/microvm/microvm/container"
	"github.com/spf13/cobra"
)

// version is set at link time (-ldflags "-X main.version=...").
var version = "dev"

// app holds what every subcommand shares: the streams it writes to.
type app struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

func main() {
	container.Init() // a re-executed container init never returns from here
	a := &app{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}
	os.Exit(a.run(os.Args[1:]))
}

// run executes the command line and returns the process exit status.
func (a *app) run(args []string) int {
	root := a.newRootCmd(args)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	var s silentExit
	if errors.As(err, &s) {
		return int(s)
	}
	code := codeOf(err)
	if code == exitHost && strings.HasPrefix(err.Error(), "unknown command ") {
		code = exitUsage // cobra's own error for `microvm nosuch`
	}
	fmt.Fprintf(a.stderr, "microvm: %v\n", err)
	if code == exitUsage {
		fmt.Fprintf(a.stderr, "Run 'microvm --help' for usage.\n")
	}
	return code
}

// newRootCmd builds the command tree. Every subcommand's flags cost time to
// set up; `microvm boot`, the path every VM benchmark times, gets a tree
// with itself alone when it is plainly what args ask for.
func (a *app) newRootCmd(args []string) *cobra.Command {
	root := &cobra.Command{
		Use:   "microvm",
		Short: "Boot micro-VMs through /dev/kvm, compare them with containers, manage VMs via libvirt",
		Long: `microvm drives /dev/kvm directly to boot tiny freestanding guests and Linux
kernels with a serial console and virtio devices, runs the same workload in
containers, measures VM and container startup side by side, and manages full
VMs through libvirtd.`,
		Example: `  microvm boot                      # boot the embedded hello guest
  microvm boot --guest ready --json # the benchmark guest, result as JSON
  microvm check                     # can this host boot guests?`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return withCode(exitUsage, err)
	})
	if len(args) > 0 && args[0] == "boot" {
		// Nothing but boot is reachable from this tree, cobra's
		// completion command (five commands, their help texts) included:
		// do not have cobra build it.
		root.CompletionOptions.DisableDefaultCmd = true
		root.AddCommand(a.newBootCmd())
		guardPaths(root)
		return root
	}
	root.AddCommand(
		a.newBootCmd(),
		a.newCheckCmd(),
		a.newVersionCmd(),
		a.newLibvirtCmd(),
		a.newContainerCmd(),
		a.newBenchCmd(),
		a.newImageCmd(),
		a.newPsCmd(),
		a.newStopCmd(),
		a.newKillCmd(),
		a.newOCICmd(),
	)
	guardPaths(root)
	return root
}

// noArgs rejects positional arguments with a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErrorf("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}

// maxArgs allows at most n positional arguments.
func maxArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > n {
			return usageErrorf("%s takes at most %d argument(s), got %q", cmd.CommandPath(), n, args)
		}
		return nil
	}
}

// exactArgs requires exactly n positional arguments.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageErrorf("%s takes exactly %d argument(s), got %d", cmd.CommandPath(), n, len(args))
		}
		return nil
	}
}
