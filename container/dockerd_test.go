package container

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// TestPrivateDockerd starts a private dockerd, runs the busybox workload
// through the docker Engine, then stops the daemon and checks that no
// process and no mount of it is left.
func TestPrivateDockerd(t *testing.T) {
	rf := needRootfs(t)
	if _, err := exec.LookPath("dockerd"); err != nil {
		t.Skip("SKIPPED LOUDLY: dockerd is not installed (make deps installs docker.io)")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("SKIPPED LOUDLY: the docker CLI is not installed")
	}
	dir, err := os.MkdirTemp("", "mvdk-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	d, err := StartDockerd(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			d.Stop()
		}
	}()
	e := &Engine{Binary: "docker", Host: d.Host(), StateDir: dir}
	if err := e.Available(ctx); err != nil {
		t.Fatalf("Available: %v", err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		out    string
		status int
	}{
		{"echo", []string{"/bin/sh", "-c", "echo hello-docker"}, "hello-docker\n", 0},
		{"status", []string{"/bin/sh", "-c", "echo x; exit 7"}, "x\n", 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := e.Prepare(ctx, Workload{Rootfs: rf, Args: tc.args})
			if err != nil {
				t.Fatal(err)
			}
			defer func() {
				if err := l.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			var out, errb bytes.Buffer
			res, err := l.Launch(ctx, IO{Stdout: &out, Stderr: &errb})
			if err != nil {
				t.Fatalf("Launch: %v (stderr %q)", err, errb.String())
			}
			if res.Status != tc.status || out.String() != tc.out {
				t.Errorf("status %d output %q, want %d %q (stderr %q)", res.Status, out.String(), tc.status, tc.out, errb.String())
			}
		})
	}
	if err := d.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	stopped = true
	time.Sleep(200 * time.Millisecond)
	if pids := DockerdProcesses(dir); len(pids) > 0 {
		t.Errorf("processes left after Stop: %v", pids)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), dir+"/") {
		t.Errorf("mounts left under %s after Stop", dir)
	}
	if _, err := os.Stat(dir + "/d.sock"); err == nil {
		t.Error("socket left after Stop")
	}
}
