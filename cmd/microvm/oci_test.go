package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microvm/microvm/images/rootfs"
	"github.com/microvm/microvm/oci"
	"github.com/microvm/microvm/vmm"
)

// ociBundle writes a bundle whose process is the root's /bin/sh.
func ociBundle(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "rootfs", "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bin, "sh"), []byte("\x7fELF"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := &rootfs.Config{
		OCIVersion: "1.0.2",
		Root:       &rootfs.Root{Path: "rootfs"},
		Process:    &rootfs.Process{Args: []string{"/bin/sh", "-c", "echo hi"}, Cwd: "/"},
	}
	if err := rootfs.WriteBundle(dir, c); err != nil {
		t.Fatal(err)
	}
	return dir
}

// hostRuns reports whether this host could run a container-VM.
func hostRuns() bool { return oci.CheckHost("/dev/kvm", vmm.DetectHost()) == nil }

// TestOCIRefusesHost: where /dev/kvm is missing or kvm_pvm, create and run
// refuse within seconds with status 128, one line naming the reason, and
// nothing left in the state root.
func TestOCIRefusesHost(t *testing.T) {
	if hostRuns() {
		t.Skip("SKIP: this host can run container VMs; the refusal is for hosts that cannot")
	}
	bundle := ociBundle(t)
	for _, cmd := range []string{"create", "run"} {
		root := filepath.Join(t.TempDir(), "state")
		pidFile := filepath.Join(t.TempDir(), "pid")
		start := time.Now()
		code, _, stderr := run(t, "oci", "--root", root, cmd, "--bundle", bundle, "--pid-file", pidFile, "c1")
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v", cmd, d)
		}
		if code != exitOCIRefused {
			t.Errorf("%s: status %d, want %d; stderr %q", cmd, code, exitOCIRefused, stderr)
		}
		if strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !(strings.Contains(stderr, "/dev/kvm") || strings.Contains(stderr, "kvm_pvm")) {
			t.Errorf("%s: stderr %q: want one line naming /dev/kvm or kvm_pvm", cmd, stderr)
		}
		if ents, _ := os.ReadDir(root); len(ents) != 0 {
			t.Errorf("%s: left %d entries in the state root", cmd, len(ents))
		}
		if _, err := os.Stat(pidFile); err == nil {
			t.Errorf("%s: left a pid file", cmd)
		}
	}
}

// TestOCIBadInput: bad bundles and unknown containers give status 1 and a
// clear message on every host, and leave nothing behind.
func TestOCIBadInput(t *testing.T) {
	root := filepath.Join(t.TempDir(), "state")
	noConfig := t.TempDir()
	notJSON := t.TempDir()
	os.WriteFile(filepath.Join(notJSON, "config.json"), []byte("{"), 0o644)
	badVersion := ociBundle(t)
	os.WriteFile(filepath.Join(badVersion, "config.json"), []byte(`{"ociVersion":"9.0","root":{"path":"rootfs"},"process":{"args":["/bin/sh"],"cwd":"/"}}`), 0o644)
	noRootfs := ociBundle(t)
	os.RemoveAll(filepath.Join(noRootfs, "rootfs"))
	noArg := ociBundle(t)
	os.Remove(filepath.Join(noArg, "rootfs", "bin", "sh"))
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no config.json", []string{"create", "-b", noConfig, "x"}, exitOCIError, "config.json"},
		{"not JSON", []string{"create", "-b", notJSON, "x"}, exitOCIError, "oci config"},
		{"spec version", []string{"create", "-b", badVersion, "x"}, exitOCIError, "ociVersion"},
		{"missing rootfs", []string{"create", "-b", noRootfs, "x"}, exitOCIError, "root file system"},
		{"missing args[0]", []string{"run", "-b", noArg, "x"}, exitOCIError, "/bin/sh"},
		{"bad id", []string{"create", "-b", noArg, "../x"}, exitOCIError, "invalid container id"},
		{"state unknown", []string{"state", "nosuch"}, exitOCIError, "does not exist"},
		{"start unknown", []string{"start", "nosuch"}, exitOCIError, "does not exist"},
		{"kill unknown", []string{"kill", "nosuch", "KILL"}, exitOCIError, "does not exist"},
		{"delete unknown", []string{"delete", "--force", "nosuch"}, exitOCIError, "does not exist"},
		{"bad signal", []string{"kill", "x", "NOPE"}, exitUsage, "unknown signal"},
		{"no id", []string{"create"}, exitUsage, "exactly 1"},
		{"log format", []string{"--log-format", "xml", "list"}, exitUsage, "log-format"},
	} {
		args := append([]string{"oci", "--root", root, "--systemd-cgroup"}, tc.args...)
		code, _, stderr := run(t, args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: status %d, stderr %q; want %d and %q", tc.name, code, stderr, tc.code, tc.want)
		}
		if ents, _ := os.ReadDir(root); len(ents) != 0 {
			t.Errorf("%s: left %d entries in the state root", tc.name, len(ents))
		}
	}
}

func TestOCIListAndLog(t *testing.T) {
	root := filepath.Join(t.TempDir(), "state")
	code, out, stderr := run(t, "oci", "--root", root, "list", "--format", "json")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("list of nothing: %d %q %q", code, out, stderr)
	}
	log := filepath.Join(t.TempDir(), "log.json")
	code, _, _ = run(t, "oci", "--root", root, "--log", log, "--log-format", "json", "state", "nosuch")
	b, err := os.ReadFile(log)
	var rec map[string]string
	if code != exitOCIError || err != nil || json.Unmarshal(b, &rec) != nil || rec["level"] != "error" || !strings.Contains(rec["msg"], "nosuch") {
		t.Errorf("json log: status %d, %q, %v", code, b, err)
	}
}
