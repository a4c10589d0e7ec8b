package container

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

// CgroupMode chooses the cgroup hierarchy a container is placed in.
type CgroupMode int

const (
	// CgroupAuto uses cgroup v2 on a pure v2 host and the v1 controllers
	// (memory, cpu, pids) on a v1 or hybrid host.
	CgroupAuto CgroupMode = iota
	// CgroupV1 uses the v1 controller hierarchies.
	CgroupV1
	// CgroupV2 uses the unified (v2) hierarchy, also on a hybrid host where
	// it is mounted beside the v1 controllers (there it may hold no
	// controllers, so limits cannot be set).
	CgroupV2
	// CgroupNone places the container in no new cgroup; limits are refused.
	CgroupNone
)

// String names the mode as the CLI spells it.
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

// ParseCgroupMode parses "auto", "v1", "v2" or "none".
func ParseCgroupMode(s string) (CgroupMode, error) {
	for _, m := range []CgroupMode{CgroupAuto, CgroupV1, CgroupV2, CgroupNone} {
		if s == m.String() {
			return m, nil
		}
	}
	return 0, fmt.Errorf("unknown cgroup mode %q (want auto, v1, v2 or none)", s)
}

// limits are the resource limits of one container.
type limits struct {
	memoryBytes int64
	cpuQuotaUS  int64 // per cpuPeriodUS; 0 = none
	cpuPeriodUS int64
	pids        int64
}

func (l limits) controllers() []string {
	var c []string
	if l.memoryBytes > 0 {
		c = append(c, "memory")
	}
	if l.cpuQuotaUS > 0 {
		c = append(c, "cpu")
	}
	if l.pids > 0 {
		c = append(c, "pids")
	}
	return c
}

// cgroupLayout is what /proc/self/mountinfo and /proc/self/cgroup say about
// this host's cgroup mounts and our own place in them.
type cgroupLayout struct {
	v2Mount string            // mount point of the cgroup2 hierarchy ("" if none)
	v1      map[string]string // v1 controller name -> mount point
	v1Self  map[string]string // v1 controller name -> our cgroup path in it
}

