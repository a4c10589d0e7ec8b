package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microvm/microvm/images/rootfs"
)

// busyboxBundle writes a busybox bundle whose process runs sh -c script.
func busyboxBundle(t *testing.T, script string) string {
	t.Helper()
	dir := t.TempDir()
	rfs := filepath.Join(dir, "rootfs")
	if err := rootfs.Build(rfs, rootfs.Options{}); err != nil {
		t.Skipf("SKIP: no busybox rootfs (make deps installs busybox-static): %v", err)
	}
	c, err := rootfs.NewConfig(rfs, rootfs.BundleOptions{Args: []string{"/bin/sh", "-c", script}})
	if err != nil {
		t.Fatal(err)
	}
	if err := rootfs.WriteBundle(dir, c); err != nil {
		t.Fatal(err)
	}
	return dir
}

// editConfig rewrites the bundle's config.json through edit.
func editConfig(t *testing.T, bundle string, edit func(map[string]any)) {
	t.Helper()
	p := filepath.Join(bundle, "config.json")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var c map[string]any
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	edit(c)
	if b, err = json.Marshal(c); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// ociState returns `microvm oci state ID`'s status and pid.
func ociState(t *testing.T, bin, root, id string) (string, int) {
	t.Helper()
	code, out, errs := runBin(t, bin, "oci", "--root", root, "state", id)
	if code != 0 {
		t.Fatalf("state %s: %d %s", id, code, errs)
	}
	var st struct {
		Status string `json:"status"`
		Pid    int    `json:"pid"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("state %s: %v\n%s", id, err, out)
	}
	return st.Status, st.Pid
}

// TestOCILifecycleVM drives the OCI lifecycle through the binary with a
// real VM: create (VM built, paused) → state created → start → the
// workload's output → state stopped → delete; then run with the
// workload's status passed through, and the documented errors of start
// twice, kill of a stopped container and delete of a running one.
func TestOCILifecycleVM(t *testing.T) {
	needKVM(t)
	bin := os.Getenv("MICROVM_BIN")
	if bin == "" {
		t.Skip("SKIP: MICROVM_BIN is not set (make test builds bin/microvm and sets it)")
	}
	if os.Getenv("MICROVM_KERNEL_VMLINUX") == "" {
		t.Skip("SKIP: MICROVM_KERNEL_VMLINUX is not set (make test builds the lean kernel)")
	}
	root := filepath.Join(t.TempDir(), "state")
	bundle := busyboxBundle(t, "echo hello-from-$(hostname); sleep 1; exit 3")
	out, err := os.Create(filepath.Join(t.TempDir(), "console"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	pidFile := filepath.Join(t.TempDir(), "pid")
	create := exec.Command(bin, "oci", "--root", root, "create", "--bundle", bundle, "--pid-file", pidFile, "c1")
	create.Stdout, create.Stderr = out, out // the VMM inherits them, as conmon's pipes
	t0 := time.Now()
	if err := create.Run(); err != nil {
		b, _ := os.ReadFile(out.Name())
		t.Fatalf("create: %v\n%s", err, b)
	}
	t.Logf("create (VM built, paused) took %v", time.Since(t0))
	t.Cleanup(func() { runBin(t, bin, "oci", "--root", root, "delete", "--force", "c1") })
	status, pid := ociState(t, bin, root, "c1")
	pf, _ := os.ReadFile(pidFile)
	if status != "created" || strconv.Itoa(pid) != strings.TrimSpace(string(pf)) {
		t.Fatalf("after create: status %q pid %d, pid file %q", status, pid, pf)
	}
	if b, _ := os.ReadFile(out.Name()); strings.Contains(string(b), "hello-from") {
		t.Fatal("the workload ran before start")
	}
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "delete", "c1"); code == 0 {
		t.Errorf("delete of a created container without --force succeeded: %s", errs)
	}
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "start", "c1"); code != 0 {
		t.Fatalf("start: %d %s", code, errs)
	}
	if code, _, _ := runBin(t, bin, "oci", "--root", root, "start", "c1"); code != exitOCIError {
		t.Errorf("second start: status %d, want %d", code, exitOCIError)
	}
	if s, _ := ociState(t, bin, root, "c1"); s != "running" {
		t.Errorf("after start: %q, want running", s)
	}
	if code, _, _ := runBin(t, bin, "oci", "--root", root, "delete", "c1"); code == 0 {
		t.Errorf("delete of a running container without --force succeeded")
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		if s, _ := ociState(t, bin, root, "c1"); s == "stopped" {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(out.Name())
			t.Fatalf("c1 never stopped; console:\n%s", b)
		}
		time.Sleep(50 * time.Millisecond)
	}
	b, _ := os.ReadFile(out.Name())
	if !strings.Contains(string(b), "hello-from-microvm") {
		t.Errorf("console lacks the workload's output (hostname from config.json):\n%s", b)
	}
	if code, _, _ := runBin(t, bin, "oci", "--root", root, "kill", "c1", "TERM"); code == 0 {
		t.Errorf("kill of a stopped container succeeded")
	}
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "delete", "c1"); code != 0 {
		t.Errorf("delete: %d %s", code, errs)
	}
	if _, err := os.Stat(filepath.Join(root, "c1")); !os.IsNotExist(err) {
		t.Errorf("state directory left after delete: %v", err)
	}

	// run: create + start + wait, the workload's status passed through.
	t0 = time.Now()
	code, stdout, errs := runBin(t, bin, "oci", "--root", root, "run", "--bundle", bundle, "c2")
	if code != 3 || !strings.Contains(stdout, "hello-from-microvm") {
		t.Errorf("run: status %d, want 3; stdout:\n%s\nstderr:\n%s", code, stdout, errs)
	}
	t.Logf("run: launch to exit %v", time.Since(t0))
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Errorf("state left after run: %v", ents)
	}

	// process.user and a Go workload: the workload runs as 1000:1001 with
	// supplementary group 5 (oci/asuser), and a static Go program — the
	// microvm binary itself, whose os.Open needs epoll from the guest
	// kernel — runs to its end.
	user := busyboxBundle(t, "echo ids-$(id -u)-$(id -g)-$(id -G | tr ' ' ,); /microvm ps --state-dir /tmp >/dev/null && echo go-ok")
	self, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(user, "rootfs", "microvm"), self, 0o755); err != nil {
		t.Fatal(err)
	}
	editConfig(t, user, func(c map[string]any) {
		c["process"].(map[string]any)["user"] = map[string]any{"uid": 1000, "gid": 1001, "additionalGids": []int{5}}
	})
	code, stdout, errs = runBin(t, bin, "oci", "--root", root, "run", "--bundle", user, "c4")
	if code != 0 || !strings.Contains(stdout, "ids-1000-1001-1001,5") || !strings.Contains(stdout, "go-ok") {
		t.Errorf("run as 1000:1001 with a Go workload: status %d, want 0 with ids-1000-1001-1001,5 and go-ok; stdout:\n%s\nstderr:\n%s", code, stdout, errs)
	}

	// kill of a running container ends it: 128+SIGTERM.
	sleeper := busyboxBundle(t, "echo up; sleep 600")
	create = exec.Command(bin, "oci", "--root", root, "create", "--bundle", sleeper, "c3")
	create.Stdout, create.Stderr = out, out
	if err := create.Run(); err != nil {
		t.Fatalf("create c3: %v", err)
	}
	t.Cleanup(func() { runBin(t, bin, "oci", "--root", root, "delete", "--force", "c3") })
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "start", "c3"); code != 0 {
		t.Fatalf("start c3: %d %s", code, errs)
	}
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "kill", "c3", "TERM"); code != 0 {
		t.Fatalf("kill c3: %d %s", code, errs)
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		if s, _ := ociState(t, bin, root, "c3"); s == "stopped" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("c3 still runs 30 s after kill TERM")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, _, errs := runBin(t, bin, "oci", "--root", root, "delete", "c3"); code != 0 {
		t.Errorf("delete c3: %d %s", code, errs)
	}
}
