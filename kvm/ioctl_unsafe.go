package kvm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file is the only place in package kvm that converts Go pointers for
// the kernel. Every struct handed to an ioctl is a plain-data Go value whose
// layout matches linux/kvm.h (see TestStructSizes).

// ioctl issues a request with an integer argument, retrying on EINTR.
func ioctl(fd int, req, arg uintptr) (uintptr, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return r, errno
		}
		return r, nil
	}
}

// ioctlPtr issues a request whose argument is a pointer to p, retrying on EINTR.
func ioctlPtr[T any](fd int, req uintptr, p *T) error {
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(unsafe.Pointer(p)))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return errno
		}
		return nil
	}
}

// runOnce issues KVM_RUN once; EINTR is returned to the caller.
//
// With raw set it is a raw system call: the Go scheduler is not told, so
// the calling thread keeps its P while the guest runs, and an exit costs no
// P hand-off and re-acquisition (a large share of every exit on emulated
// and nested hosts). The runtime still preempts the goroutine when it must
// (garbage collection, a starving goroutine): its preemption signal
// interrupts KVM_RUN with EINTR. But while the thread holds its P nothing
// else runs on it, so a caller uses raw mode only while the process keeps
// Ps to spare for its other goroutines.
func runOnce(fd int, raw bool) error {
	var errno unix.Errno
	if raw {
		_, _, errno = unix.RawSyscall(unix.SYS_IOCTL, uintptr(fd), kvmRun, 0)
	} else {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, uintptr(fd), kvmRun, 0)
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// hostAddr returns the host virtual address of the first byte of b, which
// must be memory that outlives its registration with KVM (an mmap).
func hostAddr(b []byte) uintptr {
	return uintptr(unsafe.Pointer(unsafe.SliceData(b)))
}

// msrIoctl issues KVM_GET_MSRS or KVM_SET_MSRS and returns how many entries
// the kernel processed.
func (c *VCPU) msrIoctl(req uintptr, b *msrs) (int, error) {
	for {
		r, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(c.fd), req, uintptr(unsafe.Pointer(b)))
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return 0, errno
		}
		return int(r), nil
	}
}
