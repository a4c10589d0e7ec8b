package cgroup

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Layout is what /proc/self/mountinfo and /proc/self/cgroup say about this
// host's cgroup mounts and the caller's own place in them. A zero Layout
// (nothing mounted) is valid.
type Layout struct {
	// V2 is the mount point of the cgroup2 hierarchy ("" if none). On a
	// hybrid host it is the "unified" tree beside the v1 controllers.
	V2 string
	// V1 maps a v1 controller (memory, cpu, cpuacct, pids, cpuset, blkio,
	// devices, freezer) to its mount point; co-mounted controllers
	// (cpu,cpuacct) share one.
	V1 map[string]string
	// V1Self maps a v1 controller to the caller's cgroup path in it.
	V1Self map[string]string
}

// HostLayout reads this process's layout from /proc.
func HostLayout() (*Layout, error) {
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
	return ParseLayout(mi, self)
}

// ParseLayout parses a mountinfo file and a /proc/<pid>/cgroup file (self
// may be nil: V1Self stays empty). Lines it does not understand are
// skipped; only a read error (or a line over 1 MiB) is an error.
func ParseLayout(mountinfo, self io.Reader) (*Layout, error) {
	l := &Layout{V1: map[string]string{}, V1Self: map[string]string{}}
	sc := newScanner(mountinfo)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		line := sc.Text()
		dash := strings.Index(line, " - ")
		if dash < 0 {
			continue
		}
		pre, post := strings.Fields(line[:dash]), strings.Fields(line[dash+3:])
		if len(pre) < 5 || len(post) < 1 {
			continue
		}
		mnt := UnescapeMountinfo(pre[4])
		switch post[0] {
		case "cgroup2":
			if l.V2 == "" {
				l.V2 = mnt
			}
		case "cgroup":
			if len(post) < 3 {
				continue
			}
			for _, o := range strings.Split(post[2], ",") {
				switch o {
				case "memory", "cpu", "cpuacct", "pids", "cpuset", "blkio", "devices", "freezer":
					if _, ok := l.V1[o]; !ok {
						l.V1[o] = mnt
					}
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cgroups: read mountinfo: %w", err)
	}
	if self == nil {
		return l, nil
	}
	sc = newScanner(self)
	for sc.Scan() {
		// hierarchy-id:controller,list:path; "0::path" is cgroup2.
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 || parts[0] == "0" {
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			l.V1Self[c] = parts[2]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cgroups: read the process's cgroup file: %w", err)
	}
	return l, nil
}

func newScanner(r io.Reader) *bufio.Scanner {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return sc
}

// UnescapeMountinfo undoes the octal escapes (\040 for a space, ...) of a
// /proc/*/mountinfo field such as a mount point.
func UnescapeMountinfo(s string) string {
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

// V2Controllers lists the controllers the cgroup2 hierarchy's root offers
// (its cgroup.controllers file); empty when there is none or it cannot be
// read. A hybrid host's "unified" tree usually offers none of memory, cpu
// and pids: they are bound to v1.
func (l *Layout) V2Controllers() map[string]bool {
	m := map[string]bool{}
	if l.V2 == "" {
		return m
	}
	b, err := os.ReadFile(filepath.Join(l.V2, "cgroup.controllers"))
	if err != nil {
		return m
	}
	for _, c := range strings.Fields(string(b)) {
		m[c] = true
	}
	return m
}

// hasV1 reports whether any of the v1 controllers a cgroup joins is mounted.
func (l *Layout) hasV1() bool {
	for _, c := range v1Controllers {
		if _, ok := l.V1[c]; ok {
			return true
		}
	}
	return false
}

// Resolve turns Auto into the hierarchy New would use for lim; any other
// mode is returned as it is. Auto picks:
//   - with limits, the cgroup2 hierarchy when it offers every controller
//     they need, else the v1 controllers when they do (a hybrid host mounts
//     memory, cpu and pids as v1 beside a cgroup2 tree that lacks them),
//     else it fails;
//   - without limits, v1 when memory, cpu or pids is mounted as v1, else
//     cgroup2, else None (nothing mounted).
func (l *Layout) Resolve(mode Mode, lim Limits) (Mode, error) {
	if mode != Auto {
		return mode, nil
	}
	need := lim.Controllers()
	if l.V2 == "" && !l.hasV1() {
		if len(need) > 0 {
			return 0, errors.New("cgroups: no cgroup hierarchy is mounted, so limits cannot be set")
		}
		return None, nil
	}
	if len(need) == 0 {
		if l.hasV1() {
			return V1, nil
		}
		return V2, nil
	}
	have2 := l.V2Controllers()
	all2, all1 := l.V2 != "", true
	for _, c := range need {
		all2 = all2 && have2[c]
		_, ok := l.V1[c]
		all1 = all1 && ok
	}
	switch {
	case all2:
		return V2, nil
	case all1:
		return V1, nil
	}
	return 0, fmt.Errorf("cgroups: neither the cgroup2 hierarchy nor the v1 controllers offer %s", strings.Join(need, ", "))
}
