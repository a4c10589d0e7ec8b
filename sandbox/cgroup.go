package sandbox

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CgroupMode chooses the cgroup hierarchy a jailed VMM is placed in.
type CgroupMode int

const (
	// CgroupAuto uses the cgroup2 hierarchy when it offers every controller
	// the limits need, else the v1 controllers (hybrid hosts mount memory,
	// cpu and pids as v1 beside an empty cgroup2 "unified" tree).
	CgroupAuto CgroupMode = iota
	// CgroupV1 uses the v1 controller hierarchies.
	CgroupV1
	// CgroupV2 uses the cgroup2 hierarchy.
	CgroupV2
	// CgroupNone creates no cgroup; limits are refused.
	CgroupNone
)

// ParseCgroupMode parses auto, v1, v2 or none.
func ParseCgroupMode(s string) (CgroupMode, error) {
	for _, m := range []CgroupMode{CgroupAuto, CgroupV1, CgroupV2, CgroupNone} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("cgroup mode %q: want auto, v1, v2 or none", s)
}

// String names the mode as ParseCgroupMode takes it.
func (m CgroupMode) String() string {
	switch m {
	case CgroupAuto:
		return "auto"
	case CgroupV1:
		return "v1"
	case CgroupV2:
		return "v2"
	case CgroupNone:
		return "none"
	}
	return fmt.Sprintf("CgroupMode(%d)", int(m))
}

// Limits are a jailed VMM's cgroup limits; zero fields set no limit.
type Limits struct {
	// MemoryBytes caps the VMM's memory, guest RAM included.
	MemoryBytes int64
	// CPUs caps CPU time, in CPUs (1.5 = one and a half cores).
	CPUs float64
	// Pids caps tasks (the VMM's threads count).
	Pids int64
}

const cpuPeriodUS = 100000

