package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/microvm/microvm/devices/virtio"
	"golang.org/x/sys/unix"
)

func TestBootVirtioFlags(t *testing.T) {
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(disk, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	many := []string{"boot", "--guest", "virtio"}
	for i := 0; i < 12; i++ {
		many = append(many, "--disk", disk)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stderr string
	}{
		{"empty disk spec", []string{"--disk", ""}, exitUsage, "want PATH[,ro]"},
		{"unknown disk option", []string{"--disk", disk + ",rx"}, exitUsage, `unknown option "rx"`},
		{"missing disk", []string{"--disk", "/nonexistent/disk.img"}, exitBadImage, "no such file"},
		{"directory disk", []string{"--disk", dir}, exitBadImage, "is a directory"},
		{"char device disk", []string{"--disk", "/dev/null"}, exitBadImage, "not a regular file"},
		{"net without key", []string{"--net", "tap0"}, exitUsage, "want tap=NAME"},
		{"net without tap", []string{"--net", "mac=02:00:00:00:00:01"}, exitUsage, "tap=NAME is required"},
		{"bad tap name", []string{"--net", "tap=a/b"}, exitUsage, "contains '/'"},
		{"long tap name", []string{"--net", "tap=abcdefghijklmnopq"}, exitUsage, "longer than 15"},
		{"bad MAC", []string{"--net", "tap=t0,mac=zz:00:00:00:00:01"}, exitUsage, "bad MAC"},
		{"short MAC", []string{"--net", "tap=t0,mac=02:00:00"}, exitUsage, "bad MAC"},
		{"multicast MAC", []string{"--net", "tap=t0,mac=01:00:5e:00:00:01"}, exitUsage, "multicast"},
		{"unknown net key", []string{"--net", "tap=t0,vlan=3"}, exitUsage, `unknown key "vlan"`},
		{"tap twice", []string{"--net", "tap=t0", "--net", "tap=t0"}, exitUsage, "given twice"},
		{"too many devices", many[3:], exitUsage, "at most 11"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := run(t, append([]string{"boot", "--guest", "virtio"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, tc.code, tc.stderr)
			}
		})
	}
}

func TestBootVirtioGuest(t *testing.T) {
	needKVM(t)
	dir := t.TempDir()
	img := make([]byte, 64*512)
	rand.Read(img)
	disk := filepath.Join(dir, "disk.img")
	roDisk := filepath.Join(dir, "ro.img")
	empty := filepath.Join(dir, "empty.img")
	for p, b := range map[string][]byte{disk: img, roDisk: img, empty: nil} {
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout []string
	}{
		{"disk and rng", []string{"--disk", disk, "--rng"}, 0, []string{"blk: 64 sectors, sector 0 fnv1a", "rng: 16 bytes", "all devices passed"}},
		{"read-only disk", []string{"--disk", roDisk + ",ro"}, 0, []string{"64 sectors read-only", "refused the write"}},
		{"empty disk: reads fail", []string{"--disk", empty}, 11, []string{"blk at d0000000", "failed with status 11"}},
		{"no devices", nil, 3, []string{"virtio: 0 devices"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := run(t, append([]string{"boot", "--guest", "virtio", "--timeout", "60s"}, tc.args...)...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", code, tc.code, stdout, stderr)
			}
			for _, want := range tc.stdout {
				if !strings.Contains(stdout, want) {
					t.Errorf("stdout lacks %q:\n%s", want, stdout)
				}
			}
		})
	}
	got, _ := os.ReadFile(disk)
	pattern := make([]byte, 512)
	for i := range pattern {
		pattern[i] = byte(i*7 + 1)
	}
	if !bytes.Equal(got[512:1024], pattern) || !bytes.Equal(got[:512], img[:512]) || len(got) != len(img) {
		t.Error("the guest's write to sector 1 is not on disk, or something else changed")
	}
	if got, _ := os.ReadFile(roDisk); !bytes.Equal(got, img) {
		t.Error("read-only disk changed")
	}
	if st, _ := os.Stat(empty); st.Size() != 0 {
		t.Error("empty disk grew")
	}
}

// TestBootVirtioNet boots the virtio guest on an existing tap in a private
// network namespace and answers its frame from a packet socket.
func TestBootVirtioNet(t *testing.T) {
	needKVM(t)
	if _, err := os.Stat(virtio.TunDevice); err != nil {
		t.Skipf("SKIP: no %s: %v", virtio.TunDevice, err)
	}
	// This thread moves to a new network namespace for good; Go discards
	// it when the test ends and the namespace goes with it.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Skipf("SKIP: cannot create a network namespace (needs root): %v", err)
	}
	const tap = "mvcli0"
	setPersistentTap(t, tap, true)
	defer setPersistentTap(t, tap, false)
	ifi, err := net.InterfaceByName(tap)
	if err != nil {
		t.Fatal(err)
	}
	s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(0x88b5)))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	if err := unix.Bind(s, &unix.SockaddrLinklayer{Protocol: htons(0x88b5), Ifindex: ifi.Index}); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(time.Second))
	unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	// Answer the first frame from the guest's MAC.
	mac := net.HardwareAddr{2, 0, 0, 0, 0xc1, 0x10}
	answered := make(chan error, 1)
	go func() {
		buf := make([]byte, 2048)
		for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); {
			n, _, err := unix.Recvfrom(s, buf, 0)
			if err != nil || n < 14 || !bytes.Equal(buf[6:12], mac) {
				continue
			}
			reply := append(append(append([]byte(nil), mac...), 2, 0, 0, 0, 0, 0x42, 0x88, 0xb5), "pong from the cli test"...)
			answered <- unix.Sendto(s, reply, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6})
			return
		}
		answered <- fmt.Errorf("no frame from the guest")
	}()
	code, stdout, stderr := run(t, "boot", "--guest", "virtio", "--timeout", "60s", "--net", "tap="+tap+",mac="+mac.String())
	if code != 0 {
		t.Fatalf("exit %d; stdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	if err := <-answered; err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout, `"pong from the cli test"`) || !strings.Contains(stdout, "net: mac "+mac.String()) {
		t.Errorf("stdout:\n%s", stdout)
	}
	if _, err := net.InterfaceByName(tap); err != nil {
		t.Error("microvm removed a tap it did not create")
	}
}

func setPersistentTap(t *testing.T, name string, persist bool) {
	t.Helper()
	fd, err := unix.Open(virtio.TunDevice, unix.O_RDWR|unix.O_CLOEXEC, 0)
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

func htons(v uint16) uint16 { return v<<8 | v>>8 }
