package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/microvm/microvm/images/initramfs"
)

func TestImageKernel(t *testing.T) {
	dir := t.TempDir()
	notKernel := filepath.Join(dir, "text")
	os.WriteFile(notKernel, []byte("plain text, not a kernel"), 0o644)
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr string
	}{
		{"bzImage", []string{"image", "kernel", "../../images/linux/testdata/testkernel-gzip.bzImage"}, 0, "payload        gzip", ""},
		{"vmlinux", []string{"image", "kernel", "../../images/linux/testdata/testkernel.elf"}, 0, "64-bit entry   0x1000000", ""},
		{"not a kernel", []string{"image", "kernel", notKernel}, exitBadImage, "", "not a Linux kernel image"},
		{"missing", []string{"image", "kernel", filepath.Join(dir, "none")}, exitBadImage, "", "no such file"},
		{"no args", []string{"image", "kernel"}, exitUsage, "", "exactly 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := run(t, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.stdout) || !strings.Contains(errs, tc.stderr) {
				t.Errorf("code %d (want %d)\nstdout %q (want %q)\nstderr %q (want %q)", code, tc.code, out, tc.stdout, errs, tc.stderr)
			}
		})
	}
	code, out, _ := run(t, "image", "kernel", "--json", "--cache-dir", dir, "../../images/linux/testdata/testkernel-gzip.bzImage")
	var rep kernelReport
	if code != 0 || json.Unmarshal([]byte(out), &rep) != nil || rep.Entry != 0x1000000 || rep.Protocol != "2.15" || rep.Decompress == nil || rep.Decompress.CacheFile == "" {
		t.Errorf("--json: code %d, %+v\n%s", code, rep, out)
	}
}

func TestImageInitramfs(t *testing.T) {
	if _, err := os.Stat(initramfs.DefaultBusybox); err != nil {
		t.Skipf("SKIPPED: %s missing: install busybox-static (make deps does)", initramfs.DefaultBusybox)
	}
	dir := t.TempDir()
	extra := filepath.Join(dir, "hello.txt")
	os.WriteFile(extra, []byte("hello"), 0o644)
	out := filepath.Join(dir, "rd.cpio.gz")
	code, stdout, stderr := run(t, "image", "initramfs", "-o", out, "--add", extra+":/etc/hello.txt", "--json")
	if code != 0 {
		t.Fatalf("code %d: %s", code, stderr)
	}
	var rep initramfsReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || !rep.Gzip || rep.Output != out || len(rep.Files) != 1 {
		t.Fatalf("report %+v (%v)\n%s", rep, err, stdout)
	}
	if st, err := os.Stat(out); err != nil || st.Size() != int64(rep.Bytes) {
		t.Fatalf("output: %v", err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"no output", []string{"image", "initramfs"}, exitUsage, "-o OUT is required"},
		{"bad add", []string{"image", "initramfs", "-o", out, "--add", "nocolon"}, exitUsage, "SRC:DST"},
		{"name without dir", []string{"image", "initramfs", "-o", out, "--module", "virtio_blk"}, exitUsage, "--module-dir"},
		{"missing module", []string{"image", "initramfs", "-o", out, "--module-dir", dir, "--module", "virtio_blk"}, exitBadImage, "not found"},
		{"bad busybox", []string{"image", "initramfs", "-o", out, "--busybox", extra}, exitBadImage, "not a 64-bit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, errs := run(t, tc.args...)
			if code != tc.code || !strings.Contains(errs, tc.want) {
				t.Errorf("code %d (want %d), stderr %q (want %q)", code, tc.code, errs, tc.want)
			}
		})
	}
}
