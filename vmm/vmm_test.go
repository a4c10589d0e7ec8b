package vmm

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/microvm/microvm/images"
	"github.com/microvm/microvm/images/guests"
)

// x86-64 machine code for flat test guests.
func movDX(port uint16) []byte { return []byte{0x66, 0xba, byte(port), byte(port >> 8)} }
func movAL(v byte) []byte      { return []byte{0xb0, v} }

var (
	outDXAL = []byte{0xee}
	inALDX  = []byte{0xec}
	hlt     = []byte{0xf4}
	cli     = []byte{0xfa}
	sti     = []byte{0xfb}
	spin    = []byte{0xeb, 0xfe}
	ud2     = []byte{0x0f, 0x0b}
)

// movToAbs is mov rbx, addr; mov [rbx], al.
func movToAbs(addr uint64) []byte {
	return append(binary.LittleEndian.AppendUint64([]byte{0x48, 0xbb}, addr), 0x88, 0x03)
}

// movFromAbs is mov rbx, addr; mov al, [rbx].
func movFromAbs(addr uint64) []byte {
	return append(binary.LittleEndian.AppendUint64([]byte{0x48, 0xbb}, addr), 0x8a, 0x03)
}

func prog(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// exitWithAL writes al to the exit port.
var exitWithAL = prog(movDX(0x501), outDXAL, cli, hlt)

type bootCase struct {
	cfg     Config
	timeout time.Duration
}

func boot(t *testing.T, cfg Config, timeout time.Duration) (*Result, string) {
	t.Helper()
	sys := openKVM(t)
	var out bytes.Buffer
	cfg.System = sys
	cfg.Console = &out
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer m.Close()
	if timeout == 0 {
		timeout = 20 * time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := m.Run(ctx)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return res, out.String()
}

func guest(t *testing.T, name string) []byte {
	t.Helper()
	b, err := guests.Get(name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestBootEmbeddedGuests(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cfg     Config
		reason  Reason
		status  uint64
		ready   bool
		console []string
	}{
		{"hello", Config{Image: guest(t, "hello"), Cmdline: "hello=world", MemoryBytes: 64 << 20},
			ReasonExit, 0, false, []string{"Hello from the microvm tiny guest!", "vcpu 0 of 1", "memory 64 MiB", `cmdline: "hello=world"`}},
		{"hello high memory", Config{Image: guest(t, "hello"), MemoryBytes: 5 << 30},
			ReasonExit, 0, false, []string{"memory 5120 MiB"}},
		{"ready", Config{Image: guest(t, "ready")}, ReasonExit, 0, true, nil},
		{"exit 42", Config{Image: guest(t, "exit"), Cmdline: "status=42"}, ReasonExit, 42, false, []string{"exit: status 42"}},
		{"exit 0 by default", Config{Image: guest(t, "exit")}, ReasonExit, 0, false, nil},
		{"exit out of range", Config{Image: guest(t, "exit"), Cmdline: "70000"}, ReasonExit, 70000, false, nil},
		{"smp 4", Config{Image: guest(t, "smp"), CPUs: 4}, ReasonExit, 0, false,
			[]string{"vcpu 0 of 4", "vcpu 1 of 4", "vcpu 2 of 4", "vcpu 3 of 4", "all 4 vcpus reported"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, out := boot(t, tc.cfg, 0)
			if res.Reason != tc.reason || res.Status != tc.status {
				t.Fatalf("ended %v status %d (%s), want %v status %d; console:\n%s", res.Reason, res.Status, res.Summary(), tc.reason, tc.status, out)
			}
			if res.Ready != tc.ready {
				t.Errorf("ready = %v, want %v", res.Ready, tc.ready)
			}
			for _, want := range tc.console {
				if !strings.Contains(out, want) {
					t.Errorf("console lacks %q:\n%s", want, out)
				}
			}
			if res.ExitAfter <= 0 || res.SetupTime <= 0 || res.SetupTime > res.ExitAfter {
				t.Errorf("timings: setup %v exit %v", res.SetupTime, res.ExitAfter)
			}
			if res.Ready && (res.ReadyAfter < res.SetupTime || res.ReadyAfter > res.ExitAfter) {
				t.Errorf("ready after %v, outside setup %v .. exit %v", res.ReadyAfter, res.SetupTime, res.ExitAfter)
			}
			if res.Exits["io"] == 0 {
				t.Errorf("no io exits counted: %v", res.Exits)
			}
		})
	}
}

func TestReadyGuestExits(t *testing.T) {
	res, _ := boot(t, Config{Image: guest(t, "ready")}, 0)
	// The benchmark guest costs exactly two port writes.
	if res.Exits["io"] != 2 || res.UnknownReads+res.UnknownWrites != 0 {
		t.Errorf("exits %v unknown %d/%d, want exactly 2 io exits", res.Exits, res.UnknownReads, res.UnknownWrites)
	}
}

func TestGuestEndings(t *testing.T) {
	flat := func(code []byte) Config { return Config{Image: code, Format: images.FormatFlat} }
	for _, tc := range []struct {
		name    string
		cfg     Config
		timeout time.Duration
		reason  Reason
		status  uint64
		detail  string
	}{
		{"spin until timeout", flat(spin), 300 * time.Millisecond, ReasonTimeout, 0, ""},
		{"triple fault", flat(ud2), 0, ReasonTripleFault, 0, "triple-faulted"},
		{"hlt with IF=0", flat(prog(cli, hlt)), 0, ReasonHalt, 0, ""},
		{"hlt with IF=1 and nothing to wake it", flat(prog(sti, hlt)), 0, ReasonHalt, 0, ""},
		{"i8042 reset", flat(prog(movDX(0x64), movAL(0xfe), outDXAL, spin)), 0, ReasonReset, 0, ""},
		{"MMIO exit register", flat(prog(movAL(7), movToAbs(0xc0000000), spin)), 0, ReasonExit, 7, ""},
		{"read of page 0 faults", flat(prog(movFromAbs(0x10), hlt)), 0, ReasonTripleFault, 0, ""},
		{"write to boot info faults", flat(prog(movToAbs(tinyBootInfoAddr), hlt)), 0, ReasonTripleFault, 0, ""},
		{"unknown ports and MMIO", flat(prog(
			movDX(0x99), inALDX, // 0xff
			movDX(0x1234), outDXAL,
			movToAbs(0xd0000000), // unclaimed MMIO write
			movFromAbs(0xd0000010),
			movDX(0x99), inALDX, // al = 0xff again
			exitWithAL)), 0, ReasonExit, 0xff, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, _ := boot(t, tc.cfg, tc.timeout)
			if res.Reason != tc.reason || res.Status != tc.status {
				t.Fatalf("ended %q status %d (%s), want %q status %d", res.Reason, res.Status, res.Summary(), tc.reason, tc.status)
			}
			if tc.detail != "" && !strings.Contains(res.Summary(), tc.detail) {
				t.Errorf("summary %q lacks %q", res.Summary(), tc.detail)
			}
		})
	}
}

func TestTripleFaultReport(t *testing.T) {
	img := prog(movDX(0x3f8), movAL('!'), outDXAL, movAL('\n'), outDXAL, movAL('z'), outDXAL, ud2)
	res, _ := boot(t, Config{Image: img, Format: images.FormatFlat}, 0)
	if res.Reason != ReasonTripleFault {
		t.Fatalf("reason %v", res.Reason)
	}
	if res.RIPLost {
		// AMD SVM: KVM reset the vCPU at the shutdown.
		if res.RIP != 0 || res.LastConsoleLine != "z" || !strings.Contains(res.Summary(), "RIP unknown") {
			t.Errorf("RIP lost, yet RIP %#x, last line %q, summary %q", res.RIP, res.LastConsoleLine, res.Summary())
		}
		return
	}
	rip := uint64(images.FlatLoadAddr + len(img) - 2)
	if res.RIP != rip || !bytes.HasPrefix(res.Instruction, ud2) || res.LastConsoleLine != "z" {
		t.Errorf("RIP %#x (want %#x) bytes % x last line %q", res.RIP, rip, res.Instruction, res.LastConsoleLine)
	}
	if s := res.Summary(); !strings.Contains(s, "0x10000") || !strings.Contains(s, `"z"`) {
		t.Errorf("summary %q lacks RIP or last line", s)
	}
}

func TestUnknownAccessCounts(t *testing.T) {
	img := prog(movDX(0x99), inALDX, outDXAL, movDX(0x98), outDXAL, movToAbs(0xd0000000), movAL(0), exitWithAL)
	res, _ := boot(t, Config{Image: img, Format: images.FormatFlat}, 0)
	if res.UnknownReads != 1 || res.UnknownWrites != 3 || res.Exits["mmio"] != 1 {
		t.Errorf("unknown reads %d writes %d exits %v", res.UnknownReads, res.UnknownWrites, res.Exits)
	}
}

func TestStop(t *testing.T) {
	sys := openKVM(t)
	m, err := New(Config{Image: spin, Format: images.FormatFlat, System: sys, CPUs: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	go func() {
		time.Sleep(100 * time.Millisecond)
		m.Stop()
	}()
	res, err := m.Run(context.Background())
	if err != nil || res.Reason != ReasonStopped {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if _, err := m.Run(context.Background()); err == nil {
		t.Error("second Run succeeded")
	}
}

func TestCancel(t *testing.T) {
	sys := openKVM(t)
	m, err := New(Config{Image: spin, Format: images.FormatFlat, System: sys})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	res, err := m.Run(ctx)
	if err != nil || res.Reason != ReasonStopped {
		t.Fatalf("Run = %+v, %v", res, err)
	}
}

func TestConfigErrors(t *testing.T) {
	sys := openKVM(t)
	img := guest(t, "hello")
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"memory 1K", Config{Image: img, MemoryBytes: 1 << 10}, "too small"},
		{"memory not page multiple", Config{Image: img, MemoryBytes: 4<<20 + 1}, "multiple of 4 KiB"},
		{"memory 1T", Config{Image: img, MemoryBytes: 1 << 40}, "exceeds this host's RAM"},
		{"cpus 1000", Config{Image: img, CPUs: 1000}, "at most"},
		{"cpus -1", Config{Image: img, CPUs: -1}, "at least 1"},
		{"cmdline too long", Config{Image: img, Cmdline: strings.Repeat("x", TinyMaxCmdline+1)}, "at most"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.System = sys
			_, err := New(tc.cfg)
			var ce *ConfigError
			if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New = %v, want a ConfigError mentioning %q", err, tc.want)
			}
		})
	}
	_, err := New(Config{Image: []byte("junk"), System: sys})
	if !errors.Is(err, images.ErrBadImage) {
		t.Errorf("junk image: %v, want ErrBadImage", err)
	}
	_, err = New(Config{Image: img, DevicePath: "/nonexistent/kvm"})
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/kvm") {
		t.Errorf("missing device: %v", err)
	}
}

