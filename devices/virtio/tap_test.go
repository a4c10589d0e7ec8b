package virtio

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// privateNetns moves the calling test's goroutine onto a thread of its own
// in a new, empty network namespace. The thread is never unlocked, so Go
// discards it when the test ends and the namespace goes with it: nothing
// to clean up, nothing leaks into the host's network.
func privateNetns(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(TunDevice); err != nil {
		t.Skipf("SKIP: no %s: %v", TunDevice, err)
	}
	runtime.LockOSThread() // for good: see above
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Skipf("SKIP: cannot create a network namespace (needs root/CAP_SYS_ADMIN): %v", err)
	}
}

// persistentTap creates a persistent tap the way `ip tuntap add` does.
func persistentTap(t *testing.T, name string, persist bool) {
	t.Helper()
	fd, err := unix.Open(TunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	ifr, _ := unix.NewIfreq(name)
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		t.Fatalf("TUNSETIFF %s: %v", name, err)
	}
	v := 0
	if persist {
		v = 1
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, v); err != nil {
		t.Fatalf("TUNSETPERSIST: %v", err)
	}
}

func exists(t *testing.T, name string) bool {
	t.Helper()
	ok, err := interfaceExists(name)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

func TestTapLifecycle(t *testing.T) {
	privateNetns(t)
	// Created when missing, up, removed on close.
	tap, err := OpenTap("mvtest0")
	if err != nil {
		t.Fatal(err)
	}
	if !tap.Created() || !exists(t, "mvtest0") {
		t.Fatalf("created %v exists %v", tap.Created(), exists(t, "mvtest0"))
	}
	// A second open of a single-queue tap in use fails clearly.
	if _, err := OpenTap("mvtest0"); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Errorf("second OpenTap = %v", err)
	}
	// Frames written to the tap reach a packet socket on it, and back.
	s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(0x88b5)))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	ifi, err := netInterfaceIndex("mvtest0")
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(s, &unix.SockaddrLinklayer{Protocol: htons(0x88b5), Ifindex: ifi}); err != nil {
		t.Fatal(err)
	}
	frame := []byte("\xff\xff\xff\xff\xff\xff\x02\x00\x00\x00\x00\x07\x88\xb5tap test payload")
	if _, err := tap.Write(frame); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(5 * time.Second))
	unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	buf := make([]byte, 2048)
	n, _, err := unix.Recvfrom(s, buf, 0)
	if err != nil || !bytes.Equal(buf[:n], frame) {
		t.Errorf("packet socket got %q, %v", buf[:max(n, 0)], err)
	}
	reply := []byte("\x02\x00\x00\x00\x00\x07\x02\x00\x00\x00\x00\x08\x88\xb5reply")
	if err := unix.Sendto(s, reply, 0, &unix.SockaddrLinklayer{Ifindex: ifi, Halen: 6, Addr: [8]byte{2, 0, 0, 0, 0, 7}}); err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, 2048)
		for {
			n, err := tap.Read(b)
			if err != nil {
				close(got)
				return
			}
			if n >= 14 && b[12] == 0x88 && b[13] == 0xb5 {
				got <- append([]byte(nil), b[:n]...)
				return
			}
		}
	}()
	select {
	case b := <-got:
		if !bytes.Equal(b, reply) {
			t.Errorf("tap read %q, want %q", b, reply)
		}
	case <-time.After(5 * time.Second):
		t.Error("no frame from the packet socket")
	}
	if err := tap.Close(); err != nil {
		t.Fatal(err)
	}
	if exists(t, "mvtest0") {
		t.Error("tap created by OpenTap survived Close")
	}

	// An existing (persistent) tap is attached to and left in place.
	persistentTap(t, "mvtest1", true)
	tap, err = OpenTap("mvtest1")
	if err != nil {
		t.Fatal(err)
	}
	if tap.Created() {
		t.Error("existing tap reported as created")
	}
	tap.Close()
	if !exists(t, "mvtest1") {
		t.Error("existing tap removed on Close")
	}
	persistentTap(t, "mvtest1", false)
	if exists(t, "mvtest1") {
		t.Error("could not remove the test's persistent tap")
	}

	// An interface of that name that is not a tap.
	if _, err := OpenTap("lo"); err == nil || !strings.Contains(err.Error(), "not a single-queue tap") {
		t.Errorf("OpenTap(lo) = %v", err)
	}
}

func TestValidTapName(t *testing.T) {
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"tap0", true}, {"a", true}, {"abcdefghijklmno", true},
		{"", false}, {"abcdefghijklmnop", false}, {".", false}, {"..", false},
		{"a/b", false}, {"a b", false}, {"a:1", false}, {"tab\t", false},
	} {
		if err := ValidTapName(tc.name); (err == nil) != tc.ok {
			t.Errorf("ValidTapName(%q) = %v", tc.name, err)
		}
	}
	if _, err := OpenTap("bad/name"); err == nil {
		t.Error("OpenTap accepted a bad name")
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func netInterfaceIndex(name string) (int, error) {
	s, err := ifSocket()
	if err != nil {
		return 0, err
	}
	defer unix.Close(s)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return 0, err
	}
	if err := unix.IoctlIfreq(s, unix.SIOCGIFINDEX, ifr); err != nil {
		return 0, errors.New("no interface " + name)
	}
	return int(ifr.Uint32()), nil
}
