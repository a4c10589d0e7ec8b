package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microvm/microvm/container"
	"github.com/microvm/microvm/images/rootfs"
)

// TestMain makes this test binary a valid container init helper too (an
// in-process `container run` re-executes /proc/self/exe, which here is the
// test binary) and a stand-in VM process.
func TestMain(m *testing.M) {
	container.Init()
	runHolder() // a stand-in VM process for the ps/stop/kill tests (vms_test.go)
	os.Exit(m.Run())
}

// microvmBin is the built binary (`make test` sets MICROVM_BIN). Commands
// that start containers run it as a subprocess: the container init is a
// re-exec of the binary, which a test binary is not.
func microvmBin(t *testing.T) string {
	t.Helper()
	b := os.Getenv("MICROVM_BIN")
	if b == "" {
		t.Skip("SKIPPED LOUDLY: MICROVM_BIN is not set (make test sets it to bin/microvm)")
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: containers need root")
	}
	return b
}

func buildRootfs(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "rootfs")
	if err := rootfs.Build(dir, rootfs.Options{}); err != nil {
		t.Skipf("SKIPPED LOUDLY: no busybox rootfs (make deps installs busybox-static): %v", err)
	}
	return dir
}

func runBin(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	return code, out.String(), errb.String()
}

func TestContainerRunStatuses(t *testing.T) {
	bin := microvmBin(t)
	rfs := buildRootfs(t)
	empty := t.TempDir()
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"status passes through", []string{"--", "sh", "-c", "echo hi; exit 7"}, 7, "hi\n", ""},
		{"pid 1 and hostname", []string{"--hostname", "box", "--", "sh", "-c", "echo $$ $(hostname)"}, 0, "1 box\n", ""},
		{"not found", []string{"--", "no-such-command"}, 127, "", "executable file not found"},
		{"cannot invoke", []string{"--", "/etc/passwd"}, 126, "", "permission denied"},
		{"memory limit enforced", []string{"--memory", "16M", "--", "sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"}, 137, "", ""},
		{"own network namespace", []string{"--net", "--", "sh", "-c", "ls /sys/class/net"}, 0, "lo\n", ""},
		{"runc runtime", []string{"--runtime", "runc", "--", "sh", "-c", "exit 3"}, 3, "", ""},
		{"crun runtime", []string{"--runtime", "crun", "--", "sh", "-c", "echo $$"}, 0, "1\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"container", "run", "--rootfs", rfs}, tc.args...)
			code, out, errs := runBin(t, bin, args...)
			if code != tc.code {
				t.Errorf("status %d, want %d (stderr %q)", code, tc.code, errs)
			}
			if tc.stdout != "" && out != tc.stdout {
				t.Errorf("stdout %q, want %q", out, tc.stdout)
			}
			if !strings.Contains(errs, tc.stderr) {
				t.Errorf("stderr %q lacks %q", errs, tc.stderr)
			}
		})
	}
	t.Run("bad rootfs", func(t *testing.T) {
		for _, r := range []string{filepath.Join(empty, "missing"), empty} {
			code, _, errs := runBin(t, bin, "container", "run", "--rootfs", r, "--", "true")
			if code != 125 || !strings.Contains(errs, "rootfs") {
				t.Errorf("rootfs %s: status %d, stderr %q", r, code, errs)
			}
		}
	})
	t.Run("json", func(t *testing.T) {
		code, out, errs := runBin(t, bin, "container", "run", "--rootfs", rfs, "--json", "--", "sh", "-c", "echo to-stderr; exec /bin/ready")
		var rep containerReport
		if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
			t.Fatalf("status %d, json %q: %v", code, out, err)
		}
		if !rep.Ready || rep.ReadyMs <= 0 || rep.ExitMs < rep.ReadyMs || rep.Runtime != "container" || !strings.Contains(errs, "to-stderr") {
			t.Errorf("report %+v, stderr %q", rep, errs)
		}
	})
}

func TestContainerUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no rootfs", []string{"container", "run", "--", "true"}, "--rootfs DIR is required"},
		{"no command", []string{"container", "run", "--rootfs", "/"}, "no command given"},
		{"bad memory", []string{"container", "run", "--rootfs", "/", "--memory", "lots", "--", "true"}, "--memory"},
		{"bad cgroup", []string{"container", "run", "--rootfs", "/", "--cgroup", "v3", "--", "true"}, "unknown cgroup mode"},
		{"bad runtime", []string{"container", "run", "--rootfs", buildRootfs(t), "--runtime", "lxc", "--", "true"}, "unknown runtime"},
		{"bundle without rootfs", []string{"container", "bundle", "/tmp/x", "--", "true"}, "--rootfs is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(t, tc.args...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Errorf("status %d, stderr %q; want %d and %q", code, stderr, exitUsage, tc.want)
			}
		})
	}
}

func TestContainerBundleAndRuntimes(t *testing.T) {
	rfs := buildRootfs(t)
	dir := filepath.Join(t.TempDir(), "b")
	if code, _, stderr := run(t, "container", "bundle", dir, "--rootfs", rfs, "--memory", "32M", "--", "/bin/ready"); code != 0 {
		t.Fatalf("bundle: %d %s", code, stderr)
	}
	c, err := rootfs.ReadConfig(dir)
	if err != nil || c.Process.Args[0] != "/bin/ready" || *c.Linux.Resources.Memory.Limit != 32<<20 || !filepath.IsAbs(c.Root.Path) {
		t.Fatalf("bundle config %+v, %v", c, err)
	}
	code, out, _ := run(t, "container", "runtimes", "--json")
	var rows []struct {
		Name      string `json:"name"`
		Available bool   `json:"available"`
		Why       string `json:"why"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil || code != 0 || len(rows) != 5 {
		t.Fatalf("runtimes: %d %q %v", code, out, err)
	}
	for _, r := range rows {
		if !r.Available && r.Why == "" {
			t.Errorf("%s not available without a reason", r.Name)
		}
	}
}

// TestContainerRunInProcess runs `container run` through the in-process
// app (the re-exec lands in TestMain's container.Init).
func TestContainerRunInProcess(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SKIPPED LOUDLY: containers need root")
	}
	rfs := buildRootfs(t)
	code, out, stderr := run(t, "container", "run", "--rootfs", rfs, "--", "sh", "-c", "echo inside; exit 5")
	if code != 5 || out != "inside\n" {
		t.Errorf("status %d stdout %q stderr %q; want 5 and \"inside\"", code, out, stderr)
	}
}