func (l Limits) controllers() []string {
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

func (l Limits) cpuQuotaUS() int64 { return int64(l.CPUs * cpuPeriodUS) }

// cgroupLayout is what mountinfo and /proc/self/cgroup say.
type cgroupLayout struct {
	v2     string            // cgroup2 mount point, "" if none
	v1     map[string]string // v1 controller -> mount point
	v1Self map[string]string // v1 controller -> our path in it
}

func parseCgroupLayout(mountinfo, self io.Reader) (*cgroupLayout, error) {
	l := &cgroupLayout{v1: map[string]string{}, v1Self: map[string]string{}}
	sc := bufio.NewScanner(mountinfo)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		dash := strings.Index(line, " - ")
		if dash < 0 {
			continue
		}
		pre, post := strings.Fields(line[:dash]), strings.Fields(line[dash+3:])
		if len(pre) < 5 || len(post) < 1 {
			continue
		}
		mnt := unescapeOctal(pre[4])
		switch post[0] {
		case "cgroup2":
			if l.v2 == "" {
				l.v2 = mnt
			}
		case "cgroup":
			if len(post) < 3 {
				continue
			}
			for _, o := range strings.Split(post[2], ",") {
				switch o {
				case "memory", "cpu", "pids":
					if _, ok := l.v1[o]; !ok {
						l.v1[o] = mnt
					}
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cgroups: read mountinfo: %w", err)
	}
	sc = bufio.NewScanner(self)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 || parts[0] == "0" {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			l.v1Self[c] = parts[2]
		}
	}
	return l, sc.Err()
}

// unescapeOctal undoes mountinfo's \040-style escapes.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func hostCgroupLayout() (*cgroupLayout, error) {
	mi, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	defer mi.Close()
	self, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	defer self.Close()
	return parseCgroupLayout(mi, self)
}

func (l *cgroupLayout) v2Controllers() map[string]bool {
	m := map[string]bool{}
	if l.v2 == "" {
		return m
	}
	b, err := os.ReadFile(filepath.Join(l.v2, "cgroup.controllers"))
	if err != nil {
		return m
	}
	for _, c := range strings.Fields(string(b)) {
		m[c] = true
	}
	return m
}

// resolve picks v1 or v2 for auto.
func (l *cgroupLayout) resolve(mode CgroupMode, lim Limits) (CgroupMode, error) {
	need := lim.controllers()
	if mode != CgroupAuto {
		return mode, nil
	}
	if len(need) == 0 {
		return CgroupNone, nil
	}
	have2 := l.v2Controllers()
	all2, all1 := l.v2 != "", true
	for _, c := range need {
		all2 = all2 && have2[c]
		_, ok := l.v1[c]
		all1 = all1 && ok
	}
	switch {
	case all2:
		return CgroupV2, nil
	case all1:
		return CgroupV1, nil
	}
	return 0, fmt.Errorf("cgroups: neither the cgroup2 hierarchy nor the v1 controllers offer %s", strings.Join(need, ", "))
}

// cgroup is the jail's cgroup: one leaf directory per hierarchy used.
type cgroup struct {
	version int
	dirs    []string
}

// newCgroup creates the cgroup name with lim in the mode's hierarchy.
func newCgroup(l *cgroupLayout, mode CgroupMode, name string, lim Limits) (*cgroup, error) {
	mode, err := l.resolve(mode, lim)
	if err != nil {
		return nil, err
	}
	switch mode {
	case CgroupNone:
		if len(lim.controllers()) > 0 {
			return nil, errors.New("cgroups: limits asked for with cgroup mode none")
		}
		return nil, nil
	case CgroupV1:
		return newCgroupV1(l, name, lim)
	case CgroupV2:
		return newCgroupV2(l, name, lim)
	}
	return nil, fmt.Errorf("cgroups: unknown mode %v", mode)
}

// newCgroupV2 puts the leaf at <root>/microvm/<name>, delegating the
// controllers down from the root (a non-root cgroup that holds processes
// cannot delegate).
func newCgroupV2(l *cgroupLayout, name string, lim Limits) (cg *cgroup, err error) {
	if l.v2 == "" {
		return nil, errors.New("cgroups: no cgroup2 hierarchy is mounted")
	}
	have := l.v2Controllers()
	var enable []string
	for _, c := range lim.controllers() {
		if !have[c] {
			return nil, fmt.Errorf("cgroups: the cgroup2 hierarchy at %s offers no %s controller (a hybrid host binds it to v1: use --jail-cgroup v1)", l.v2, c)
		}
		enable = append(enable, "+"+c)
	}
	parent := filepath.Join(l.v2, "microvm")
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	if len(enable) > 0 {
		for _, d := range []string{l.v2, parent} {
			if err := writeCg(filepath.Join(d, "cgroup.subtree_control"), strings.Join(enable, " ")); err != nil {
				return nil, err
			}
		}
	}
	leaf := filepath.Join(parent, name)
	if err := os.Mkdir(leaf, 0o755); err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	cg = &cgroup{version: 2, dirs: []string{leaf}}
	defer func() {
		if err != nil {
			cg.remove()
		}
	}()
	if lim.MemoryBytes > 0 {
		if err := writeCg(filepath.Join(leaf, "memory.max"), strconv.FormatInt(lim.MemoryBytes, 10)); err != nil {
			return nil, err
		}
		if p := filepath.Join(leaf, "memory.swap.max"); exists(p) {
			if err := writeCg(p, "0"); err != nil {
				return nil, err
			}
		}
	}
	if lim.CPUs > 0 {
		if err := writeCg(filepath.Join(leaf, "cpu.max"), fmt.Sprintf("%d %d", lim.cpuQuotaUS(), cpuPeriodUS)); err != nil {
			return nil, err
		}
	}
	if lim.Pids > 0 {
		if err := writeCg(filepath.Join(leaf, "pids.max"), strconv.FormatInt(lim.Pids, 10)); err != nil {
			return nil, err
		}
	}
	return cg, nil
}

// newCgroupV1 nests the leaf under our own cgroup in each controller that
// a limit needs, so limits on us keep applying to the jail.
func newCgroupV1(l *cgroupLayout, name string, lim Limits) (cg *cgroup, err error) {
	cg = &cgroup{version: 1}
	defer func() {
		if err != nil {
			cg.remove()
		}
	}()
	seen := map[string]bool{}
	for _, c := range lim.controllers() {
		mnt, ok := l.v1[c]
		if !ok {
			return nil, fmt.Errorf("cgroups: no cgroup v1 %s controller is mounted", c)
		}
		if seen[mnt] {
			continue
		}
		seen[mnt] = true
		leaf := filepath.Join(mnt, l.v1Self[c], name)
		if err := os.Mkdir(leaf, 0o755); err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
		cg.dirs = append(cg.dirs, leaf)
		if lim.MemoryBytes > 0 && exists(filepath.Join(leaf, "memory.limit_in_bytes")) {
			v := strconv.FormatInt(lim.MemoryBytes, 10)
			if err := writeCg(filepath.Join(leaf, "memory.limit_in_bytes"), v); err != nil {
				return nil, err
			}
			if p := filepath.Join(leaf, "memory.memsw.limit_in_bytes"); exists(p) {
				if err := writeCg(p, v); err != nil {
					return nil, err
				}
			}
		}
		if lim.CPUs > 0 && exists(filepath.Join(leaf, "cpu.cfs_quota_us")) {
			if err := writeCg(filepath.Join(leaf, "cpu.cfs_period_us"), strconv.Itoa(cpuPeriodUS)); err != nil {
				return nil, err
			}
			if err := writeCg(filepath.Join(leaf, "cpu.cfs_quota_us"), strconv.FormatInt(lim.cpuQuotaUS(), 10)); err != nil {
				return nil, err
			}
		}
		if lim.Pids > 0 && exists(filepath.Join(leaf, "pids.max")) {
			if err := writeCg(filepath.Join(leaf, "pids.max"), strconv.FormatInt(lim.Pids, 10)); err != nil {
				return nil, err
			}
		}
	}
	return cg, nil
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

func writeCg(p, v string) error {
	if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
		return fmt.Errorf("cgroups: write %q to %s: %w", v, p, err)
	}
	return nil
}

// add moves pid into every leaf.
func (c *cgroup) add(pid int) error {
	if c == nil {
		return nil
	}
	for _, d := range c.dirs {
		if err := writeCg(filepath.Join(d, "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			return err
		}
	}
	return nil
}

// Dirs lists the leaf directories (nil for no cgroup).
func (c *cgroup) Dirs() []string {
	if c == nil {
		return nil
	}
	return append([]string(nil), c.dirs...)
}

// remove deletes the leaves, retrying for up to a second while the last
// task's exit settles (EBUSY).
func (c *cgroup) remove() error {
	if c == nil {
		return nil
	}
	var errs []error
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
		}
	}
	return errors.Join(errs...)
}
