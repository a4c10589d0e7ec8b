package cgroup

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// hybrid is a hybrid host's mountinfo: v1 controllers beside a cgroup2
// "unified" tree (the layout of the hosts this project runs on).
const hybrid = `25 30 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
26 25 0:24 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
27 25 0:25 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
28 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
29 25 0:27 / /sys/fs/cgroup/with\040space rw - cgroup cgroup rw,pids
30 25 0:28 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
31 25 0:29 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
garbage line
32 25 0:30 / /x - cgroup
`

func TestParseLayout(t *testing.T) {
	for _, tc := range []struct {
		name, mountinfo, self string
		nilSelf               bool
		want                  Layout
	}{
		{
			name: "hybrid", mountinfo: hybrid,
			self: "9:name=systemd:/\n4:memory:/a/b\n3:cpu,cpuacct:/\n2:pids:/p\nbad\n0::/x\n",
			want: Layout{
				V2: "/sys/fs/cgroup/unified",
				V1: map[string]string{
					"memory": "/sys/fs/cgroup/memory", "cpu": "/sys/fs/cgroup/cpu,cpuacct",
					"cpuacct": "/sys/fs/cgroup/cpu,cpuacct", "pids": "/sys/fs/cgroup/with space",
					"freezer": "/sys/fs/cgroup/freezer",
				},
				V1Self: map[string]string{"name=systemd": "/", "memory": "/a/b", "cpu": "/", "cpuacct": "/", "pids": "/p"},
			},
		},
		{
			name:      "pure v2",
			mountinfo: "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
			self:      "0::/user.slice\n",
			want:      Layout{V2: "/sys/fs/cgroup", V1: map[string]string{}, V1Self: map[string]string{}},
		},
		{
			name:      "first mount wins",
			mountinfo: "1 0 0:1 / /a - cgroup2 cgroup2 rw\n2 0 0:2 / /b - cgroup2 cgroup2 rw\n3 0 0:3 / /m1 - cgroup cgroup rw,memory\n4 0 0:4 / /m2 - cgroup cgroup rw,memory\n",
			nilSelf:   true,
			want:      Layout{V2: "/a", V1: map[string]string{"memory": "/m1"}, V1Self: map[string]string{}},
		},
		{
			name: "empty",
			want: Layout{V1: map[string]string{}, V1Self: map[string]string{}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var self io.Reader
			if !tc.nilSelf {
				self = strings.NewReader(tc.self)
			}
			l, err := ParseLayout(strings.NewReader(tc.mountinfo), self)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(*l) != fmt.Sprint(tc.want) {
				t.Errorf("layout\n%+v\nwant\n%+v", *l, tc.want)
			}
		})
	}
}

