package container

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/microvm/microvm/internal/cgroup"
)

func TestRunEcho(t *testing.T) {
	r := needRootfs(t)
	var out, errb bytes.Buffer
	res, err := Run(context.Background(), Spec{
		Rootfs: r,
		Args:   []string{"sh", "-c", "echo hi; hostname; echo $$; cat /proc/self/cgroup; ls /dev; exit 7"},
		Stdout: &out, Stderr: &errb,
	})
	if err != nil {
		t.Fatalf("Run: %v (stderr %q)", err, errb.String())
	}
	lines := strings.Fields(out.String())
	if len(lines) < 3 || lines[0] != "hi" || lines[1] != "microvm" || lines[2] != "1" {
		t.Errorf("output %q: want hi, the hostname microvm and PID 1", out.String())
	}
	if !strings.Contains(out.String(), "null") || !strings.Contains(out.String(), "urandom") {
		t.Errorf("/dev lacks device nodes: %q", out.String())
	}
	if res.Status != 7 {
		t.Errorf("status %d, want 7", res.Status)
	}
}

func TestRunNotFound(t *testing.T) {
	r := needRootfs(t)
	_, err := Run(context.Background(), Spec{Rootfs: r, Args: []string{"no-such-cmd"}})
	var se *StartError
	if !errors.As(err, &se) || se.Code != ExitNotFound {
		t.Fatalf("err = %v, want StartError 127", err)
	}
	if !strings.Contains(err.Error(), "not found") {
		t.Errorf("message %q does not say not found", err)
	}
}

func TestRunReadyPipeAndTimings(t *testing.T) {
	r := needRootfs(t)
	res, err := Run(context.Background(), Spec{Rootfs: r, Args: []string{"/bin/ready"}, ReadyPipe: true, Network: true, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 0 || !res.Ready || res.ReadyAfter <= 0 || res.ReadyAfter > res.ExitAfter {
		t.Errorf("result %+v", res)
	}
	// Without the pipe, /bin/ready still exits 0 and no ready is seen.
	res, err = Run(context.Background(), Spec{Rootfs: r, Args: []string{"/bin/ready"}})
	if err != nil || res.Status != 0 || res.Ready {
		t.Errorf("no pipe: %+v, %v", res, err)
	}
}

func TestRunCgroupsAreLimitedAndRemoved(t *testing.T) {
	r := needRootfs(t)
	layout, err := cgroup.HostLayout()
	if err != nil {
		t.Fatal(err)
	}
	modes := []CgroupMode{CgroupAuto}
	if len(layout.V1) > 0 {
		modes = append(modes, CgroupV1)
	}
	if layout.V2 != "" {
		modes = append(modes, CgroupV2)
	}
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) {
			var out bytes.Buffer
			mem := int64(48 << 20)
			if mode == CgroupV2 && !layout.V2Controllers()["memory"] {
				mem = 0 // a hybrid host's cgroup2 has no memory controller
			}
			res, err := Run(context.Background(), Spec{Rootfs: r, Args: []string{"cat", "/proc/self/cgroup"}, Cgroup: mode, MemoryBytes: mem, CPUs: 0.5, Pids: 64, Stdout: &out})
			if mode == CgroupV2 && mem == 0 && err == nil {
				// Limits other than memory need controllers too; without
				// them the launch must fail clearly rather than run unlimited.
				t.Fatalf("v2 without controllers accepted cpu/pids limits: %+v", res)
			}
			if mode == CgroupV2 && mem == 0 {
				if !strings.Contains(err.Error(), "offers no") {
					t.Errorf("error %v does not explain the missing controller", err)
				}
				res, err = Run(context.Background(), Spec{Rootfs: r, Args: []string{"cat", "/proc/self/cgroup"}, Cgroup: mode, Stdout: &out})
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Cgroup == "" {
				t.Fatal("no cgroup reported")
			}
			leaf := filepath.Base(res.Cgroup)
			if !strings.Contains(out.String(), "/microvm/"+leaf) {
				t.Errorf("the workload was not in cgroup %s: /proc/self/cgroup says\n%s", leaf, out.String())
			}
			if _, err := os.Stat(res.Cgroup); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("cgroup %s still exists after the run: %v", res.Cgroup, err)
			}
		})
	}
}

func TestRunMemoryLimitKills(t *testing.T) {
	r := needRootfs(t)
	res, err := Run(context.Background(), Spec{Rootfs: r, MemoryBytes: 16 << 20,
		Args: []string{"sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 137 || res.Signal != syscall.SIGKILL {
		t.Errorf("status %d signal %v, want the OOM killer's SIGKILL (137)", res.Status, res.Signal)
	}
}

func TestRunContextCancelKills(t *testing.T) {
	r := needRootfs(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Run(ctx, Spec{Rootfs: r, Args: []string{"sleep", "30"}})
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Errorf("err %v after %v", err, time.Since(start))
	}
}

func TestRunBadSpecs(t *testing.T) {
	r := needRootfs(t)
	for _, tc := range []struct {
		name string
		spec Spec
		code int
		want string
	}{
		{"no args", Spec{Rootfs: r}, ExitLauncher, "no command"},
		{"missing rootfs", Spec{Rootfs: "/nonexistent", Args: []string{"true"}}, ExitLauncher, "no such file"},
		{"rootfs without sh", Spec{Rootfs: t.TempDir(), Args: []string{"true"}}, ExitLauncher, "no /bin/sh"},
		{"negative memory", Spec{Rootfs: r, Args: []string{"true"}, MemoryBytes: -1}, ExitLauncher, "negative"},
		{"tiny memory", Spec{Rootfs: r, Args: []string{"true"}, MemoryBytes: 1000}, ExitLauncher, "below 1 MiB"},
		{"relative dir", Spec{Rootfs: r, Args: []string{"true"}, Dir: "tmp"}, ExitLauncher, "not absolute"},
		{"missing dir", Spec{Rootfs: r, Args: []string{"true"}, Dir: "/nope"}, ExitLauncher, "working directory"},
		{"not executable", Spec{Rootfs: r, Args: []string{"/etc/passwd"}}, ExitCannotInvoke, "permission denied"},
		{"bad helper", Spec{Rootfs: r, Args: []string{"true"}, Helper: "/nonexistent/helper"}, ExitLauncher, "start init"},
		{"limits with cgroup none", Spec{Rootfs: r, Args: []string{"true"}, Cgroup: CgroupNone, MemoryBytes: 32 << 20}, ExitLauncher, "cgroup mode none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(context.Background(), tc.spec)
			var se *StartError
			if !errors.As(err, &se) || se.Code != tc.code || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want StartError %d mentioning %q", err, tc.code, tc.want)
			}
		})
	}
}
