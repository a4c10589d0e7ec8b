package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLeanDependencies guards what makes the binary lean: built as make
// builds it (-tags microvm_lean), it links none of the CLI's heavy
// packages, whose initialisers every process start would pay for.
func TestLeanDependencies(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("SKIP: no go command to list the lean build's packages: %v", err)
	}
	out, err := exec.Command(goCmd, "list", "-tags", "microvm_lean", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 20 {
		t.Fatalf("go list gave %d packages: %q", len(deps), out)
	}
	banned := []string{
		"github.com/spf13/cobra", "github.com/digitalocean/go-libvirt", "golang.org/x/crypto/ssh",
		"crypto/tls", "net/http", "github.com/klauspost/compress", "github.com/pierrec/lz4",
		"github.com/ulikunitz/xz", "compress/bzip2", "compress/gzip", "golang.org/x/image",
		"github.com/microvm/microvm/container", "github.com/microvm/microvm/bench",
		"github.com/microvm/microvm/libvirt", "github.com/microvm/microvm/oci", "regexp",
	}
	for _, d := range deps {
		for _, b := range banned {
			if d == b || strings.HasPrefix(d, b+"/") {
				t.Errorf("the lean build links %s", d)
			}
		}
	}
}

func TestUsageAndBadInput(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"help", []string{"--help"}, 0, "usage: microvm-vmm"},
		{"unknown flag", []string{"--bogus"}, exitUsage, "unknown flag"},
		{"two images", []string{"a", "b"}, exitUsage, "at most one IMAGE"},
		{"no memory", []string{"--memory", "0"}, exitUsage, "--memory 0"},
		{"absurd memory", []string{"--memory", "1000000"}, exitUsage, "want 1 to 65536"},
		{"no cpus", []string{"--cpus", "0"}, exitUsage, "--cpus 0"},
		{"unknown guest", []string{"--guest", "nope"}, exitUsage, "--guest"},
		{"missing image", []string{filepath.Join(dir, "missing")}, exitBadImage, "no such file"},
		{"directory", []string{dir}, exitBadImage, "is a directory"},
		{"empty image", []string{empty}, exitBadImage, "empty file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("status %d, stderr %q; want %d and %q", code, stderr.String(), tc.code, tc.want)
			}
		})
	}
}

// TestBootGuests boots embedded guests through run, as the process does,
// on a real /dev/kvm (in the rig on hosts without one: internal/rigsuite).
func TestBootGuests(t *testing.T) {
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
		t.Skipf("SKIP: no usable /dev/kvm (%v); internal/rigsuite runs this test in the nested-KVM rig", err)
	} else {
		f.Close()
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		out  string
	}{
		{"hello", []string{"--guest", "hello", "--cmdline", "lean-marker"}, 0, "lean-marker"},
		{"ready", []string{"--guest", "ready"}, 0, ""},
		{"exit 42", []string{"--guest", "exit", "--cmdline", "42"}, 42, ""},
		{"exit out of range", []string{"--guest", "exit", "--cmdline", "200"}, exitGuestRange, ""},
		{"smp", []string{"--guest", "smp", "--cpus", "2"}, 0, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tc.args, &stdout, &stderr)
			if code != tc.code || !strings.Contains(stdout.String(), tc.out) {
				t.Errorf("status %d, console %q, stderr %q; want %d and %q", code, stdout.String(), stderr.String(), tc.code, tc.out)
			}
		})
	}
}
