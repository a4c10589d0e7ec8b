package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/microvm/microvm/images/initramfs"
	"github.com/microvm/microvm/internal/rig"
)

// status runs a microvm command inside L1 and prints "status=N" whatever N
// is (the rig runs commands with sh -e).
func status(cmd string) string { return "set +e; " + cmd + `; echo "status=$?"` }

func statusOf(t *testing.T, c *rig.CommandResult) int {
	t.Helper()
	m := regexp.MustCompile(`status=(\d+)`).FindAllStringSubmatch(c.Output, -1)
	if len(m) == 0 {
		t.Errorf("%s: no status line in output:\n%s", c.Name, c.Output)
		return -1
	}
	n, _ := strconv.Atoi(m[len(m)-1][1])
	return n
}

// jsonOf decodes the last JSON object in a command's output.
func jsonOf(t *testing.T, c *rig.CommandResult, v any) {
	t.Helper()
	out := "\n" + c.Output
	i := strings.LastIndex(out, "\n{")
	j := strings.LastIndex(out, "\n}")
	if i < 0 || j < i {
		t.Fatalf("%s: no JSON in output:\n%s", c.Name, c.Output)
	}
	if err := json.Unmarshal([]byte(out[i+1:j+2]), v); err != nil {
		t.Fatalf("%s: %v\n%s", c.Name, err, c.Output)
	}
}

