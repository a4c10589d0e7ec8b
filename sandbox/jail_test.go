package sandbox

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// jailReport is what the jailed test child finds about itself.
type jailReport struct {
	UID, GID, EUID, Pid int
	Groups              []int
	RootEntries         []string
	WriteRootErr        string
	RegainRootErr       string
	ProcErr             string
	CapEff              string
	KVMOpen             bool
	SeccompAfter        bool
}

func jailChildMain() int {
	spec, err := JailChild()
	if err != nil || spec == nil {
		fmt.Fprintln(os.Stderr, "JailChild:", spec, err)
		return 97
	}
	// Something opened before entering stays usable, like /dev/kvm.
	keep, err := os.Open("/proc/self/status")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 96
	}
	if err := spec.Enter(); err != nil {
		fmt.Fprintln(os.Stderr, "Enter:", err)
		return 95
	}
	var r jailReport
	r.UID, r.GID, r.EUID, r.Pid = os.Getuid(), os.Getgid(), os.Geteuid(), os.Getpid()
	r.Groups, _ = os.Getgroups()
	ents, _ := os.ReadDir("/")
	for _, e := range ents {
		r.RootEntries = append(r.RootEntries, e.Name())
	}
	if err := os.WriteFile("/written", []byte("x"), 0o644); err != nil {
		r.WriteRootErr = err.Error()
	}
	if err := syscall.Setuid(0); err != nil {
		r.RegainRootErr = err.Error()
	}
	if _, err := os.Stat("/proc/self"); err != nil {
		r.ProcErr = err.Error()
	}
	st, _ := io.ReadAll(keep) // the fd opened before the pivot still reads
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			r.CapEff = strings.TrimSpace(v)
		}
	}
	r.KVMOpen = len(st) > 0
	// Unprivileged and jailed, the VMM still installs its filter.
	r.SeccompAfter = InstallVMM(ModeKill, Devices{}) == nil
	b, _ := json.Marshal(r)
	os.Stdout.Write(append(b, '\n'))
	// Wait for the parent to look at us from outside, then end.
	var one [1]byte
	os.Stdin.Read(one[:])
	return 0
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("SKIP: the jail needs root (namespaces, pivot_root, cgroups)")
	}
}

