package vmm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapPrivateFixed replaces the mapping host (a whole mmap) with a
// MAP_PRIVATE mapping of fd at the same address: pages fault in lazily
// from the file and a guest write copies only the page it touches, so
// restores of one snapshot share its clean pages in the page cache.
func mapPrivateFixed(host []byte, fd int) error {
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(host)))
	r, _, errno := unix.Syscall6(unix.SYS_MMAP, addr, uintptr(len(host)),
		unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_FIXED|unix.MAP_NORESERVE, uintptr(fd), 0)
	if errno != 0 {
		return errno
	}
	if r != addr {
		return unix.EFAULT
	}
	return nil
}
