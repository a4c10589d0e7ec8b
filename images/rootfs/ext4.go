package rootfs

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// imageFormat is part of every image's key: a change to how images are
// built (mke2fs options, sizing) must not reuse an image built before it.
const imageFormat = "microvm-rootfs-ext4-v1"

// TreeDigest is the SHA-256 of a directory tree's content: every entry's
// relative path, type and permission bits, owner, and its bytes (regular
// files), target (symlinks) or device number (device nodes), walked in
// lexical order. Times are not part of it. Sockets are skipped, as mke2fs
// skips them.
func TreeDigest(dir string) (string, error) {
	h := sha256.New()
	io.WriteString(h, imageFormat+"\x00")
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode()&fs.ModeSocket != 0 {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		var uid, gid, rdev uint64
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			uid, gid, rdev = uint64(st.Uid), uint64(st.Gid), st.Rdev
		}
		fmt.Fprintf(h, "%s\x00%o\x00%d:%d\x00", rel, uint32(info.Mode()), uid, gid)
		switch {
		case info.Mode().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			n, err := io.Copy(h, f)
			f.Close()
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "\x00%d\x00", n)
		case info.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%s\x00", t)
		case info.Mode()&fs.ModeDevice != 0:
			fmt.Fprintf(h, "%d\x00", rdev)
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("rootfs digest: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// treeSize adds up what an ext4 image of dir must hold: data blocks
// (4 KiB each) and entries (each an inode).
func treeSize(dir string) (blocks, entries int64, err error) {
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		entries++
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case info.Mode().IsRegular():
			blocks += (info.Size() + 4095) / 4096
		case d.IsDir():
			blocks++ // a directory block; large directories get more in the slack
		case info.Mode()&fs.ModeSymlink != 0 && info.Size() >= 60:
			blocks++ // longer targets than an inode holds inline
		}
		return nil
	})
	return blocks, entries, err
}

// Ext4Image returns the path of a read-only ext4 image of dir's tree in
// cacheDir, named by TreeDigest: the image is built (mke2fs -d, from
// e2fsprogs) only when no image of the same content is there. Owners,
// modes, symlinks and device nodes are kept as in dir. Concurrent callers
// may both build; each renames a complete image into place.
func Ext4Image(dir, cacheDir string) (string, error) {
	if info, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("rootfs image: %w", err)
	} else if !info.IsDir() {
		return "", fmt.Errorf("rootfs image: %s is not a directory", dir)
	}
	sum, err := TreeDigest(dir)
	if err != nil {
		return "", err
	}
	img := filepath.Join(cacheDir, "sha256-"+sum+".ext4")
	if info, err := os.Stat(img); err == nil && info.Mode().IsRegular() {
		return img, nil
	}
	mke2fs, err := exec.LookPath("mke2fs")
	if err != nil {
		return "", errors.New("rootfs image: mke2fs not found (apt-get install e2fsprogs)")
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", fmt.Errorf("rootfs image cache: %w", err)
	}
	blocks, entries, err := treeSize(dir)
	if err != nil {
		return "", fmt.Errorf("rootfs image: %w", err)
	}
	// Room for the data, metadata (inode tables at 256 bytes per inode,
	// bitmaps, directories) and slack; doubled on each "no space" failure.
	inodes := entries + entries/4 + 64
	size := (blocks+blocks/8)*4096 + inodes*256 + 4<<20
	var out []byte
	for try := 0; try < 4; try++ {
		tmp, err := os.CreateTemp(cacheDir, ".building-*.ext4")
		if err != nil {
			return "", fmt.Errorf("rootfs image: %w", err)
		}
		tmp.Close()
		// No journal (the image is mounted read-only), 4 KiB blocks,
		// and no lazy initialisation left for a kernel to finish.
		cmd := exec.Command(mke2fs, "-q", "-F", "-t", "ext4", "-b", "4096", "-N", fmt.Sprint(inodes),
			"-O", "^has_journal", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-m", "0", "-L", "rootfs",
			"-d", dir, tmp.Name(), fmt.Sprint(size/1024)+"k")
		// mke2fs's built-in defaults, not this host's /etc/mke2fs.conf.
		cmd.Env = append(os.Environ(), "MKE2FS_CONFIG=/nonexistent/mke2fs.conf")
		out, err = cmd.CombinedOutput()
		if err == nil {
			if err := os.Chmod(tmp.Name(), 0o444); err != nil {
				os.Remove(tmp.Name())
				return "", fmt.Errorf("rootfs image: %w", err)
			}
			if err := os.Rename(tmp.Name(), img); err != nil {
				os.Remove(tmp.Name())
				return "", fmt.Errorf("rootfs image: %w", err)
			}
			return img, nil
		}
		os.Remove(tmp.Name())
		if !noSpace(out) {
			break
		}
		size *= 2
		inodes *= 2
	}
	return "", fmt.Errorf("rootfs image: mke2fs -d %s: %s", dir, strings.TrimSpace(string(out)))
}

// noSpace says whether mke2fs output reports a full file system.
func noSpace(out []byte) bool {
	s := strings.ToLower(string(out))
	return strings.Contains(s, "no space") || strings.Contains(s, "could not allocate") || strings.Contains(s, "no free space")
}
