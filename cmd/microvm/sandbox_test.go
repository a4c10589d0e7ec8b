package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sbBin is the built binary (make test sets MICROVM_BIN). Seccomp is
// process-wide and the jail re-executes the binary, so these tests run the
// real thing in child processes.
func sbBin(t *testing.T) string {
	t.Helper()
	needKVM(t)
	bin := os.Getenv("MICROVM_BIN")
	if bin == "" {
		t.Skip("SKIP: MICROVM_BIN is not set (make test builds bin/microvm and sets it)")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("MICROVM_BIN: %v", err)
	}
	return bin
}

type sbResult struct {
	code           int
	signal         syscall.Signal
	stdout, stderr string
	took           time.Duration
}

// sbRun runs microvm with args, killing it after limit.
func sbRun(t *testing.T, limit time.Duration, args ...string) sbResult {
	t.Helper()
	cmd := exec.Command(sbBin(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(limit, func() { cmd.Process.Kill() })
	cmd.Wait()
	timer.Stop()
	r := sbResult{stdout: out.String(), stderr: errb.String(), took: time.Since(start)}
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	r.code = ws.ExitStatus()
	if ws.Signaled() {
		r.signal = ws.Signal()
	}
	return r
}

// TestHostileCLI boots the hostile guest in every mode through `microvm
// boot`, with the seccomp filter (the default) and without: each ends
// with the status and message the README gives, on its own (not by
// --timeout), and nothing is killed by the filter.
func TestHostileCLI(t *testing.T) {
	sbBin(t)
	for _, tc := range []struct {
		mode    string
		extra   []string
		code    int
		stderr  []string
		stdout  string
		timeout time.Duration
		noOff   bool // only with the filter (slow)
	}{
		{mode: "triple", code: exitGuestCrash, stderr: []string{"triple-faulted", "0f 0b|KVM reset the vCPU", "hostile triple: ud2 with no IDT"}},
		{mode: "ports", code: 0, stdout: "hostile ports: 0 reads did not return all ones"},
		{mode: "hltif", code: 0, stderr: []string{"halted with interrupts enabled"}},
		{mode: "flood,flood=1", code: 0, timeout: 3 * time.Minute, noOff: true},
		{mode: "range", code: exitGuestRange, stderr: []string{"guest exit status 1000 is out of range"}},
		{mode: "pagetables", code: exitGuestCrash, stderr: []string{"triple-faulted", "clearing the PML4"}},
		{mode: "spin2", extra: []string{"--cpus", "2"}, code: 7, stdout: "vcpu 0 exits while vcpu 1 spins"},
	} {
		for _, seccomp := range []string{"on", "off"} {
			if seccomp == "off" && tc.noOff {
				continue
			}
			t.Run(strings.Split(tc.mode, ",")[0]+"/seccomp="+seccomp, func(t *testing.T) {
				timeout := tc.timeout
				if timeout == 0 {
					timeout = 30 * time.Second
				}
				args := append([]string{"boot", "--guest", "hostile", "--cmdline", "mode=" + tc.mode,
					"--seccomp=" + seccomp, "--timeout", timeout.String()}, tc.extra...)
				r := sbRun(t, timeout+30*time.Second, args...)
				t.Logf("mode=%s seccomp=%s: status %d in %v", tc.mode, seccomp, r.code, r.took.Round(time.Millisecond))
				if r.signal != 0 {
					t.Fatalf("microvm was killed by %v (a system call off the seccomp allowlist?); stderr:\n%s", r.signal, r.stderr)
				}
				if r.code != tc.code {
					t.Fatalf("status %d, want %d; stderr:\n%s", r.code, tc.code, sbTail(r.stderr))
				}
				for _, want := range tc.stderr {
					if !containsOrMatches(r.stderr, want) {
						t.Errorf("stderr lacks %q:\n%s", want, sbTail(r.stderr))
					}
				}
				if tc.stdout != "" && !strings.Contains(r.stdout, tc.stdout) {
					t.Errorf("console lacks %q:\n%s", tc.stdout, sbTail(r.stdout))
				}
				if strings.HasPrefix(tc.mode, "flood") && strings.Count(r.stdout, "x") != 1<<20 {
					t.Errorf("console carried %d bytes of the flood, want 1 MiB", strings.Count(r.stdout, "x"))
				}
			})
		}
	}
}

// TestVirtioUnderSeccomp drives the virtio guest's disk, entropy and
// network devices with the filter on: the device backends' run-time calls
// (pread64/pwrite64/fsync, getrandom, tap I/O through the poller) are on
// the list. No peer answers on the tap, so the guest ends with its "no frame
// received" status (32) after the disk and rng checks passed.
func TestVirtioUnderSeccomp(t *testing.T) {
	sbBin(t)
	if os.Geteuid() != 0 {
		t.Skip("SKIP: a tap needs CAP_NET_ADMIN")
	}
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	tap := fmt.Sprintf("sbx%d", os.Getpid()%100000)
	r := sbRun(t, 3*time.Minute, "boot", "--guest", "virtio", "--disk", disk, "--rng", "--net", "tap="+tap, "--timeout", "150s")
	if r.signal != 0 {
		t.Fatalf("killed by %v: a device's system call is off the allowlist; stderr:\n%s", r.signal, r.stderr)
	}
	for _, want := range []string{"blk: sector 1 written, flushed and read back ok", "rng: 16 bytes", "net: sent a 60-byte broadcast frame"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("console lacks %q:\n%s", want, r.stdout)
		}
	}
	if r.code != 32 {
		t.Errorf("status %d, want 32 (no frame came back); stderr:\n%s", r.code, sbTail(r.stderr))
	}
}

func sbTail(s string) string {
	if len(s) > 2000 {
		return "…" + s[len(s)-2000:]
	}
	return s
}

// sbProcStatus returns the value of a /proc/<pid>/status field.
func sbProcStatus(pid int, field string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ""
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// sbStartSpin starts microvm on a guest that spins until --timeout.
func sbStartSpin(t *testing.T, extra ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	spin := filepath.Join(t.TempDir(), "spin.bin")
	if err := os.WriteFile(spin, []byte{0xeb, 0xfe}, 0o644); err != nil {
		t.Fatal(err)
	}
	args := append([]string{"boot", spin, "--format", "flat", "--timeout", "20s", "-q"}, extra...)
	cmd := exec.Command(sbBin(t), args...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, &errb
}

// waitFor polls cond for up to 10 s.
func sbWaitFor(cond func() bool) bool {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}

// TestSeccompInstalled checks from outside that a running `microvm boot`
// is under one seccomp filter with no_new_privs, and is not with
// --seccomp=off; and that SIGTERM still ends it cleanly under the filter.
func TestSeccompInstalled(t *testing.T) {
	sbBin(t)
	for _, tc := range []struct {
		flag             string
		seccomp, filters string
	}{
		{"", "2", "1"},
		{"--seccomp=off", "0", "0"},
	} {
		t.Run("flag="+tc.flag, func(t *testing.T) {
			var extra []string
			if tc.flag != "" {
				extra = append(extra, tc.flag)
			}
			cmd, errb := sbStartSpin(t, extra...)
			pid := cmd.Process.Pid
			// The filter goes on once the VM is built, right before it runs;
			// wait until the guest spins (a vCPU thread exists).
			if !sbWaitFor(func() bool {
				n, _ := strconv.Atoi(sbProcStatus(pid, "Threads"))
				return n >= 2 && sbProcStatus(pid, "Seccomp") == tc.seccomp
			}) {
				t.Errorf("Seccomp: %q, want %q", sbProcStatus(pid, "Seccomp"), tc.seccomp)
			}
			time.Sleep(200 * time.Millisecond)
			if got := sbProcStatus(pid, "Seccomp"); got != tc.seccomp {
				t.Errorf("Seccomp: %q, want %q", got, tc.seccomp)
			}
			if got := sbProcStatus(pid, "Seccomp_filters"); got != tc.filters {
				t.Errorf("Seccomp_filters: %q, want %q", got, tc.filters)
			}
			if tc.seccomp == "2" && sbProcStatus(pid, "NoNewPrivs") != "1" {
				t.Errorf("NoNewPrivs: %q, want 1", sbProcStatus(pid, "NoNewPrivs"))
			}
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
			if code := cmd.ProcessState.ExitCode(); code != exitInterrupted {
				t.Errorf("after SIGTERM: %v, want status %d; stderr:\n%s", cmd.ProcessState, exitInterrupted, errb)
			}
		})
	}
}

// TestJailCLI boots jailed: the status and the console pass through; from
// outside the VMM is in new namespaces, rooted in the jail directory, runs
// as nobody with no capabilities under seccomp, in a cgroup with limits;
// and everything is cleaned up afterwards.
func TestJailCLI(t *testing.T) {
	sbBin(t)
	if os.Geteuid() != 0 {
		t.Skip("SKIP: --jail needs root")
	}
	t.Run("status and console pass through", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "jail")
		r := sbRun(t, time.Minute, "boot", "--jail", dir, "--guest", "exit", "--cmdline", "42")
		if r.code != 42 || !strings.Contains(r.stdout, "exit: status 42") {
			t.Errorf("status %d (signal %v), console %q, stderr:\n%s", r.code, r.signal, r.stdout, r.stderr)
		}
		r = sbRun(t, time.Minute, "boot", "--jail", dir, "--json", "--guest", "hello", "--cmdline", "in=jail")
		if r.code != 0 || !strings.Contains(r.stderr, "Hello from the microvm tiny guest!") ||
			!strings.Contains(r.stdout, `"reason": "exit"`) || !strings.Contains(r.stdout, `"host_kind": "`) || strings.Contains(r.stdout, `"host_kind": "unknown"`) {
			t.Errorf("status %d, stdout %q, stderr:\n%s", r.code, r.stdout, r.stderr)
		}
		if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the jail directory microvm created is left behind (%v)", err)
		}
		// The ready notification (microvm bench's MICROVM_READY_FD) too.
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer pr.Close()
		cmd := exec.Command(sbBin(t), "boot", "--jail", dir, "--guest", "ready", "-q")
		cmd.ExtraFiles = []*os.File{pw}
		cmd.Env = append(os.Environ(), "MICROVM_READY_FD=3")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pw.Close()
		got, _ := io.ReadAll(pr)
		if err := cmd.Wait(); err != nil || !bytes.Equal(got, []byte{1}) {
			t.Errorf("jailed ready guest: %v, ready-fd got %q, want one byte", err, got)
		}
		r = sbRun(t, time.Minute, "boot", "--jail", dir, "--guest", "hostile", "--cmdline", "mode=triple")
		if r.code != exitGuestCrash || !strings.Contains(r.stderr, "triple-faulted") {
			t.Errorf("jailed triple fault: status %d, stderr:\n%s", r.code, r.stderr)
		}
	})
	t.Run("a disk opened before entering", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "jail")
		disk := filepath.Join(t.TempDir(), "disk.img")
		if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
			t.Fatal(err)
		}
		r := sbRun(t, 2*time.Minute, "boot", "--jail", dir, "--guest", "virtio", "--disk", disk, "--timeout", "90s")
		if r.code != 0 || !strings.Contains(r.stdout, "blk: sector 1 written, flushed and read back ok") {
			t.Errorf("jailed virtio disk: status %d (signal %v), console:\n%s\nstderr:\n%s", r.code, r.signal, sbTail(r.stdout), sbTail(r.stderr))
		}
		if r := sbRun(t, time.Minute, "boot", "--jail", dir, "--net", "tap=x0"); r.code != exitUsage {
			t.Errorf("--jail with --net: status %d, want %d", r.code, exitUsage)
		}
	})
	t.Run("inspected from outside", func(t *testing.T) {
		dir := t.TempDir() // exists: microvm must leave it
		cmd, errb := sbStartSpin(t, "--jail", dir, "--uid", "65534", "--gid", "65533", "--jail-memory", "200M", "--jail-cpus", "1", "--jail-pids", "100")
		var child int
		if !sbWaitFor(func() bool {
			// The jailed VMM is a child of one of the parent's threads.
			files, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", cmd.Process.Pid))
			for _, f := range files {
				b, _ := os.ReadFile(f)
				if f := strings.Fields(string(b)); len(f) > 0 {
					child, _ = strconv.Atoi(f[0])
				}
			}
			return child > 0 && sbProcStatus(child, "Seccomp") == "2"
		}) {
			t.Fatalf("no jailed child under seccomp found (child %d); stderr:\n%s", child, errb)
		}
		for _, ns := range []string{"mnt", "pid", "net", "ipc", "uts"} {
			mine, _ := os.Readlink("/proc/self/ns/" + ns)
			theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/%s", child, ns))
			if err != nil || mine == theirs {
				t.Errorf("%s namespace not new: %q vs ours %q (%v)", ns, theirs, mine, err)
			}
		}
		rootSt, err1 := os.Stat(fmt.Sprintf("/proc/%d/root/", child))
		dirSt, err2 := os.Stat(dir)
		if err1 != nil || err2 != nil || !os.SameFile(rootSt, dirSt) {
			t.Errorf("the VMM's root is not %s (%v %v)", dir, err1, err2)
		}
		if uid := strings.Fields(sbProcStatus(child, "Uid")); len(uid) != 4 || uid[0] != "65534" || uid[1] != "65534" || uid[2] != "65534" {
			t.Errorf("Uid: %v, want 65534 everywhere", uid)
		}
		if gid := strings.Fields(sbProcStatus(child, "Gid")); len(gid) != 4 || gid[0] != "65533" {
			t.Errorf("Gid: %v, want 65533", gid)
		}
		if capEff := sbProcStatus(child, "CapEff"); capEff != "0000000000000000" {
			t.Errorf("CapEff %s, want none", capEff)
		}
		if nspid := strings.Fields(sbProcStatus(child, "NSpid")); len(nspid) != 2 || nspid[1] != "1" {
			t.Errorf("NSpid %v: want pid 1 in its own PID namespace", nspid)
		}
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", child))
		if !strings.Contains(string(cg), "microvm-jail-") {
			t.Errorf("the VMM is in no microvm-jail cgroup:\n%s", cg)
		}
		var cgDirs []string
		limits := 0 // limit files found and checked
		for _, l := range strings.Split(strings.TrimSpace(string(cg)), "\n") {
			parts := strings.SplitN(l, ":", 3)
			if len(parts) != 3 || !strings.Contains(parts[2], "microvm-jail-") {
				continue
			}
			var dirs []string
			if parts[0] == "0" { // cgroup2: hybrid or pure
				dirs = []string{filepath.Join("/sys/fs/cgroup/unified", parts[2]), filepath.Join("/sys/fs/cgroup", parts[2])}
			}
			for _, c := range strings.Split(parts[1], ",") {
				if c != "" {
					dirs = append(dirs, filepath.Join("/sys/fs/cgroup", c, parts[2]))
				}
			}
			for _, d := range dirs {
				if _, err := os.Stat(d); err != nil {
					continue
				}
				cgDirs = append(cgDirs, d)
				for file, want := range map[string]string{
					"memory.limit_in_bytes": "209715200", "cpu.cfs_quota_us": "100000", "pids.max": "100",
					"memory.max": "209715200", "cpu.max": "100000 100000",
				} {
					b, err := os.ReadFile(filepath.Join(d, file))
					if err != nil {
						continue
					}
					limits++
					if got := strings.TrimSpace(string(b)); got != want {
						t.Errorf("%s/%s = %s, want %s", d, file, got, want)
					}
				}
			}
		}
		if limits < 3 {
			t.Errorf("found %d of the 3 limits (memory, cpu, pids) in the VMM's cgroups %v:\n%s", limits, cgDirs, cg)
		}
		cmd.Process.Signal(syscall.SIGTERM) // passed on to the jailed VMM
		cmd.Wait()
		if code := cmd.ProcessState.ExitCode(); code != exitInterrupted {
			t.Errorf("after SIGTERM: %v, want %d; stderr:\n%s", cmd.ProcessState, exitInterrupted, errb)
		}
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", child)); err == nil {
			t.Errorf("jailed VMM %d still running", child)
		}
		for _, d := range cgDirs {
			if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cgroup %s left behind (%v)", d, err)
			}
		}
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("a jail directory that existed before was removed: %v", err)
		}
	})
}

