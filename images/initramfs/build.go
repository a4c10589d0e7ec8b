package initramfs

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
)

// InitScript is the default /init: mounts devtmpfs (first: there is no
// /dev/console before), proc and sysfs, insmods the modules listed in
// /etc/microvm/modules, switches to the root=/dev/... device when the
// command line names one (for kernels whose disk driver is one of those
// modules), prints ReadyMarker, writes the microvm ready
// register, runs the command given as microvm.cmd=... on the kernel command
// line (or a shell on the console), writes its exit status to the microvm
// exit register and powers off. See the script for the register details.
//
//go:embed init.sh
var InitScript []byte

// ReadyMarker is the line /init prints once the system is up, right before
// it writes the ready register and runs the command.
const ReadyMarker = "microvm-init: ready"

// DefaultBusybox is where Debian's busybox-static puts its binary.
const DefaultBusybox = "/bin/busybox"

// Applets returns the busybox applets linked into /bin (each a symlink to
// busybox).
func Applets() []string {
	return []string{
		"[", "awk", "cat", "chmod", "cp", "cttyhack", "cut", "date", "dd", "devmem",
		"df", "dmesg", "echo", "env", "false", "free", "grep", "halt", "head",
		"hostname", "id", "insmod", "ip", "kill", "ln", "ls", "lsmod", "mkdir",
		"mknod", "mount", "mv", "poweroff", "printf", "ps", "pwd", "reboot", "rm",
		"rmdir", "sed", "seq", "setsid", "sh", "sleep", "stat", "switch_root", "sync", "sysctl",
		"tail", "tee", "test", "time", "touch", "tr", "true", "umount", "uname",
		"uptime", "wc", "which", "xargs",
	}
}

// File is an extra file (or directory tree) to put into the archive.
type File struct {
	Src string // host path; a directory is copied recursively
	Dst string // path inside the archive, e.g. /usr/bin/tool
}

// ParseFile parses "SRC:DST" (the --add flag's syntax).
func ParseFile(s string) (File, error) {
	src, dst, ok := strings.Cut(s, ":")
	if !ok || src == "" || dst == "" {
		return File{}, fmt.Errorf("%q: want SRC:DST (a host path and a path in the initramfs)", s)
	}
	return File{Src: src, Dst: dst}, nil
}

// Options says what goes into the initramfs.
type Options struct {
	// Busybox is the host path of a statically linked busybox;
	// DefaultBusybox when empty.
	Busybox string
	// Init replaces InitScript when non-nil.
	Init []byte
	// Modules are host paths of kernel modules (.ko). They go to
	// /lib/modules/<name> and /init insmods them, in this order, before
	// it prints the ready marker (dependencies first: e.g. virtio,
	// virtio_ring, virtio_mmio, virtio_blk for Debian's cloud kernel).
	Modules []string
	// Files are extra files, added last.
	Files []File
	// Gzip compresses the archive (deterministically: no name, mtime 0).
	Gzip bool
}

// Write builds the initramfs into w.
func Write(w io.Writer, opts Options) (err error) {
	bbPath := opts.Busybox
	if bbPath == "" {
		bbPath = DefaultBusybox
	}
	busybox, err := os.ReadFile(bbPath)
	if err != nil {
		return fmt.Errorf("busybox: %w (install busybox-static, or pass its path)", err)
	}
	if err := checkStatic(busybox); err != nil {
		return fmt.Errorf("busybox %s: %w", bbPath, err)
	}
	init := opts.Init
	if init == nil {
		init = InitScript
	}

	out := w
	var zw *gzip.Writer
	if opts.Gzip {
		zw, err = gzip.NewWriterLevel(w, gzip.BestCompression)
		if err != nil {
			return err
		}
		out = zw
	}
	b := &builder{cw: NewWriter(out), seen: map[string]bool{}}
	for _, d := range []string{"bin", "dev", "etc", "etc/microvm", "lib", "lib/modules", "proc", "root", "sbin", "sys", "tmp", "usr", "usr/bin", "usr/sbin"} {
		b.dir(d)
	}
	// A console node, so the kernel can give /init its stdio even before
	// /init mounts devtmpfs over /dev.
	b.add("dev/console", func() error { return b.cw.CharDev("dev/console", 0o600, 5, 1) })
	b.file("bin/busybox", 0o755, busybox)
	for _, a := range Applets() {
		b.symlink("bin/"+a, "busybox")
	}
	b.file("init", 0o755, init)

	var list bytes.Buffer
	var mods []string
	for _, m := range opts.Modules {
		name := filepath.Base(m)
		if !strings.HasSuffix(name, ".ko") {
			return fmt.Errorf("module %s: want a .ko file (busybox insmod loads uncompressed modules)", m)
		}
		fmt.Fprintln(&list, name)
		mods = append(mods, name)
	}
	b.file("etc/microvm/modules", 0o644, list.Bytes())
	for i, m := range opts.Modules {
		data, err := os.ReadFile(m)
		if err != nil {
			return fmt.Errorf("module: %w", err)
		}
		b.file("lib/modules/"+mods[i], 0o644, data)
	}
	for _, f := range opts.Files {
		if err := b.tree(f.Src, f.Dst); err != nil {
			return err
		}
	}
	if b.err != nil {
		return b.err
	}
	if err := b.cw.Close(); err != nil {
		return err
	}
	if zw != nil {
		return zw.Close()
	}
	return nil
}

