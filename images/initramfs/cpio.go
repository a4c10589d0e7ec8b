// Package initramfs writes initramfs archives: a deterministic cpio "newc"
// writer (the format the kernel unpacks, Documentation/driver-api/
// early-userspace/buffer-format.rst) and a builder for a small busybox-based
// initramfs whose /init runs one command and powers the VM off.
package initramfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// Writer writes a cpio archive in the "newc" format (magic 070701).
// Output is deterministic: inode numbers count up from 1, every mtime,
// uid and gid is 0. Entries are written in the order given; a directory
// must be written before the entries inside it.
type Writer struct {
	w      io.Writer
	n      int64 // bytes written
	ino    uint32
	err    error
	closed bool
}

// NewWriter returns a Writer writing to w.
func NewWriter(w io.Writer) *Writer { return &Writer{w: w} }

// File types for the newc mode field.
const (
	modeDir     = 0o040000
	modeFile    = 0o100000
	modeSymlink = 0o120000
	modeCharDev = 0o020000
)

// ErrBadName: an archive path that is empty, absolute after cleaning,
// holds "..", a NUL byte, or is the trailer's name.
var ErrBadName = errors.New("bad archive path")

// cleanName turns "/bin/sh" or "bin/sh" into "bin/sh" and refuses names
// that escape the archive root.
func cleanName(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: %q has a NUL byte", ErrBadName, name)
	}
	n := strings.TrimLeft(path.Clean("/"+name), "/")
	if n == "" || n == "." {
		return "", fmt.Errorf("%w: %q names the archive root", ErrBadName, name)
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", fmt.Errorf("%w: %q climbs out with ..", ErrBadName, name)
		}
	}
	if n == trailerName {
		return "", fmt.Errorf("%w: %q is the archive trailer's name", ErrBadName, name)
	}
	return n, nil
}

const trailerName = "TRAILER!!!"

// Dir writes a directory entry.
func (w *Writer) Dir(name string, perm fs.FileMode) error {
	return w.entry(name, modeDir|uint32(perm.Perm()), 2, 0, 0, nil)
}

// File writes a regular file. perm may include setuid/setgid/sticky bits.
func (w *Writer) File(name string, perm fs.FileMode, data []byte) error {
	return w.entry(name, modeFile|unixPerm(perm), 1, 0, 0, data)
}

// Symlink writes a symbolic link name → target.
func (w *Writer) Symlink(name, target string) error {
	if target == "" || strings.IndexByte(target, 0) >= 0 {
		return fmt.Errorf("symlink %q: bad target %q", name, target)
	}
	return w.entry(name, modeSymlink|0o777, 1, 0, 0, []byte(target))
}

// CharDev writes a character device node (e.g. dev/console, 5:1).
func (w *Writer) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	return w.entry(name, modeCharDev|uint32(perm.Perm()), 1, major, minor, nil)
}

// unixPerm converts Go's mode bits to the Unix permission and special bits.
func unixPerm(m fs.FileMode) uint32 {
	p := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		p |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		p |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		p |= 0o1000
	}
	return p
}

func (w *Writer) entry(name string, mode, nlink, rmajor, rminor uint32, data []byte) error {
	if w.closed {
		return errors.New("cpio: write after Close")
	}
	n, err := cleanName(name)
	if err != nil {
		return err
	}
	w.ino++
	return w.raw(n, w.ino, mode, nlink, rmajor, rminor, data)
}

func (w *Writer) raw(name string, ino, mode, nlink, rmajor, rminor uint32, data []byte) error {
	if w.err != nil {
		return w.err
	}
	if uint64(len(data)) > 0xffffffff {
		return fmt.Errorf("cpio: %s is %d bytes, over newc's 4 GiB limit", name, len(data))
	}
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rmajor, rminor, len(name)+1, 0)
	w.write([]byte(hdr))
	w.write([]byte(name))
	w.write([]byte{0})
	w.pad()
	w.write(data)
	w.pad()
	return w.err
}

func (w *Writer) write(b []byte) {
	if w.err != nil || len(b) == 0 {
		return
	}
	k, err := w.w.Write(b)
	w.n += int64(k)
	w.err = err
}

// pad aligns the output to 4 bytes.
func (w *Writer) pad() {
	if r := w.n % 4; r != 0 {
		w.write(make([]byte, 4-r))
	}
}

// Close writes the TRAILER!!! entry and pads the archive to a multiple of
// 512 bytes. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.closed {
		return w.err
	}
	w.closed = true
	if err := w.raw(trailerName, 0, 0, 1, 0, 0, nil); err != nil {
		return err
	}
	if r := w.n % 512; r != 0 {
		w.write(make([]byte, 512-r))
	}
	return w.err
}
