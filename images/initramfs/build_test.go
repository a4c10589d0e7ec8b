package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func needBusybox(t testing.TB) {
	t.Helper()
	if _, err := os.Stat(DefaultBusybox); err != nil {
		t.Skipf("SKIPPED: %s missing: install busybox-static (make deps does)", DefaultBusybox)
	}
	b, _ := os.ReadFile(DefaultBusybox)
	if err := checkStatic(b); err != nil {
		t.Skipf("SKIPPED: %s is not static (%v): install busybox-static", DefaultBusybox, err)
	}
}

func TestWrite(t *testing.T) {
	needBusybox(t)
	dir := t.TempDir()
	mod := filepath.Join(dir, "fake.ko")
	os.WriteFile(mod, []byte("not really a module"), 0o644)
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "sub"), 0o755)
	os.WriteFile(filepath.Join(tree, "sub", "b.txt"), []byte("B"), 0o600)
	os.WriteFile(filepath.Join(tree, "a.sh"), []byte("#!/bin/sh\n"), 0o755)
	os.Symlink("a.sh", filepath.Join(tree, "link"))
	single := filepath.Join(dir, "single")
	os.WriteFile(single, []byte("one"), 0o644)

	opts := Options{
		Modules: []string{mod},
		Files:   []File{{Src: tree, Dst: "/opt/tree"}, {Src: single, Dst: "/usr/share/x/single"}},
	}
	var a, b bytes.Buffer
	if err := Write(&a, opts); err != nil {
		t.Fatal(err)
	}
	if err := Write(&b, opts); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("not deterministic")
	}
	ents := parseNewc(t, a.Bytes())
	byName := map[string]entry{}
	order := map[string]int{}
	for i, e := range ents {
		if _, dup := byName[e.name]; dup {
			t.Errorf("%s twice", e.name)
		}
		byName[e.name] = e
		order[e.name] = i
	}
	busybox, _ := os.ReadFile(DefaultBusybox)
	checks := []struct {
		name string
		mode uint32
		data []byte
	}{
		{"init", 0o100755, InitScript},
		{"bin/busybox", 0o100755, busybox},
		{"bin/sh", 0o120777, []byte("busybox")},
		{"bin/devmem", 0o120777, []byte("busybox")},
		{"bin/cttyhack", 0o120777, []byte("busybox")},
		{"dev/console", 0o020600, nil},
		{"etc/microvm/modules", 0o100644, []byte("fake.ko\n")},
		{"lib/modules/fake.ko", 0o100644, []byte("not really a module")},
		{"opt/tree", 0o040755, nil},
		{"opt/tree/a.sh", 0o100755, []byte("#!/bin/sh\n")},
		{"opt/tree/link", 0o120777, []byte("a.sh")},
		{"opt/tree/sub/b.txt", 0o100600, []byte("B")},
		{"usr/share/x", 0o040755, nil},
		{"usr/share/x/single", 0o100644, []byte("one")},
		{"proc", 0o040755, nil},
		{"sys", 0o040755, nil},
	}
	for _, c := range checks {
		e, ok := byName[c.name]
		if !ok {
			t.Errorf("%s missing", c.name)
			continue
		}
		if e.mode != c.mode || !bytes.Equal(e.data, c.data) {
			t.Errorf("%s: mode %o (want %o), data %d bytes (want %d)", c.name, e.mode, c.mode, len(e.data), len(c.data))
		}
	}
	// Parents come before children.
	for name := range byName {
		if i := strings.LastIndexByte(name, '/'); i > 0 {
			if order[name[:i]] > order[name] {
				t.Errorf("%s precedes its directory", name)
			}
		}
	}

	// Gzip: the same archive, compressed.
	opts.Gzip = true
	var z bytes.Buffer
	if err := Write(&z, opts); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(&z)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := io.ReadAll(zr)
	if !bytes.Equal(plain, a.Bytes()) {
		t.Fatal("gzip archive content differs")
	}
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644)
	dynamic := "/bin/sh" // dash is dynamically linked on Debian
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"missing busybox", Options{Busybox: filepath.Join(dir, "nope")}, "install busybox-static"},
		{"not an ELF", Options{Busybox: filepath.Join(dir, "f")}, "not a 64-bit"},
		{"dynamic busybox", Options{Busybox: dynamic}, "dynamically linked"},
		{"module not .ko", Options{Modules: []string{filepath.Join(dir, "f")}}, "want a .ko"},
		{"duplicate", Options{Files: []File{{filepath.Join(dir, "f"), "/init"}}}, "added twice"},
		{"escaping", Options{Files: []File{{filepath.Join(dir, "f"), "../x"}}}, "climbs out"},
		{"missing extra", Options{Files: []File{{filepath.Join(dir, "none"), "/x"}}}, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.opts.Busybox == "" {
				needBusybox(t)
			}
			if tt.opts.Busybox == dynamic {
				if b, err := os.ReadFile(dynamic); err != nil || checkStatic(b) == nil {
					t.Skipf("SKIPPED: %s is not a dynamic executable here", dynamic)
				}
			}
			err := Write(io.Discard, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestParseFile(t *testing.T) {
	tests := []struct {
		in      string
		want    File
		wantErr bool
	}{
		{"a:/b", File{"a", "/b"}, false},
		{"/x/y.ko:/lib/modules/y.ko", File{"/x/y.ko", "/lib/modules/y.ko"}, false},
		{"nodst", File{}, true},
		{":/b", File{}, true},
		{"a:", File{}, true},
	}
	for _, tt := range tests {
		got, err := ParseFile(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseFile(%q) = %+v, %v", tt.in, got, err)
		}
	}
}

// qemuBoot boots kernel + initramfs under QEMU TCG (a real, independent
// machine: no /dev/kvm needed) with the serial console on stdio, feeds
// stdin, and returns the console output once a line matching until has
// appeared (or QEMU exits). The lean kernel has no ACPI and cannot power
// off a PC, so the test stops QEMU itself.
func qemuBoot(t *testing.T, kernel string, initrd []byte, cmdline, stdin string, until *regexp.Regexp, extra ...string) string {
	t.Helper()
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip("SKIPPED: qemu-system-x86_64 not installed (make deps installs qemu-system-x86)")
	}
	dir := t.TempDir()
	ird := filepath.Join(dir, "initramfs.cpio.gz")
	if err := os.WriteFile(ird, initrd, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemu, "-M", "pc,accel=tcg", "-m", "512", "-nodefaults",
		"-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
		"-kernel", kernel, "-initrd", ird, "-append", cmdline)
	cmd.Args = append(cmd.Args, extra...)
	cmd.Stdin = strings.NewReader(stdin)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()
	var out strings.Builder
	sc := bufio.NewScanner(pr)
	found := false
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		fmt.Fprintln(&out, line)
		if until.MatchString(line) {
			found = true
			break
		}
	}
	cmd.Process.Kill()
	go io.Copy(io.Discard, pr)
	<-done
	if !found {
		t.Fatalf("QEMU ended without a line matching %q; console:\n%s", until, out.String())
	}
	return out.String()
}

