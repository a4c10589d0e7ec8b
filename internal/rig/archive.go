package rig

import (
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/microvm/microvm/images/initramfs"
)

// runArchive writes the per-run cpio archive that follows the cached base
// archive. It uses initramfs.Writer and adds the parent directories that
// Writer wants written first (directories the base already has are
// harmless: the kernel's unpacker skips a mkdir of an existing directory).
type runArchive struct {
	w    *initramfs.Writer
	dirs map[string]bool
}

func newRunArchive(w io.Writer) *runArchive {
	return &runArchive{w: initramfs.NewWriter(w), dirs: map[string]bool{}}
}

// parents writes the missing parent directories of name.
func (a *runArchive) parents(name string) error {
	dir := path.Dir(path.Clean("/" + name))
	if dir == "/" || a.dirs[dir] {
		return nil
	}
	if err := a.parents(dir); err != nil {
		return err
	}
	a.dirs[dir] = true
	return a.w.Dir(strings.TrimPrefix(dir, "/"), 0o755)
}

// bytes adds a regular file.
func (a *runArchive) bytes(name string, perm os.FileMode, data []byte) error {
	if err := a.parents(name); err != nil {
		return err
	}
	return a.w.File(name, perm, data)
}

// files adds host files (archive path -> host path, symlinks followed,
// permission bits kept) in sorted order, so equal inputs give equal
// archives.
func (a *runArchive) files(files map[string]string) error {
	names := make([]string, 0, len(files))
	for dst := range files {
		names = append(names, dst)
	}
	sort.Strings(names)
	for _, dst := range names {
		src := files[dst]
		st, err := os.Stat(src)
		if err != nil {
			return fmt.Errorf("add %s: %w", dst, err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("add %s: %s is not a regular file", dst, src)
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("add %s: %w", dst, err)
		}
		if err := a.bytes(dst, st.Mode().Perm(), data); err != nil {
			return fmt.Errorf("add %s as %s: %w", src, dst, err)
		}
	}
	return nil
}

func (a *runArchive) close() error { return a.w.Close() }
