package main

import (
	"errors"
	"fmt"
)

// Exit statuses of the microvm command. A guest's own status (0–119) passes
// through unchanged; everything microvm itself decides sits at 120 and above
// so a script can always tell the two apart. The README lists this table.
const (
	exitOK = 0
	// maxGuestStatus is the largest status a guest may pass through.
	maxGuestStatus = 119
	// exitGuestRange: the guest wrote an exit status above maxGuestStatus.
	exitGuestRange = 120
	// exitGuestCrash: triple fault, KVM internal error, unhandled emulation failure.
	exitGuestCrash = 121
	// exitGuestPanic: a Linux guest panicked.
	exitGuestPanic = 122
	// exitUsage: bad flags or arguments.
	exitUsage = 123
	// exitTimeout: --timeout expired.
	exitTimeout = 124
	// exitHost: the host failed us (no /dev/kvm, an ioctl failed, a runtime failed).
	exitHost = 125
	// exitBadImage: the image or kernel could not be read or loaded.
	exitBadImage = 126
	// exitLibvirt: libvirtd reported an error.
	exitLibvirt = 127
	// exitSnapshot: --restore of something that is not a snapshot this
	// microvm can restore (corrupt, truncated, another version, CPU or
	// memory size), or --snapshot-on-ready of a guest that never got ready.
	exitSnapshot = 129
	// exitInterrupted: SIGINT or SIGTERM ended the run (128 + SIGINT).
	exitInterrupted = 130
)

// exitError carries an exit status up to main together with the error text.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// withCode tags err with an exit status. A nil err stays nil.
func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &exitError{code: code, err: err}
}

// usageErrorf is a usage error: printed with a hint to --help, status exitUsage.
func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// codeOf returns the exit status that err asks for; untagged errors are host errors.
func codeOf(err error) int {
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitHost
}

// silentExit ends the command with a status and prints nothing more (the
// command already reported what happened).
type silentExit int

func (s silentExit) Error() string { return fmt.Sprintf("exit status %d", int(s)) }
