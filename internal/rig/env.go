package rig

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// Artifacts are the host files a rig test uses, found by FindArtifacts
// from the variables mk/kernel.mk passes to the tests, each defaulting to
// its place under $MICROVM_CACHE. A field is empty when its file does not
// exist.
type Artifacts struct {
	// L1Kernel and L1Modules: Debian's cloud kernel and its module tree
	// ($MICROVM_DEBIAN_KERNEL, $MICROVM_DEBIAN_MODULES; `make debian-kernel`).
	L1Kernel, L1Modules string
	// GuestVmlinux and GuestBzImage: the lean guest kernel
	// ($MICROVM_KERNEL_VMLINUX, $MICROVM_KERNEL_BZIMAGE; `make kernel`).
	GuestVmlinux, GuestBzImage string
	// GuestInitramfs: the busybox guest initramfs whose init prints
	// "microvm-init: ready" ($MICROVM_INITRAMFS; `make initramfs`).
	GuestInitramfs string
	// Microvm: the static microvm binary ($MICROVM_BIN; `make build`,
	// CGO_ENABLED=0).
	Microvm string
	// QEMU: qemu-system-x86_64 from PATH.
	QEMU string
}

// FindArtifacts looks the artifacts up in the environment and, for those
// not set there, in the $MICROVM_CACHE layout of the Makefile (default
// <module root>/.cache).
func FindArtifacts() Artifacts {
	cache := cacheRoot()
	pick := func(env, def string) string {
		p := os.Getenv(env)
		if p == "" && cache != "" && def != "" {
			p = filepath.Join(cache, def)
		}
		if p == "" {
			return ""
		}
		if _, err := os.Stat(p); err != nil {
			return ""
		}
		return p
	}
	a := Artifacts{
		L1Kernel:       pick("MICROVM_DEBIAN_KERNEL", "debian-kernel/vmlinuz"),
		L1Modules:      pick("MICROVM_DEBIAN_MODULES", "debian-kernel/modules"),
		GuestVmlinux:   pick("MICROVM_KERNEL_VMLINUX", "kernel/vmlinux"),
		GuestBzImage:   pick("MICROVM_KERNEL_BZIMAGE", "kernel/bzImage"),
		GuestInitramfs: pick("MICROVM_INITRAMFS", "initramfs.cpio.gz"),
		Microvm:        pick("MICROVM_BIN", ""),
	}
	if p, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		a.QEMU = p
	}
	return a
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// cacheRoot returns $MICROVM_CACHE, else <dir holding go.mod>/.cache for
// the working directory (tests run in their package directory), else "".
func cacheRoot() string {
	if c := os.Getenv("MICROVM_CACHE"); c != "" {
		return c
	}
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if fileExists(filepath.Join(dir, "go.mod")) {
			return filepath.Join(dir, ".cache")
		}
		up := filepath.Dir(dir)
		if up == dir {
			return ""
		}
		dir = up
	}
}

// Require returns a Config with the L1 kernel, its modules and QEMU filled
// in, or skips tb with a loud reason naming what is missing and the make
// target that provides it (`make test` builds all of them).
func Require(tb testing.TB) (Config, Artifacts) {
	tb.Helper()
	a := FindArtifacts()
	var missing []string
	if a.QEMU == "" {
		missing = append(missing, "qemu-system-x86_64 (apt-get install qemu-system-x86, or `make deps`)")
	}
	if a.L1Kernel == "" || a.L1Modules == "" {
		missing = append(missing, "the L1 Debian cloud kernel and modules (`make debian-kernel`, or set MICROVM_DEBIAN_KERNEL and MICROVM_DEBIAN_MODULES)")
	}
	if !fileExists("/bin/busybox") {
		missing = append(missing, "/bin/busybox (apt-get install busybox-static)")
	}
	if len(missing) > 0 {
		tb.Skipf("SKIP: KVM test rig unavailable, missing: %s. `make test` (or `make test-kvm`) provides all of it.", strings.Join(missing, "; "))
	}
	return Config{Kernel: a.L1Kernel, Modules: a.L1Modules, QEMU: a.QEMU}, a
}

// RunTest runs cfg for a test. It puts the run's files in a temporary
// directory, streams the results port to tb.Log, fails tb on a rig error
// (not on a command's status: check Result), and, when the test fails,
// keeps the L1 console, results and QEMU logs in KeptLogDir and logs their
// paths and the console's last lines.
func RunTest(tb testing.TB, cfg Config) *Result {
	tb.Helper()
	cfg.WorkDir = filepath.Join(tb.TempDir(), "rig")
	if cfg.Log == nil {
		cfg.Log = tbWriter{tb}
	}
	ctx := context.Background()
	if d, ok := tb.(interface{ Context() context.Context }); ok {
		ctx = d.Context()
	}
	res, err := Run(ctx, cfg)
	if res != nil {
		tb.Cleanup(func() {
			if tb.Failed() {
				keepLogs(tb, res)
			}
		})
	}
	if err != nil {
		tb.Fatalf("%v", err)
	}
	return res
}

// KeptLogDir is where RunTest keeps the logs of failed tests:
// <CacheDir>/logs.
func KeptLogDir() string { return filepath.Join(DefaultCacheDir(), "logs") }

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func keepLogs(tb testing.TB, res *Result) {
	dir := filepath.Join(KeptLogDir(), unsafeName.ReplaceAllString(tb.Name(), "_"))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Logf("rig: keep logs: %v", err)
		return
	}
	for _, p := range []string{res.Console, res.Results, res.QEMULog} {
		if p == "" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o644); err != nil {
			tb.Logf("rig: keep logs: %v", err)
		}
	}
	tb.Logf("rig: L1 logs kept in %s (console.log: kernel console, results.log: results port, qemu.log: QEMU stderr)", dir)
	if t := tailFile(filepath.Join(dir, "console.log"), 20); t != "" {
		tb.Logf("rig: last L1 console lines:\n%s", t)
	}
}

// tbWriter writes each line to tb.Log.
type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(b []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// String describes the artifacts, for logs.
func (a Artifacts) String() string {
	return fmt.Sprintf("L1 kernel %q, modules %q, guest vmlinux %q, bzImage %q, initramfs %q, microvm %q, qemu %q",
		a.L1Kernel, a.L1Modules, a.GuestVmlinux, a.GuestBzImage, a.GuestInitramfs, a.Microvm, a.QEMU)
}
