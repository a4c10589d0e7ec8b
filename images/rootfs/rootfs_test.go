package rootfs

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadyMatchesSource rebuilds ready/ready from ready.S and checks the
// committed binary is exactly what the source gives.
func TestReadyMatchesSource(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("SKIPPED LOUDLY: gcc is needed to rebuild ready.S")
	}
	out := filepath.Join(t.TempDir(), "ready")
	cmd := exec.Command(gcc, "-nostdlib", "-static", "-s", "-Wl,--build-id=none", "-Wl,-n", "-o", out, "ready/ready.S")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gcc: %v\n%s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, readyBinary) {
		t.Fatalf("ready/ready (%d bytes) differs from a rebuild of ready.S (%d bytes): rebuild it with the command in ready.S", len(readyBinary), len(got))
	}
}

// TestReadyRuns runs the ready program: it writes one byte to fd 3, exits 0,
// and also exits 0 when fd 3 is not open.
func TestReadyRuns(t *testing.T) {
	p := filepath.Join(t.TempDir(), "ready")
	if err := os.WriteFile(p, Ready(), 0o755); err != nil {
		t.Fatal(err)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(p)
	cmd.ExtraFiles = []*os.File{w}
	if err := cmd.Run(); err != nil {
		t.Fatalf("ready with fd 3: %v", err)
	}
	w.Close()
	b, _ := io.ReadAll(r)
	if string(b) != "r" {
		t.Errorf("fd 3 got %q, want \"r\"", b)
	}
	if err := exec.Command(p).Run(); err != nil {
		t.Errorf("ready without fd 3: %v", err)
	}
}

func TestBuildAndCheck(t *testing.T) {
	if _, err := FindBusybox(""); err != nil {
		t.Skipf("SKIPPED LOUDLY: %v", err)
	}
	dir := t.TempDir()
	if err := Build(dir, Options{}); err != nil {
		t.Fatalf("Build: %v", err)
	}
	if err := Check(dir); err != nil {
		t.Fatalf("Check of a fresh rootfs: %v", err)
	}
	// A second build refreshes in place.
	if err := Build(dir, Options{}); err != nil {
		t.Fatalf("second Build: %v", err)
	}
	for _, p := range []string{"bin/sh", "bin/true", "bin/ready", "etc/passwd", "proc", "dev", "sys", "tmp"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Errorf("rootfs lacks %s: %v", p, err)
		}
	}
	out, err := exec.Command(filepath.Join(dir, "bin/sh"), "-c", "echo ok").Output()
	if err != nil || strings.TrimSpace(string(out)) != "ok" {
		t.Errorf("rootfs sh: %q, %v", out, err)
	}

	var buf bytes.Buffer
	if err := WriteTar(&buf, dir); err != nil {
		t.Fatalf("WriteTar: %v", err)
	}
	names := map[string]bool{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names[h.Name] = true
		if h.Uid != 0 || strings.HasPrefix(h.Name, "/") || strings.Contains(h.Name, "..") {
			t.Errorf("bad tar entry %q uid %d", h.Name, h.Uid)
		}
	}
	for _, n := range []string{"bin/busybox", "bin/sh", "bin/ready", "etc/passwd", "proc/"} {
		if !names[n] {
			t.Errorf("tar lacks %s", n)
		}
	}
}

func TestCheckBadRootfs(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o644)
	noexec := filepath.Join(dir, "noexec")
	os.MkdirAll(filepath.Join(noexec, "bin"), 0o755)
	os.WriteFile(filepath.Join(noexec, "bin/sh"), []byte("x"), 0o644)
	loop := filepath.Join(dir, "loop")
	os.MkdirAll(filepath.Join(loop, "bin"), 0o755)
	os.Symlink("sh", filepath.Join(loop, "bin/sh"))
	escape := filepath.Join(dir, "escape")
	os.MkdirAll(filepath.Join(escape, "bin"), 0o755)
	// An absolute link resolves inside the rootfs, not on the host.
	os.Symlink("/usr/bin/sh", filepath.Join(escape, "bin/sh"))
	for _, tc := range []struct{ name, dir, want string }{
		{"empty", "", "no rootfs"},
		{"missing", filepath.Join(dir, "nope"), "no such file"},
		{"file", file, "not a directory"},
		{"no sh", dir, "no /bin/sh"},
		{"sh not executable", noexec, "not an executable"},
		{"symlink loop", loop, "too many levels"},
		{"absolute link stays inside", escape, "no /bin/sh"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(tc.dir)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Check(%q) = %v, want it to mention %q", tc.dir, err, tc.want)
			}
		})
	}
}

func TestFindBusyboxRejectsDynamic(t *testing.T) {
	// /bin/ls is dynamically linked on Debian.
	if _, err := FindBusybox("/bin/ls"); err == nil || !strings.Contains(err.Error(), "dynamically linked") {
		t.Errorf("FindBusybox(/bin/ls) = %v, want a dynamically linked error", err)
	}
	if _, err := FindBusybox("/nonexistent"); err == nil {
		t.Error("FindBusybox(/nonexistent) did not fail")
	}
}
