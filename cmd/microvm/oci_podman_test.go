package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/microvm/microvm/images/rootfs"
	"golang.org/x/sys/unix"
)

// podmanRig is a private podman (its own storage, run directory and
// containers.conf) whose OCI runtime is scripts/microvm-oci.
type podmanRig struct {
	t      *testing.T
	bin    string
	global []string
	env    []string
}

func newPodmanRig(t *testing.T, microvm string) *podmanRig {
	t.Helper()
	bin, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("SKIP: podman is not installed (make deps installs it)")
	}
	if _, err := exec.LookPath("conmon"); err != nil {
		t.Skip("SKIP: conmon is not installed (podman's monitor; make deps installs it)")
	}
	if os.Geteuid() != 0 {
		t.Skip("SKIP: podman runs as root here (rootless mode is not set up)")
	}
	wrapper, err := filepath.Abs("../../scripts/microvm-oci")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	run, err := os.MkdirTemp("", "mvpod-") // podman refuses a runroot over 50 characters
	if err != nil {
		t.Fatal(err)
	}
	// conmon starts the runtime with conmon_env_vars only: the wrapper
	// learns the microvm binary and the guest kernel from there.
	conf := filepath.Join(dir, "containers.conf")
	tmp := filepath.Join(dir, "tmp")
	if err := os.MkdirAll(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprintf("[containers]\ndefault_ulimits = []\n\n[engine]\nevents_logger = \"file\"\nimage_copy_tmp_dir = %q\n"+
		"conmon_env_vars = [\"PATH=%s\", \"MICROVM=%s\", \"MICROVM_KERNEL_VMLINUX=%s\"]\n",
		tmp, os.Getenv("PATH"), microvm, os.Getenv("MICROVM_KERNEL_VMLINUX"))
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	p := &podmanRig{t: t, bin: bin, env: append(os.Environ(), "CONTAINERS_CONF="+conf, "TMPDIR="+tmp), global: []string{
		"--root", filepath.Join(dir, "storage"), "--runroot", run, "--tmpdir", tmp,
		"--storage-driver", "vfs", "--cgroup-manager", "cgroupfs", "--runtime", wrapper,
	}}
	t.Cleanup(func() {
		p.run("rm", "--all", "--force", "--time", "0")
		p.run("rmi", "--all", "--force")
		for _, d := range []string{run, dir} {
			unmountAll(d)
		}
		os.RemoveAll(run)
	})
	return p
}

// run runs podman with the rig's globals; it returns status and output.
func (p *podmanRig) run(args ...string) (int, string) {
	p.t.Helper()
	cmd := exec.Command(p.bin, append(append([]string(nil), p.global...), args...)...)
	cmd.Env = p.env
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		p.t.Fatalf("podman %v: %v", args, err)
	}
	return 0, string(out)
}

// unmountAll lazily unmounts what podman left mounted under dir.
func unmountAll(dir string) {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return
	}
	lines := strings.Split(string(b), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if f := strings.Fields(lines[i]); len(f) > 1 && strings.HasPrefix(f[1], dir+"/") {
			unix.Unmount(f[1], unix.MNT_DETACH)
		}
	}
}

// TestOCIPodmanVM: podman --runtime scripts/microvm-oci runs a busybox
// image (the bundle's rootfs, imported) in a micro-VM: the output comes
// back with the guest kernel's command line as proof, the status passes
// through, -t gets the VM console as its terminal through conmon's
// console socket, and podman stop's SIGTERM reaches the workload (status
// 143, not the 137 of the KILL after the grace period).
func TestOCIPodmanVM(t *testing.T) {
	bin := needOCIVM(t)
	p := newPodmanRig(t, bin)
	dir := t.TempDir()
	rfs := filepath.Join(dir, "rootfs")
	if err := rootfs.Build(rfs, rootfs.Options{}); err != nil {
		t.Skipf("SKIP: no busybox rootfs (make deps installs busybox-static): %v", err)
	}
	tarPath := filepath.Join(dir, "rootfs.tar")
	f, err := os.Create(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := rootfs.WriteTar(f, rfs); err != nil {
		t.Fatal(err)
	}
	f.Close()
	const image = "localhost/microvm-oci-test:latest"
	if code, out := p.run("import", tarPath, image); code != 0 {
		t.Fatalf("podman import: status %d\n%s", code, out)
	}

	t0 := time.Now()
	code, out := p.run("run", "--rm", "--network", "none", image, "/bin/sh", "-c", "echo hello-podman; cat /proc/cmdline; exit 3")
	t.Logf("podman run --rm (launch to exit): %v", time.Since(t0))
	if code != 3 || !strings.Contains(out, "hello-podman") || !strings.Contains(out, "rdinit=/.microvm/init") {
		t.Errorf("podman run: status %d, want 3 with hello-podman and the guest's rdinit=/.microvm/init:\n%s", code, out)
	}

	code, out = p.run("run", "--rm", "-t", "--network", "none", image, "/bin/sh", "-c", "echo tty-$(tty)")
	if code != 0 || !strings.Contains(out, "tty-/dev/ttyS0") {
		t.Errorf("podman run -t: status %d, want 0 with tty-/dev/ttyS0:\n%s", code, out)
	}

	code, out = p.run("run", "-d", "--name", "sleeper", "--network", "none", image, "/bin/sh", "-c", "echo up; exec sleep 600")
	if code != 0 {
		t.Fatalf("podman run -d: status %d\n%s", code, out)
	}
	if !waitFor(3*time.Minute, func() bool { _, o := p.run("logs", "sleeper"); return strings.Contains(o, "up") }) {
		_, o := p.run("logs", "sleeper")
		t.Fatalf("the detached container never started:\n%s", o)
	}
	if code, out := p.run("stop", "--time", "30", "sleeper"); code != 0 {
		t.Errorf("podman stop: status %d\n%s", code, out)
	}
	if _, out := p.run("inspect", "--format", "{{.State.ExitCode}}", "sleeper"); strings.TrimSpace(out) != "143" {
		t.Errorf("exit code after podman stop: %q, want 143 (SIGTERM reached the workload)", out)
	}
}
