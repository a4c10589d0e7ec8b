package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBootSnapshotRestore drives --snapshot-on-ready and --restore through
// the binary, under its seccomp filter (the default): the tiny ready guest,
// and the lean Linux kernel, whose restore must run the command that init
// starts after its ready write. Bad snapshots get status 129.
func TestBootSnapshotRestore(t *testing.T) {
	sbBin(t)
	dir := filepath.Join(t.TempDir(), "ready")
	if r := sbRun(t, time.Minute, "boot", "--guest", "ready", "--snapshot-on-ready", dir); r.code != 0 || r.signal != 0 {
		t.Fatalf("--snapshot-on-ready: status %d, signal %v; stderr:\n%s", r.code, r.signal, r.stderr)
	}
	r := sbRun(t, time.Minute, "boot", "--restore", dir, "--json")
	if r.code != 0 || r.signal != 0 || !strings.Contains(r.stdout, `"reason": "exit"`) || !strings.Contains(r.stdout, `"ready": true`) {
		t.Fatalf("--restore: status %d, signal %v; stdout:\n%s\nstderr:\n%s", r.code, r.signal, r.stdout, r.stderr)
	}
	if r := sbRun(t, time.Minute, "boot", "--restore", dir, "--memory", "256M"); r.code != exitSnapshot || !strings.Contains(r.stderr, "RAM") {
		t.Errorf("--restore with another --memory: status %d, stderr %q; want %d", r.code, r.stderr, exitSnapshot)
	}
	// A guest that exits without writing ready leaves no snapshot.
	none := filepath.Join(t.TempDir(), "none")
	if r := sbRun(t, time.Minute, "boot", "--guest", "exit", "--cmdline", "3", "--snapshot-on-ready", none); r.code != 3 || !strings.Contains(r.stderr, "no snapshot written") {
		t.Errorf("exit guest: status %d, stderr %q; want 3 and no snapshot", r.code, r.stderr)
	}
	if r := sbRun(t, time.Minute, "boot", "--restore", none); r.code != exitSnapshot {
		t.Errorf("restore of an empty snapshot: status %d, want %d", r.code, exitSnapshot)
	}
	// A bit flip in the state file.
	state := filepath.Join(dir, "state")
	b, err := os.ReadFile(state)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/3] ^= 0x40
	if err := os.WriteFile(state, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if r := sbRun(t, time.Minute, "boot", "--restore", dir); r.code != exitSnapshot || !strings.Contains(r.stderr, "corrupt") {
		t.Errorf("bit-flipped state: status %d, stderr %q; want %d", r.code, r.stderr, exitSnapshot)
	}

	// The virtio guest at ready with its disk set up (bench=200: 200 reads
	// after the ready write): the restore reopens the disk the snapshot
	// names and the guest's reads go through the restored queue (41 if
	// one fails).
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	vdir := filepath.Join(t.TempDir(), "virtio")
	if r := sbRun(t, time.Minute, "boot", "--guest", "virtio", "--disk", disk+",ro", "--cmdline", "bench=200", "--snapshot-on-ready", vdir); r.code != 0 || r.signal != 0 {
		t.Fatalf("virtio --snapshot-on-ready: status %d, signal %v; stderr:\n%s", r.code, r.signal, r.stderr)
	}
	if r := sbRun(t, time.Minute, "boot", "--restore", vdir); r.code != 0 || r.signal != 0 {
		t.Errorf("virtio --restore: status %d, signal %v; stderr:\n%s", r.code, r.signal, r.stderr)
	}
	if r := sbRun(t, time.Minute, "boot", "--restore", vdir, "--disk", disk); r.code != exitUsage {
		t.Errorf("--restore with --disk: status %d, want %d (the snapshot names its disks)", r.code, exitUsage)
	}
	os.Remove(disk)
	if r := sbRun(t, time.Minute, "boot", "--restore", vdir); r.code == 0 || !strings.Contains(r.stderr, "disk.img") {
		t.Errorf("virtio --restore without its disk: status %d, stderr %q; want a failure naming the disk", r.code, r.stderr)
	}

	// --snapshot-on-signal: the held exit guest (ready, then idle with
	// the irqchip) snapshotted on SIGUSR1; its restore idles on until the
	// timeout (124), neither crashing nor exiting.
	held := filepath.Join(t.TempDir(), "held")
	rd, wr, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(sbBin(t), "boot", "--guest", "exit", "--cmdline", "hold", "--irqchip", "--quiet", "--timeout", "0", "--snapshot-on-signal", held)
	cmd.ExtraFiles = []*os.File{wr}
	cmd.Env = append(os.Environ(), "MICROVM_READY_FD=3")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	wr.Close()
	if _, err := rd.Read(make([]byte, 1)); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("held guest never got ready: %v; stderr %s", err, stderr.String())
	}
	rd.Close()
	cmd.Process.Signal(syscall.SIGUSR1)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("after SIGUSR1: %v; stderr:\n%s", err, stderr.String())
	}
	if r := sbRun(t, time.Minute, "boot", "--restore", held, "--quiet", "--timeout", "2s"); r.code != exitTimeout {
		t.Errorf("restore of the held guest: status %d, want %d (idle until the timeout); stderr:\n%s", r.code, exitTimeout, r.stderr)
	}

	kernel, initrd := os.Getenv("MICROVM_KERNEL_VMLINUX"), os.Getenv("MICROVM_INITRAMFS")
	if kernel == "" || initrd == "" {
		t.Skip("SKIP: MICROVM_KERNEL_VMLINUX and MICROVM_INITRAMFS are not set; `make test` builds them")
	}
	linux := filepath.Join(t.TempDir(), "linux")
	r = sbRun(t, 3*time.Minute, "boot", kernel, "--initrd", initrd, "--memory", "256M", "--quiet",
		"--append", `microvm.cmd="echo restored-$((40+2)); exit 7"`, "--snapshot-on-ready", linux)
	if r.code != 0 || r.signal != 0 {
		t.Fatalf("Linux --snapshot-on-ready: status %d, signal %v; stderr:\n%s", r.code, r.signal, sbTail(r.stderr))
	}
	for i := 0; i < 2; i++ {
		r = sbRun(t, 2*time.Minute, "boot", "--restore", linux)
		if r.code != 7 || !strings.Contains(r.stdout, "restored-42") {
			t.Fatalf("Linux --restore %d: status %d, signal %v; stdout:\n%s\nstderr:\n%s", i, r.code, r.signal, sbTail(r.stdout), sbTail(r.stderr))
		}
		t.Logf("Linux restore %d: the command's output and exit 7 %v after the process started", i, r.took)
	}
}
