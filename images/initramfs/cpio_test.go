package initramfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// entry is one parsed newc record.
type entry struct {
	name                 string
	ino, mode, nlink     uint32
	uid, gid, mtime      uint32
	rdevmajor, rdevminor uint32
	data                 []byte
}

// parseNewc reads a newc archive the way the kernel's init/initramfs.c
// does, checking alignment, and stops at the trailer.
func parseNewc(t testing.TB, b []byte) []entry {
	t.Helper()
	var out []entry
	off := 0
	for {
		if off%4 != 0 {
			t.Fatalf("record at %d not 4-aligned", off)
		}
		if off+110 > len(b) {
			t.Fatalf("truncated header at %d", off)
		}
		h := b[off : off+110]
		if string(h[:6]) != "070701" {
			t.Fatalf("bad magic %q at %d", h[:6], off)
		}
		f := func(i int) uint32 {
			v, err := strconv.ParseUint(string(h[6+8*i:14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("field %d at %d: %v", i, off, err)
			}
			return uint32(v)
		}
		e := entry{ino: f(0), mode: f(1), uid: f(2), gid: f(3), nlink: f(4), mtime: f(5), rdevmajor: f(9), rdevminor: f(10)}
		size, namesize := int(f(6)), int(f(11))
		if f(12) != 0 {
			t.Fatalf("check field set")
		}
		nameStart := off + 110
		if nameStart+namesize > len(b) || namesize == 0 || b[nameStart+namesize-1] != 0 {
			t.Fatalf("bad name at %d", off)
		}
		e.name = string(b[nameStart : nameStart+namesize-1])
		dataStart := (nameStart + namesize + 3) &^ 3
		if dataStart+size > len(b) {
			t.Fatalf("truncated data for %s", e.name)
		}
		e.data = b[dataStart : dataStart+size]
		off = (dataStart + size + 3) &^ 3
		if e.name == trailerName {
			if len(b)%512 != 0 {
				t.Errorf("archive length %d not a multiple of 512", len(b))
			}
			if strings.Trim(string(b[off:]), "\x00") != "" {
				t.Errorf("garbage after trailer")
			}
			return out
		}
		out = append(out, e)
	}
}

func TestWriterNewc(t *testing.T) {
	build := func() []byte {
		var buf bytes.Buffer
		w := NewWriter(&buf)
		steps := []error{
			w.Dir("/bin", 0o755),
			w.File("/bin/hello", 0o755|fs.ModeSetuid, []byte("hi there")),
			w.Symlink("bin/sh", "hello"),
			w.CharDev("dev/console", 0o600, 5, 1),
			w.File("empty", 0o644, nil),
			w.Close(),
		}
		for i, err := range steps {
			if err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
		return buf.Bytes()
	}
	a, b := build(), build()
	if !bytes.Equal(a, b) {
		t.Fatal("two identical builds differ: not deterministic")
	}
	got := parseNewc(t, a)
	want := []entry{
		{name: "bin", ino: 1, mode: 0o040755, nlink: 2},
		{name: "bin/hello", ino: 2, mode: 0o104755, nlink: 1, data: []byte("hi there")},
		{name: "bin/sh", ino: 3, mode: 0o120777, nlink: 1, data: []byte("hello")},
		{name: "dev/console", ino: 4, mode: 0o020600, nlink: 1, rdevmajor: 5, rdevminor: 1},
		{name: "empty", ino: 5, mode: 0o100644, nlink: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("%d entries, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.name != w.name || g.ino != w.ino || g.mode != w.mode || g.nlink != w.nlink ||
			g.rdevmajor != w.rdevmajor || g.rdevminor != w.rdevminor || !bytes.Equal(g.data, w.data) ||
			g.uid != 0 || g.gid != 0 || g.mtime != 0 {
			t.Errorf("entry %d = %+v, want %+v", i, g, w)
		}
	}
}

func TestWriterBadNames(t *testing.T) {
	for _, name := range []string{"", "/", ".", "../etc/passwd", "a/../../b", "x\x00y", "TRAILER!!!"} {
		w := NewWriter(&bytes.Buffer{})
		if err := w.File(name, 0o644, nil); !errors.Is(err, ErrBadName) {
			t.Errorf("File(%q) error %v, want ErrBadName", name, err)
		}
	}
	w := NewWriter(&bytes.Buffer{})
	if err := w.Symlink("a", ""); err == nil {
		t.Error("empty symlink target accepted")
	}
	w.Close()
	if err := w.File("late", 0o644, nil); err == nil {
		t.Error("write after Close accepted")
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("disk full")
	}
	f.n--
	return len(p), nil
}

func TestWriterErrorSticks(t *testing.T) {
	w := NewWriter(&failWriter{n: 2})
	w.File("a", 0o644, []byte("x"))
	if err := w.File("b", 0o644, []byte("y")); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("error %v", err)
	}
	if err := w.Close(); err == nil {
		t.Fatal("Close after a failed write succeeded")
	}
}

// TestWriterWithCpioTool lists our archive with GNU cpio (the real tool).
func TestWriterWithCpioTool(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("SKIPPED: cpio not installed (make deps installs it)")
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	w.Dir("etc", 0o755)
	w.File("etc/motd", 0o644, []byte("welcome\n"))
	w.Symlink("motd", "etc/motd")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("cpio", "-t", "-v", "--quiet")
	cmd.Stdin = &buf
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	want := []string{"drwxr-xr-x", "-rw-r--r--", "lrwxrwxrwx"}
	names := []string{"etc", "etc/motd", "motd -> etc/motd"}
	if len(lines) != 3 {
		t.Fatalf("cpio listed %d lines:\n%s", len(lines), out)
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, want[i]) || !strings.HasSuffix(l, names[i]) {
			t.Errorf("line %d = %q, want %s ... %s", i, l, want[i], names[i])
		}
	}
	fmt.Fprint(&bytes.Buffer{}, out)
}
