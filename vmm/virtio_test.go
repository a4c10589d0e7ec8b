package vmm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/microvm/microvm/devices/virtio"
	"golang.org/x/sys/unix"
)

// virtioPattern is what the virtio guest writes to sector 1.
func virtioPattern() []byte {
	p := make([]byte, 512)
	for i := range p {
		p[i] = byte(i*7 + 1)
	}
	return p
}

// randomDisk writes a disk image of n sectors of random bytes.
func randomDisk(t testing.TB, n int) (string, []byte) {
	t.Helper()
	b := make([]byte, n*512)
	rand.Read(b)
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p, b
}

func fnv1a(b []byte) uint32 {
	h := fnv.New32a()
	h.Write(b)
	return h.Sum32()
}

// bootMachine builds and runs cfg, returning the result, the console and
// the devices' final state.
func bootMachine(t *testing.T, cfg Config, timeout time.Duration) (*Result, string, []VirtioDevice) {
	t.Helper()
	var out bytes.Buffer
	cfg.System = openKVM(t)
	cfg.Console = &out
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer m.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := m.Run(ctx)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res, out.String(), m.VirtioDevices()
}

var rngLine = regexp.MustCompile(`rng: 16 bytes ([0-9a-f]{32})\n`)

func TestVirtioGuestDiskAndRNG(t *testing.T) {
	for _, noEventFD := range []bool{false, true} {
		name := "ioeventfd"
		if noEventFD {
			name = "mmio-exit"
		}
		t.Run(name, func(t *testing.T) {
			path, orig := randomDisk(t, 128)
			res, out, devs := bootMachine(t, Config{
				Image: guest(t, "virtio"), Disks: []DiskConfig{{Path: path}}, RNG: true,
				VirtioNoIOEventFD: noEventFD,
			}, 60*time.Second)
			if res.Reason != ReasonExit || res.Status != 0 {
				t.Fatalf("ended %v status %d (%s); console:\n%s", res.Reason, res.Status, res.Summary(), out)
			}
			for _, want := range []string{
				"virtio: 2 devices",
				"virtio: blk at d0000000 irq 5",
				"virtio: rng at d0001000 irq 6",
				fmt.Sprintf("blk: 128 sectors, sector 0 fnv1a %x\n", fnv1a(orig[:512])),
				`blk: id "disk.img"`,
				"blk: sector 1 written, flushed and read back ok",
				"virtio: all devices passed",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("console lacks %q:\n%s", want, out)
				}
			}
			m := rngLine.FindStringSubmatch(out)
			if m == nil || m[1] == strings.Repeat("0", 32) {
				t.Errorf("no entropy in the console:\n%s", out)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			want := append(append(append([]byte(nil), orig[:512]...), virtioPattern()...), orig[1024:]...)
			if !bytes.Equal(got, want) {
				t.Errorf("disk on the host: sector 1 is not the guest's pattern or other sectors changed (len %d)", len(got))
			}
			if len(devs) != 2 || devs[0].Stats.Errors != 0 || devs[0].Stats.Chains != 5 || devs[1].Stats.Chains != 1 {
				t.Errorf("devices: %+v", devs)
			}
			if noEventFD && devs[0].IOEventFD {
				t.Error("ioeventfd used although disabled")
			}
			blk := devs[0].Device.(*virtio.Blk).Stats()
			if blk.Reads != 2 || blk.Writes != 1 || blk.Flushes != 1 || blk.GetIDs != 1 {
				t.Errorf("blk stats %+v", blk)
			}
			t.Logf("ioeventfd %v: exits %v, device stats %+v", devs[0].IOEventFD, res.Exits, devs[0].Stats)
		})
	}
}

func TestVirtioGuestReadOnlyDisk(t *testing.T) {
	path, orig := randomDisk(t, 8)
	res, out, _ := bootMachine(t, Config{Image: guest(t, "virtio"), Disks: []DiskConfig{{Path: path, ReadOnly: true}}}, 60*time.Second)
	if res.Reason != ReasonExit || res.Status != 0 {
		t.Fatalf("ended %v status %d; console:\n%s", res.Reason, res.Status, out)
	}
	for _, want := range []string{"blk: 8 sectors read-only", "read-only disk refused the write (status 1)"} {
		if !strings.Contains(out, want) {
			t.Errorf("console lacks %q:\n%s", want, out)
		}
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, orig) {
		t.Error("read-only disk changed")
	}
}