func buildInitramfs(t *testing.T, opts Options) []byte {
	t.Helper()
	needBusybox(t)
	opts.Gzip = true
	var buf bytes.Buffer
	if err := Write(&buf, opts); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

var exitLine = regexp.MustCompile(`^microvm-init: exit (\d+)$`)

// TestBootDebianQEMU boots Debian's cloud kernel (which has /dev/mem but
// no /dev/port) with our initramfs and checks /init's protocol: devtmpfs
// console, ready marker, the microvm.cmd command, its exit status, module
// loading, and the shell fallback.
func TestBootDebianQEMU(t *testing.T) {
	kernel := os.Getenv("MICROVM_DEBIAN_KERNEL")
	if kernel == "" {
		t.Skip("SKIPPED: MICROVM_DEBIAN_KERNEL is not set: run `make test` or `make debian-kernel`")
	}
	modDir := os.Getenv("MICROVM_DEBIAN_MODULES")
	var mods []string
	if modDir != "" {
		var err error
		if mods, err = ResolveModules(modDir, "virtio_mmio"); err != nil {
			t.Fatal(err)
		}
	}
	initrd := buildInitramfs(t, Options{Modules: mods})
	t.Run("command", func(t *testing.T) {
		out := qemuBoot(t, kernel, initrd,
			`console=ttyS0 quiet panic=-1 microvm.cmd="echo hello from $(uname -s); cat /proc/modules | cut -d' ' -f1 | sort | tr '\n' ' '; echo; exit 3"`,
			"", exitLine)
		for _, want := range []string{ReadyMarker + "\n", "hello from Linux\n", "microvm-init: exit 3\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("console lacks %q:\n%s", want, out)
			}
		}
		if strings.Index(out, ReadyMarker) > strings.Index(out, "hello from") {
			t.Errorf("command ran before the ready marker")
		}
		if modDir != "" && !strings.Contains(out, "virtio virtio_mmio virtio_ring") {
			t.Errorf("modules not loaded:\n%s", out)
		}
		if strings.Contains(out, "insmod") {
			t.Errorf("insmod complained:\n%s", out)
		}
	})
	t.Run("root", func(t *testing.T) {
		// root= names a disk whose driver is a module: /init loads it,
		// mounts the disk and switch_roots to it; the disk's /init runs
		// the command.
		if modDir == "" {
			t.Skip("SKIPPED: MICROVM_DEBIAN_MODULES is not set: run `make test` or `make debian-kernel`")
		}
		rootMods, err := ResolveModules(modDir, "virtio_pci", "virtio_blk")
		if err != nil {
			t.Fatal(err)
		}
		rd := buildInitramfs(t, Options{Modules: rootMods})
		disk := ext4From(t, rd)
		out := qemuBoot(t, kernel, rd,
			`console=ttyS0 quiet panic=-1 root=/dev/vda rw microvm.cmd="grep ' / ext4 ' /proc/mounts; echo $MICROVM_SWITCHED; exit 4"`,
			"", exitLine, "-drive", "file="+disk+",if=virtio,format=raw")
		for _, want := range []string{"microvm-init: root /dev/vda mounted rw; switching to it\n", "/dev/vda / ext4 rw", ReadyMarker + "\n", "\n1\n", "microvm-init: exit 4\n"} {
			if !strings.Contains(out, want) {
				t.Errorf("console lacks %q:\n%s", want, out)
			}
		}
		if strings.Contains(out, "insmod") || strings.Contains(out, "cannot mount") {
			t.Errorf("module loading or the root mount complained:\n%s", out)
		}
	})
	t.Run("shell", func(t *testing.T) {
		out := qemuBoot(t, kernel, initrd, "console=ttyS0 quiet panic=-1", "echo from-the-shell\nexit 5\n", exitLine)
		if !strings.Contains(out, "from-the-shell\n") || !strings.Contains(out, "microvm-init: exit 5\n") {
			t.Errorf("shell session not as expected:\n%s", out)
		}
	})
}