// TestRigMicrovm runs microvm on real KVM semantics: inside an L1 Linux
// under QEMU TCG with emulated AMD-V (see internal/rig). There, unlike on a
// kvm_pvm host, Linux user space runs: the lean kernel boots its busybox
// initramfs to the ready marker, writes the ready register, runs the
// command on its cmdline and powers off with its status. The tiny-guest
// suite runs there too, so every ABI test also runs on SVM. Figures are
// nested-under-TCG: ratios hold, absolutes do not.
func TestRigMicrovm(t *testing.T) {
	cfg, a := rig.Require(t)
	if a.Microvm == "" || a.GuestVmlinux == "" || a.GuestBzImage == "" || a.GuestInitramfs == "" {
		t.Skipf("SKIP: needs MICROVM_BIN, the lean kernel and the guest initramfs (`make test` provides them): %v", a)
	}
	cfg.Files = map[string]string{
		"/bin/microvm":          a.Microvm,
		"/guest/vmlinux":        a.GuestVmlinux,
		"/guest/bzImage":        a.GuestBzImage,
		"/guest/initramfs":      a.GuestInitramfs,
		"/guest/root.ext4":      rootImage(t, a.GuestInitramfs),
		"/guest/debian-vmlinuz": a.L1Kernel, // Debian's cloud kernel, as a guest too
	}
	// Debian's kernel has its virtio drivers as modules and finds the
	// virtio-mmio devices only through ACPI: an initramfs that loads them,
	// and an ext4 root made of the same files.
	debianRD := debianInitramfs(t, a.L1Modules)
	cfg.Files["/guest/debian-initramfs"] = debianRD
	cfg.Files["/guest/debian-root.ext4"] = rootImage(t, debianRD)
	if err := rig.AddQEMU(cfg.Files, a.QEMU); err != nil {
		t.Fatal(err)
	}
	cfg.Files["/bin/kvm_floor"] = staticKVMFloor(t)
	debian := func(extra, args, cmd string) string {
		return fmt.Sprintf(`microvm boot /guest/debian-vmlinuz --initrd /guest/debian-initramfs --memory 512M --timeout 240s --kernel-cache /tmp/kc %s --append '%s microvm.cmd="%s"'`, extra, args, cmd)
	}
	linux := func(kernel, extra, cmd string) string {
		return fmt.Sprintf(`microvm boot %s --initrd /guest/initramfs --memory 256M --timeout 120s %s --append 'microvm.cmd="%s"'`, kernel, extra, cmd)
	}
	cmds := []rig.Command{
		{Name: "check", Run: "microvm check --json"},
		{Name: "hello", Run: "microvm boot"},
		{Name: "ready", Run: "microvm boot --guest ready --json"},
		{Name: "exit", Run: status("microvm boot --guest exit --cmdline 42")},
		{Name: "smp", Run: "microvm boot --guest smp --cpus 4"},
		{Name: "linux-vmlinux", Run: status(linux("/guest/vmlinux", "--json", "echo hello from linux user space; exit 3")), Timeout: 3 * time.Minute},
		{Name: "linux-bzimage", Run: status(linux("/guest/bzImage", "--json --kernel-cache /tmp/kc", "true")), Timeout: 3 * time.Minute},
		{Name: "linux-reboot", Run: status(linux("/guest/vmlinux", "--json", "reboot -f")), Timeout: 3 * time.Minute},
		// Linux with two vCPUs: the AP started through INIT/SIPI.
		{Name: "linux-smp", Run: status(linux("/guest/vmlinux", "--cpus 2", "echo cpus=$(nproc)")), Timeout: 3 * time.Minute},
		// Debian's cloud kernel: ACPI (the MADT for its CPUs, the DSDT for
		// the virtio-mmio devices), its virtio modules from the initramfs,
		// its root on virtio-blk (written, then read back in a second
		// boot), entropy from virtio-rng, and with two vCPUs a ping to L1
		// over virtio-net.
		{Name: "debian-root", Run: status(debian(`--disk /guest/debian-root.ext4 --rng --json`,
			`root=/dev/vda rw`, `uname -r; grep ^/dev/vda /proc/mounts; head -c 64 /dev/hwrng | wc -c; echo debian-persisted > /written; sync`)), Timeout: 5 * time.Minute},
		{Name: "debian-reboot", Run: status(debian(`--disk /guest/debian-root.ext4`, `root=/dev/vda ro`, `cat /written`)), Timeout: 5 * time.Minute},
		{Name: "debian-net", Run: netPing(debian(`--net tap=mvtap1 --cpus 2`, ``, `echo cpus=$(nproc); ip addr add 10.0.3.2/24 dev eth0 && ip link set eth0 up && ping -c 3 10.0.3.1`), "mvtap1", "10.0.3.1/24"), Timeout: 5 * time.Minute},
		// virtio-blk as the root file system: write a file, then find it again in a second boot.
		{Name: "virtio-blk-root", Run: status(`microvm boot /guest/vmlinux --disk /guest/root.ext4 --memory 256M --timeout 120s --append 'root=/dev/vda rw init=/init microvm.cmd="grep -q ^/dev/root.*ext4 /proc/mounts && echo persisted > /written && sync"'`), Timeout: 3 * time.Minute},
		{Name: "virtio-blk-reboot", Run: status(`microvm boot /guest/vmlinux --disk /guest/root.ext4 --memory 256M --timeout 120s --append 'root=/dev/vda ro init=/init microvm.cmd="cat /written"'`), Timeout: 3 * time.Minute},
		// virtio-net: the guest pings L1 through a tap microvm creates.
		{Name: "virtio-net-ping", Run: netPing(`microvm boot /guest/vmlinux --initrd /guest/initramfs --net tap=mvtap0 --memory 256M --timeout 120s `+
			`--append 'microvm.cmd="ip addr add 10.0.2.2/24 dev eth0 && ip link set eth0 up && ping -c 1 10.0.2.1"'`, "mvtap0", "10.0.2.1/24"), Timeout: 3 * time.Minute},
		// The interactive path: no microvm.cmd, so /init gives a shell on the
		// console, which reads what --stdin feeds the UART (IRQ 4). Its
		// output streams out as it comes (see netPing for why).
		{Name: "linux-shell", Run: `set +e
mkfifo /tmp/in
exec 3<>/tmp/in
(microvm boot /guest/vmlinux --initrd /guest/initramfs --memory 256M --timeout 120s --stdin </tmp/in 2>&1; echo "status=$?") | tee /tmp/out &
i=0
while ! grep -q "starting a shell" /tmp/out && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
sleep 1
printf 'echo shell says $((6*7))\nexit 7\n' >&3
wait`, Timeout: 3 * time.Minute},
		// A Linux guest with the default --timeout (auto: never for Linux)
		// outlives the old 10 s limit, is seen by ps, and stop ends it.
		{Name: "ps-stop", Run: `microvm boot /guest/vmlinux --initrd /guest/initramfs --memory 256M --name lin --quiet --append 'microvm.cmd="sleep 600"' &
pid=$!
sleep 15
microvm ps
microvm ps --json
microvm stop -t 20s lin
set +e
wait $pid
echo "boot-status=$?"
echo "left=$(microvm ps -q | wc -l)"`, Timeout: 3 * time.Minute},
		// The tiny VM against kvm_floor, the least a VMM can do, in the same L1.
		{Name: "floor", Run: "kvm_floor 200"},
		{Name: "bench-vm", Run: "microvm bench --paths vm --runs 200 --warmup 5 --json 2>/dev/null", Timeout: 5 * time.Minute},
		{Name: "marker-microvm", Run: rig.MarkerScript("microvm boot /guest/vmlinux --initrd /guest/initramfs --memory 256M --timeout 120s", "microvm-init: ready"), Timeout: 3 * time.Minute},
		{Name: "marker-qemu", Run: rig.MarkerScript(`qemu-system-x86_64 -M microvm,acpi=off -accel kvm -cpu host -m 256 -smp 1 \
	-nodefaults -no-user-config -display none -no-reboot -serial stdio \
	-kernel /guest/vmlinux -initrd /guest/initramfs -append "console=ttyS0 reboot=t panic=-1"`, "microvm-init: ready"), Timeout: 3 * time.Minute},
	}
	hostile := []struct {
		mode, flags string
		want        int
	}{
		{"triple", "", exitGuestCrash},
		{"ports", "", 0},
		{"hltif", "", 0},
		{"flood floodk=64", "", 0}, // each byte is a VM exit: ~150 µs nested under TCG
		{"range", "", exitGuestRange},
		{"pagetables", "", exitGuestCrash},
		{"spin2", "--cpus 2", 7},
	}
	for _, h := range hostile {
		cmds = append(cmds, rig.Command{Name: "hostile-" + strings.Fields(h.mode)[0],
			Run: status(fmt.Sprintf("microvm boot --guest hostile --quiet --timeout 60s %s --cmdline '%s'", h.flags, "mode="+h.mode)), Timeout: 3 * time.Minute})
	}
	for i := range cmds {
		if cmds[i].Timeout == 0 { // every command has one: the rig then notices an L1 freeze
			cmds[i].Timeout = 2 * time.Minute
		}
	}
	cfg.Commands = cmds
	cfg.Timeout = 20 * time.Minute
	res := rig.RunTest(t, cfg)
	if res.Freezes > 0 {
		t.Logf("L1 froze %d time(s) and was restarted for the commands left (QEMU TCG; docs/rig.md)", res.Freezes)
	}
	if !res.KVM {
		t.Fatalf("L1 KVM setup failed: %s", res.KVMDetail)
	}
	get := func(name string) *rig.CommandResult {
		c := res.Command(name)
		if c == nil || !c.Done {
			t.Fatalf("%s did not finish: %+v", name, c)
		}
		return c
	}

	var check checkReport
	jsonOf(t, get("check"), &check)
	if check.HostKind != "amd-v" || !check.HardwareAssisted || !check.CanBoot {
		t.Errorf("microvm check inside the rig: %+v", check)
	}
	if c := get("hello"); !c.OK() || !strings.Contains(c.Output, "Hello from the microvm tiny guest!") {
		t.Errorf("hello: %+v", c)
	}
	var ready bootReport
	jsonOf(t, get("ready"), &ready)
	if ready.Reason != "exit" || !ready.Ready || ready.ExitCode != 0 {
		t.Errorf("ready guest: %+v", ready)
	}
	if s := statusOf(t, get("exit")); s != 42 {
		t.Errorf("exit guest: status %d, want 42", s)
	}
	if c := get("smp"); !c.OK() || !strings.Contains(c.Output, "all 4 vcpus reported") {
		t.Errorf("smp: %+v", c)
	}

	// ps and stop on a running Linux guest, 15 s after its start.
	if c := get("ps-stop"); !c.OK() || !regexp.MustCompile(`(?m)^lin\s+\d+\s+/guest/vmlinux\s+1\s+256M\s+Up `).MatchString(c.Output) ||
		!strings.Contains(c.Output, `"name": "lin"`) || !strings.Contains(c.Output, "boot-status=130") || !strings.Contains(c.Output, "left=0") {
		t.Errorf("ps-stop: %+v", c)
	}

	// Linux with user space: the marker, the ready register, the exit status.
	c := get("linux-vmlinux")
	var lv bootReport
	jsonOf(t, c, &lv)
	if s := statusOf(t, c); s != 3 || lv.Reason != "exit" || !lv.Ready ||
		!strings.Contains(c.Output, "microvm-init: ready") || !strings.Contains(c.Output, "hello from linux user space") {
		t.Errorf("linux vmlinux: status %d, report %+v\n%s", s, lv, c.Output)
	}
	c = get("linux-bzimage")
	var lb bootReport
	jsonOf(t, c, &lb)
	if s := statusOf(t, c); s != 0 || !lb.Ready || lb.Kernel == nil || lb.Kernel.Decompress == nil {
		t.Errorf("linux bzImage: status %d, report %+v", s, lb)
	}
	c = get("linux-reboot")
	var lr bootReport
	jsonOf(t, c, &lr)
	if s := statusOf(t, c); s != 0 || lr.Reason != "reset" {
		t.Errorf("linux reboot: status %d reason %q", s, lr.Reason)
	}

	c = get("debian-root")
	var ld bootReport
	jsonOf(t, c, &ld)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^6\.1\.\S+-cloud-amd64\r?$`), // uname -r
		regexp.MustCompile(`ACPI: Using ACPI \(MADT\) for SMP configuration information`),
		regexp.MustCompile(`virtio_blk virtio0: \[vda\]`), // found through the DSDT
		regexp.MustCompile(`(?m)^/dev/vda / ext4 rw`),     // the root, on virtio-blk found through the DSDT
		regexp.MustCompile(`(?m)^64\r?$`),                 // bytes read from virtio-rng
	} {
		if !want.MatchString(c.Output) {
			t.Errorf("Debian cloud kernel on virtio: output lacks %v", want)
		}
	}
	if s := statusOf(t, c); s != 0 || !ld.Ready || ld.Reason != "exit" {
		t.Errorf("Debian cloud kernel on virtio: status %d ready %v reason %q\n%s", s, ld.Ready, ld.Reason, tail(c.Output, 3000))
	} else {
		t.Logf("nested under TCG: Debian cloud kernel (ACPI, root on virtio-blk) launch→ready %.0f ms, host-side decompression %v (cached %v)",
			ld.ReadyMillis, ld.Kernel.Decompress.Duration, ld.Kernel.Decompress.Cached)
	}
	if c := get("debian-reboot"); statusOf(t, c) != 0 || !strings.Contains(c.Output, "debian-persisted") {
		t.Errorf("Debian cloud kernel: the file written on its virtio-blk root is not there in the second boot:\n%s", tail(c.Output, 3000))
	}
	if c := get("debian-net"); statusOf(t, c) != 0 || !strings.Contains(c.Output, "cpus=2") ||
		!strings.Contains(c.Output, "smpboot: Total of 2 processors activated") || !strings.Contains(c.Output, "3 packets received") {
		t.Errorf("Debian cloud kernel with two vCPUs: both CPUs up and 3 pings to L1 over virtio-net:\n%s", tail(c.Output, 3000))
	}
	if c := get("linux-smp"); statusOf(t, c) != 0 || !strings.Contains(c.Output, "cpus=2") {
		t.Errorf("lean kernel with --cpus 2: nproc:\n%s", tail(c.Output, 3000))
	}
	if c := get("virtio-blk-root"); statusOf(t, c) != 0 {
		t.Errorf("virtio-blk root file system:\n%s", tail(c.Output, 3000))
	}
	if c := get("virtio-blk-reboot"); statusOf(t, c) != 0 || !strings.Contains(c.Output, "persisted") {
		t.Errorf("virtio-blk: the file written in the first boot is not there in the second:\n%s", tail(c.Output, 3000))
	}
	if c := get("virtio-net-ping"); statusOf(t, c) != 0 || !strings.Contains(c.Output, "1 packets received") {
		t.Errorf("virtio-net ping from the guest to L1:\n%s", tail(c.Output, 3000))
	}

	for _, h := range hostile {
		name := "hostile-" + strings.Fields(h.mode)[0]
		if s := statusOf(t, get(name)); s != h.want {
			t.Errorf("%s: status %d, want %d\n%s", name, s, h.want, get(name).Output)
		}
	}

	if c := get("linux-shell"); statusOf(t, c) != 7 || !strings.Contains(c.Output, "shell says 42") {
		t.Errorf("a shell on the Linux console, fed through the UART:\n%s", tail(c.Output, 3000))
	}
	if m := regexp.MustCompile(`median (\d+) us`).FindStringSubmatch(get("floor").Output); m == nil {
		t.Errorf("kvm_floor in L1: %s", get("floor").Output)
	} else {
		var b struct {
			Paths []struct {
				Name string
				Exit struct {
					Median float64 `json:"median_ns"`
				}
			}
		}
		jsonOf(t, get("bench-vm"), &b)
		floor, _ := strconv.ParseFloat(m[1], 64)
		if len(b.Paths) == 1 && b.Paths[0].Exit.Median > 0 {
			t.Logf("nested under TCG, tiny VM create→ready→exit→destroyed in process: microvm %.0f µs median, kvm_floor %.0f µs (microvm/floor = %.2f)",
				b.Paths[0].Exit.Median/1e3, floor, b.Paths[0].Exit.Median/1e3/floor)
		} else {
			t.Errorf("microvm bench --paths vm in L1: %+v", b)
		}
	}

	// The peer comparison: same kernel, same initramfs, same L1, same clock.
	secs := func(name string) float64 {
		m := rig.MarkerRE.FindStringSubmatch(get(name).Output)
		if m == nil {
			t.Errorf("%s: no marker:\n%s", name, get(name).Output)
			return 0
		}
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	mv, q := secs("marker-microvm"), secs("marker-qemu")
	if mv > 0 && q > 0 {
		t.Logf("nested under TCG, lean vmlinux launch→marker: microvm %.2f s, QEMU -M microvm %.2f s (microvm/QEMU = %.2f); microvm ready_ms %.0f (vmlinux) %.0f (bzImage)",
			mv, q, mv/q, lv.ReadyMillis, lb.ReadyMillis)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// rootImage builds an ext4 root file system holding an initramfs's files
// (busybox and /init), for the virtio-blk root tests.
func rootImage(t *testing.T, initrd string) string {
	t.Helper()
	f, err := os.Open(initrd)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img := filepath.Join(t.TempDir(), "root.ext4")
	if err := initramfs.WriteExt4(img, f, "32M"); errors.Is(err, exec.ErrNotFound) {
		t.Skipf("SKIP: cannot build the ext4 root image: %v", err)
	} else if err != nil {
		t.Fatal(err)
	}
	return img
}

// netPing runs a microvm boot command with a --net tap in the background,
// gives the tap hostAddr once microvm has created it, waits, and prints
// "status=N".
//
// The boot's output goes straight to the command's output, which streams
// out of L1 line by line, rather than to a file printed at the end: with
// the guest's console in a file, L1 froze (a QEMU TCG lost interrupt,
// docs/rig.md) in about half the runs of Debian's kernel with --net, and
// in none of 17 with the console streamed (14 rigrun and 3 TestRigMicrovm
// runs when this was found).
func netPing(boot, tap, hostAddr string) string {
	return fmt.Sprintf(`set +e
%s 2>&1 &
pid=$!
i=0
while [ ! -e /sys/class/net/%s ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
ip addr add %s dev %s && ip link set %s up
wait $pid
echo "status=$?"`, boot, tap, hostAddr, tap, tap)
}

// debianInitramfs builds the guest initramfs with Debian's virtio modules
// (and their dependencies) for /init to load.
func debianInitramfs(t *testing.T, moduleDir string) string {
	t.Helper()
	if moduleDir == "" {
		t.Skip("SKIP: Debian's kernel modules are missing (`make debian-kernel`)")
	}
	mods, err := initramfs.ResolveModules(moduleDir, "virtio_mmio", "virtio_blk", "virtio_net", "virtio-rng")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "debian-initramfs.cpio.gz")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := initramfs.Write(f, initramfs.Options{Modules: mods, Gzip: true}); err != nil {
		t.Skipf("SKIP: cannot build the Debian guest initramfs: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// staticKVMFloor builds the bench's copy of kvm_floor.c statically, for L1.
func staticKVMFloor(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "kvm_floor")
	cmd := exec.Command("cc", "-O2", "-static", "-o", out, filepath.Join("..", "..", "bench", "kvmfloor", "kvm_floor.c"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Skipf("SKIP: cannot build a static kvm_floor (needs cc and libc6-dev): %v\n%s", err, b)
	}
	return out
}