func TestParseLayoutLongLine(t *testing.T) {
	long := strings.Repeat("x", 2<<20)
	if _, err := ParseLayout(strings.NewReader(long), nil); err == nil || !strings.Contains(err.Error(), "mountinfo") {
		t.Errorf("a 2 MiB mountinfo line: err %v", err)
	}
	if _, err := ParseLayout(strings.NewReader(""), strings.NewReader(long)); err == nil || !strings.Contains(err.Error(), "cgroup file") {
		t.Errorf("a 2 MiB cgroup line: err %v", err)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`a\040b`: "a b", `plain`: "plain", `\134`: `\`, `tab\011`: "tab\t",
		`a\04`: `a\04`, `\999x`: `\999x`, `end\`: `end\`, `\0401`: " 1",
	} {
		if got := UnescapeMountinfo(in); got != want {
			t.Errorf("UnescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseMode(t *testing.T) {
	for _, m := range []Mode{Auto, V1, V2, None} {
		if back, err := ParseMode(m.String()); err != nil || back != m {
			t.Errorf("round trip %v: %v %v", m, back, err)
		}
	}
	for _, s := range []string{"v3", "", "V1", "auto "} {
		if _, err := ParseMode(s); err == nil || !strings.Contains(err.Error(), "unknown cgroup mode") {
			t.Errorf("ParseMode(%q): err %v", s, err)
		}
	}
	if s := Mode(9).String(); s != "Mode(9)" {
		t.Errorf("Mode(9) = %q", s)
	}
}

func TestLimits(t *testing.T) {
	for _, tc := range []struct {
		lim   Limits
		ctrl  string
		quota int64
	}{
		{Limits{}, "", 0},
		{Limits{MemoryBytes: 1, CPUs: 1.5, Pids: 2}, "memory,cpu,pids", 150000},
		{Limits{CPUs: 0.001}, "cpu", MinCPUQuotaUS},
		{Limits{Pids: 3}, "pids", 0},
		{Limits{CPUs: math.NaN()}, "", 0},
	} {
		if c := strings.Join(tc.lim.Controllers(), ","); c != tc.ctrl {
			t.Errorf("%+v: controllers %q, want %q", tc.lim, c, tc.ctrl)
		}
		if q := tc.lim.CPUQuotaUS(); q != tc.quota {
			t.Errorf("%+v: quota %d, want %d", tc.lim, q, tc.quota)
		}
	}
}

// fakeV2 makes a directory that stands for a cgroup2 root offering ctrl.
func fakeV2(t *testing.T, ctrl string) string {
	d := t.TempDir()
	if err := os.WriteFile(filepath.Join(d, "cgroup.controllers"), []byte(ctrl+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestResolve(t *testing.T) {
	v1 := map[string]string{"memory": "/m", "cpu": "/c", "pids": "/p"}
	hyb := &Layout{V2: fakeV2(t, "hugetlb"), V1: v1}
	pure2 := &Layout{V2: fakeV2(t, "cpuset cpu io memory pids")}
	split := &Layout{V2: fakeV2(t, "memory"), V1: map[string]string{"cpu": "/c"}}
	onlyFreezer := &Layout{V1: map[string]string{"freezer": "/f"}}
	all := Limits{MemoryBytes: 1 << 20, CPUs: 1, Pids: 10}
	for _, tc := range []struct {
		name string
		l    *Layout
		mode Mode
		lim  Limits
		want Mode
		err  string
	}{
		{"explicit stays", hyb, V2, all, V2, ""},
		{"explicit none stays", hyb, None, all, None, ""},
		{"hybrid limits", hyb, Auto, all, V1, ""},
		{"hybrid no limits", hyb, Auto, Limits{}, V1, ""},
		{"pure v2 limits", pure2, Auto, all, V2, ""},
		{"pure v2 no limits", pure2, Auto, Limits{}, V2, ""},
		{"pure v1", &Layout{V1: v1}, Auto, all, V1, ""},
		{"v2 has all the limits need", split, Auto, Limits{MemoryBytes: 1 << 20}, V2, ""},
		{"v1 has all the limits need", split, Auto, Limits{CPUs: 1}, V1, ""},
		{"split across hierarchies", split, Auto, Limits{MemoryBytes: 1 << 20, CPUs: 1}, 0, "neither the cgroup2 hierarchy nor the v1 controllers offer memory, cpu"},
		{"nothing mounted", &Layout{}, Auto, Limits{}, None, ""},
		{"nothing mounted limits", &Layout{}, Auto, Limits{Pids: 5}, 0, "no cgroup hierarchy is mounted"},
		{"no usable v1", onlyFreezer, Auto, Limits{}, None, ""},
		{"no usable v1 limits", onlyFreezer, Auto, Limits{Pids: 5}, 0, "no cgroup hierarchy is mounted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := tc.l.Resolve(tc.mode, tc.lim)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("got %v, %v; want an error mentioning %q", m, err, tc.err)
				}
				return
			}
			if err != nil || m != tc.want {
				t.Errorf("got %v, %v; want %v", m, err, tc.want)
			}
		})
	}
}

// TestNewRefuses covers the refusals that come before anything is created.
func TestNewRefuses(t *testing.T) {
	hyb := &Layout{V2: fakeV2(t, "hugetlb"), V1: map[string]string{"cpu": t.TempDir()}}
	for _, tc := range []struct {
		name         string
		l            *Layout
		mode         Mode
		parent, leaf string
		lim          Limits
		err          string
	}{
		{"limits with none", hyb, None, "p", "n", Limits{Pids: 10}, "cgroup mode none"},
		{"v2 lacks the controller", hyb, V2, "p", "n", Limits{MemoryBytes: 1 << 20}, "offers no memory controller"},
		{"v1 lacks the controller", hyb, V1, "p", "n", Limits{Pids: 10}, "no cgroup v1 pids controller is mounted"},
		{"no v2", &Layout{}, V2, "p", "n", Limits{}, "no cgroup2 hierarchy is mounted"},
		{"no v1", &Layout{}, V1, "p", "n", Limits{}, "none of the v1 controllers memory, cpu, pids is mounted"},
		{"nothing for auto", &Layout{}, Auto, "p", "n", Limits{MemoryBytes: 1 << 20}, "no cgroup hierarchy is mounted"},
		{"bad mode", hyb, Mode(7), "p", "n", Limits{}, "unknown mode"},
		{"negative memory", hyb, V1, "p", "n", Limits{MemoryBytes: -1}, "negative memory"},
		{"negative pids", hyb, V1, "p", "n", Limits{Pids: -1}, "negative pids"},
		{"negative cpus", hyb, V1, "p", "n", Limits{CPUs: -1}, "CPU limit"},
		{"NaN cpus", hyb, V1, "p", "n", Limits{CPUs: math.NaN()}, "CPU limit"},
		{"infinite cpus", hyb, V1, "p", "n", Limits{CPUs: math.Inf(1)}, "CPU limit"},
		{"empty name", hyb, V1, "p", "", Limits{}, "bad cgroup name"},
		{"dotdot name", hyb, V1, "p", "..", Limits{}, "bad cgroup name"},
		{"slash name", hyb, V1, "p", "a/b", Limits{}, "bad cgroup name"},
		{"dotdot parent", hyb, V1, "a/../..", "n", Limits{}, "bad cgroup parent"},
		{"NUL parent", hyb, V1, "a\x00", "n", Limits{}, "bad cgroup parent"},
		{"self outside the mount", &Layout{V1: map[string]string{"pids": t.TempDir()}, V1Self: map[string]string{"pids": "/../.."}}, V1, "p", "n", Limits{}, "outside its mount"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cg, err := New(tc.l, Config{Mode: tc.mode, Parent: tc.parent, Name: tc.leaf, Limits: tc.lim, AllV1: true})
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("got %v, %v; want an error mentioning %q", cg.Dirs(), err, tc.err)
			}
			if cg != nil {
				t.Errorf("a cgroup came back with the error: %v", cg.Dirs())
			}
		})
	}
	// Nothing to do is not an error: no cgroup, and a nil one is inert.
	for _, tc := range []struct {
		l     *Layout
		mode  Mode
		allV1 bool
	}{{&Layout{}, Auto, true}, {hyb, None, true}, {hyb, V1, false}, {hyb, Auto, false}} {
		cg, err := New(tc.l, Config{Mode: tc.mode, Parent: "p", Name: "n", AllV1: tc.allV1})
		if cg != nil || err != nil {
			t.Errorf("%+v %v: got %v, %v; want no cgroup", tc.l, tc.mode, cg, err)
		}
		if cg.Add(1) != nil || cg.Remove() != nil || cg.Path() != "" || cg.Dirs() != nil || cg.Mode() != None {
			t.Error("a nil cgroup is not inert")
		}
	}
}

// TestNewHost creates real cgroups in each hierarchy this host mounts, puts
// a process in them, checks the limits and removes them.
func TestNewHost(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: real cgroups need root")
	}
	l, err := HostLayout()
	if err != nil {
		t.Fatal(err)
	}
	type hier struct {
		mode  Mode
		lim   Limits
		allV1 bool
	}
	var hs []hier
	if l.hasV1() {
		lim := Limits{}
		if _, ok := l.V1["memory"]; ok {
			lim.MemoryBytes = 48 << 20
		}
		if _, ok := l.V1["cpu"]; ok {
			lim.CPUs = 0.5
		}
		if _, ok := l.V1["pids"]; ok {
			lim.Pids = 64
		}
		hs = append(hs, hier{V1, lim, true}, hier{V1, Limits{}, true})
		if lim.Pids > 0 { // only the controller the limit needs
			hs = append(hs, hier{V1, Limits{Pids: 64}, false})
		}
	}
	if l.V2 != "" {
		// Only the limits whose controllers the cgroup2 root offers (a
		// hybrid host's offers none of them).
		have := l.V2Controllers()
		lim := Limits{}
		if have["memory"] {
			lim.MemoryBytes = 48 << 20
		}
		if have["cpu"] {
			lim.CPUs = 0.5
		}
		if have["pids"] {
			lim.Pids = 64
		}
		hs = append(hs, hier{V2, lim, false})
		if lim != (Limits{}) {
			hs = append(hs, hier{V2, Limits{}, false})
		}
	}
	if len(hs) == 0 {
		t.Skip("SKIPPED LOUDLY: this host mounts no cgroup hierarchy")
	}
	hs = append(hs, hier{Auto, hs[0].lim, true})
	parent := fmt.Sprintf("microvm/cgroup-test-%d", os.Getpid())
	parents := map[string]bool{}
	busyChecked := false
	defer func() { // the test's own parents; microvm/ stays (shared)
		for d := range parents {
			if err := os.Remove(d); err != nil {
				t.Errorf("remove the test's parent cgroup: %v", err)
			}
		}
	}()
	for i, h := range hs {
		t.Run(fmt.Sprintf("%v-%d", h.mode, i), func(t *testing.T) {
			name := fmt.Sprintf("leaf%d", i)
			cg, err := New(l, Config{Mode: h.mode, Parent: parent, Name: name, Limits: h.lim, AllV1: h.allV1})
			if err != nil {
				t.Fatal(err)
			}
			if cg.Mode() == V1 {
				// One leaf per mount of the controllers joined.
				join := h.lim.Controllers()
				if h.allV1 {
					join = v1Controllers
				}
				mounts := map[string]bool{}
				for _, c := range join {
					if m, ok := l.V1[c]; ok {
						mounts[m] = true
					}
				}
				if len(cg.Dirs()) != len(mounts) {
					t.Errorf("leaves %v, want one in each of %v", cg.Dirs(), mounts)
				}
			}
			if want, _ := l.Resolve(h.mode, h.lim); cg.Mode() != want {
				t.Errorf("mode %v, want %v", cg.Mode(), want)
			}
			dirs := cg.Dirs()
			if len(dirs) == 0 || cg.Path() != dirs[0] {
				t.Fatalf("dirs %v, path %q", dirs, cg.Path())
			}
			for _, d := range dirs {
				if !strings.HasSuffix(d, "/"+parent+"/"+name) {
					t.Errorf("leaf %s is not %s/%s", d, parent, name)
				}
			}
			for _, d := range dirs {
				parents[filepath.Dir(d)] = true
			}
			checkLimits(t, cg, h.lim)

			cmd := exec.Command("sleep", "30")
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			if err := cg.Add(cmd.Process.Pid); err != nil {
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatal(err)
			}
			own, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", cmd.Process.Pid))
			for _, d := range dirs {
				procs, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
				if !strings.Contains(string(procs), fmt.Sprint(cmd.Process.Pid)) {
					t.Errorf("pid %d not in %s", cmd.Process.Pid, d)
				}
			}
			if !strings.Contains(string(own), "/"+parent+"/"+name+"\n") {
				t.Errorf("/proc/pid/cgroup does not name the leaf:\n%s", own)
			}
			// A busy leaf costs a second of retries: checked once, on a
			// single leaf where there is one.
			if !busyChecked && (len(dirs) == 1 || l.V2 == "") {
				busyChecked = true
				if err := cg.Remove(); err == nil {
					t.Error("a cgroup that holds a process was removed")
				} else if len(cg.Dirs()) != len(dirs) {
					t.Errorf("after a failed Remove, dirs %v, want %v", cg.Dirs(), dirs)
				}
			}
			cmd.Process.Kill()
			cmd.Wait()
			if err := cg.Remove(); err != nil {
				t.Fatal(err)
			}
			for _, d := range dirs {
				if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s left behind (%v)", d, err)
				}
			}
			if len(cg.Dirs()) != 0 || cg.Remove() != nil {
				t.Errorf("a second Remove: dirs %v", cg.Dirs())
			}
		})
	}
}

// checkLimits reads the limit files back from cg's leaves.
func checkLimits(t *testing.T, cg *Cgroup, lim Limits) {
	t.Helper()
	want := map[string]string{}
	if cg.Mode() == V2 {
		if lim.MemoryBytes > 0 {
			want["memory.max"] = fmt.Sprint(lim.MemoryBytes)
		}
		if lim.CPUs > 0 {
			want["cpu.max"] = fmt.Sprintf("%d %d", lim.CPUQuotaUS(), CPUPeriodUS)
		}
		if lim.Pids > 0 {
			want["pids.max"] = fmt.Sprint(lim.Pids)
		}
	} else {
		if lim.MemoryBytes > 0 {
			want["memory.limit_in_bytes"] = fmt.Sprint(lim.MemoryBytes)
		}
		if lim.CPUs > 0 {
			want["cpu.cfs_quota_us"] = fmt.Sprint(lim.CPUQuotaUS())
			want["cpu.cfs_period_us"] = fmt.Sprint(CPUPeriodUS)
		}
		if lim.Pids > 0 {
			want["pids.max"] = fmt.Sprint(lim.Pids)
		}
	}
	for file, v := range want {
		found := false
		for _, d := range cg.Dirs() {
			b, err := os.ReadFile(filepath.Join(d, file))
			if err != nil {
				continue
			}
			found = true
			if got := strings.TrimSpace(string(b)); got != v {
				t.Errorf("%s/%s = %q, want %q", d, file, got, v)
			}
		}
		if !found {
			t.Errorf("no leaf of %v has %s", cg.Dirs(), file)
		}
	}
}

func FuzzParseLayout(f *testing.F) {
	f.Add(hybrid, "4:memory:/a/b\n3:cpu,cpuacct:/\n0::/\n")
	f.Add("36 31 0:33 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n", "0::/\n")
	f.Add("32 31 0:29 / /a\\040b rw - cgroup cgroup rw,cpu\n", "1:cpu:/x\n")
	f.Add(" - cgroup\n1 2 3 4 - \n", "::\n0:::\n")
	known := map[string]bool{"memory": true, "cpu": true, "cpuacct": true, "pids": true, "cpuset": true, "blkio": true, "devices": true, "freezer": true}
	f.Fuzz(func(t *testing.T, mi, self string) {
		l, err := ParseLayout(strings.NewReader(mi), strings.NewReader(self))
		if err != nil {
			if len(mi) < 1<<20 && len(self) < 1<<20 {
				t.Fatalf("short input refused: %v", err)
			}
			return
		}
		for c, mnt := range l.V1 {
			if !known[c] || mnt == "" {
				t.Errorf("v1 %q at %q", c, mnt)
			}
		}
		if l.V2 != "" && !strings.Contains(mi, "cgroup2") {
			t.Errorf("cgroup2 at %q from no cgroup2 line", l.V2)
		}
	})
}
