package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/microvm/microvm/vmm"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// timeoutFlag is boot's --timeout: a duration, or "auto" (the default),
// which resolves per boot (resolve).
type timeoutFlag struct {
	d    time.Duration
	auto bool
}

// autoTimeout is --timeout auto's limit for an embedded guest run without
// a console to type into: those guests end in milliseconds, and one that
// spins is a bug that a script should hear about rather than hang on.
const autoTimeout = 10 * time.Second

func (t *timeoutFlag) String() string {
	if t.auto {
		return "auto"
	}
	return t.d.String()
}

func (t *timeoutFlag) Set(s string) error {
	if s == "auto" {
		*t = timeoutFlag{auto: true}
		return nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		if _, nerr := strconv.Atoi(s); nerr == nil {
			return fmt.Errorf("%q has no unit: write e.g. %ss, or 0 for never", s, s)
		}
		return fmt.Errorf("%q: want a duration like 30s, 2m or 1h30m, 0 for never, or auto", s)
	}
	if d < 0 {
		return fmt.Errorf("%v: must not be negative", d)
	}
	*t = timeoutFlag{d: d}
	return nil
}

func (t *timeoutFlag) Type() string { return "duration" }

// resolve returns the limit for one boot: "auto" means autoTimeout for an
// embedded guest run non-interactively, and no limit for everything else —
// a Linux kernel, the user's own image, a console someone types into — as
// Firecracker, QEMU and virsh never stop a guest on their own.
func (t *timeoutFlag) resolve(embedded, interactive bool) time.Duration {
	if !t.auto {
		return t.d
	}
	if embedded && !interactive {
		return autoTimeout
	}
	return 0
}

// pathAnnotation marks flags whose values name files or directories.
const pathAnnotation = "microvm_path"

// markPaths marks flags as naming files or directories: checkPaths refuses
// a value that looks like a flag, so that `--export-json --runs 5` is an
// error instead of a file called "--runs".
func markPaths(fl *pflag.FlagSet, names ...string) {
	for _, n := range names {
		if err := fl.SetAnnotation(n, pathAnnotation, []string{"true"}); err != nil {
			panic("markPaths: " + err.Error()) // a typo in a flag name: a programming error
		}
	}
}

// guardPaths has every command in the tree under c run checkPaths before
// its argument check (cobra checks arguments before any pre-run hook, and
// a swallowed flag usually shows first as a stray argument).
func guardPaths(c *cobra.Command) {
	for _, sub := range c.Commands() {
		guardPaths(sub)
	}
	args := c.Args
	if args == nil {
		if c.HasSubCommands() {
			// cobra's own check for groups ("unknown command") happens
			// only while Args is nil.
			return
		}
		args = cobra.ArbitraryArgs
	}
	c.Args = func(cmd *cobra.Command, a []string) error {
		if err := checkPaths(cmd); err != nil {
			return err
		}
		return args(cmd, a)
	}
}

// checkPaths refuses path flags whose value starts with "-" (other than
// "-" itself, which some mean as stdout). A file whose name starts with a
// dash can still be named as ./-name.
func checkPaths(cmd *cobra.Command) error {
	var err error
	cmd.Flags().Visit(func(f *pflag.Flag) {
		if err != nil || f.Annotations[pathAnnotation] == nil {
			return
		}
		values := []string{f.Value.String()}
		if sv, ok := f.Value.(pflag.SliceValue); ok {
			values = sv.GetSlice()
		}
		for _, v := range values {
			if strings.HasPrefix(v, "-") && v != "-" {
				err = usageErrorf("--%s %q looks like a flag, not a file name (did a value go missing? name a file starting with - as ./%s)", f.Name, v, v)
				return
			}
		}
	})
	return err
}

// mibFlag is a size in MiB given as SIZE: a bare number is MiB (as virsh
// and QEMU's -m read it), K/M/G/T suffixes are binary units.
type mibFlag int

func (m *mibFlag) String() string { return strconv.Itoa(int(*m)) + "M" }

func (m *mibFlag) Set(s string) error {
	if _, err := strconv.ParseUint(s, 10, 64); err == nil {
		s += "M"
	}
	n, err := vmm.ParseBytes(s)
	if err != nil {
		return err
	}
	if n%(1<<20) != 0 || n>>20 > 1<<30 {
		return fmt.Errorf("%s: want whole MiB, at most 1P", s)
	}
	*m = mibFlag(n >> 20)
	return nil
}

func (m *mibFlag) Type() string { return "size" }
