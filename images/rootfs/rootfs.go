// Package rootfs builds what the container paths run: a minimal root
// filesystem made of busybox-static (Debian's busybox-static package) plus the
// tiny "ready" benchmark program, OCI runtime bundles (config.json per the
// OCI runtime specification) for real runtimes such as runc and crun, and a
// tar of the rootfs for `podman import`.
package rootfs

import (
	"bytes"
	"debug/elf"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// readyBinary is the prebuilt ready/ready program (see ready/ready.S).
//
//go:embed ready/ready
var readyBinary []byte

// Ready returns the prebuilt "ready" program: a static x86-64 ELF that writes
// one byte to fd 3 and exits 0. It is the container twin of the "ready" tiny
// guest.
func Ready() []byte { return bytes.Clone(readyBinary) }

// DefaultBusybox lists where a static busybox is looked for, in order.
var defaultBusybox = []string{"/bin/busybox", "/usr/bin/busybox"}

// FindBusybox returns the path of a statically linked busybox, preferring
// explicit (when not empty).
func FindBusybox(explicit string) (string, error) {
	cands := defaultBusybox
	if explicit != "" {
		cands = []string{explicit}
	}
	var errs []error
	for _, p := range cands {
		if err := checkStatic(p); err != nil {
			errs = append(errs, err)
			continue
		}
		return p, nil
	}
	return "", fmt.Errorf("no static busybox found (install Debian's busybox-static): %w", errors.Join(errs...))
}

// checkStatic verifies p is an ELF executable without a program interpreter
// (PT_INTERP), so it runs inside a rootfs that has no dynamic loader.
func checkStatic(p string) error {
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("read busybox: %w", err)
	}
	if len(b) < 64 || string(b[:4]) != "\x7fELF" {
		return fmt.Errorf("%s: not an ELF executable", p)
	}
	if hasInterp(b) {
		return fmt.Errorf("%s: dynamically linked; a static busybox is needed (Debian package busybox-static)", p)
	}
	return nil
}

// Options tunes Build.
type Options struct {
	// Busybox is the static busybox binary to install; empty finds one.
	Busybox string
}

// Build creates a busybox root filesystem in dir (created if missing): the
// busybox binary at /bin/busybox with a symlink for each applet in /bin, the
// ready program at /bin/ready, the usual empty mount points, and minimal
// /etc/passwd, /etc/group and /etc/hostname. Building into an existing rootfs
// refreshes it.
func Build(dir string, opts Options) error {
	bb, err := FindBusybox(opts.Busybox)
	if err != nil {
		return err
	}
	applets, err := listApplets(bb)
	if err != nil {
		return err
	}
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "etc", "proc", "sys", "dev", "tmp", "root", "run", "var"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return fmt.Errorf("build rootfs: %w", err)
		}
	}
	if err := os.Chmod(filepath.Join(dir, "tmp"), 0o1777|os.ModeSticky); err != nil {
		return fmt.Errorf("build rootfs: %w", err)
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		return fmt.Errorf("build rootfs: %w", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, "bin/busybox"), data, 0o755); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, "bin/ready"), readyBinary, 0o755); err != nil {
		return err
	}
	for _, a := range applets {
		if a == "busybox" || a == "ready" {
			continue
		}
		link := filepath.Join(dir, "bin", a)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink("busybox", link); err != nil {
			return fmt.Errorf("build rootfs: applet %s: %w", a, err)
		}
	}
	files := map[string]string{
		"etc/passwd":   "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":    "root:x:0:\nnogroup:x:65534:\n",
		"etc/hostname": "microvm\n",
		"etc/hosts":    "127.0.0.1\tlocalhost microvm\n",
	}
	for name, content := range files {
		if err := writeFileAtomic(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// listApplets asks busybox for its applet names.
func listApplets(bb string) ([]string, error) {
	out, err := exec.Command(bb, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list: %w", bb, err)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.ContainsAny(l, "/ \t") || l == "." || l == ".." {
			continue
		}
		names = append(names, l)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("%s --list printed no applets", bb)
	}
	sort.Strings(names)
	return names, nil
}

func writeFileAtomic(p string, data []byte, mode os.FileMode) error {
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("write %s: %w", p, err)
	}
	return nil
}

// Check reports whether dir looks like a usable rootfs: an existing directory
// holding an executable /bin/sh (a symlink is resolved inside dir).
func Check(dir string) error {
	if dir == "" {
		return errors.New("no rootfs given")
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("rootfs %q: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("rootfs %q is not a directory", dir)
	}
	sh, err := resolveIn(dir, "/bin/sh")
	if err != nil {
		return fmt.Errorf("rootfs %q has no /bin/sh (build one with 'make rootfs' or images/rootfs.Build): %w", dir, err)
	}
	fi, err = os.Stat(sh)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("rootfs %q: /bin/sh is not an executable file", dir)
	}
	return nil
}

// resolveIn resolves path p inside root, following symlinks as if root were
// "/", and returns the host path. At most 40 links are followed.
func resolveIn(root, p string) (string, error) {
	cur := "/"
	rest := strings.Split(strings.Trim(p, "/"), "/")
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, c)
		host := filepath.Join(root, next)
		fi, err := os.Lstat(host)
		if err != nil {
			return "", err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			cur = next
			continue
		}
		links++
		if links > 40 {
			return "", fmt.Errorf("%s: too many levels of symbolic links", p)
		}
		target, err := os.Readlink(host)
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(target, "/") {
			cur = "/"
		}
		rest = append(strings.Split(strings.Trim(target, "/"), "/"), rest...)
	}
	return filepath.Join(root, cur), nil
}

// hasInterp reports whether the ELF image b asks for a program interpreter.
// Unparseable images count as dynamic (they cannot be trusted to run).
func hasInterp(b []byte) bool {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return true
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}
