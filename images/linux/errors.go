package linux

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error this package returns for bad input wraps
// exactly one of the specific sentinels below; all of them except
// ErrCmdlineTooLong and ErrBadCmdline also match ErrBadImage, so a caller
// can map errors.Is(err, ErrBadImage) to "the image could not be loaded"
// (the CLI's exit status 126) and the command line errors to usage errors.
var (
	// ErrBadImage matches every error about a kernel, initrd or memory
	// layout that cannot be booted.
	ErrBadImage = errors.New("bad kernel image")

	// ErrNotLinux: neither a bzImage (no "HdrS" setup header) nor an x86-64
	// vmlinux ELF.
	ErrNotLinux = errors.New("not a Linux kernel image")
	// ErrProtocolVersion: the bzImage speaks a boot protocol older than
	// MinProtocol (2.06), which has no cmdline_size and predates the
	// 64-bit entry point this loader relies on.
	ErrProtocolVersion = errors.New("unsupported boot protocol version")
	// ErrWrongArch: an ELF for another machine or class, or a bzImage
	// without the 64-bit entry point (XLF_KERNEL_64).
	ErrWrongArch = errors.New("kernel is not for x86-64")
	// ErrTruncated: the image ends before a structure it describes.
	ErrTruncated = errors.New("truncated kernel image")
	// ErrCorruptPayload: the compressed bzImage payload does not decode,
	// or decodes to something other than the size it declares or an ELF.
	ErrCorruptPayload = errors.New("corrupt kernel payload")
	// ErrUnsupportedCompression: a payload compression this loader cannot
	// decode (LZO, or an unknown magic number).
	ErrUnsupportedCompression = errors.New("unsupported payload compression")
	// ErrTooLarge: the decompressed kernel would exceed MaxDecompressed.
	ErrTooLarge = errors.New("kernel too large")
	// ErrDoesNotFit: the kernel, initrd, zero page, command line or MP
	// table does not fit in the guest's RAM.
	ErrDoesNotFit = errors.New("does not fit in guest memory")
	// ErrCmdlineTooLong: the command line is longer than the kernel's
	// cmdline_size. Not an ErrBadImage: the caller asked for too much.
	ErrCmdlineTooLong = errors.New("kernel command line too long")
	// ErrBadCmdline: the command line holds a NUL byte. Not an
	// ErrBadImage either.
	ErrBadCmdline = errors.New("bad kernel command line")
)

// Error is the error type of this package: a sentinel Kind plus a message
// saying what exactly was wrong, optionally wrapping a cause (a codec error).
type Error struct {
	Kind error  // one of the Err* sentinels
	Msg  string // what was wrong, and what to do about it where that helps
	Err  error  // underlying cause, may be nil
}

func (e *Error) Error() string {
	s := e.Kind.Error() + ": " + e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Unwrap returns the underlying cause.
func (e *Error) Unwrap() error { return e.Err }

// Is reports whether target is e's kind, or ErrBadImage for every kind but
// the command line ones.
func (e *Error) Is(target error) bool {
	if target == e.Kind {
		return true
	}
	return target == ErrBadImage && e.Kind != ErrCmdlineTooLong && e.Kind != ErrBadCmdline
}

func errorf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...)}
}

func wrapf(kind error, cause error, format string, args ...any) error {
	return &Error{Kind: kind, Msg: fmt.Sprintf(format, args...), Err: cause}
}
