package rigsuite

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/microvm/microvm/internal/rig"
)

// kvmPackages are the packages whose tests use /dev/kvm.
var kvmPackages = []string{"kvm", "vmm", "cmd/microvm", "cmd/microvm-vmm", "bench", "bench/qemuguest"}

// hostOnly are the tests that need what L1 lacks — a root file system that
// can be pivoted from (L1 runs from its initramfs), container runtimes —
// and that run on the host: the rig leaves them out.
const hostOnly = "^(TestRig|TestContainer|TestJail|TestBenchEndToEnd|TestAllPathsForReal)"

// TestRigPackageTests builds the test binaries of kvmPackages and runs them
// in L1, each in its package directory of a copy of the repository, with
// everything but hostOnly (the rig's own tests among them: no rig inside
// the rig). Each test
// that fails in L1 fails here with its output; skips are logged.
func TestRigPackageTests(t *testing.T) {
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err == nil && os.Getenv("MICROVM_RIG_PACKAGES") == "" {
		f.Close()
		t.Skip("SKIP: this host has /dev/kvm, where these packages' own tests ran; MICROVM_RIG_PACKAGES=1 runs them in the rig too")
	}
	cfg, a := rig.Require(t)
	if a.Microvm == "" {
		t.Skip("SKIP: MICROVM_BIN is not set: `make test` builds bin/microvm and sets it")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	files, err := trackedFiles(root)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Files = map[string]string{"/bin/microvm": a.Microvm}
	for _, f := range files {
		cfg.Files[path.Join("/src", f)] = filepath.Join(root, f)
	}
	// microvm oci builds each bundle's rootfs image with mke2fs; podman
	// and its monitor conmon drive it in TestOCIPodmanVM (podman wants
	// the host's signature policy to import an image).
	for _, b := range []string{"mke2fs", "podman", "conmon"} {
		if p, err := exec.LookPath(b); err == nil {
			if err := rig.AddBinary(cfg.Files, p); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := os.Stat("/etc/containers/policy.json"); err == nil {
		cfg.Files["/etc/containers/policy.json"] = "/etc/containers/policy.json"
	}
	// L1 has no cc, Go toolchain, QEMU or container runtimes: of the bench
	// paths, the two microvm ones must run there.
	env := []string{"MICROVM_BIN=/bin/microvm", "MICROVM_CACHE=/rig/cache", "HOME=/rig/work", "MICROVM_BENCH_REQUIRE=vm,vm-proc"}
	for l1, host := range map[string]string{
		"/guest/vmlinux": a.GuestVmlinux, "/guest/bzImage": a.GuestBzImage, "/guest/initramfs.cpio.gz": a.GuestInitramfs,
	} {
		if host != "" {
			cfg.Files[l1] = host
		}
	}
	if a.GuestVmlinux != "" {
		env = append(env, "MICROVM_KERNEL_VMLINUX=/guest/vmlinux")
	}
	if a.GuestBzImage != "" {
		env = append(env, "MICROVM_KERNEL_BZIMAGE=/guest/bzImage")
	}
	if a.GuestInitramfs != "" {
		env = append(env, "MICROVM_INITRAMFS=/guest/initramfs.cpio.gz")
	}
	// Debian's third-party guests (`make guests`, vmm/thirdparty_test.go).
	for _, g := range []struct{ env, l1 string }{
		{"MICROVM_MEMTEST", "/guest/memtest86+x64.bin"}, {"MICROVM_GRUB_INVADERS", "/guest/invaders.exec"},
	} {
		if host := os.Getenv(g.env); host != "" {
			cfg.Files[g.l1] = host
			env = append(env, g.env+"="+g.l1)
		}
	}
	bin := t.TempDir()
	for _, pkg := range kvmPackages {
		name := strings.ReplaceAll(pkg, "/", "_") + ".test"
		out := filepath.Join(bin, name)
		build := exec.Command("go", "test", "-c", "-o", out, "./"+pkg)
		build.Dir = root
		build.Env = append(os.Environ(), "CGO_ENABLED=0")
		if msg, err := build.CombinedOutput(); err != nil {
			t.Fatalf("go test -c ./%s: %v\n%s", pkg, err, msg)
		}
		l1 := path.Join("/src", pkg, name)
		cfg.Files[l1] = out
		cfg.Commands = append(cfg.Commands, rig.Command{
			Name: pkg,
			Run: fmt.Sprintf("mkdir -p /rig/cache && cd /src/%s && env %s ./%s -test.v -test.count=1 -test.short -test.skip '%s' -test.timeout 9m",
				pkg, strings.Join(env, " "), name, hostOnly),
			Timeout: 10 * time.Minute,
		})
	}
	cfg.Timeout = 25 * time.Minute
	cfg.MemoryMiB = 6144 // TestBootEmbeddedGuests boots a guest with 5G
	res := rig.RunTest(t, cfg)
	for _, c := range res.Commands {
		s := summarize(c.Output)
		t.Logf("%s in L1: status %d, %d passed, %d failed, %d skipped, %v", c.Name, c.Status, len(s.pass), len(s.fail), len(s.skip), c.Elapsed.Round(time.Second))
		for _, sk := range s.skip {
			t.Logf("  %s skipped in L1: %s", c.Name, sk)
		}
		for _, f := range s.fail {
			t.Errorf("%s: %s failed in L1", c.Name, f)
		}
		if !c.OK() {
			t.Errorf("%s: status %d in L1 (done=%v); output's last lines:\n%s", c.Name, c.Status, c.Done, tail(c.Output, 60))
		} else if len(s.pass) == 0 {
			t.Errorf("%s: no test passed in L1:\n%s", c.Name, tail(c.Output, 30))
		}
	}
}

// trackedFiles lists the repository's files as git knows them.
func trackedFiles(root string) ([]string, error) {
	cmd := exec.Command("git", "ls-files", "-z")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("git ls-files: %w", err)
	}
	var files []string
	for _, f := range strings.Split(string(out), "\x00") {
		if f == "" {
			continue
		}
		if st, err := os.Lstat(filepath.Join(root, f)); err == nil && st.Mode().IsRegular() {
			files = append(files, f)
		}
	}
	return files, nil
}

type summary struct{ pass, fail, skip []string }

var resultLine = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): (\S+)`)

// summarize reads `go test -v` output: every test's verdict, and for a
// skip the reason on the line after it.
func summarize(out string) summary {
	var s summary
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	pendingSkip := ""
	for sc.Scan() {
		line := sc.Text()
		if pendingSkip != "" {
			s.skip = append(s.skip, pendingSkip+": "+strings.TrimSpace(line))
			pendingSkip = ""
			continue
		}
		m := resultLine.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		switch m[1] {
		case "PASS":
			s.pass = append(s.pass, m[2])
		case "FAIL":
			s.fail = append(s.fail, m[2])
		case "SKIP":
			pendingSkip = m[2]
		}
	}
	if pendingSkip != "" {
		s.skip = append(s.skip, pendingSkip)
	}
	return s
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