// builder adds entries, creating parent directories on demand and
// refusing duplicates; the first error sticks.
type builder struct {
	cw   *Writer
	seen map[string]bool
	err  error
}

func (b *builder) add(name string, write func() error) {
	if b.err != nil {
		return
	}
	n, err := cleanName(name)
	if err != nil {
		b.err = err
		return
	}
	if b.seen[n] {
		b.err = fmt.Errorf("initramfs: %s added twice", "/"+n)
		return
	}
	if parent := path.Dir(n); parent != "." && !b.seen[parent] {
		b.dir(parent)
		if b.err != nil {
			return
		}
	}
	b.seen[n] = true
	b.err = write()
}

func (b *builder) dir(name string) {
	n, err := cleanName(name)
	if err != nil {
		b.err = err
		return
	}
	if b.seen[n] {
		return
	}
	b.add(n, func() error { return b.cw.Dir(n, 0o755) })
}

func (b *builder) file(name string, perm fs.FileMode, data []byte) {
	b.add(name, func() error { return b.cw.File(name, perm, data) })
}

func (b *builder) symlink(name, target string) {
	b.add(name, func() error { return b.cw.Symlink(name, target) })
}

// tree adds a host file, symlink or directory (recursively, in lexical
// order) at dst.
func (b *builder) tree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("add %s: %w", src, err)
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		target := path.Join(dst, filepath.ToSlash(rel))
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("add %s: %w", p, err)
		}
		switch {
		case d.IsDir():
			n, err := cleanName(target)
			if err != nil {
				return err
			}
			if !b.seen[n] {
				b.add(n, func() error { return b.cw.Dir(n, info.Mode().Perm()) })
			}
		case info.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return fmt.Errorf("add %s: %w", p, err)
			}
			b.symlink(target, t)
		case info.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return fmt.Errorf("add %s: %w", p, err)
			}
			b.file(target, info.Mode(), data)
		default:
			return fmt.Errorf("add %s: not a regular file, directory or symlink", p)
		}
		return b.err
	})
}

// checkStatic refuses a binary that is not an x86-64 ELF executable
// without a program interpreter (a dynamically linked busybox cannot run
// in an initramfs that has no libc).
func checkStatic(b []byte) error {
	if len(b) < 64 || !bytes.HasPrefix(b, []byte("\x7fELF")) || b[4] != 2 || b[5] != 1 {
		return errors.New("not a 64-bit little-endian ELF executable")
	}
	le := binary.LittleEndian
	if m := le.Uint16(b[18:]); m != 62 {
		return fmt.Errorf("ELF machine %d is not x86-64", m)
	}
	phoff := le.Uint64(b[32:])
	phentsize := uint64(le.Uint16(b[54:]))
	phnum := uint64(le.Uint16(b[56:]))
	if phentsize < 56 || phoff > uint64(len(b)) || phnum*phentsize > uint64(len(b))-phoff {
		return errors.New("truncated ELF program headers")
	}
	for i := range phnum {
		if le.Uint32(b[phoff+i*phentsize:]) == 3 { // PT_INTERP
			return errors.New("dynamically linked (has PT_INTERP): install busybox-static")
		}
	}
	return nil
}
