// Package cgroup places processes in cgroups with memory, CPU and task
// limits, under cgroup v1 or v2. It serves the in-process container
// launcher (package container) and the VMM jail (package sandbox).
//
// Hosts come in three layouts: pure v1, pure v2, and hybrid, where the v1
// controllers (memory, cpu, pids, ...) are mounted under /sys/fs/cgroup and
// a cgroup2 "unified" tree beside them usually holds none of them. Both
// hierarchies work on a hybrid host, but a limit is only set where its
// controller lives: New refuses a limit the chosen hierarchy cannot enforce
// rather than run the process unlimited.
//
// Usage: HostLayout, then New with a Config (mode, place, limits), Add the
// process, and Remove the cgroup once the process has exited.
package cgroup

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Mode chooses the cgroup hierarchy.
type Mode int

const (
	// Auto picks the hierarchy (see Layout.Resolve).
	Auto Mode = iota
	// V1 uses the v1 controller hierarchies.
	V1
	// V2 uses the cgroup2 hierarchy, also on a hybrid host where it is
	// mounted beside the v1 controllers (there it may hold no controllers,
	// so limits cannot be set).
	V2
	// None creates no cgroup; limits are refused.
	None
)

// String names the mode as ParseMode takes it.
func (m Mode) String() string {
	switch m {
	case Auto:
		return "auto"
	case V1:
		return "v1"
	case V2:
		return "v2"
	case None:
		return "none"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode parses "auto", "v1", "v2" or "none".
func ParseMode(s string) (Mode, error) {
	for _, m := range []Mode{Auto, V1, V2, None} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown cgroup mode %q (want auto, v1, v2 or none)", s)
}

// CPUPeriodUS is the CFS period CPU limits are expressed in.
const CPUPeriodUS = 100000

// MinCPUQuotaUS is the smallest CFS quota the kernel takes (1 ms); smaller
// CPU limits are raised to it.
const MinCPUQuotaUS = 1000

// MaxCPUs is the largest CPU limit New accepts.
const MaxCPUs = 1 << 20

// Limits are a cgroup's resource limits; a zero field sets no limit.
type Limits struct {
	// MemoryBytes caps memory, swap included where the kernel accounts
	// swap (v1 memory.memsw.limit_in_bytes; v2 memory.swap.max = 0).
	MemoryBytes int64
	// CPUs caps CPU time, in CPUs (1.5 = one and a half cores), as a CFS
	// quota per CPUPeriodUS.
	CPUs float64
	// Pids caps the number of tasks (threads count).
	Pids int64
}

// Controllers lists the controllers the limits need: memory, cpu, pids, in
// that order.
func (l Limits) Controllers() []string {
	var c []string
	if l.MemoryBytes > 0 {
		c = append(c, "memory")
	}
	if l.CPUs > 0 {
		c = append(c, "cpu")
	}
	if l.Pids > 0 {
		c = append(c, "pids")
	}
	return c
}

// CPUQuotaUS is the CFS quota per CPUPeriodUS for CPUs (0 for no limit,
// at least MinCPUQuotaUS otherwise).
func (l Limits) CPUQuotaUS() int64 {
	if !(l.CPUs > 0) {
		return 0
	}
	return max(int64(l.CPUs*CPUPeriodUS), MinCPUQuotaUS)
}

func (l Limits) check() error {
	switch {
	case l.MemoryBytes < 0:
		return fmt.Errorf("cgroups: negative memory limit %d", l.MemoryBytes)
	case l.Pids < 0:
		return fmt.Errorf("cgroups: negative pids limit %d", l.Pids)
	case math.IsNaN(l.CPUs) || l.CPUs < 0 || l.CPUs > MaxCPUs:
		return fmt.Errorf("cgroups: CPU limit %g: want 0 (none) to %d CPUs", l.CPUs, MaxCPUs)
	}
	return nil
}

// v1Controllers are the v1 controllers a cgroup may join.
var v1Controllers = []string{"memory", "cpu", "pids"}

// Cgroup is a created cgroup: one leaf directory per hierarchy used. A nil
// *Cgroup (mode None) is valid: Add and Remove do nothing.
type Cgroup struct {
	mode Mode
	dirs []string
}

// Config describes the cgroup New creates.
type Config struct {
	// Mode chooses the hierarchy (Auto: see Layout.Resolve).
	Mode Mode
	// Parent is the relative path the cgroup goes under ("" or nested; a
	// leading "/" is ignored; no ".."): under the cgroup2 root, from which
	// the controllers the limits need are delegated down, or, on v1, under
	// the caller's own cgroup in each controller (so limits on the caller
	// keep applying). It is created when missing and left in place.
	Parent string
	// Name is the cgroup's own directory: one path element, new.
	Name string
	// Limits are the limits; a limit the hierarchy cannot enforce is an
	// error, as is any limit with None.
	Limits Limits
	// AllV1 makes a v1 cgroup join each of the memory, cpu and pids
	// controllers that is mounted, limited or not (the process is then
	// accounted in all three). Otherwise it joins only those its limits
	// need: fewer directories to make and remove.
	AllV1 bool
}

// New creates the cgroup c describes in the layout l's hierarchies. It
// returns nil, and no error, when there is nothing to create: mode None
// (or Auto with nothing mounted) without limits, or v1 with neither limits
// nor AllV1.
func New(l *Layout, c Config) (*Cgroup, error) {
	lim := c.Limits
	if err := lim.check(); err != nil {
		return nil, err
	}
	if c.Name == "" || c.Name == "." || c.Name == ".." || strings.ContainsAny(c.Name, "/\x00") {
		return nil, fmt.Errorf("cgroups: bad cgroup name %q", c.Name)
	}
	if strings.Contains(c.Parent, "\x00") || slices.Contains(strings.Split(c.Parent, "/"), "..") {
		return nil, fmt.Errorf("cgroups: bad cgroup parent %q", c.Parent)
	}
	mode, err := l.Resolve(c.Mode, lim)
	if err != nil {
		return nil, err
	}
	switch mode {
	case None:
		if len(lim.Controllers()) > 0 {
			return nil, errors.New("cgroups: limits asked for with cgroup mode none")
		}
		return nil, nil
	case V2:
		return newV2(l, c)
	case V1:
		return newV1(l, c)
	}
	return nil, fmt.Errorf("cgroups: unknown mode %v", mode)
}

func newV2(l *Layout, c Config) (cg *Cgroup, err error) {
	parent, name, lim := c.Parent, c.Name, c.Limits
	if l.V2 == "" {
		return nil, errors.New("cgroups: no cgroup2 hierarchy is mounted")
	}
	have := l.V2Controllers()
	var enable []string
	for _, c := range lim.Controllers() {
		if !have[c] {
			return nil, fmt.Errorf("cgroups: the cgroup2 hierarchy at %s offers no %s controller (a hybrid host binds it to cgroup v1: use cgroup mode v1)", l.V2, c)
		}
		enable = append(enable, "+"+c)
	}
	// Each cgroup from the root down to parent delegates the controllers
	// to its children (a non-root cgroup that holds processes cannot).
	chain := []string{l.V2}
	for _, e := range strings.Split(parent, "/") {
		if e != "" && e != "." {
			chain = append(chain, filepath.Join(chain[len(chain)-1], e))
		}
	}
	pdir := chain[len(chain)-1]
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	if len(enable) > 0 {
		for _, d := range chain {
			if err := write(filepath.Join(d, "cgroup.subtree_control"), strings.Join(enable, " ")); err != nil {
				return nil, err
			}
		}
	}
	leaf := filepath.Join(pdir, name)
	if err := os.Mkdir(leaf, 0o755); err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	cg = &Cgroup{mode: V2, dirs: []string{leaf}}
	defer func() {
		if err != nil {
			cg.Remove()
		}
	}()
	if lim.MemoryBytes > 0 {
		if err := write(filepath.Join(leaf, "memory.max"), strconv.FormatInt(lim.MemoryBytes, 10)); err != nil {
			return nil, err
		}
		// No swapping past the limit, where swap accounting exists.
		if p := filepath.Join(leaf, "memory.swap.max"); exists(p) {
			if err := write(p, "0"); err != nil {
				return nil, err
			}
		}
	}
	if lim.CPUs > 0 {
		if err := write(filepath.Join(leaf, "cpu.max"), fmt.Sprintf("%d %d", lim.CPUQuotaUS(), CPUPeriodUS)); err != nil {
			return nil, err
		}
	}
	if lim.Pids > 0 {
		if err := write(filepath.Join(leaf, "pids.max"), strconv.FormatInt(lim.Pids, 10)); err != nil {
			return nil, err
		}
	}
	return cg, nil
}

func newV1(l *Layout, cfg Config) (cg *Cgroup, err error) {
	parent, name, lim := cfg.Parent, cfg.Name, cfg.Limits
	join := lim.Controllers()
	for _, c := range join {
		if _, ok := l.V1[c]; !ok {
			return nil, fmt.Errorf("cgroups: no cgroup v1 %s controller is mounted", c)
		}
	}
	if cfg.AllV1 {
		join = v1Controllers
	} else if len(join) == 0 {
		return nil, nil
	}
	cg = &Cgroup{mode: V1}
	defer func() {
		if err != nil {
			cg.Remove()
		}
	}()
	seen := map[string]bool{}
	for _, c := range join {
		mnt, ok := l.V1[c]
		if !ok || seen[mnt] {
			continue
		}
		seen[mnt] = true
		self := filepath.Join(mnt, l.V1Self[c])
		if rel, err := filepath.Rel(mnt, self); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			return nil, fmt.Errorf("cgroups: our v1 %s cgroup %q lies outside its mount %s (a cgroup namespace?)", c, l.V1Self[c], mnt)
		}
		leaf := filepath.Join(self, parent, name)
		if err := os.MkdirAll(filepath.Dir(leaf), 0o755); err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
		if err := os.Mkdir(leaf, 0o755); err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
		cg.dirs = append(cg.dirs, leaf)
		// A controller may be co-mounted with others (cpu,cpuacct): set
		// every limit whose file exists in this directory.
		if lim.MemoryBytes > 0 && exists(filepath.Join(leaf, "memory.limit_in_bytes")) {
			v := strconv.FormatInt(lim.MemoryBytes, 10)
			if err := write(filepath.Join(leaf, "memory.limit_in_bytes"), v); err != nil {
				return nil, err
			}
			if p := filepath.Join(leaf, "memory.memsw.limit_in_bytes"); exists(p) {
				if err := write(p, v); err != nil {
					return nil, err
				}
			}
		}
		if lim.CPUs > 0 && exists(filepath.Join(leaf, "cpu.cfs_quota_us")) {
			if err := write(filepath.Join(leaf, "cpu.cfs_period_us"), strconv.Itoa(CPUPeriodUS)); err != nil {
				return nil, err
			}
			if err := write(filepath.Join(leaf, "cpu.cfs_quota_us"), strconv.FormatInt(lim.CPUQuotaUS(), 10)); err != nil {
				return nil, err
			}
		}
		if lim.Pids > 0 && exists(filepath.Join(leaf, "pids.max")) {
			if err := write(filepath.Join(leaf, "pids.max"), strconv.FormatInt(lim.Pids, 10)); err != nil {
				return nil, err
			}
		}
	}
	if len(cg.dirs) == 0 {
		return nil, errors.New("cgroups: none of the v1 controllers memory, cpu, pids is mounted")
	}
	return cg, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func write(p, v string) error {
	if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
		return fmt.Errorf("cgroups: write %q to %s: %w", v, p, err)
	}
	return nil
}

// Mode is the hierarchy the cgroup is in: V1 or V2 (None for nil).
func (c *Cgroup) Mode() Mode {
	if c == nil {
		return None
	}
	return c.mode
}

// Path returns the first leaf directory ("" for nil), for messages.
func (c *Cgroup) Path() string {
	if c == nil || len(c.dirs) == 0 {
		return ""
	}
	return c.dirs[0]
}

// Dirs lists the leaf directories (nil for nil).
func (c *Cgroup) Dirs() []string {
	if c == nil {
		return nil
	}
	return append([]string(nil), c.dirs...)
}

// Add moves the process pid into every leaf.
func (c *Cgroup) Add(pid int) error {
	if c == nil {
		return nil
	}
	for _, d := range c.dirs {
		if err := write(filepath.Join(d, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes the leaves; the parents stay for the next cgroup. A leaf
// whose last task just exited can refuse removal (EBUSY) for a moment: each
// is retried for up to a second. Leaves it could not remove stay in Dirs,
// so Remove may be called again.
func (c *Cgroup) Remove() error {
	if c == nil {
		return nil
	}
	var errs []error
	var left []string
	for i := len(c.dirs) - 1; i >= 0; i-- {
		var err error
		for try := 0; try < 200; try++ {
			if err = os.Remove(c.dirs[i]); err == nil || errors.Is(err, os.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cgroups: %w", err))
			left = append([]string{c.dirs[i]}, left...)
		}
	}
	c.dirs = left
	return errors.Join(errs...)
}
