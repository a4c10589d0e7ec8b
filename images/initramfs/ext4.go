package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
)

// WriteExt4 writes to dst an ext4 file system image of size (mkfs.ext4's
// syntax: "32M") holding the files of the initramfs archive r (gzip'd or
// plain, as Write makes it): a root disk for root=/dev/vda whose /init is
// the same. It needs the cpio and mkfs.ext4 (e2fsprogs) programs; when one
// is missing the error wraps exec.ErrNotFound.
func WriteExt4(dst string, r io.Reader, size string) error {
	for _, tool := range []string{"cpio", "mkfs.ext4"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("ext4 image: %w (apt-get install cpio e2fsprogs)", err)
		}
	}
	br := bufio.NewReader(r)
	if magic, _ := br.Peek(2); bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("ext4 image: %w", err)
		}
		defer zr.Close()
		r = zr
	} else {
		r = br
	}
	root, err := os.MkdirTemp("", "initramfs-ext4-")
	if err != nil {
		return fmt.Errorf("ext4 image: %w", err)
	}
	defer os.RemoveAll(root)
	cpio := exec.Command("cpio", "-idm", "--quiet")
	cpio.Dir, cpio.Stdin = root, r
	if out, err := cpio.CombinedOutput(); err != nil {
		return fmt.Errorf("ext4 image: unpack the initramfs: %w: %s", err, out)
	}
	mkfs := exec.Command("mkfs.ext4", "-q", "-F", "-L", "root", "-d", root, dst, size)
	if out, err := mkfs.CombinedOutput(); err != nil {
		return fmt.Errorf("ext4 image: %w: %s", err, out)
	}
	return nil
}
