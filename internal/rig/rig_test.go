package rig

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// buildKVMFloor compiles bench/kvmfloor/kvm_floor.c (the bench package's
// copy of the workspace's yardstick, shared/bench/kvm_floor.c) into a
// static binary for L1.
func buildKVMFloor(t testing.TB) string {
	t.Helper()
	src := filepath.Join("..", "..", "bench", "kvmfloor", "kvm_floor.c")
	if !fileExists(src) {
		t.Fatalf("%s missing", src)
	}
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skipf("SKIP: no C compiler to build kvm_floor: %v", err)
	}
	out := filepath.Join(t.TempDir(), "kvm_floor")
	if b, err := exec.Command(cc, "-O2", "-static", "-o", out, src).CombinedOutput(); err != nil {
		t.Fatalf("build kvm_floor (static; needs libc6-dev): %v\n%s", err, b)
	}
	return out
}

var floorRE = regexp.MustCompile(`kvm_floor: (\d+) VMs, per-VM create->exit->destroy median (\d+) us`)

// TestRigKVM proves the rig end to end: L1 boots, kvm-amd is loaded,
// /dev/kvm opens, and kvm_floor runs 200 real SVM-backed VMs.
func TestRigKVM(t *testing.T) {
	cfg, _ := Require(t)
	floor := buildKVMFloor(t)
	cfg.Files = map[string]string{"/bin/kvm_floor": floor}
	cfg.Commands = []Command{
		{Name: "kvm-amd", Run: "test -d /sys/module/kvm_amd && cat /sys/module/kvm_amd/parameters/npt /sys/module/kvm_amd/parameters/nested"},
		{Name: "dev-kvm", Run: "exec 4<>/dev/kvm && echo opened"},
		{Name: "kvm_floor", Run: "kvm_floor 200", Timeout: 2 * time.Minute},
	}
	cfg.Timeout = 4 * time.Minute
	res := RunTest(t, cfg)
	if !res.KVM {
		t.Fatalf("L1 KVM setup failed: %s", res.KVMDetail)
	}
	for _, c := range res.Commands {
		if !c.OK() {
			t.Errorf("command %s: done=%v status=%d output:\n%s", c.Name, c.Done, c.Status, c.Output)
		}
	}
	if c := res.Command("kvm-amd"); c == nil || !strings.HasPrefix(c.Output, "Y\n") {
		t.Errorf("kvm_amd.npt not enabled in L1: %+v", c)
	}
	if c := res.Command("dev-kvm"); c == nil || c.Output != "opened\n" {
		t.Errorf("/dev/kvm: %+v", c)
	}
	c := res.Command("kvm_floor")
	m := floorRE.FindStringSubmatch(c.Output)
	if m == nil || m[1] != "200" {
		t.Fatalf("kvm_floor output not recognised: %q", c.Output)
	}
	t.Logf("nested under TCG: L1 init after %v, script start after %v (L1 uptime %v); kvm_floor 200 median %s us in L1",
		res.Hello.Round(time.Millisecond), res.ScriptStart.Round(time.Millisecond), res.L1Uptime.KVM, m[2])
}