func TestJail(t *testing.T) {
	needRoot(t)
	root := filepath.Join(t.TempDir(), "jail") // created by StartJailed
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdinW.Close()
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdoutR.Close()
	var stderr bytes.Buffer
	errR, errW, _ := os.Pipe()
	go io.Copy(&stderr, errR)
	cfg := JailConfig{Root: root, UID: Nobody, GID: Nobody,
		Limits: Limits{MemoryBytes: 96 << 20, CPUs: 1.5, Pids: 64}}
	j, err := StartJailed(cfg, "/proc/self/exe", []string{"sandbox.test", "-test.run=^$"},
		stdinR, stdoutW, errW, append(os.Environ(), childEnv+"=jail"))
	stdinR.Close()
	stdoutW.Close()
	errW.Close()
	if err != nil {
		t.Fatal(err)
	}
	line := make(chan []byte, 1)
	go func() {
		b := make([]byte, 4096)
		n, _ := stdoutR.Read(b)
		line <- b[:n]
	}()
	var rep jailReport
	select {
	case b := <-line:
		if err := json.Unmarshal(b, &rep); err != nil {
			stdinW.Close()
			j.Wait()
			t.Fatalf("child report %q: %v; stderr:\n%s", b, err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		j.Signal(syscall.SIGKILL)
		j.Wait()
		t.Fatalf("no report from the jailed child; stderr:\n%s", stderr.String())
	}
	pid := j.Pid()

	// From outside: other namespaces, the root, the cgroups.
	for _, ns := range []string{"mnt", "pid", "net", "ipc", "uts"} {
		mine, err1 := os.Readlink("/proc/self/ns/" + ns)
		theirs, err2 := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", pid, ns))
		if err1 != nil || err2 != nil || mine == theirs {
			t.Errorf("%s namespace: ours %q, the child's %q (%v %v)", ns, mine, theirs, err1, err2)
		}
	}
	// The child's "/" is the jail directory: same device and inode.
	theirRoot, err1 := os.Stat(fmt.Sprintf("/proc/%d/root/", pid))
	jailDir, err2 := os.Stat(root)
	if err1 != nil || err2 != nil || !os.SameFile(theirRoot, jailDir) {
		t.Errorf("the child's root is not %s (%v, %v)", root, err1, err2)
	}
	status, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if !strings.Contains(string(status), "\nSeccomp:\t2") || !strings.Contains(string(status), "\nNoNewPrivs:\t1") {
		t.Errorf("child is not under a seccomp filter with no_new_privs:\n%s", status)
	}
	dirs := j.CgroupDirs()
	if len(dirs) == 0 {
		t.Error("no cgroup was made for the limits")
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	for _, d := range dirs {
		procs, _ := os.ReadFile(filepath.Join(d, "cgroup.procs"))
		if !strings.Contains(string(procs), strconv.Itoa(pid)) {
			t.Errorf("child %d not in %s (procs %q; /proc cgroup %q)", pid, d, procs, cg)
		}
		for file, want := range map[string]string{
			"memory.limit_in_bytes": strconv.Itoa(96 << 20), "memory.max": strconv.Itoa(96 << 20),
			"cpu.cfs_quota_us": "150000", "cpu.max": "150000 100000", "pids.max": "64",
		} {
			if b, err := os.ReadFile(filepath.Join(d, file)); err == nil && strings.TrimSpace(string(b)) != want {
				t.Errorf("%s/%s = %q, want %q", d, file, strings.TrimSpace(string(b)), want)
			}
		}
	}

	// From inside.
	if rep.UID != Nobody || rep.EUID != Nobody || rep.GID != Nobody || len(rep.Groups) != 0 {
		t.Errorf("child runs as uid %d euid %d gid %d groups %v", rep.UID, rep.EUID, rep.GID, rep.Groups)
	}
	if rep.Pid != 1 {
		t.Errorf("child's pid inside is %d, want 1 (a new PID namespace)", rep.Pid)
	}
	if len(rep.RootEntries) != 0 {
		t.Errorf("the jail root holds %v, want nothing", rep.RootEntries)
	}
	if rep.WriteRootErr == "" || rep.RegainRootErr == "" || rep.ProcErr == "" {
		t.Errorf("write / err %q, setuid(0) err %q, /proc err %q: all should fail", rep.WriteRootErr, rep.RegainRootErr, rep.ProcErr)
	}
	if rep.CapEff != "0000000000000000" {
		t.Errorf("child's effective capabilities %q, want none", rep.CapEff)
	}
	if !rep.KVMOpen || !rep.SeccompAfter {
		t.Errorf("fd opened before the jail readable: %v; seccomp installed inside: %v", rep.KVMOpen, rep.SeccompAfter)
	}

	stdinW.Close() // let it end
	st, err := j.Wait()
	if err != nil {
		t.Errorf("Wait: %v", err)
	}
	if st.ExitCode() != 0 {
		t.Errorf("child exit %v; stderr:\n%s", st, stderr.String())
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("cgroup %s left behind (%v)", d, err)
		}
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("jail root %s, created for the jail, left behind (%v)", root, err)
	}
}

func TestJailConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		cfg  JailConfig
		want string
	}{
		{JailConfig{}, "no root"},
		{JailConfig{Root: "/"}, "must not be /"},
		{JailConfig{Root: "/etc/hostname"}, "not a directory"},
		{JailConfig{Root: t.TempDir(), UID: -1}, "negative"},
		{JailConfig{Root: t.TempDir(), Cgroup: CgroupNone, Limits: Limits{Pids: 10}}, "cgroup mode none"},
	} {
		_, err := StartJailed(tc.cfg, "/bin/true", []string{"true"}, nil, nil, nil, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err %v, want %q", tc.cfg, err, tc.want)
		}
	}
}

func TestJailChildOutsideAJail(t *testing.T) {
	if s, err := JailChild(); s != nil || err != nil {
		t.Errorf("JailChild in a plain process = %v, %v", s, err)
	}
	t.Setenv(JailEnv, "{not json")
	if _, err := JailChild(); err == nil {
		t.Error("a bad spec was accepted")
	}
	t.Setenv(JailEnv, `{"root":"/x","sync_fd":1}`)
	if _, err := JailChild(); err == nil {
		t.Error("sync fd 1 was accepted")
	}
}

// TestJailWithoutLimits checks that a jail with no limits makes no
// cgroup unless v2 is asked for (internal/cgroup tests the cgroups).
func TestJailWithoutLimits(t *testing.T) {
	needRoot(t)
	for _, mode := range []CgroupMode{CgroupAuto, CgroupV1, CgroupNone} {
		j, err := StartJailed(JailConfig{Root: t.TempDir(), Cgroup: mode}, "/bin/true", []string{"true"}, nil, nil, nil, nil)
		if err != nil {
			t.Fatalf("%v: %v", mode, err)
		}
		if d := j.CgroupDirs(); len(d) != 0 {
			t.Errorf("%v without limits made cgroups %v", mode, d)
		}
		if _, err := j.Wait(); err != nil {
			t.Errorf("%v: %v", mode, err)
		}
	}
}

var _ = unix.CLONE_NEWNS