func TestMemory(t *testing.T) {
	m, err := NewMemory(4<<30 + 8<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	rs := m.Regions()
	if len(rs) != 2 || rs[0].Start != 0 || rs[0].Size != MMIOGapStart || rs[1].Start != MMIOGapEnd || rs[1].Size != 1<<30+8<<20 {
		t.Fatalf("regions %+v", rs)
	}
	for _, tc := range []struct {
		addr int64
		n    int
		ok   bool
	}{
		{0, 16, true},
		{MMIOGapStart - 16, 16, true},
		{MMIOGapStart - 8, 16, false}, // runs into the gap
		{MMIOGapStart, 1, false},
		{MMIOGapEnd, 1, true},
		{int64(rs[1].End()) - 1, 1, true},
		{int64(rs[1].End()), 1, false},
		{-1, 1, false},
		{1<<62 - 1, 2, false},
	} {
		buf := make([]byte, tc.n)
		_, werr := m.WriteAt(buf, tc.addr)
		_, rerr := m.ReadAt(buf, tc.addr)
		if (werr == nil) != tc.ok || (rerr == nil) != tc.ok {
			t.Errorf("access %#x+%d: write %v read %v, want ok=%v", tc.addr, tc.n, werr, rerr, tc.ok)
		}
		if !tc.ok && !errors.Is(werr, ErrGuestAddress) {
			t.Errorf("error %v does not wrap ErrGuestAddress", werr)
		}
	}
	if _, err := m.Slice(^uint64(0)-4, 10); err == nil {
		t.Error("wrapping slice succeeded")
	}
	if _, err := NewMemory(4097); err == nil {
		t.Error("odd-sized memory accepted")
	}
}

func TestParseBytes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"128M", 128 << 20, true}, {"128m", 128 << 20, true}, {"1G", 1 << 30, true},
		{"4K", 4 << 10, true}, {"512MiB", 512 << 20, true}, {"2GB", 2 << 30, true},
		{"4096", 4096, true}, {"1T", 1 << 40, true},
		{"", 0, false}, {"M", 0, false}, {"-1M", 0, false}, {"1.5G", 0, false},
		{"12X", 0, false}, {"99999999999999999999", 0, false}, {"17179869184T", 0, false},
	} {
		got, err := ParseBytes(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
	for n, want := range map[uint64]string{128 << 20: "128M", 1 << 30: "1G", 3 << 9: "1.5K", 100: "100B"} {
		if got := FormatBytes(n); got != want {
			t.Errorf("FormatBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestDetectHost(t *testing.T) {
	for _, tc := range []struct {
		modules []string
		want    HostKind
	}{
		{[]string{"/sys/module/kvm_pvm", "/sys/module/kvm_intel"}, HostPVM},
		{[]string{"/sys/module/kvm_intel"}, HostVMX},
		{[]string{"/sys/module/kvm_amd"}, HostSVM},
	} {
		got := detectHost(func(p string) bool {
			for _, m := range tc.modules {
				if m == p {
					return true
				}
			}
			return false
		})
		if got != tc.want {
			t.Errorf("modules %v: %v, want %v", tc.modules, got, tc.want)
		}
	}
	if !HostSVM.HardwareAssisted() || HostPVM.HardwareAssisted() || HostPVM.Describe() == "" {
		t.Error("HostKind methods")
	}
}

func TestConsole(t *testing.T) {
	var out bytes.Buffer
	var lines []string
	c := &console{w: &out, onLine: func(l []byte) { lines = append(lines, string(l)) }}
	c.Write([]byte("first\r\nsecond\n"))
	if c.Last() != "second" || out.String() != "first\r\nsecond\n" {
		t.Errorf("Last = %q, out %q: a newline must flush", c.Last(), out.String())
	}
	c.Write([]byte("prompt> "))
	if c.Last() != "prompt> " || out.Len() != len("first\r\nsecond\n") {
		t.Errorf("partial line: Last %q, flushed early: %q", c.Last(), out.String())
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.HasSuffix(safeString(c, &out), "prompt> ") && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if !strings.HasSuffix(safeString(c, &out), "prompt> ") {
		t.Errorf("a partial line was never flushed: %q", safeString(c, &out))
	}
	c.Write(bytes.Repeat([]byte("x"), 1<<20))
	if len(c.Last()) != maxTrackedLine {
		t.Errorf("flooded line kept %d bytes, want %d", len(c.Last()), maxTrackedLine)
	}
	c.flush()
	if out.Len() != len("first\r\nsecond\nprompt> ")+1<<20 {
		t.Errorf("output not passed through: %d bytes", out.Len())
	}
	if strings.Join(lines, ",") != "first,second" {
		t.Errorf("lines %v", lines)
	}
}

func safeString(c *console, b *bytes.Buffer) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return b.String()
}

func errorsAs(err error, target any) bool { return errors.As(err, target) }
func errorsIs(err, target error) bool     { return errors.Is(err, target) }
