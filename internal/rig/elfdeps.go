package rig

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// libDirs are the directories searched for DT_NEEDED libraries, in the
// order of Debian's x86-64 ld.so configuration.
var libDirs = []string{
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu",
	"/lib64", "/usr/lib64", "/lib", "/usr/lib",
}

// AddBinary adds the host executable bin to files under the same path, with
// its ELF interpreter and every shared library it needs (transitively,
// found by DT_NEEDED, DT_RUNPATH and the standard library directories), so
// that a dynamically linked program runs inside L1. A static binary adds
// only itself. Libraries keep their host paths; symlinks are resolved to
// their content. bin may be a bare name, looked up in PATH.
func AddBinary(files map[string]string, bin string) error {
	p, err := exec.LookPath(bin)
	if err != nil {
		return fmt.Errorf("find %q: %w", bin, err)
	}
	p, err = filepath.Abs(p)
	if err != nil {
		return err
	}
	files[p] = p
	seen := map[string]bool{}
	return addELFDeps(files, p, seen)
}

func addELFDeps(files map[string]string, p string, seen map[string]bool) error {
	if seen[p] {
		return nil
	}
	seen[p] = true
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("read ELF %s: %w", p, err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, prog.Filesz)
		if _, err := prog.ReadAt(b, 0); err != nil {
			return fmt.Errorf("read interpreter of %s: %w", p, err)
		}
		interp := strings.TrimRight(string(b), "\x00")
		if _, err := os.Stat(interp); err != nil {
			return fmt.Errorf("interpreter of %s: %w", p, err)
		}
		files[interp] = interp
	}
	needed, err := f.DynString(elf.DT_NEEDED)
	if err != nil {
		if errors.Is(err, elf.ErrNoSymbols) || f.Section(".dynamic") == nil {
			return nil // static
		}
		return fmt.Errorf("read DT_NEEDED of %s: %w", p, err)
	}
	var dirs []string
	for _, tag := range []elf.DynTag{elf.DT_RUNPATH, elf.DT_RPATH} {
		rp, _ := f.DynString(tag)
		for _, r := range rp {
			for _, d := range strings.Split(r, ":") {
				dirs = append(dirs, strings.ReplaceAll(d, "$ORIGIN", filepath.Dir(p)))
			}
		}
	}
	dirs = append(dirs, libDirs...)
	for _, lib := range needed {
		found := ""
		for _, d := range dirs {
			c := filepath.Join(d, lib)
			if st, err := os.Stat(c); err == nil && st.Mode().IsRegular() {
				found = c
				break
			}
		}
		if found == "" {
			return fmt.Errorf("%s needs %s: not found in %s", p, lib, strings.Join(dirs, ":"))
		}
		files[found] = found
		if err := addELFDeps(files, found, seen); err != nil {
			return err
		}
	}
	return nil
}