// TestRigQEMUMicrovm boots the lean guest kernel, as bzImage and as vmlinux
// (PVH entry), with QEMU's own -M microvm -accel kvm inside L1 to the guest
// initramfs's "microvm-init: ready" marker: real KVM, real user space.
func TestRigQEMUMicrovm(t *testing.T) {
	cfg, a := Require(t)
	if a.GuestBzImage == "" || a.GuestVmlinux == "" || a.GuestInitramfs == "" {
		t.Skipf("SKIP: lean guest kernel or initramfs missing (`make kernel initramfs`): %v", a)
	}
	cfg.Files = map[string]string{
		"/guest/bzImage":   a.GuestBzImage,
		"/guest/vmlinux":   a.GuestVmlinux,
		"/guest/initramfs": a.GuestInitramfs,
	}
	if err := AddQEMU(cfg.Files, a.QEMU); err != nil {
		t.Fatal(err)
	}
	cfg.Commands = []Command{
		{Name: "bzImage", Run: qemuMicrovmScript("/guest/bzImage"), Timeout: 2 * time.Minute},
		{Name: "vmlinux", Run: qemuMicrovmScript("/guest/vmlinux"), Timeout: 2 * time.Minute},
	}
	cfg.Timeout = 6 * time.Minute
	res := RunTest(t, cfg)
	if !res.KVM {
		t.Fatalf("L1 KVM setup failed: %s", res.KVMDetail)
	}
	for _, name := range []string{"bzImage", "vmlinux"} {
		c := res.Command(name)
		if c == nil || !c.OK() {
			t.Errorf("QEMU -M microvm -accel kvm with %s did not reach the marker: %+v", name, c)
			continue
		}
		m := MarkerRE.FindStringSubmatch(c.Output)
		if m == nil {
			t.Errorf("%s: no marker time in output:\n%s", name, c.Output)
			continue
		}
		t.Logf("nested under TCG: QEMU -M microvm -accel kvm in L1, lean %s launch to marker %s s", name, m[1])
	}
}

// qemuMicrovmScript runs QEMU -M microvm -accel kvm inside L1 on kernel and
// /guest/initramfs, prints the guest console, and exits 0 once the guest
// prints "microvm-init: ready" (after printing "RIG-MARKER <seconds since
// launch>"), 1 when QEMU ends without it.
func qemuMicrovmScript(kernel string) string {
	return MarkerScript(`qemu-system-x86_64 -M microvm,acpi=off -accel kvm -cpu host -m 256 -smp 1 \
	-nodefaults -no-user-config -display none -no-reboot \
	-serial stdio -kernel `+kernel+` -initrd /guest/initramfs \
	-append "console=ttyS0 reboot=t panic=-1"`, "microvm-init: ready")
}

