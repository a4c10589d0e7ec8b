package rootfs

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tree writes a small rootfs: a file, an executable, a symlink, a
// directory owned by 1000:1001 and a long symlink target.
func tree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "etc"), 0o755))
	must(os.MkdirAll(filepath.Join(dir, "home", "user"), 0o750))
	must(os.WriteFile(filepath.Join(dir, "etc", "hostname"), []byte("box\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755))
	must(os.Symlink("etc/hostname", filepath.Join(dir, "link")))
	must(os.Symlink(strings.Repeat("x/", 60)+"target", filepath.Join(dir, "longlink")))
	if os.Geteuid() == 0 {
		must(os.Chown(filepath.Join(dir, "home", "user"), 1000, 1001))
	}
	return dir
}

func needE2fsprogs(t *testing.T) {
	t.Helper()
	for _, p := range []string{"mke2fs", "debugfs"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s not found: install e2fsprogs (make deps does)", p)
		}
	}
}

// debugfs runs one debugfs request against img.
func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v: %s", req, err, out)
	}
	return string(out)
}

func TestExt4Image(t *testing.T) {
	needE2fsprogs(t)
	dir, cache := tree(t), t.TempDir()
	img, err := Ext4Image(dir, cache)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v: %s", err, out)
	}
	if got := debugfs(t, img, "cat /etc/hostname"); !strings.Contains(got, "box") {
		t.Errorf("/etc/hostname in the image: %q", got)
	}
	if got := debugfs(t, img, "stat /link"); !strings.Contains(got, "etc/hostname") {
		t.Errorf("/link in the image: %q", got)
	}
	if got := debugfs(t, img, "stat /longlink"); !strings.Contains(got, "Type: symlink") {
		t.Errorf("/longlink in the image: %q", got)
	}
	if got := debugfs(t, img, "stat /run.sh"); !strings.Contains(got, "Mode:  0755") {
		t.Errorf("/run.sh mode in the image: %q", got)
	}
	if os.Geteuid() == 0 {
		if got := debugfs(t, img, "stat /home/user"); !strings.Contains(got, "User:  1000   Group:  1001") {
			t.Errorf("/home/user owner in the image: %q", got)
		}
	}

	// Same content: the cached image, not a new build.
	before, _ := os.Stat(img)
	again, err := Ext4Image(dir, cache)
	if err != nil || again != img {
		t.Fatalf("second build: %q, %v; want the cached %q", again, err, img)
	}
	after, _ := os.Stat(img)
	if !after.ModTime().Equal(before.ModTime()) {
		t.Error("the cached image was rebuilt")
	}
	// Changed content, changed mode: each a different image.
	seen := map[string]bool{img: true}
	for _, change := range []func(){
		func() { os.WriteFile(filepath.Join(dir, "etc", "hostname"), []byte("other\n"), 0o644) },
		func() { os.Chmod(filepath.Join(dir, "run.sh"), 0o700) },
	} {
		change()
		next, err := Ext4Image(dir, cache)
		if err != nil {
			t.Fatal(err)
		}
		if seen[next] {
			t.Errorf("a changed tree got an image it had before: %s", next)
		}
		seen[next] = true
	}
	if left, _ := filepath.Glob(filepath.Join(cache, ".building-*")); len(left) > 0 {
		t.Errorf("temporary images left: %v", left)
	}
}

// TestExt4ImageGrows: a tree whose files are mostly small (more metadata
// than data) still fits, through the retry with a larger image.
func TestExt4ImageGrows(t *testing.T) {
	needE2fsprogs(t)
	dir := t.TempDir()
	for i := 0; i < 3000; i++ {
		d := filepath.Join(dir, "d", string(rune('a'+i%26)))
		os.MkdirAll(d, 0o755)
		if err := os.WriteFile(filepath.Join(d, strings.Repeat("n", 100)+string(rune('A'+i/26%26))+string(rune('A'+i/676))), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	img, err := Ext4Image(dir, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Fatalf("e2fsck -fn: %v: %s", err, out)
	}
}

func TestExt4ImageErrors(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct{ name, dir, want string }{
		{"missing", filepath.Join(t.TempDir(), "nope"), "no such file"},
		{"a file", file, "not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Ext4Image(tc.dir, t.TempDir())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Ext4Image(%s) = %v, want %q", tc.dir, err, tc.want)
			}
		})
	}
	t.Run("no mke2fs", func(t *testing.T) {
		t.Setenv("PATH", t.TempDir())
		_, err := Ext4Image(tree(t), t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "e2fsprogs") {
			t.Errorf("without mke2fs: %v, want a hint to install e2fsprogs", err)
		}
	})
}

func TestTreeDigestIgnoresTimes(t *testing.T) {
	dir := tree(t)
	a, err := TreeDigest(dir)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1e9, 0)
	os.Chtimes(filepath.Join(dir, "run.sh"), old, old)
	if b, _ := TreeDigest(dir); b != a {
		t.Error("a new mtime changed the digest")
	}
	os.WriteFile(filepath.Join(dir, "new"), nil, 0o644)
	if c, _ := TreeDigest(dir); c == a {
		t.Error("a new file left the digest as it was")
	}
}
