package virtio

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// TunDevice is the tun/tap clone device.
const TunDevice = "/dev/net/tun"

// Tap is a Linux tap interface opened through /dev/net/tun, reading and
// writing whole Ethernet frames (no packet-information prefix, no vnet
// header). It lives in the network namespace of the thread that opened it.
type Tap struct {
	f       *os.File
	name    string
	created bool
}

// OpenTap attaches to the tap interface name, creating it when it does
// not exist, and brings it up. A tap OpenTap created is not persistent:
// it disappears when the Tap is closed. An existing tap is left in place.
// Needs CAP_NET_ADMIN.
func OpenTap(name string) (*Tap, error) {
	if err := ValidTapName(name); err != nil {
		return nil, err
	}
	existed, err := interfaceExists(name)
	if err != nil {
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	fd, err := unix.Open(TunDevice, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("tap %s: open %s: %w", name, TunDevice, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		switch {
		case errors.Is(err, unix.EPERM):
			return nil, fmt.Errorf("tap %s: %w (needs CAP_NET_ADMIN, or a tap owned by this user)", name, err)
		case errors.Is(err, unix.EBUSY):
			return nil, fmt.Errorf("tap %s: %w (another process has it open)", name, err)
		case errors.Is(err, unix.EINVAL) && existed:
			return nil, fmt.Errorf("tap %s: %w (an interface of that name exists and is not a single-queue tap)", name, err)
		}
		return nil, fmt.Errorf("tap %s: TUNSETIFF: %w", name, err)
	}
	t := &Tap{f: os.NewFile(uintptr(fd), TunDevice+":"+name), name: name, created: !existed}
	if err := setUp(name); err != nil {
		t.Close()
		return nil, fmt.Errorf("tap %s: bring up: %w", name, err)
	}
	return t, nil
}

// ValidTapName checks an interface name the way the kernel does.
func ValidTapName(name string) error {
	switch {
	case name == "":
		return errors.New("empty tap name")
	case len(name) >= unix.IFNAMSIZ:
		return fmt.Errorf("tap name %q is longer than %d bytes", name, unix.IFNAMSIZ-1)
	case name == "." || name == "..":
		return fmt.Errorf("tap name %q is not allowed", name)
	case strings.ContainsAny(name, "/: \t\n\r\v\f"):
		return fmt.Errorf("tap name %q contains '/', ':' or white space", name)
	}
	return nil
}

// Name returns the interface name.
func (t *Tap) Name() string { return t.name }

// Created reports whether OpenTap created the interface (it goes away on
// Close).
func (t *Tap) Created() bool { return t.created }

// Read reads one frame.
func (t *Tap) Read(p []byte) (int, error) { return t.f.Read(p) }

// Write writes one frame.
func (t *Tap) Write(p []byte) (int, error) { return t.f.Write(p) }

// Close detaches from the interface; a tap OpenTap created disappears.
func (t *Tap) Close() error { return t.f.Close() }

// ifSocket returns a socket for interface ioctls in the calling thread's
// network namespace.
func ifSocket() (int, error) {
	return unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
}

// interfaceExists reports whether a network interface called name exists.
func interfaceExists(name string) (bool, error) {
	s, err := ifSocket()
	if err != nil {
		return false, err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return false, err
	}
	err = unix.IoctlIfreq(s, unix.SIOCGIFINDEX, ifr)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, unix.ENODEV):
		return false, nil
	}
	return false, fmt.Errorf("SIOCGIFINDEX: %w", err)
}

// setUp sets IFF_UP on the interface.
func setUp(name string) error {
	s, err := ifSocket()
	if err != nil {
		return err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCGIFFLAGS: %w", err)
	}
	flags := ifr.Uint16()
	if flags&unix.IFF_UP != 0 {
		return nil
	}
	ifr.SetUint16(flags | unix.IFF_UP)
	if err := unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("SIOCSIFFLAGS: %w", err)
	}
	return nil
}