// askMonitor connects to QEMU's human monitor at path once it exists, asks
// `info registers` and sends back what came before the next prompt, or an
// error text.
func askMonitor(ctx context.Context, path string) <-chan string {
	out := make(chan string, 1)
	go func() {
		var c net.Conn
		var err error
		for c == nil {
			if c, err = net.Dial("unix", path); err != nil {
				select {
				case <-ctx.Done():
					out <- "no monitor: " + err.Error()
					return
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(time.Minute))
		if _, err := c.Write([]byte("info registers\n")); err != nil {
			out <- "write: " + err.Error()
			return
		}
		var b []byte
		buf := make([]byte, 4096)
		for !strings.Contains(string(b), "IP=") || !strings.HasSuffix(strings.TrimSpace(string(b)), "(qemu)") {
			n, err := c.Read(buf)
			b = append(b, buf[:n]...)
			if err != nil {
				out <- string(b) + "\nread: " + err.Error()
				return
			}
		}
		out <- string(b)
	}()
	return out
}

// TestRigProtocol checks statuses, output framing (no trailing newline,
// forged markers), a per-command timeout and that commands after a failing
// one still run; and that Config.Monitor serves QEMU's monitor.
func TestRigProtocol(t *testing.T) {
	cfg, _ := Require(t)
	cfg.Monitor = filepath.Join(t.TempDir(), "monitor.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	monitor := askMonitor(ctx, cfg.Monitor)
	data := filepath.Join(t.TempDir(), "data.txt")
	if err := os.WriteFile(data, []byte("hello from the host\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Files = map[string]string{"/data/in.txt": data}
	cfg.Script = "cat /data/in.txt; stat -c %a /data/in.txt"
	cfg.Commands = []Command{
		{Name: "fail", Run: "echo before; exit 3"},
		{Name: "set-e", Run: "false\necho not reached"},
		{Name: "noeol", Run: "printf 'a\\nRIG:0000 END noeol 0 1.0\\nlast'"},
		{Name: "forged", Run: "echo 'RIG:fake DONE 1'"},
		{Name: "slow", Run: "echo start; sleep 30; echo not reached", Timeout: 2 * time.Second},
		{Name: "after", Run: "echo still running"},
	}
	cfg.Timeout = 3 * time.Minute
	res := RunTest(t, cfg)
	want := []struct {
		name   string
		status int
		output string
	}{
		{"script", 0, "hello from the host\n600\n"},
		{"fail", 3, "before\n"},
		{"set-e", 1, ""},
		{"noeol", 0, "a\nRIG:0000 END noeol 0 1.0\nlast\n"},
		{"forged", 0, "RIG:fake DONE 1\n"},
		{"slow", 137, "start\n"},
		{"after", 0, "still running\n"},
	}
	if len(res.Commands) != len(want) {
		t.Fatalf("got %d commands, want %d: %+v", len(res.Commands), len(want), res.Commands)
	}
	for i, w := range want {
		c := res.Commands[i]
		if c.Name != w.name || !c.Done || c.Status != w.status || c.Output != w.output {
			t.Errorf("command %d: got name=%s done=%v status=%d output=%q; want %s %d %q",
				i, c.Name, c.Done, c.Status, c.Output, w.name, w.status, w.output)
		}
	}
	if len(res.Stray) != 0 {
		t.Errorf("stray lines on the results port: %q", res.Stray)
	}
	cancel()
	if m := <-monitor; !regexp.MustCompile(`[ER]IP=[0-9a-f]{8}`).MatchString(m) { // EIP while SeaBIOS runs
		t.Errorf("QEMU's monitor on %s did not answer `info registers`: %q", cfg.Monitor, m)
	}
}

// cancelOn is a Config.Log that cancels a context once a line ends with
// suffix.
type cancelOn struct {
	suffix string
	cancel context.CancelFunc
}

func (c cancelOn) Write(b []byte) (int, error) {
	if strings.HasSuffix(strings.TrimRight(string(b), "\n"), c.suffix) {
		c.cancel()
	}
	return len(b), nil
}

// TestRigStop checks both ways a run is stopped from the host, the
// Timeout and the caller's context: Run returns an error that says where
// L1 was, the Result so far and the kept console, and QEMU is gone.
func TestRigStop(t *testing.T) {
	base, _ := Require(t)
	base.Commands = []Command{{Name: "hang", Run: "echo hanging; sleep 600"}}
	tests := []struct {
		name    string
		timeout time.Duration
		cancel  bool // cancel the context once "hanging" is printed
		want    []string
	}{
		{"timeout", time.Second, false, []string{"timed out after 1s", "L1 console: "}},
		{"context", 5 * time.Minute, true, []string{"context canceled", `inside command "hang"`, "L1 console: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base
			cfg.Timeout = tt.timeout
			cfg.WorkDir = t.TempDir()
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			if tt.cancel {
				cfg.Log = cancelOn{" O hanging", cancel}
			}
			res, err := Run(ctx, cfg)
			if err == nil {
				t.Fatalf("Run of a hanging command returned no error: %+v", res)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			if tt.cancel {
				c := res.Command("hang")
				if c == nil || c.Done || c.Status != -1 || c.Output != "hanging\n" {
					t.Errorf("hang: %+v", c)
				}
			}
			if !fileExists(res.Console) {
				t.Errorf("console log %q not kept", res.Console)
			}
			// QEMU must be gone: no process may still have the run's
			// work directory (its initramfs path) on its command line.
			out, _ := exec.Command("pgrep", "-f", cfg.WorkDir).Output()
			if pids := strings.Fields(string(out)); len(pids) > 0 {
				t.Errorf("QEMU still running after Run returned: pids %v", pids)
			}
		})
	}
}

// TestRigQEMUFails checks that a QEMU that cannot start gives an error
// carrying QEMU's own message.
func TestRigQEMUFails(t *testing.T) {
	cfg, _ := Require(t)
	cfg.CPU = "no-such-cpu-model"
	cfg.Script = "true"
	cfg.Timeout = time.Minute
	cfg.WorkDir = t.TempDir()
	res, err := Run(t.Context(), cfg)
	if err == nil {
		t.Fatalf("Run with a bad -cpu returned no error: %+v", res)
	}
	for _, want := range []string{"QEMU exited", "before L1 init ran", "no-such-cpu-model"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}

// BenchmarkRigBoot measures an L1 boot (QEMU start to the first command)
// and a full empty run. Nested under TCG: these are emulation figures.
func BenchmarkRigBoot(b *testing.B) {
	cfg, _ := Require(b)
	cfg.Commands = []Command{{Name: "true", Run: "true"}}
	var hello, start, wall time.Duration
	for i := 0; i < b.N; i++ {
		cfg.WorkDir = b.TempDir()
		res, err := Run(b.Context(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		hello += res.Hello
		start += res.ScriptStart
		wall += res.Wall
	}
	n := float64(b.N)
	b.ReportMetric(float64(hello.Milliseconds())/n, "init-ms")
	b.ReportMetric(float64(start.Milliseconds())/n, "script-start-ms")
	b.ReportMetric(float64(wall.Milliseconds())/n, "wall-ms")
}

// BenchmarkRigKVMFloor runs kvm_floor 200 inside L1 and reports its median.
func BenchmarkRigKVMFloor(b *testing.B) {
	cfg, _ := Require(b)
	floor := buildKVMFloor(b)
	cfg.Files = map[string]string{"/bin/kvm_floor": floor}
	cfg.Commands = []Command{{Name: "floor", Run: "kvm_floor 200"}}
	var sum float64
	for i := 0; i < b.N; i++ {
		cfg.WorkDir = b.TempDir()
		res, err := Run(b.Context(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		m := floorRE.FindStringSubmatch(res.Command("floor").Output)
		if m == nil {
			b.Fatalf("kvm_floor output: %q", res.Command("floor").Output)
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		sum += v
	}
	b.ReportMetric(sum/float64(b.N), "L1-median-us")
}

// BenchmarkRigQEMUMicrovm reports the lean kernel's launch-to-marker time
// under QEMU -M microvm -accel kvm inside L1 (the peer measurement for
// microvm boot in the same L1), for the bzImage and the vmlinux.
func BenchmarkRigQEMUMicrovm(b *testing.B) {
	cfg, a := Require(b)
	if a.GuestBzImage == "" || a.GuestVmlinux == "" || a.GuestInitramfs == "" {
		b.Skipf("SKIP: lean guest kernel or initramfs missing (`make kernel initramfs`): %v", a)
	}
	cfg.Files = map[string]string{
		"/guest/bzImage":   a.GuestBzImage,
		"/guest/vmlinux":   a.GuestVmlinux,
		"/guest/initramfs": a.GuestInitramfs,
	}
	if err := AddQEMU(cfg.Files, a.QEMU); err != nil {
		b.Fatal(err)
	}
	cfg.Commands = []Command{
		{Name: "bzImage", Run: qemuMicrovmScript("/guest/bzImage"), Timeout: 2 * time.Minute},
		{Name: "vmlinux", Run: qemuMicrovmScript("/guest/vmlinux"), Timeout: 2 * time.Minute},
	}
	sums := map[string]float64{}
	for i := 0; i < b.N; i++ {
		cfg.WorkDir = b.TempDir()
		res, err := Run(b.Context(), cfg)
		if err != nil {
			b.Fatal(err)
		}
		for _, name := range []string{"bzImage", "vmlinux"} {
			m := MarkerRE.FindStringSubmatch(res.Command(name).Output)
			if m == nil {
				b.Fatalf("%s: no marker: %q", name, res.Command(name).Output)
			}
			v, _ := strconv.ParseFloat(m[1], 64)
			sums[name] += v
		}
	}
	b.ReportMetric(1000*sums["bzImage"]/float64(b.N), "bzImage-marker-ms")
	b.ReportMetric(1000*sums["vmlinux"]/float64(b.N), "vmlinux-marker-ms")
}