// TestBootLeanQEMU boots the lean kernel (no PCI, so no /dev/port: /init
// takes the /dev/mem path to the registers) with our initramfs.
func TestBootLeanQEMU(t *testing.T) {
	kernel := os.Getenv("MICROVM_KERNEL_BZIMAGE")
	if kernel == "" {
		t.Skip("SKIPPED: MICROVM_KERNEL_BZIMAGE is not set: run `make test` or `make kernel`")
	}
	initrd := buildInitramfs(t, Options{})
	out := qemuBoot(t, kernel, initrd,
		`console=ttyS0 panic=-1 microvm.cmd="test -c /dev/port && echo has-port; test -c /dev/mem && echo has-mem; exit 7"`,
		"", exitLine)
	for _, want := range []string{"Run /init as init process", ReadyMarker + "\n", "has-mem\n", "microvm-init: exit 7\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q:\n%s", want, out)
		}
	}
	if regexp.MustCompile(`(?m)^(has-port|devmem:.*)$`).MatchString(out) {
		t.Errorf("unexpected /dev/port or devmem error:\n%s", out)
	}
}

func TestResolveModules(t *testing.T) {
	if _, err := ResolveModules(t.TempDir(), "virtio_blk"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("missing module: error %v", err)
	}
	dir := os.Getenv("MICROVM_DEBIAN_MODULES")
	if dir == "" {
		t.Skip("SKIPPED: MICROVM_DEBIAN_MODULES is not set: run `make test` or `make debian-kernel`")
	}
	got, err := ResolveModules(dir, "virtio-blk", "virtio_net", "virtio_mmio", "virtio_blk")
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, p := range got {
		pos[strings.TrimSuffix(filepath.Base(p), ".ko")] = i
	}
	for _, m := range []string{"virtio", "virtio_ring", "virtio_blk", "virtio_net", "virtio_mmio", "net_failover", "failover"} {
		if _, ok := pos[m]; !ok {
			t.Errorf("%s missing from %v", m, got)
		}
	}
	if len(got) != len(pos) {
		t.Errorf("duplicates in %v", got)
	}
	for _, dep := range [][2]string{{"virtio_ring", "virtio"}, {"virtio", "virtio_blk"}, {"failover", "net_failover"}, {"net_failover", "virtio_net"}} {
		if pos[dep[0]] > pos[dep[1]] {
			t.Errorf("%s after %s in %v", dep[0], dep[1], got)
		}
	}
}

// ext4From builds an ext4 root disk from a gzipped initramfs (WriteExt4).
func ext4From(t *testing.T, initrd []byte) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "root.ext4")
	if err := WriteExt4(img, bytes.NewReader(initrd), "32M"); errors.Is(err, exec.ErrNotFound) {
		t.Skipf("SKIPPED: cannot build an ext4 root: %v (`make deps` installs the tools)", err)
	} else if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestWriteExt4(t *testing.T) {
	for _, gz := range []bool{true, false} {
		rd := buildInitramfs(t, Options{})
		if !gz {
			zr, err := gzip.NewReader(bytes.NewReader(rd))
			if err != nil {
				t.Fatal(err)
			}
			if rd, err = io.ReadAll(zr); err != nil {
				t.Fatal(err)
			}
		}
		img := filepath.Join(t.TempDir(), "root.ext4")
		if err := WriteExt4(img, bytes.NewReader(rd), "8M"); errors.Is(err, exec.ErrNotFound) {
			t.Skipf("SKIPPED: %v", err)
		} else if err != nil {
			t.Fatalf("gzip %v: %v", gz, err)
		}
		out, err := exec.Command("debugfs", "-R", "cat /init", img).Output()
		if err != nil {
			t.Skipf("SKIPPED: debugfs (e2fsprogs) cannot read the image back: %v", err)
		}
		if !bytes.Equal(out, InitScript) {
			t.Errorf("gzip %v: /init in the image differs from InitScript (%d bytes vs %d)", gz, len(out), len(InitScript))
		}
	}
	if err := WriteExt4(filepath.Join(t.TempDir(), "bad.ext4"), strings.NewReader("not an archive"), "8M"); err == nil {
		t.Error("WriteExt4 of bytes that are no archive: want an error")
	}
}
