package libvirttest

import (
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// InitScript is the /init of the test initrd. It mounts devtmpfs (there is
// no /dev/console before that), prints the ready marker on the console and
// powers off at once, unless the kernel command line holds microvm.hold:
// then it stays up and prints "microvm-init: alive N" every second.
const InitScript = `#!/bin/busybox sh
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mount -t proc proc /proc
exec >/dev/console 2>&1
echo "microvm-init: ready"
case " $(/bin/busybox cat /proc/cmdline) " in
*" microvm.hold "*)
	n=0
	while true; do
		n=$((n+1))
		echo "microvm-init: alive $n"
		/bin/busybox sleep 1
	done
	;;
esac
/bin/busybox poweroff -f
`

// Busybox returns the path of a static busybox, or why there is none.
func Busybox() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if static, err := isStatic(p); err == nil && static {
			return p, nil
		}
	}
	return "", fmt.Errorf("no static busybox (Debian: apt-get install busybox-static)")
}

// isStatic reports whether an ELF executable needs no dynamic loader.
func isStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// Initrd writes a newc cpio initrd holding busybox and InitScript into dir
// and returns its path. It skips the test, loudly, without busybox-static.
func Initrd(t testing.TB, dir string) string {
	t.Helper()
	bb, err := Busybox()
	if err != nil {
		t.Skipf("SKIP (needs busybox-static for the guest initrd): %v", err)
	}
	body, err := os.ReadFile(bb)
	if err != nil {
		t.Fatalf("initrd: %v", err)
	}
	path := filepath.Join(dir, "initrd.cpio")
	f, err := os.Create(path)
	if err != nil {
		t.Fatalf("initrd: %v", err)
	}
	w := &cpioWriter{w: f}
	for _, e := range []struct {
		name string
		mode uint32
		data []byte
	}{
		{"bin", 0o040755, nil},
		{"dev", 0o040755, nil},
		{"proc", 0o040755, nil},
		{"sys", 0o040755, nil},
		{"bin/busybox", 0o100755, body},
		{"bin/sh", 0o120777, []byte("busybox")},
		{"init", 0o100755, []byte(InitScript)},
	} {
		w.add(e.name, e.mode, e.data)
	}
	w.add("TRAILER!!!", 0, nil)
	if err := w.err; err != nil {
		f.Close()
		t.Fatalf("initrd: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("initrd: %v", err)
	}
	return path
}

// cpioWriter writes the "newc" (SVR4, no CRC) cpio format the kernel unpacks.
type cpioWriter struct {
	w   io.Writer
	n   int64
	ino uint32
	err error
}

func (c *cpioWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *cpioWriter) pad() {
	if r := c.n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

func (c *cpioWriter) add(name string, mode uint32, data []byte) {
	c.ino++
	nlink := 1
	if mode&0o170000 == 0o040000 {
		nlink = 2
	}
	fields := []uint32{c.ino, mode, 0, 0, uint32(nlink), 0, uint32(len(data)), 0, 0, 0, 0, uint32(len(name) + 1), 0}
	var hdr strings.Builder
	hdr.WriteString("070701")
	for _, v := range fields {
		fmt.Fprintf(&hdr, "%08x", v)
	}
	c.write([]byte(hdr.String()))
	c.write(append([]byte(name), 0))
	c.pad()
	c.write(data)
	c.pad()
}

// DebianKernel returns $MICROVM_DEBIAN_KERNEL (the Debian cloud kernel that
// `make debian-kernel` fetches) or skips the test, loudly.
func DebianKernel(t testing.TB) string {
	t.Helper()
	k := os.Getenv("MICROVM_DEBIAN_KERNEL")
	if k == "" {
		t.Skip("SKIP (needs a kernel to boot): MICROVM_DEBIAN_KERNEL is not set; `make test` sets it (make debian-kernel)")
	}
	if _, err := os.Stat(k); err != nil {
		t.Skipf("SKIP (needs a kernel to boot): MICROVM_DEBIAN_KERNEL=%s: %v", k, err)
	}
	return k
}

// HaveQEMU skips the test, loudly, when qemu-system-x86_64 is missing.
func HaveQEMU(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("SKIP (needs qemu-system-x86_64; Debian: apt-get install qemu-system-x86)")
	}
}
