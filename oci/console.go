package oci

import (
	"fmt"
	"net"
	"os"

	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// OpenConsole makes a container's terminal as runc does for
// --console-socket: a new pseudo-terminal whose master goes, with
// SCM_RIGHTS, to the unix socket at socketPath (conmon or containerd's shim
// listens there) and whose slave is returned, in raw mode, to be the VMM's
// stdio. The guest's own tty (the VM console) does the line discipline;
// the slave only carries bytes.
func OpenConsole(socketPath string) (*os.File, error) {
	master, slave, err := openPTY()
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	defer master.Close()
	if err := sendFD(socketPath, master); err != nil {
		slave.Close()
		return nil, fmt.Errorf("console socket %s: %w", socketPath, err)
	}
	return slave, nil
}

// openPTY opens a pseudo-terminal pair, the slave in raw mode.
func openPTY() (master, slave *os.File, err error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (is devpts mounted on /dev/pts?)", err)
	}
	fail := func(err error) (*os.File, *os.File, error) {
		m.Close()
		return nil, nil, err
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		return fail(fmt.Errorf("unlockpt: %w", err))
	}
	n, err := unix.IoctlGetUint32(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		return fail(fmt.Errorf("ptsname: %w", err))
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fail(err)
	}
	if _, err := term.MakeRaw(int(s.Fd())); err != nil {
		s.Close()
		return fail(err)
	}
	return m, s, nil
}

// sendFD sends f over the unix stream socket at path, as runc's
// utils.SendFd does (the file's name as the message, the fd as ancillary
// data).
func sendFD(path string, f *os.File) error {
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, _, err = c.WriteMsgUnix([]byte(f.Name()), unix.UnixRights(int(f.Fd())), nil)
	return err
}