// readCgroupLayout parses mountinfo and the proc cgroup file.
func readCgroupLayout(mountinfo, selfCgroup io.Reader) (*cgroupLayout, error) {
	l := &cgroupLayout{v1: map[string]string{}, v1Self: map[string]string{}}
	sc := bufio.NewScanner(mountinfo)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		line := sc.Text()
		dash := strings.Index(line, " - ")
		if dash < 0 {
			continue
		}
		pre := strings.Fields(line[:dash])
		post := strings.Fields(line[dash+3:])
		if len(pre) < 5 || len(post) < 1 {
			continue
		}
		mnt := unescapeMount(pre[4])
		switch post[0] {
		case "cgroup2":
			if l.v2Mount == "" {
				l.v2Mount = mnt
			}
		case "cgroup":
			if len(post) < 3 {
				continue
			}
			for _, o := range strings.Split(post[2], ",") {
				switch o {
				case "memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "devices", "freezer":
					if _, ok := l.v1[o]; !ok {
						l.v1[o] = mnt
					}
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	if selfCgroup != nil {
		sc = bufio.NewScanner(selfCgroup)
		for sc.Scan() {
			parts := strings.SplitN(sc.Text(), ":", 3)
			if len(parts) != 3 || parts[0] == "0" {
				continue
			}
			for _, c := range strings.Split(parts[1], ",") {
				l.v1Self[c] = parts[2]
			}
		}
	}
	return l, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space, ...).
func unescapeMount(s string) string {
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
	sc, err := os.Open("/proc/self/cgroup")
	if err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	defer sc.Close()
	return readCgroupLayout(mi, sc)
}

// v2Controllers lists the controllers the v2 hierarchy's root offers.
func (l *cgroupLayout) v2Controllers() map[string]bool {
	m := map[string]bool{}
	if l.v2Mount == "" {
		return m
	}
	b, err := os.ReadFile(filepath.Join(l.v2Mount, "cgroup.controllers"))
	if err != nil {
		return m
	}
	for _, c := range strings.Fields(string(b)) {
		m[c] = true
	}
	return m
}

// cgroup is a container's cgroup: one directory per hierarchy used.
type cgroup struct {
	version int      // 1 or 2
	dirs    []string // leaf directories created (removed by remove)
}

// Path returns the first leaf directory (for messages and tests).
func (c *cgroup) Path() string {
	if c == nil || len(c.dirs) == 0 {
		return ""
	}
	return c.dirs[0]
}

// newCgroup creates the cgroup parent/name with the limits lim. On v1 the
// cgroup nests under the caller's own cgroup in each controller (so limits
// that apply to the caller keep applying); on v2 it sits under the root,
// where controllers can be delegated.
func newCgroup(l *cgroupLayout, mode CgroupMode, parent, name string, lim limits) (*cgroup, error) {
	if mode == CgroupAuto {
		mode = CgroupV2
		if len(l.v1) > 0 {
			mode = CgroupV1
		}
		if l.v2Mount == "" && len(l.v1) == 0 {
			if len(lim.controllers()) > 0 {
				return nil, errors.New("cgroups: no cgroup hierarchy is mounted, so limits cannot be set")
			}
			return nil, nil
		}
	}
	switch mode {
	case CgroupNone:
		if len(lim.controllers()) > 0 {
			return nil, errors.New("cgroups: limits asked for with cgroup mode none")
		}
		return nil, nil
	case CgroupV2:
		return newCgroupV2(l, parent, name, lim)
	case CgroupV1:
		return newCgroupV1(l, parent, name, lim)
	}
	return nil, fmt.Errorf("cgroups: unknown mode %v", mode)
}

func newCgroupV2(l *cgroupLayout, parent, name string, lim limits) (cg *cgroup, err error) {
	if l.v2Mount == "" {
		return nil, errors.New("cgroups: no cgroup2 hierarchy is mounted")
	}
	have := l.v2Controllers()
	var enable []string
	for _, c := range lim.controllers() {
		if !have[c] {
			return nil, fmt.Errorf("cgroups: the cgroup2 hierarchy at %s offers no %s controller (on a hybrid host it is bound to cgroup v1; use cgroup mode v1)", l.v2Mount, c)
		}
		enable = append(enable, "+"+c)
	}
	pdir := filepath.Join(l.v2Mount, parent)
	if err := os.MkdirAll(pdir, 0o755); err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	if len(enable) > 0 {
		// Delegate the controllers down: root -> parent -> leaf.
		for _, d := range []string{l.v2Mount, pdir} {
			if err := writeCg(filepath.Join(d, "cgroup.subtree_control"), strings.Join(enable, " ")); err != nil {
				return nil, err
			}
		}
	}
	leaf := filepath.Join(pdir, name)
	if err := os.Mkdir(leaf, 0o755); err != nil {
		return nil, fmt.Errorf("cgroups: %w", err)
	}
	cg = &cgroup{version: 2, dirs: []string{leaf}}
	defer func() {
		if err != nil {
			cg.remove()
		}
	}()
	if lim.memoryBytes > 0 {
		if err := writeCg(filepath.Join(leaf, "memory.max"), strconv.FormatInt(lim.memoryBytes, 10)); err != nil {
			return nil, err
		}
		// No swapping past the limit, where swap accounting exists.
		if _, err := os.Stat(filepath.Join(leaf, "memory.swap.max")); err == nil {
			if err := writeCg(filepath.Join(leaf, "memory.swap.max"), "0"); err != nil {
				return nil, err
			}
		}
	}
	if lim.cpuQuotaUS > 0 {
		if err := writeCg(filepath.Join(leaf, "cpu.max"), fmt.Sprintf("%d %d", lim.cpuQuotaUS, lim.cpuPeriodUS)); err != nil {
			return nil, err
		}
	}
	if lim.pids > 0 {
		if err := writeCg(filepath.Join(leaf, "pids.max"), strconv.FormatInt(lim.pids, 10)); err != nil {
			return nil, err
		}
	}
	return cg, nil
}

// v1Controllers are the v1 controllers a container is always placed in.
var v1Controllers = []string{"memory", "cpu", "pids"}

func newCgroupV1(l *cgroupLayout, parent, name string, lim limits) (cg *cgroup, err error) {
	for _, c := range lim.controllers() {
		if _, ok := l.v1[c]; !ok {
			return nil, fmt.Errorf("cgroups: no cgroup v1 %s controller is mounted", c)
		}
	}
	cg = &cgroup{version: 1}
	defer func() {
		if err != nil {
			cg.remove()
		}
	}()
	seen := map[string]bool{}
	for _, c := range v1Controllers {
		mnt, ok := l.v1[c]
		if !ok || seen[mnt] {
			continue
		}
		seen[mnt] = true
		leaf := filepath.Join(mnt, l.v1Self[c], parent, name)
		if err := os.MkdirAll(filepath.Dir(leaf), 0o755); err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
		if err := os.Mkdir(leaf, 0o755); err != nil {
			return nil, fmt.Errorf("cgroups: %w", err)
		}
		cg.dirs = append(cg.dirs, leaf)
		// A controller may be co-mounted with others (cpu,cpuacct): set
		// every limit whose file exists in this directory.
		if lim.memoryBytes > 0 && exists(filepath.Join(leaf, "memory.limit_in_bytes")) {
			if err := writeCg(filepath.Join(leaf, "memory.limit_in_bytes"), strconv.FormatInt(lim.memoryBytes, 10)); err != nil {
				return nil, err
			}
			if p := filepath.Join(leaf, "memory.memsw.limit_in_bytes"); exists(p) {
				if err := writeCg(p, strconv.FormatInt(lim.memoryBytes, 10)); err != nil {
					return nil, err
				}
			}
		}
		if lim.cpuQuotaUS > 0 && exists(filepath.Join(leaf, "cpu.cfs_quota_us")) {
			if err := writeCg(filepath.Join(leaf, "cpu.cfs_period_us"), strconv.FormatInt(lim.cpuPeriodUS, 10)); err != nil {
				return nil, err
			}
			if err := writeCg(filepath.Join(leaf, "cpu.cfs_quota_us"), strconv.FormatInt(lim.cpuQuotaUS, 10)); err != nil {
				return nil, err
			}
		}
		if lim.pids > 0 && exists(filepath.Join(leaf, "pids.max")) {
			if err := writeCg(filepath.Join(leaf, "pids.max"), strconv.FormatInt(lim.pids, 10)); err != nil {
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

// remove deletes the leaves. Removal of a cgroup whose last task just
// exited can fail with EBUSY for a moment; it is retried for up to a second.
func (c *cgroup) remove() error {
	if c == nil {
		return nil
	}
	var errs []error
	for i := len(c.dirs) - 1; i >= 0; i-- {
		d := c.dirs[i]
		var err error
		for try := 0; try < 200; try++ {
			err = os.Remove(d)
			if err == nil || errors.Is(err, os.ErrNotExist) {
				err = nil
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("cgroups: remove %s: %w", d, err))
		}
	}
	c.dirs = nil
	return errors.Join(errs...)
}
