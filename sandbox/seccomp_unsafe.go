package sandbox

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file is the only place in package sandbox that hands a Go pointer
// to the kernel.

// seccompSetFilter calls seccomp(SECCOMP_SET_MODE_FILTER, flags, prog).
func seccompSetFilter(prog []unix.SockFilter, flags uintptr) error {
	if len(prog) == 0 {
		return fmt.Errorf("seccomp: empty filter")
	}
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&fprog)))
	if errno != 0 {
		return fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER): %w", errno)
	}
	if r != 0 {
		return fmt.Errorf("%w (thread %d)", ErrTSync, r)
	}
	return nil
}