func TestVirtioGuestNoDevices(t *testing.T) {
	res, out, _ := bootMachine(t, Config{Image: guest(t, "virtio")}, 30*time.Second)
	if res.Reason != ReasonExit || res.Status != 3 || !strings.Contains(out, "virtio: 0 devices") {
		t.Errorf("ended %v status %d; console:\n%s", res.Reason, res.Status, out)
	}
}

// TestVirtioGuestNet runs the guest with a tap in a private network
// namespace: the test reads the guest's frame from the tap with a packet
// socket and sends one back.
func TestVirtioGuestNet(t *testing.T) {
	sys := openKVM(t)
	if _, err := os.Stat(virtio.TunDevice); err != nil {
		t.Skipf("SKIP: no %s: %v", virtio.TunDevice, err)
	}
	// This goroutine's thread moves to a new network namespace for good:
	// Go discards the thread when the test ends, and the namespace (with
	// any tap left in it) goes with it.
	runtime.LockOSThread()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		t.Skipf("SKIP: cannot create a network namespace (needs root): %v", err)
	}
	const tap = "mvnet0"
	mac := net.HardwareAddr{0x02, 0x4d, 0x56, 0x4d, 0x00, 0x01}
	var out bytes.Buffer
	m, err := New(Config{Image: guest(t, "virtio"), Nets: []NetConfig{{Tap: tap, MAC: mac}}, System: sys, Console: &out})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer m.Close()
	ifi, err := net.InterfaceByName(tap)
	if err != nil {
		t.Fatalf("microvm did not create the tap: %v", err)
	}
	if ifi.Flags&net.FlagUp == 0 {
		t.Errorf("tap is not up: %v", ifi.Flags)
	}
	const etherType = 0x88b5
	s, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, int(htons(etherType)))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(s)
	if err := unix.Bind(s, &unix.SockaddrLinklayer{Protocol: htons(etherType), Ifindex: ifi.Index}); err != nil {
		t.Fatal(err)
	}
	tv := unix.NsecToTimeval(int64(time.Second))
	if err := unix.SetsockoptTimeval(s, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		t.Fatal(err)
	}

	type ran struct {
		res *Result
		err error
	}
	done := make(chan ran, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		res, err := m.Run(ctx)
		done <- ran{res, err}
	}()

	// The guest's broadcast frame.
	var frame []byte
	buf := make([]byte, 2048)
	deadline := time.Now().Add(50 * time.Second)
	for frame == nil && time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(s, buf, 0)
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			select {
			case r := <-done:
				t.Fatalf("guest ended before sending: %+v %v; console:\n%s", r.res, r.err, out.String())
			default:
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n >= 14 && bytes.Equal(buf[6:12], mac) {
			frame = append([]byte(nil), buf[:n]...)
		}
	}
	if frame == nil {
		t.Fatal("no frame from the guest")
	}
	if !bytes.Equal(frame[:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}) || !bytes.HasPrefix(frame[14:], []byte("microvm virtio-net ping")) {
		t.Errorf("guest frame % x", frame)
	}
	reply := append(append(append([]byte(nil), mac...), 0x02, 0, 0, 0, 0, 0x99, etherType>>8, etherType&0xff), "microvm host pong"...)
	if err := unix.Sendto(s, reply, 0, &unix.SockaddrLinklayer{Ifindex: ifi.Index, Halen: 6, Addr: [8]byte{mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]}}); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.res.Reason != ReasonExit || r.res.Status != 0 {
		t.Fatalf("run: %v %+v; console:\n%s", r.err, r.res, out.String())
	}
	for _, want := range []string{
		"net: mac 02:4d:56:4d:00:01",
		"net: sent a 60-byte broadcast frame",
		`net: received a 31-byte frame from 02:00:00:00:00:99: "microvm host pong"`,
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("console lacks %q:\n%s", want, out.String())
		}
	}
	nd := m.VirtioDevices()[0].Device.(*virtio.Net).Stats()
	if nd.TXFrames != 1 || nd.RXFrames < 1 {
		t.Errorf("net stats %+v", nd)
	}
	m.Close()
	if _, err := net.InterfaceByName(tap); err == nil {
		t.Error("the tap microvm created survived Close")
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// TestVirtioBootInfoAndCmdline checks the ABI v2 device table and the
// Linux cmdline entries for a machine with devices.
func TestVirtioBootInfoAndCmdline(t *testing.T) {
	path, _ := randomDisk(t, 8)
	m, err := New(Config{Image: guest(t, "hello"), Disks: []DiskConfig{{Path: path}, {Path: path, ReadOnly: true}}, RNG: true, System: openKVM(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := "virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 virtio_mmio.device=4K@0xd0002000:7"
	if got := m.virtioCmdline(); got != want {
		t.Errorf("cmdline %q, want %q", got, want)
	}
	bi := make([]byte, bootInfoSize+3*bootDeviceSize)
	if _, err := m.Memory().ReadAt(bi, tinyBootInfoAddr); err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	if v := le.Uint32(bi[8:]); v != 2 {
		t.Errorf("boot info version %d", v)
	}
	if a, n := le.Uint64(bi[48:]), le.Uint32(bi[56:]); a != tinyBootInfoAddr+bootInfoSize || n != 3 {
		t.Errorf("devices at %#x count %d", a, n)
	}
	for i, typ := range []uint32{2, 2, 4} {
		e := bi[bootInfoSize+bootDeviceSize*i:]
		if le.Uint32(e) != typ || le.Uint32(e[4:]) != uint32(5+i) || le.Uint64(e[8:]) != VirtioMMIOBase+uint64(i)*0x1000 || le.Uint64(e[16:]) != 0x1000 {
			t.Errorf("entry %d: %s", i, hex.EncodeToString(e[:24]))
		}
	}
	// Without devices: version 2, an empty table.
	m2, err := New(Config{Image: guest(t, "hello"), System: openKVM(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	m2.Memory().ReadAt(bi[:bootInfoSize], tinyBootInfoAddr)
	if le.Uint64(bi[48:]) != 0 || le.Uint32(bi[56:]) != 0 || m2.virtioCmdline() != "" {
		t.Errorf("no devices: table %x", bi[48:64])
	}
}

func TestVirtioConfigErrors(t *testing.T) {
	path, _ := randomDisk(t, 1)
	many := make([]DiskConfig, MaxVirtioDevices+1)
	for i := range many {
		many[i] = DiskConfig{Path: path}
	}
	for _, tc := range []struct {
		name   string
		cfg    Config
		config bool // a ConfigError rather than a host failure
		want   string
	}{
		{"too many devices", Config{Disks: many}, true, "room for 11"},
		{"empty disk path", Config{Disks: []DiskConfig{{}}}, true, "no path"},
		{"missing disk", Config{Disks: []DiskConfig{{Path: "/nonexistent/disk"}}}, false, "no such file"},
		{"directory disk", Config{Disks: []DiskConfig{{Path: t.TempDir()}}}, false, "is a directory"},
		{"bad tap name", Config{Nets: []NetConfig{{Tap: "a/b"}}}, true, "tap name"},
		{"multicast MAC", Config{Nets: []NetConfig{{Tap: "t0", MAC: net.HardwareAddr{1, 2, 3, 4, 5, 6}}}}, true, "unicast"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Image = guest(t, "hello")
			tc.cfg.System = openKVM(t)
			m, err := New(tc.cfg)
			if err == nil {
				m.Close()
				t.Fatal("New succeeded")
			}
			var ce *ConfigError
			if errors.As(err, &ce) != tc.config || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v (config error %v), want %q", err, errors.As(err, &ce), tc.want)
			}
		})
	}
}

// TestVirtioHostileGuest runs the virtio guest's hostile mode: a real
// guest breaks the disk's queue three ways; each time the device must set
// NEEDS_RESET, the VMM must keep running, and a reset must bring the disk
// back.
func TestVirtioHostileGuest(t *testing.T) {
	for _, noEventFD := range []bool{false, true} {
		t.Run(fmt.Sprintf("no-ioeventfd=%v", noEventFD), func(t *testing.T) {
			path, orig := randomDisk(t, 8)
			res, out, devs := bootMachine(t, Config{Image: guest(t, "virtio"), Cmdline: "hostile",
				Disks: []DiskConfig{{Path: path}}, VirtioNoIOEventFD: noEventFD}, 60*time.Second)
			if res.Reason != ReasonExit || res.Status != 0 {
				t.Fatalf("ended %v status %d (%s); console:\n%s", res.Reason, res.Status, res.Summary(), out)
			}
			for _, want := range []string{"descriptor loop: device status 4f", "buffer outside RAM: device status 4f", "queue size 6: device status 4b"} {
				if !strings.Contains(out, "hostile: "+want) {
					t.Errorf("console lacks %q:\n%s", want, out)
				}
			}
			if n := strings.Count(out, "after a reset the disk reads again"); n != 3 {
				t.Errorf("disk recovered %d times, want 3", n)
			}
			if devs[0].Stats.Errors != 3 {
				t.Errorf("device errors %d, want 3", devs[0].Stats.Errors)
			}
			if got, _ := os.ReadFile(path); !bytes.Equal(got, orig) {
				t.Error("disk changed")
			}
		})
	}
}