// TestSandboxFlagErrors: bad isolation flags are usage errors.
func TestSandboxFlagErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"boot", "--seccomp=maybe"}, "--seccomp"},
		{[]string{"boot", "--uid", "1000"}, "--uid needs --jail"},
		{[]string{"boot", "--jail-memory", "1G"}, "--jail-memory needs --jail"},
		{[]string{"boot", "--jail", "/tmp/x", "--jail-memory", "1K"}, "--jail-memory"},
		{[]string{"boot", "--jail", "/tmp/x", "--jail-memory", "lots"}, "--jail-memory"},
		{[]string{"boot", "--jail", "/tmp/x", "--jail-cpus", "-1"}, "--jail-cpus"},
		{[]string{"boot", "--jail", "/tmp/x", "--jail-pids", "3"}, "--jail-pids"},
		{[]string{"boot", "--jail", "/tmp/x", "--jail-cgroup", "v3"}, "--jail-cgroup"},
		{[]string{"boot", "--jail", "/tmp/x", "--uid", "-5"}, "--uid"},
	} {
		code, _, stderr := run(t, tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: status %d, stderr %q; want %d mentioning %q", tc.args, code, stderr, exitUsage, tc.want)
		}
	}
	code, out, _ := run(t, "boot", "--help")
	if code != 0 {
		t.Fatalf("boot --help: status %d", code)
	}
	for _, want := range []string{"--seccomp", "--jail DIR", "--jail-memory", "--uid", "seccomp allowlist", "microvm boot --jail"} {
		if !strings.Contains(out, want) {
			t.Errorf("boot --help lacks %q", want)
		}
	}
}
